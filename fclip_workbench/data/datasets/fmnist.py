"""Fashion-MNIST from its IDX files (Debian's dataset-fashion-mnist package).

The images are written once as PNG files into a cache folder so that the
catalog is an ordinary image catalog (embedding, cache and grids all apply).

Example:
    >>> cat = load_fashion_mnist("/usr/share/datasets/fashion-mnist", split="test")   # doctest: +SKIP
    >>> cat.table["label"].iloc[0]                                                   # doctest: +SKIP
    'ankle boot'
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import CatalogError
from fclip_workbench.paths import FMNIST_DEBIAN_DIR, cache_dir as default_cache_dir, find_dataset

DEBIAN_DIR = FMNIST_DEBIAN_DIR  # Debian's dataset-fashion-mnist; `find_dataset("fmnist")` also looks elsewhere
FMNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "ankle boot")
# Each class under the common name of the KAGL article type it corresponds to (`training.mix.KAGL_ALIASES`:
# Tshirts/Tops, Trousers, Sweaters, Dresses, Jackets, Sandals, Shirts, Casual Shoes, Handbags, Boots), the
# way CLIP's authors cleaned class names; `fclip eval` scores Fashion-MNIST both ways.
FMNIST_COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "t-shirt/top": ("t-shirt", "top"), "trouser": ("trousers",), "pullover": ("pullover sweater",),
    "dress": ("dress",), "coat": ("jacket or coat",), "sandal": ("sandals",), "shirt": ("shirt",),
    "sneaker": ("sneakers",), "bag": ("bag",), "ankle boot": ("boots",),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): uint8 images (n, 28, 28) or labels (n,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if len(data) < 4 or magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise CatalogError(f"{path} is not a uint8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    need = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != need:
        raise CatalogError(f"{path} is truncated or damaged: {len(data)} bytes, shape {shape} needs {need}; "
                           "reinstall it (apt-get install --reinstall dataset-fashion-mnist)")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise CatalogError(f"{stem}(.gz) not found in {root}; install it with `apt-get install dataset-fashion-mnist`")


def load_fashion_mnist(root: str | Path | None = None, split: str = "test", limit: int | None = None,
                       cache_dir: str | Path | None = None, invert: bool = False) -> Catalog:
    """Fashion-MNIST as a catalog; text = class name, attribute `label`.

    `root` defaults to `find_dataset("fmnist")` (Debian's folder among others);
    the PNGs go to `cache_dir` (default `paths.cache_dir()`).
    `invert=True` draws garments dark on white, like catalog product shots.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, not {limit}")
    root = Path(root) if root is not None else (find_dataset("fmnist") or DEBIAN_DIR)
    prefix = "t10k" if split == "test" else "train"
    images = read_idx(_idx(root, f"{prefix}-images-idx3-ubyte"))  # (n, 28, 28)
    labels = read_idx(_idx(root, f"{prefix}-labels-idx1-ubyte"))  # (n,)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise CatalogError(f"Fashion-MNIST files in {root} disagree: images {images.shape}, labels {labels.shape}")
    n = len(images) if limit is None else min(limit, len(images))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = cache / f"fmnist-{split}{'-inv' if invert else ''}"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        f = out / f"{i:05d}.png"
        if not f.exists():
            arr = 255 - images[i] if invert else images[i]
            tmp = f.with_suffix(".tmp.png")
            Image.fromarray(arr, mode="L").save(tmp)
            os.replace(tmp, f)
    names = [FMNIST_CLASSES[int(y)] for y in labels[:n]]
    table = pd.DataFrame({"item_id": [f"{split}-{i:05d}" for i in range(n)],
                          "image": [f"{i:05d}.png" for i in range(n)], "text": names, "label": names})
    return Catalog(table, image_root=out, name=f"fmnist-{split}")
