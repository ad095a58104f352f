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

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import CatalogError

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


# ------------------------------------------------------------------ the fixed held-out split of CCP photos
CCP_SPLIT_RULE = "ccp-photo-hash-v1"  # held out when blake2b(f"{seed}:ccp:{photo_id}") / 2**64 < fraction
CCP_HELDOUT_FRACTION = 0.3  # share of photos never trained on (grounding is scored on them)


def ccp_is_heldout(photo_ids, fraction: float = CCP_HELDOUT_FRACTION, seed: int = 0) -> np.ndarray:
    """(n,) bool: True for photos held out for evaluation (a hash of the photo id: fixed, any machine).

    >>> ccp_is_heldout(["0001", "0002", "0003"], fraction=0.0).tolist()
    [False, False, False]
    """
    import hashlib

    if not 0.0 <= fraction < 1.0:
        raise CatalogError(f"CCP held-out fraction must be in [0, 1), got {fraction!r}")
    out = np.empty(len(photo_ids), dtype=bool)
    for i, pid in enumerate(photo_ids):
        h = hashlib.blake2b(f"{seed}:ccp:{pid}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "big") / 2**64 < fraction
    return out


def heldout_photos(catalog: Catalog) -> Catalog:
    """The CCP catalog's photos held out from training (fclip-mini v2 never saw them), as "ccp-heldout".

    >>> heldout_photos(load_ccp("../shared/data/ccp")).name       # doctest: +SKIP
    'ccp-heldout'
    """
    return catalog.subset(np.flatnonzero(ccp_is_heldout(catalog.ids)), name="ccp-heldout")


def garment_boxes(mask: np.ndarray, names: list[str], min_share: float = 0.01) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(label, (left, top, right, bottom)) of each garment covering at least `min_share` of the mask.

    >>> m = np.zeros((10, 10), np.uint8); m[2:5, 3:8] = 2
    >>> garment_boxes(m, ["null", "skin", "shoes"])
    [('shoes', (3, 2, 8, 5))]
    """
    out = []
    for v in np.unique(mask):
        name = names[int(v)]
        if name in NON_GARMENT:
            continue
        ys, xs = np.nonzero(mask == v)
        if len(ys) < min_share * mask.size:
            continue
        out.append((name, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return out


def ccp_training_rows(root: str | Path, out_dir: str | Path, fraction: float = CCP_HELDOUT_FRACTION,
                      seed: int = 0, min_share: float = 0.01, margin: float = 0.1,
                      max_side: int = 192) -> tuple[pd.DataFrame, dict]:
    """Garment crops and whole photos of the training photos only, written as JPEGs to `out_dir`.

    Rows: `item_id` ("ccp:<photo>" or "ccp:<photo>:<label>"), `image` (absolute
    path), `text` (the whole photo: "a person wearing a, b and c"; a crop: its
    label), `garment` (a crop's label, "" for whole photos). The second value
    records the split: rule, seed, fraction, the held-out photo ids.

    >>> rows, split = ccp_training_rows("../shared/data/ccp", "/tmp/crops")   # doctest: +SKIP
    """
    root, out_dir = Path(root), Path(out_dir)
    names = ccp_labels(root)
    photos = sorted((root / "photos").glob("*.jpg"))
    if not photos:
        raise CatalogError(f"no CCP photos (*.jpg) in {root / 'photos'}")
    held = ccp_is_heldout([p.stem for p in photos], fraction, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for p, is_held in zip(photos, held):
        mask_path = root / "masks" / f"{p.stem}.png"
        if is_held or not mask_path.is_file():
            continue
        mask = load_mask(mask_path)
        img = Image.open(p).convert("RGB")
        if img.size != (mask.shape[1], mask.shape[0]):
            img = img.resize((mask.shape[1], mask.shape[0]), Image.Resampling.BICUBIC)
        boxes = garment_boxes(mask, names, min_share)
        if not boxes:
            continue
        labels = [n for n, _ in boxes]
        whole = out_dir / f"{p.stem}.jpg"
        _save_small(img, whole, max_side)
        listed = ", ".join(labels[:-1]) + (" and " if len(labels) > 1 else "") + labels[-1]
        rows.append({"item_id": f"ccp:{p.stem}", "image": str(whole.resolve()),
                     "text": f"a person wearing {listed}", "garment": ""})
        for name, (l, t, r, b) in boxes:
            dx, dy = int(margin * (r - l)), int(margin * (b - t))
            crop = img.crop((max(0, l - dx), max(0, t - dy), min(img.width, r + dx), min(img.height, b + dy)))
            path = out_dir / f"{p.stem}-{name}.jpg"
            _save_small(crop, path, max_side)
            rows.append({"item_id": f"ccp:{p.stem}:{name}", "image": str(path.resolve()), "text": name,
                         "garment": name})
    split = {"rule": CCP_SPLIT_RULE, "seed": seed, "fraction": fraction, "n_photos": len(photos),
             "heldout_photo_ids": [p.stem for p, h in zip(photos, held) if h]}
    return pd.DataFrame(rows, columns=["item_id", "image", "text", "garment"]), split


def _save_small(img: Image.Image, path: Path, max_side: int) -> None:
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BICUBIC)
    img.save(path, quality=92)
