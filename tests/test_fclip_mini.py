"""The shipped fclip-mini: loads offline from the package, and meets its targets on real data."""
import json
from pathlib import Path

import pytest

from fclip_workbench.embedding.models import WEIGHTS_DIR, load_model
from tests.conftest import SHARED_DATA

MINI = WEIGHTS_DIR / "fclip-mini"
KAGL = SHARED_DATA / "kagl"
need_kagl = pytest.mark.skipif(not (KAGL / "styles.csv").is_file(), reason=f"KAGL not found at {KAGL}")


@pytest.fixture(scope="module")
def mini():
    return load_model("fclip-mini@1", device="cpu")


def test_fclip_mini_is_the_best_shipped_version():
    """The preset `fclip-mini` loads v2 (better than v1 on every KAGL figure, street photos, and Fashion-MNIST
    under common class names); v1 stays loadable as fclip-mini@1."""
    default = load_model("fclip-mini", device="cpu", progress=False)
    assert default.source == WEIGHTS_DIR / "fclip-mini-v2"
    assert default.fingerprint == load_model("fclip-mini@2", device="cpu", progress=False).fingerprint


def test_ships_small_and_loads_offline(mini):
    size = (MINI / "open_clip_model.safetensors").stat().st_size
    assert size <= 30e6
    emb = mini.encode_texts(["a black leather handbag", "blue jeans for men"])
    assert emb.shape == (2, 256)


@need_kagl
def test_kagl_heldout_targets(mini):
    """Zero-shot articleType weighted F1 >= 0.70 and text-to-image R@10 >= 0.50 among 1,000 held-out products."""
    from fclip_workbench.data.datasets import load_kagl
    from fclip_workbench.analysis.evaluate import evaluate

    report = evaluate(mini, load_kagl(KAGL), ["articleType"], n_retrieval=1000, progress=False)
    assert report.value("zero-shot articleType (143 classes)", "weighted F1") >= 0.70
    assert report.value("text-to-image", "R@10") >= 0.50


def test_ships_its_split_record():
    """The shipped training.json names the products fclip-mini trained on (id rule, seed 0, 5% held out)."""
    from fclip_workbench.data.splits import ID_RULE, read_split_record

    record, train_ids = read_split_record(MINI)  # checks train_ids.txt against the recorded digest
    assert (record.rule, record.seed, record.val_fraction, record.catalog) == (ID_RULE, 0, 0.05, "kagl")
    assert (record.n_train, record.n_heldout) == (37612, 1997) and len(train_ids) == 37612


@need_kagl
def test_shipped_split_is_the_one_its_recipe_gives_on_kagl():
    """The recorded training ids are KAGL's usable, captioned products on the train side of the id rule."""
    from fclip_workbench.data.datasets import load_kagl
    from fclip_workbench.data.splits import read_split_record, split_rows
    from fclip_workbench.training import RECIPES
    from fclip_workbench.training.data import caption_rows

    record, train_ids = read_split_record(MINI)
    catalog = load_kagl(KAGL)
    rows, _, _ = caption_rows(catalog, RECIPES["mini-kagl"].train.captions)
    ids = [catalog.ids[r] for r in rows]
    train, held = split_rows(ids, record.val_fraction, record.seed, rule=record.rule)
    assert {ids[i] for i in train} == train_ids and len(held) == record.n_heldout


V2 = WEIGHTS_DIR / "fclip-mini-v2"
need_v2 = pytest.mark.skipif(not (V2 / "open_clip_config.json").is_file(), reason=f"fclip-mini v2 not shipped at {V2}")


@need_v2
def test_v2_keeps_v1s_kagl_split():
    """v2 is scored beside v1 on the same held-out products: its KAGL split is v1's (none of v1's held-out products
    in its training ids)."""
    from fclip_workbench.data.splits import read_split_record

    v1_record, v1_train = read_split_record(MINI)
    v2_record, v2_train = read_split_record(V2)
    assert (v2_record.rule, v2_record.seed, v2_record.val_fraction) == (v1_record.rule, v1_record.seed,
                                                                       v1_record.val_fraction)
    kagl_v2 = {i for i in v2_train if not i.startswith("ccp:")}
    assert kagl_v2 and kagl_v2 <= v1_train  # never one of v1's held-out products


