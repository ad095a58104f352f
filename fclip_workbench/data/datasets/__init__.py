"""Loaders for the real data sets (KAGL, Fashion-MNIST, CCP) and `open_catalog` to detect them.

Example:
    >>> cat = open_catalog("../shared/data/kagl")          # doctest: +SKIP
    >>> cat.name, len(cat)                                 # doctest: +SKIP
    ('kagl', 39953)
"""
from __future__ import annotations

from pathlib import Path

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import CatalogError
from fclip_workbench.data.datasets.ccp import load_ccp
from fclip_workbench.data.datasets.fmnist import FMNIST_CLASSES, FMNIST_COMMON_NAMES, load_fashion_mnist
from fclip_workbench.data.datasets.kind import catalog_kind
from fclip_workbench.data.datasets.kagl import KAGL_ATTRIBUTES, load_kagl
from fclip_workbench.data.datasets.teaching import make_teaching_catalog

__all__ = ["open_catalog", "detect_format", "catalog_kind", "load_kagl", "load_fashion_mnist", "load_ccp", "FMNIST_CLASSES",
           "FMNIST_COMMON_NAMES",
           "KAGL_ATTRIBUTES", "make_teaching_catalog"]


TABLE_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}


def detect_format(path: Path) -> str:
    """'kagl', 'ccp', 'fmnist', 'teaching', 'csv', 'parquet' or 'folder' for a path.

    A folder made by `make_teaching_catalog` (teaching.json + catalog.csv) is
    'teaching'; any other folder with a catalog.csv is 'csv'.
    """
    path = Path(path)
    if path.is_file():
        return TABLE_SUFFIXES.get(path.suffix.lower(), "unknown")
    if (path / "styles.csv").is_file():
        return "kagl"
    if (path / "teaching.json").is_file() and (path / "catalog.csv").is_file():
        return "teaching"
    if (path / "catalog.csv").is_file():
        return "csv"
    if (path / "label_list.json").is_file() and (path / "photos").is_dir():
        return "ccp"
    if (path / "t10k-images-idx3-ubyte.gz").is_file() or (path / "t10k-images-idx3-ubyte").is_file():
        return "fmnist"
    if path.is_dir():
        return "folder"
    return "unknown"


def open_catalog(path: str | Path, fmt: str = "auto", **kwargs) -> Catalog:
    """Open a catalog from a data folder or table file; `fmt` overrides detection.

    CSV/Parquet tables take `image_root`, `id_col`, `text_col`, `image_col` keyword arguments.
    A teaching-catalog folder opens as the catalog named "teaching", every row.
    Behaviour never follows that name: `catalog_kind` reads what the rows are, so
    `resolve_model("auto", catalog)` picks the teaching model for any copy of them.

    >>> open_catalog(make_teaching_catalog("/tmp/teach", n=60)   # doctest: +SKIP
    ...              .image_root).name
    'teaching'
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"No catalog at {path}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "kagl":
        return load_kagl(path, **kwargs)
    if fmt == "ccp":
        return load_ccp(path, **kwargs)
    if fmt == "fmnist":
        return load_fashion_mnist(path, **kwargs)
    if fmt == "teaching":
        kwargs.setdefault("image_root", path)
        kwargs.setdefault("name", "teaching")
        return Catalog.from_csv(path / "catalog.csv", **kwargs)
    if fmt == "csv":
        if path.is_dir():
            path = path / "catalog.csv"
        kwargs.setdefault("image_root", path.parent)
        return Catalog.from_csv(path, **kwargs)
    if fmt == "parquet":
        kwargs.setdefault("image_root", path.parent)
        return Catalog.from_parquet(path, **kwargs)
    if fmt == "folder":
        return Catalog.from_folder(path)
    raise CatalogError(f"Cannot tell what catalog {path} is (format {fmt!r}); use fmt= one of "
                       "kagl, ccp, fmnist, teaching, csv, parquet, folder")
