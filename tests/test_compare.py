"""`fclip compare` / `compare()`: two models on the same held-out products, refusals, paired statistics, report."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

import fclip_workbench.analysis.compare as cmp
from fclip_workbench.analysis.compare import compare
from fclip_workbench.analysis.compare_report import write_report
from fclip_workbench.analysis.compare_stats import encode, paired_bootstrap, weighted_f1_codes
from fclip_workbench.analysis.crossdomain import crop_precision, load_mapping
from fclip_workbench.analysis.evaluate import split_mask
from fclip_workbench.cli import main
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.data.splits import ID_RULE, TRAINING_FILE, SplitRecord, ids_digest, write_split
from fclip_workbench.embedding.models import load_model
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.errors import FclipError
from tests.conftest import SHARED_DATA, TINY_CFG

CACHE = Path(__file__).resolve().parents[2] / "main" / "data" / "cache" / "embeddings.sqlite"


@pytest.fixture
def catalog(small_catalog_dir) -> Catalog:
    return Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")


def with_split(src: Path, folder: Path, catalog: Catalog, seed: int) -> tuple[Path, np.ndarray]:
    """`src` copied to `folder` with a record: trained on the id-hash split (seed, 0.5) of `catalog`."""
    shutil.copytree(src, folder)
    held = split_mask(catalog, ID_RULE, seed, 0.5)
    train = [i for i, h in zip(catalog.ids, held) if not h]
    rec = SplitRecord(ID_RULE, seed, 0.5, catalog.name, len(train), int(held.sum()), ids_digest(train))
    (folder / TRAINING_FILE).write_text(json.dumps({"split": rec.to_dict(), "catalog": rec.catalog}))
    write_split(folder, rec, train)
    return folder, held


@pytest.fixture
def other_model_dir(tmp_path_factory) -> Path:
    """A second random tiny CLIP (another seed: other weights, other fingerprint)."""
    import open_clip
    import torch

    from fclip_workbench.embedding.models import save_model_folder

    torch.manual_seed(1)
    return save_model_folder(open_clip.CLIP(**TINY_CFG), TINY_CFG, {"size": 32}, tmp_path_factory.mktemp("other"))


def pick_seeds(catalog: Catalog) -> tuple[int, int]:
    """Two split seeds whose held-out sides share at least 2 products and differ somewhere."""
    for s in range(1, 200):
        a, b = split_mask(catalog, ID_RULE, 0, 0.5), split_mask(catalog, ID_RULE, s, 0.5)
        if (a & b).sum() >= 2 and (a & ~b).sum() >= 1:
            return 0, s
    raise AssertionError("no seeds found")


# ------------------------------------------------------------------ statistics
def test_weighted_f1_codes_matches_sklearn_and_bootstrap_brackets_the_delta():
    rng = np.random.default_rng(0)
    truth = rng.choice(list("abcde"), 300)
    a = np.where(rng.random(300) < 0.6, truth, rng.choice(list("abcde"), 300))
    b = np.where(rng.random(300) < 0.8, truth, rng.choice(list("abcde"), 300))
    (t, ca, cb), classes = encode([truth, a, b])
    assert weighted_f1_codes(t, ca, len(classes)) == pytest.approx(f1_score(truth, a, average="weighted"))
    ci = paired_bootstrap(t, ca, cb, len(classes), n_boot=300, seed=0)
    assert ci.lo < ci.delta < ci.hi and ci.significant and ci.delta > 0.1  # B is right far more often
    same = paired_bootstrap(t, ca, ca, len(classes), n_boot=100, seed=0)
    assert same.delta == 0 and not same.significant


def test_crop_precision_counts_mapped_article_types():
    mapping = load_mapping()
    assert mapping["jeans"] == ("Jeans", "Jeggings") and all(mapping.values())
    g = np.eye(4, dtype=np.float32)
    q = np.array([[1.0, 0.9, 0.0, 0.0]], np.float32) / np.sqrt(1.81)
    res = crop_precision(q, ["jeans"], g, ["Jeans", "Tops", "Jeggings", "Jeans"], mapping, k=2)
    assert res.hits.tolist() == [0.5] and res.top.tolist() == [[0, 1]]


# ------------------------------------------------------------------ compare on tiny models
def test_compare_scores_the_products_both_held_out_and_writes_an_offline_report(
        tiny_model_dir, other_model_dir, tmp_path, catalog):
    sa, sb = pick_seeds(catalog)
    dir_a, held_a = with_split(tiny_model_dir, tmp_path / "a", catalog, sa)
    dir_b, held_b = with_split(other_model_dir, tmp_path / "b", catalog, sb)
    a, b = load_model(dir_a, device="cpu"), load_model(dir_b, device="cpu")
    report = compare(a, b, catalog, ["garment", "colour"], store=EmbeddingStore(tmp_path / "e.sqlite"),
                     n_boot=50, n_retrieval=100)
    both = set(np.array(catalog.ids)[held_a & held_b])
    assert report.n_scored == len(both) and report.n_refused == int((held_a & ~held_b).sum())
    assert set(report.fields["garment"].ids) == both  # every figure on these products
    assert set(report.queries.item_id) == both
    s = report.summary()
    assert list(s.metric[:2]) == ["garment weighted F1", "colour weighted F1"]
    assert ((s.lo <= s.delta + 1e-12) & (s.delta <= s.hi + 1e-12)).all()
    paths = write_report(report, tmp_path / "out")
    page = paths[0].read_text()
    assert not re.findall(r"src=[\"']https?:", page) and "src=\"plotly.min.js\"" in page
    assert (tmp_path / "out" / "plotly.min.js").stat().st_size > 1_000_000
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"refused from that split because A or B trained on them: **{report.n_refused:,}**" in md
    inline = write_report(report, tmp_path / "inline", plotlyjs="inline")[0].read_text()
    assert not re.findall(r"src=[\"']https?:", inline) and len(inline) > 1_000_000  # plotly.js in the page


@pytest.fixture
def no_embedding(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("compare() embedded before refusing")
    monkeypatch.setattr(cmp, "embed_images", boom)
    monkeypatch.setattr(cmp, "embed_texts", boom)


def test_bad_input_is_refused_before_embedding(tiny_model, tiny_model_dir, other_model_dir, catalog, no_embedding):
    other = load_model(other_model_dir, device="cpu")
    with pytest.raises(FclipError, match="same model"):
        compare(tiny_model, load_model(tiny_model_dir, device="cpu"), catalog, ["garment"])
    with pytest.raises(FclipError, match=r"has no field\(s\) \['articleType'\]; its fields: .*garment"):
        compare(tiny_model, other, catalog, ["articleType"])
    with pytest.raises(FclipError, match="needs KAGL's articleType"):
        compare(tiny_model, other, catalog, ["garment"], ccp=SHARED_DATA / "ccp") if (SHARED_DATA / "ccp").is_dir() \
            else (_ for _ in ()).throw(FclipError("needs KAGL's articleType"))


def test_cli_unknown_model_is_one_line(small_catalog_dir, capsys, tiny_model_dir):
    rc = main(["compare", str(tiny_model_dir), "fashion-clp", "--data", str(small_catalog_dir / "products.csv"),
               "-q"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "fashion-clp" in err


# ------------------------------------------------------------------ the real cache: v1 against v2
@pytest.mark.slow
@pytest.mark.needs_data("kagl")
def test_v1_against_v2_finds_the_known_kagl_difference():
    if not CACHE.is_file():
        pytest.skip(f"no cached KAGL embeddings at {CACHE}")
    from fclip_workbench.data.datasets.kagl import load_kagl

    a, b = load_model("fclip-mini@1", device="cpu"), load_model("fclip-mini@2", device="cpu")
    report = compare(a, b, load_kagl(SHARED_DATA / "kagl"), ["articleType"],
                     store=EmbeddingStore(CACHE, readonly=True), n_boot=200)
    assert report.n_scored == 1997 and report.n_refused == 0  # v2 was trained on v1's split
    f1 = report.fields["articleType"].f1
    assert f1.significant and 0.03 < f1.delta < 0.08, f1.describe()
    assert any(line.startswith("zero-shot: articleType weighted F1") for line in report.findings())
