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

from ..catalog import Catalog
from ..errors import CatalogError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): uint8 images (n, 28, 28) or labels (n,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise CatalogError(f"{path} is not a uint8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise CatalogError(f"{stem}(.gz) not found in {root}; install it with `apt-get install dataset-fashion-mnist`")


def load_fashion_mnist(root: str | Path = DEBIAN_DIR, split: str = "test", limit: int | None = None,
                       cache_dir: str | Path | None = None, invert: bool = False) -> Catalog:
    """Fashion-MNIST as a catalog; text = class name, attribute `label`.

    `invert=True` draws garments dark on white, like catalog product shots.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = Path(root)
    prefix = "t10k" if split == "test" else "train"
    images = read_idx(_idx(root, f"{prefix}-images-idx3-ubyte"))  # (n, 28, 28)
    labels = read_idx(_idx(root, f"{prefix}-labels-idx1-ubyte"))  # (n,)
    n = len(images) if limit is None else min(limit, len(images))
    cache = Path(cache_dir or os.environ.get("FCLIP_CACHE", Path.home() / ".cache" / "fclip-workbench"))
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