@need_v2
def test_v2_records_the_ccp_photos_it_held_out():
    from fclip_workbench.data.datasets.ccp import CCP_SPLIT_RULE, ccp_is_heldout
    from fclip_workbench.data.splits import read_split_record

    split = json.loads((V2 / "training.json").read_text())["data"]["ccp_split"]
    assert split["rule"] == CCP_SPLIT_RULE and split["n_photos"] == 699
    held = set(split["heldout_photo_ids"])
    ids = [f"{i:04d}" for i in range(1, 1005)]  # CCP photo names are 4-digit numbers
    assert held <= {i for i, h in zip(ids, ccp_is_heldout(ids, split["fraction"], split["seed"])) if h}
    _, train_ids = read_split_record(V2)
    assert not {i.split(":")[1].split("#")[0] for i in train_ids if i.startswith("ccp:")} & held
    assert (V2 / "open_clip_model.safetensors").stat().st_size <= 30e6


V2_ARTICLE_F1, V2_R10 = 0.798, 0.830  # results/fclip-mini-v2-kagl (fclip eval)


# Held-out figures of the shipped weights (`fclip eval`, results/fclip-mini*-kagl). A rerun of the recipe, on any
# machine, lands within TOLERANCE of them; identical bytes are promised only on the machine and thread count where
# they were measured (another 2-core machine rerunning mini-kagl gave other bytes, R@10 0.787, equal articleType F1).
SHIPPED = {"mini-kagl": ("fclip-mini", 0.746, 0.762), "mini-v2": ("fclip-mini-v2", V2_ARTICLE_F1, V2_R10)}
TOLERANCE = {"articleType F1": 0.03, "R@10": 0.05}
GPU_RECIPES = {"mini-v2": "see the README's fclip-mini section"}


@pytest.mark.slow
@need_kagl
@pytest.mark.parametrize("recipe", ["mini-kagl", "mini-v2"])
def test_recipe_from_empty_caches_reproduces_the_shipped_figures(tmp_path, recipe):
    """`fclip train --recipe R` from empty caches gives held-out figures within TOLERANCE of the shipped weights':
    zero-shot articleType weighted F1 and text-to-image R@10 among 1,000 (mini-kagl about 40 minutes on 2 quiet
    cores; mini-v2 is a GPU recipe, about 5 minutes on one H200, and needs CCP too)."""
    import torch

    from fclip_workbench.data.datasets import load_kagl
    from fclip_workbench.analysis.evaluate import evaluate
    from fclip_workbench.paths import find_dataset
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.training import get_recipe, train

    if get_recipe(recipe).train.ccp_heldout is not None and find_dataset("ccp") is None:
        pytest.skip("recipe trains on CCP too; CCP not found")
    if recipe in GPU_RECIPES and not torch.cuda.is_available():
        pytest.skip(f"{recipe} is a GPU recipe (hours on a CPU: {GPU_RECIPES[recipe]}); no CUDA device here")
    folder, f1, r10 = SHIPPED[recipe]
    catalog = load_kagl(KAGL)
    store = EmbeddingStore(tmp_path / "cache" / "e.sqlite")
    result = train(catalog, out_dir=tmp_path / "run", recipe=recipe, store=store, progress=False)
    assert json.loads((Path(tmp_path / "run") / "training.json").read_text())["split"]["n_train"] == result.n_train
    model = load_model(tmp_path / "run", device="cpu")
    report = evaluate(model, catalog, ["articleType"], n_retrieval=1000, store=store, progress=False)
    assert abs(report.value("zero-shot articleType (143 classes)", "weighted F1") - f1) <= TOLERANCE["articleType F1"]
    assert abs(report.value("text-to-image", "R@10") - r10) <= TOLERANCE["R@10"]
