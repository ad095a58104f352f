"""Clothing Co-Parsing: street photos with pixel masks over 59 garment labels.

Each row: the photo, text = the garments present, `labels` = "|"-joined label
names present in the mask (garments only), `mask` = the mask path.

Example:
    >>> cat = load_ccp("../shared/data/ccp")          # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..catalog import Catalog

NON_GARMENT = {"null", "skin", "hair"}


def ccp_labels(root: str | Path) -> list[str]:
    return json.loads((Path(root) / "label_list.json").read_text())


def load_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 label indices into `ccp_labels()`."""
    return np.asarray(Image.open(path))


def load_ccp(root: str | Path, limit: int | None = None) -> Catalog:
    root = Path(root)
    names = ccp_labels(root)
    photos = sorted((root / "photos").glob("*.jpg"))[:limit]
    rows = []
    for p in photos:
        mask_path = root / "masks" / f"{p.stem}.png"
        present = []
        if mask_path.is_file():
            present = [names[i] for i in np.unique(load_mask(mask_path)) if names[i] not in NON_GARMENT]
        rows.append({"item_id": p.stem, "image": f"photos/{p.name}",
                     "text": "a person wearing " + ", ".join(present) if present else "",
                     "labels": "|".join(present), "mask": f"masks/{p.stem}.png" if mask_path.is_file() else ""})
    return Catalog(pd.DataFrame(rows), image_root=root, name="ccp")
