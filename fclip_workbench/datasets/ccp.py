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
from ..errors import CatalogError

NON_GARMENT = {"null", "skin", "hair"}


def ccp_labels(root: str | Path) -> list[str]:
    """The 59 label names, index = value in the masks."""
    path = Path(root) / "label_list.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CatalogError(f"CCP label list not found: {path}; is {root} a Clothing Co-Parsing folder?") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise CatalogError(f"{path} is not a readable JSON list of labels: {e}") from e


def load_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 label indices into `ccp_labels()`."""
    return np.asarray(Image.open(path))


def load_ccp(root: str | Path, limit: int | None = None) -> Catalog:
    """CCP as a catalog (see module docstring); `limit` keeps the first photos by name."""
    root = Path(root)
    names = ccp_labels(root)
    if not (root / "photos").is_dir():
        raise CatalogError(f"CCP photos folder not found: {root / 'photos'}")
    photos = sorted((root / "photos").glob("*.jpg"))[:limit]
    rows = []
    for p in photos:
        mask_path = root / "masks" / f"{p.stem}.png"
        present = []
        if mask_path.is_file():
            values = np.unique(load_mask(mask_path))
            if values.max(initial=0) >= len(names):
                raise CatalogError(f"{mask_path} has label {int(values.max())}, but label_list.json has "
                                   f"{len(names)} labels")
            present = [names[i] for i in values if names[i] not in NON_GARMENT]
        rows.append({"item_id": p.stem, "image": f"photos/{p.name}",
                     "text": "a person wearing " + ", ".join(present) if present else "",
                     "labels": "|".join(present), "mask": f"masks/{p.stem}.png" if mask_path.is_file() else ""})
    return Catalog(pd.DataFrame(rows), image_root=root, name="ccp")
