"""The fclip-mini v2 training catalog: KAGL products (with common garment names) plus CCP garment crops
and whole street photos of the CCP training photos (the held-out photos are never written or read).

KAGL names garments the way its shop does ("Tshirts", "Casual Shoes"); users say
"t-shirt" or "sneakers". `KAGL_ALIASES` gives each main article type its common
name, used by extra caption templates (`V2_CAPTIONS`).

Example:
    >>> kagl_alias("Tshirts")
    't-shirt'
    >>> mixed, record = v2_catalog(kagl_catalog, "../shared/data/ccp", "runs/v2/ccp-data")   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.data.datasets.ccp import CCP_HELDOUT_FRACTION, ccp_training_rows
from fclip_workbench.errors import CatalogError
from fclip_workbench.data.prompts import KAGL_CAPTIONS

KAGL_ALIASES: dict[str, str] = {
    "Tshirts": "t-shirt", "Tops": "top", "Shirts": "shirt", "Sweaters": "pullover sweater",
    "Sweatshirts": "sweatshirt", "Jackets": "jacket or coat", "Rain Jacket": "coat", "Blazers": "blazer",
    "Dresses": "dress", "Skirts": "skirt", "Jeans": "jeans", "Trousers": "trousers", "Track Pants": "trousers",
    "Shorts": "shorts", "Leggings": "leggings", "Capris": "trousers", "Casual Shoes": "sneakers",
    "Sports Shoes": "sneakers", "Formal Shoes": "shoes", "Heels": "heels", "Flats": "flats",
    "Sandals": "sandals", "Sports Sandals": "sandals", "Flip Flops": "sandals", "Handbags": "bag",
    "Backpacks": "bag", "Clutches": "bag", "Duffel Bag": "bag", "Messenger Bag": "bag", "Laptop Bag": "bag",
    "Wallets": "wallet", "Belts": "belt", "Caps": "hat", "Hat": "hat", "Scarves": "scarf", "Watches": "watch",
    "Sunglasses": "sunglasses", "Socks": "socks", "Kurtas": "tunic", "Tunics": "tunic", "Boots": "boots",
}

V2_CAPTIONS: tuple[str, ...] = KAGL_CAPTIONS + (
    "{alias}",
    "a photo of a {alias}",
    "a {baseColour} {alias}",
    "a photo of {garment}",
    "a person wearing {garment}",
)


def kagl_alias(article_type: str) -> str:
    """The common name of a KAGL article type ("" when none is listed)."""
    return KAGL_ALIASES.get(str(article_type), "")


def v2_catalog(kagl: Catalog, ccp_root: str | Path, crops_dir: str | Path,
               heldout: float = CCP_HELDOUT_FRACTION, seed: int = 0, repeat: int = 1,
               keep: np.ndarray | None = None) -> tuple[Catalog, dict]:
    """(KAGL rows + CCP training rows as one catalog with absolute image paths, record for training.json).

    KAGL rows keep their ids, text and attributes (so the KAGL split is the one
    the id rule gives for KAGL alone) and come first (the held-out products scored
    during training are KAGL's); CCP rows follow, from the training photos only,
    `repeat` times each (ids "<id>#k" for k > 1; the same image, augmented anew:
    CCP is small beside KAGL). `keep` ((n,) bool over KAGL rows, None: all) drops
    the other KAGL rows.
    """
    if "articleType" not in kagl.table.columns:
        raise CatalogError(f"recipe mini-v2 trains on KAGL (a catalog with articleType); got {kagl.name!r} "
                           f"with columns {list(kagl.table.columns)}")
    ccp_root = Path(ccp_root)
    crops, split = ccp_training_rows(ccp_root, crops_dir, heldout, seed)
    table = kagl.table.copy()
    table["image"] = [str(kagl.image_path(r)) if table["image"].iat[r] else "" for r in range(len(table))]
    if keep is not None:
        table = table[np.asarray(keep, dtype=bool)].reset_index(drop=True)
    table["alias"] = table["articleType"].map(kagl_alias)
    table["garment"] = ""
    copies = [crops.assign(item_id=crops["item_id"] + (f"#{k}" if k > 1 else "")) for k in range(1, repeat + 1)]
    mixed = pd.concat([table, *copies], ignore_index=True).fillna("")
    cat = Catalog(mixed, image_root=None, name=f"{kagl.name}+ccp")
    record = {"kagl_rows": len(table), "kagl_rows_dropped": len(kagl.table) - len(table),
              "ccp_rows": len(crops), "ccp_repeat": repeat,
              "ccp_crops": int((crops["garment"] != "").sum()), "ccp_photos": int((crops["garment"] == "").sum()),
              "ccp_root": str(ccp_root), "ccp_split": split}
    return cat, record
