"""Searcher: text, image and blended search over a catalog, and the inputs it refuses."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import CatalogError, FclipError
from fclip_workbench.search.searcher import Searcher, load_query_image
from fclip_workbench.embedding.store import EmbeddingStore


@pytest.fixture
def catalog(small_catalog_dir):
    return Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")


@pytest.fixture
def store(tmp_path):
    return EmbeddingStore(tmp_path / "s.sqlite")


def _ranking(searcher: Searcher, query: str) -> list[str]:
    return searcher.by_text(query, k=len(searcher))["item_id"].tolist()


def test_image_weight_zero_ranks_by_title_alone(tiny_model, catalog, store):
    searcher = Searcher.build(tiny_model, catalog, store=store, image_weight=0.0, progress=False)
    q = tiny_model.encode_texts(["red shirt"])[0]  # (dim,)
    titles = tiny_model.encode_texts(catalog.texts)  # (n, dim)
    expected = [catalog.ids[i] for i in np.argsort(-(titles @ q), kind="stable")]
    assert _ranking(searcher, "red shirt") == expected
    assert expected[0] == "p0"  # the product titled "red shirt" itself


def test_half_image_weight_moves_ranking_toward_title_matches(tiny_model, catalog, store):
    """With a random model, images rank title matches poorly; blending in titles lifts them."""
    by_image = Searcher.build(tiny_model, catalog, store=store, image_weight=1.0, progress=False)
    blended = Searcher.build(tiny_model, catalog, store=store, image_weight=0.5, progress=False)
    r_img = [_ranking(by_image, t).index(i) for i, t in zip(catalog.ids, catalog.texts)]  # 0 = first
    r_mix = [_ranking(blended, t).index(i) for i, t in zip(catalog.ids, catalog.texts)]
    assert np.mean(r_mix) < np.mean(r_img) - 1, (r_img, r_mix)  # the product with that title moves up
    assert sum(r == 0 for r in r_mix) > sum(r == 0 for r in r_img)


@pytest.mark.parametrize("weight", [float("nan"), 5.0, -0.5])
def test_bad_image_weight_refused_before_embedding(catalog, weight):
    """NaN and 5 used to be silently treated as 1.0 (images only)."""
    with pytest.raises(FclipError, match="image_weight"):
        Searcher.build("no-such-model-so-loading-would-fail", catalog, image_weight=weight)


@pytest.mark.parametrize("query", ["", "   ", "\t\n", "\u200b\u200b", "\x01\x02", "\u00a0\u2003"])
def test_blank_query_refused(tiny_model, catalog, store, query):
    searcher = Searcher.build(tiny_model, catalog, store=store, progress=False)
    with pytest.raises(FclipError, match="non-empty query"):
        searcher.by_text(query)


def test_k_edge_cases(tiny_model, catalog, store):
    searcher = Searcher.build(tiny_model, catalog, store=store, progress=False)
    assert len(searcher) == 12
    everything = searcher.by_text("red shirt", k=100)
    assert len(everything) == 12 and everything["rank"].tolist() == list(range(1, 13))
    assert len(searcher.by_text("red shirt", k=1)) == 1
    for k in (0, -3):
        with pytest.raises(FclipError, match="k must be"):
            searcher.by_text("red shirt", k=k)
        with pytest.raises(FclipError, match="k must be"):
            searcher.by_item("p0", k=k)


def _garbage_catalog(folder: Path) -> Catalog:
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(3):
        (folder / "images" / f"g{i}.jpg").write_bytes(b"this is not a jpeg" * (i + 1))
        rows.append({"item_id": f"g{i}", "image": f"g{i}.jpg", "text": f"garbage {i}"})
    pd.DataFrame(rows).to_csv(folder / "products.csv", index=False)
    return Catalog.from_csv(folder / "products.csv", image_root=folder / "images", name="garbage")


def test_catalog_where_every_image_failed(tiny_model, tmp_path, store):
    """Every image undecodable: used to build an empty (0, 0) index and crash on the first query."""
    cat = _garbage_catalog(tmp_path / "cat")
    with pytest.raises(CatalogError, match="no product of catalog garbage has a usable image"):
        Searcher.build(tiny_model, cat, store=store, progress=False)


def test_catalog_without_image_files_fails_before_loading_the_model(tmp_path):
    pd.DataFrame({"item_id": ["a", "b"], "image": ["a.jpg", "b.jpg"], "text": ["x", "y"]}).to_csv(
        tmp_path / "p.csv", index=False)
    cat = Catalog.from_csv(tmp_path / "p.csv", name="noimages")
    with pytest.raises(CatalogError, match="no product of catalog noimages"):
        Searcher.build("no-such-model-so-loading-would-fail", cat)


def test_query_by_image_file_and_pil(tiny_model, catalog, store, small_catalog_dir):
    searcher = Searcher.build(tiny_model, catalog, store=store, progress=False)
    path = small_catalog_dir / "images" / "p4.jpg"
    assert searcher.by_image(path, k=1)["item_id"].tolist() == ["p4"]
    assert searcher.by_image(Image.open(path), k=1)["item_id"].tolist() == ["p4"]


def test_bad_query_images(tmp_path):
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    for name, fragment in [("missing.jpg", "does not exist"), (".", "is a folder"),
                           ("garbage.jpg", "cannot use query image"), ("truncated.png", "cannot use query image")]:
        with pytest.raises(FclipError, match=fragment):
            load_query_image(tmp_path / name)
    assert load_query_image(good).size == (64, 64)


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 300 x 300 > 2 x 1000: PIL raises DecompressionBombError
    with pytest.raises(FclipError, match="too large|cannot use"):
        load_query_image(big)


def test_search_box_shows_a_space_change_in_one_line(tiny_model, catalog, store):
    """Weights fine-tuned in place after the searcher was built: the widget says so, it shows no stale results."""
    import copy

    import torch

    from fclip_workbench.widgets.search import SearchBox

    model = copy.deepcopy(tiny_model)
    box = SearchBox(Searcher.build(model, catalog, store=store, progress=False), query="red shirt", k=3)
    assert any(o.get("output_type") == "display_data" for o in box.out.outputs)
    with torch.no_grad():
        next(model.model.parameters()).add_(0.25)
    box.run()
    (only,) = box.out.outputs
    assert only["name"] == "stderr" and "this searcher was made in space" in only["text"]
    assert only["text"].count("\n") == 1
