"""Loaders on the real data sets (skipped, with the reason, when they are absent) and the teaching catalog."""
from pathlib import Path

import numpy as np
import pytest

from fclip_workbench.datasets import FMNIST_CLASSES, detect_format, load_ccp, load_fashion_mnist, load_kagl, \
    make_teaching_catalog, open_catalog
from fclip_workbench.datasets.ccp import ccp_labels, load_mask
from fclip_workbench.datasets.fmnist import DEBIAN_DIR, read_idx
from tests.conftest import SHARED_DATA

KAGL = SHARED_DATA / "kagl"
CCP = SHARED_DATA / "ccp"
need_kagl = pytest.mark.skipif(not (KAGL / "styles.csv").is_file(), reason=f"KAGL not found at {KAGL}")
need_ccp = pytest.mark.skipif(not (CCP / "label_list.json").is_file(), reason=f"CCP not found at {CCP}")
need_fmnist = pytest.mark.skipif(not DEBIAN_DIR.is_dir(),
                                 reason="Fashion-MNIST absent: apt-get install dataset-fashion-mnist")


@need_kagl
def test_kagl_every_row_kept_and_missing_images_reported():
    cat = load_kagl(KAGL)
    n_images = len(list((KAGL / "images").glob("*.jpg")))
    assert len(cat) == 39953
    missing = [p for p in cat.problems if p.field == "image"]
    assert len(missing) == len(cat) - n_images == 344
    assert all("missing file" in p.reason and p.line is not None for p in missing)
    assert {"articleType", "baseColour", "gender"} <= set(cat.attributes)
    assert detect_format(KAGL) == "kagl"


@need_fmnist
def test_fashion_mnist_idx_and_catalog(tmp_path):
    images = read_idx(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,) and labels.max() == 9
    cat = load_fashion_mnist(DEBIAN_DIR, split="test", limit=20, cache_dir=tmp_path)
    assert len(cat) == 20 and not cat.problems
    assert cat.table.label.iloc[0] == FMNIST_CLASSES[labels[0]]
    assert (np.asarray(__import__("PIL.Image").Image.open(cat.image_path(0))) == images[0]).all()


@need_ccp
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
    assert open_catalog(tmp_path / "a").name == "teaching" or len(open_catalog(tmp_path / "a")) == 24
