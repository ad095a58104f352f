"""KAGL (Fashion Product Images Small): styles.csv + images/<id>.jpg.

Example:
    >>> cat = load_kagl("../shared/data/kagl")     # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

from fclip_workbench.data.catalog import Catalog

KAGL_ATTRIBUTES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "year", "usage")


def load_kagl(root: str | Path, check_images: bool = True) -> Catalog:
    """The KAGL catalog: text = productDisplayName, attributes = the 8 label columns."""
    root = Path(root)
    return Catalog.from_csv(root / "styles.csv", image_root=root / "images", id_col="id",
                            text_col="productDisplayName", image_template="{id}.jpg", name="kagl",
                            check_images=check_images)
