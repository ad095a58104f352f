"""Loaders on the real data sets (skipped, with the reason, when they are absent) and the teaching catalog.

Data-set tests carry `needs_data(name)` (tests/conftest.py): they skip with the reason when the
data set is absent, and fail instead under CI. Locations come from `paths.find_dataset`.
"""
from pathlib import Path

import numpy as np
import pytest

from fclip_workbench.data.datasets import FMNIST_CLASSES, detect_format, load_ccp, load_fashion_mnist, load_kagl, \
    make_teaching_catalog, open_catalog
from fclip_workbench.data.datasets.ccp import ccp_labels, load_mask
from fclip_workbench.data.datasets.fmnist import DEBIAN_DIR, read_idx
from fclip_workbench.errors import CatalogError
from fclip_workbench.paths import find_dataset
from tests.conftest import SHARED_DATA

# import-time paths (safe when absent: the tests that use them carry needs_data)
KAGL = find_dataset("kagl") or SHARED_DATA / "kagl"
CCP = find_dataset("ccp") or SHARED_DATA / "ccp"
FMNIST = find_dataset("fmnist") or DEBIAN_DIR


@pytest.mark.needs_data("kagl")
def test_kagl_every_row_kept_and_missing_images_reported():
    cat = load_kagl(KAGL)
    n_images = len(list((KAGL / "images").glob("*.jpg")))
    assert len(cat) == 39953
    missing = [p for p in cat.problems if p.field == "image"]
    assert len(missing) == len(cat) - n_images == 344
    assert all("missing file" in p.reason and p.line is not None for p in missing)
    assert {"articleType", "baseColour", "gender"} <= set(cat.attributes)
    assert detect_format(KAGL) == "kagl"


@pytest.mark.needs_data("fmnist")
def test_fashion_mnist_idx_and_catalog(tmp_path):
    from fclip_workbench.data.datasets.fmnist import _idx
    images = read_idx(_idx(FMNIST, "t10k-images-idx3-ubyte"))
    labels = read_idx(_idx(FMNIST, "t10k-labels-idx1-ubyte"))
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,) and labels.max() == 9
    cat = load_fashion_mnist(FMNIST, split="test", limit=20, cache_dir=tmp_path)
    assert len(cat) == 20 and not cat.problems
    assert cat.table.label.iloc[0] == FMNIST_CLASSES[labels[0]]
    assert (np.asarray(__import__("PIL.Image").Image.open(cat.image_path(0))) == images[0]).all()


@pytest.mark.needs_data("ccp")
def test_ccp_labels_come_from_the_masks():
    cat = load_ccp(CCP, limit=5)
    names = ccp_labels(CCP)
    mask = load_mask(CCP / cat.table["mask"].iloc[0])
    present = {names[i] for i in np.unique(mask)} - {"null", "skin", "hair"}
    assert set(cat.table["labels"].iloc[0].split("|")) == present
    assert cat.texts[0].startswith("a person wearing")


def test_teaching_catalog_is_deterministic_with_masks(tmp_path):
    a = make_teaching_catalog(tmp_path / "a", n=24, seed=3)
    b = make_teaching_catalog(tmp_path / "b", n=24, seed=3)
    assert a.texts == b.texts and not a.problems
    from PIL import Image
    img = np.asarray(Image.open(a.image_path(0)))
    mask = np.asarray(Image.open(Path(a.image_root) / a.table["mask"].iloc[0])) > 0
    assert 0.05 < mask.mean() < 0.8
    assert img[~mask].mean() > 240  # background is white-ish, the garment is inside the mask
    # a teaching folder opens as *the* teaching catalog (its name picks the teaching model), every row
    assert detect_format(tmp_path / "a") == "teaching"
    opened = open_catalog(tmp_path / "a")
    assert (opened.name, len(opened), opened.texts) == ("teaching", 24, a.texts)
    assert opened.image_path(0) == a.image_path(0)


def test_open_catalog_table_files_and_folders(tmp_path):
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "catalog.csv").write_text("item_id,image,text\na,,red dress\n")
    assert detect_format(tmp_path / "shop") == "csv"
    assert open_catalog(tmp_path / "shop").ids == ["a"]
    (tmp_path / "excel.txt").write_bytes("item_id\timage\ttext\r\nb\t\tblue shirt\r\n".encode("utf-16"))
    cat = open_catalog(tmp_path / "excel.txt")  # Excel's "Unicode text": UTF-16 with BOM, tab-separated
    assert (cat.ids, cat.texts) == (["b"], ["blue shirt"])
    (tmp_path / "x.parquet").mkdir()
    with pytest.raises(CatalogError, match="is a folder, not a Parquet file"):
        open_catalog(tmp_path / "x.parquet", fmt="parquet")
    with pytest.raises(CatalogError, match="No catalog at"):
        open_catalog(tmp_path / "nowhere")


def test_damaged_fashion_mnist_and_ccp_folders_are_catalog_errors(tmp_path):
    idx = tmp_path / "t10k-labels-idx1-ubyte"
    idx.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(7))  # says 10 labels, has 7
    with pytest.raises(CatalogError, match="truncated or damaged"):
        read_idx(idx)
    idx.write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 9]))
    assert read_idx(idx).tolist() == [1, 2, 9]
    with pytest.raises(CatalogError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(CatalogError, match="CCP label list not found"):
        load_ccp(tmp_path)
