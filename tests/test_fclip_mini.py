"""The shipped fclip-mini: loads offline from the package, and meets its targets on real data."""
import json
from pathlib import Path

import pytest

from fclip_workbench.models import WEIGHTS_DIR, load_model
from tests.conftest import SHARED_DATA

MINI = WEIGHTS_DIR / "fclip-mini"
KAGL = SHARED_DATA / "kagl"
need_kagl = pytest.mark.skipif(not (KAGL / "styles.csv").is_file(), reason=f"KAGL not found at {KAGL}")


@pytest.fixture(scope="module")
def mini():
    return load_model("fclip-mini", device="cpu")


def test_ships_small_and_loads_offline(mini):
    size = (MINI / "open_clip_model.safetensors").stat().st_size
    assert size <= 30e6
    emb = mini.encode_texts(["a black leather handbag", "blue jeans for men"])
    assert emb.shape == (2, 256)


@need_kagl
def test_kagl_heldout_targets(mini):
    """Zero-shot articleType weighted F1 >= 0.70 and text-to-image R@10 >= 0.50 among 1,000 held-out products."""
    from fclip_workbench.datasets import load_kagl
    from fclip_workbench.evaluate import evaluate

    report = evaluate(mini, load_kagl(KAGL), ["articleType"], n_retrieval=1000, progress=False)
    assert report.value("zero-shot articleType (143 classes)", "weighted F1") >= 0.70
    assert report.value("text-to-image", "R@10") >= 0.50


def test_ships_its_split_record():
    """The shipped training.json names the products fclip-mini trained on (id rule, seed 0, 5% held out)."""
    from fclip_workbench.splits import ID_RULE, read_split_record

    record, train_ids = read_split_record(MINI)  # checks train_ids.txt against the recorded digest
    assert (record.rule, record.seed, record.val_fraction, record.catalog) == (ID_RULE, 0, 0.05, "kagl")
    assert (record.n_train, record.n_heldout) == (37612, 1997) and len(train_ids) == 37612


@need_kagl
def test_shipped_split_is_the_one_its_recipe_gives_on_kagl():
    """The recorded training ids are KAGL's usable, captioned products on the train side of the id rule."""
    from fclip_workbench.datasets import load_kagl
    from fclip_workbench.splits import read_split_record, split_rows
    from fclip_workbench.training import RECIPES
    from fclip_workbench.training.data import caption_rows

    record, train_ids = read_split_record(MINI)
    catalog = load_kagl(KAGL)
    rows, _, _ = caption_rows(catalog, RECIPES["mini-kagl"].train.captions)
    ids = [catalog.ids[r] for r in rows]
    train, held = split_rows(ids, record.val_fraction, record.seed, rule=record.rule)
    assert {ids[i] for i in train} == train_ids and len(held) == record.n_heldout


@pytest.mark.slow
@need_kagl
def test_recipe_from_empty_caches_reaches_the_kagl_targets(tmp_path):
    """`fclip train --recipe mini-kagl` from empty caches reaches the targets on its own held-out products:
    zero-shot articleType weighted F1 >= 0.70 and text-to-image R@10 >= 0.70 (about 40 minutes on 2 cores)."""
    from fclip_workbench.datasets import load_kagl
    from fclip_workbench.evaluate import evaluate
    from fclip_workbench.store import EmbeddingStore
    from fclip_workbench.training import train

    catalog = load_kagl(KAGL)
    store = EmbeddingStore(tmp_path / "cache" / "e.sqlite")
    result = train(catalog, out_dir=tmp_path / "mini", recipe="mini-kagl", store=store, progress=False)
    assert json.loads((Path(tmp_path / "mini") / "training.json").read_text())["split"]["n_train"] == result.n_train
    report = evaluate(load_model(tmp_path / "mini", device="cpu"), catalog, ["articleType"], n_retrieval=1000,
                      store=store, progress=False)
    assert report.value("zero-shot articleType (143 classes)", "weighted F1") >= 0.70
    assert report.value("text-to-image", "R@10") >= 0.70
