"""Cross-domain retrieval, as the FashionCLIP paper describes it: a garment crop from a street photo (CCP)
queries catalog packshots (KAGL); precision@10 is the share of the 10 nearest packshots whose articleType
is one the crop's CCP label maps to (`fclip_workbench/data/ccp_kagl_articletypes.csv`, stated and small).

Only CCP photos held out from fclip-mini v2's training (`ccp_is_heldout`) are used; crops are cut from the
pixel masks (`garment_boxes`, 10 % margin) and written as small JPEGs, so their vectors are cached by content.

Example:
    >>> mapping = load_mapping()
    >>> mapping["sneakers"]
    ('Casual Shoes', 'Sports Shoes')
    >>> crops = ccp_crops("../shared/data/ccp", "/tmp/crops", mapping)        # doctest: +SKIP
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.data.datasets.ccp import ccp_is_heldout, ccp_labels, garment_boxes, load_mask
from fclip_workbench.errors import CatalogError

MAPPING_FILE = Path(__file__).resolve().parents[1] / "data" / "ccp_kagl_articletypes.csv"
CROP_SIDE = 128  # longest side of a written crop (px)
CROP_MARGIN = 0.1  # box margin, share of the box
MIN_SHARE = 0.01  # smallest garment kept, share of the photo


def load_mapping(path: str | Path = MAPPING_FILE) -> dict[str, tuple[str, ...]]:
    """CCP label -> KAGL article types it counts as ("|"-separated in the CSV)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {r["ccp_label"].strip(): tuple(t.strip() for t in r["kagl_articleTypes"].split("|") if t.strip())
                for r in csv.DictReader(f)}


def ccp_crops(root: str | Path, out_dir: str | Path, mapping: dict[str, tuple[str, ...]],
              limit: int | None = None) -> tuple[Catalog, dict[str, int]]:
    """Garment crops of the held-out CCP photos whose label is mapped: (catalog "ccp-crops", unmapped counts).

    The catalog's attribute `ccp_label` is the crop's CCP label; `photo` its photo id.
    """
    root, out_dir = Path(root), Path(out_dir)
    names = ccp_labels(root)
    photos = sorted((root / "photos").glob("*.jpg"))
    if not photos:
        raise CatalogError(f"no CCP photos (*.jpg) in {root / 'photos'}")
    held = [p for p, h in zip(photos, ccp_is_heldout([p.stem for p in photos])) if h][:limit]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    unmapped: dict[str, int] = {}
    for p in held:
        mask_path = root / "masks" / f"{p.stem}.png"
        if not mask_path.is_file():
            continue
        mask = load_mask(mask_path)
        img = Image.open(p).convert("RGB")
        if img.size != (mask.shape[1], mask.shape[0]):
            img = img.resize((mask.shape[1], mask.shape[0]), Image.Resampling.BICUBIC)
        for label, (left, top, right, bottom) in garment_boxes(mask, names, MIN_SHARE):
            if label not in mapping:
                unmapped[label] = unmapped.get(label, 0) + 1
                continue
            dx, dy = int(CROP_MARGIN * (right - left)), int(CROP_MARGIN * (bottom - top))
            crop = img.crop((max(0, left - dx), max(0, top - dy), min(img.width, right + dx),
                             min(img.height, bottom + dy)))
            crop.thumbnail((CROP_SIDE, CROP_SIDE), Image.Resampling.BICUBIC)
            name = f"{p.stem}-{label}.jpg"
            crop.save(out_dir / name, quality=90)
            rows.append({"item_id": f"ccp:{p.stem}:{label}", "image": name, "text": label, "ccp_label": label,
                         "photo": p.stem})
    if not rows:
        raise CatalogError(f"no mapped garment crops in the {len(held)} held-out CCP photos of {root}")
    return Catalog(pd.DataFrame(rows), image_root=out_dir, name="ccp-crops"), unmapped


@dataclass
class CrossDomain:
    """Precision@k of crops retrieving packshots, per crop and per CCP label, for one model."""

    labels: list[str]  # (n_crops,) CCP label of each crop
    hits: np.ndarray  # (n_crops,) precision@k of each crop
    top: np.ndarray  # (n_crops, k) gallery positions retrieved, best first
    k: int

    def by_label(self) -> pd.DataFrame:
        """One row per CCP label: n crops, mean precision@k."""
        t = pd.DataFrame({"ccp_label": self.labels, "p": self.hits})
        return t.groupby("ccp_label").p.agg(["size", "mean"]).rename(columns={"size": "n", "mean": f"P@{self.k}"})


def crop_precision(crop_vectors: np.ndarray, crop_labels: list[str], gallery_vectors: np.ndarray,
                   gallery_types: list[str], mapping: dict[str, tuple[str, ...]], k: int = 10) -> CrossDomain:
    """Precision@k of each crop (its k nearest packshots by cosine; relevant: a mapped article type).

    crop_vectors: (n_crops, dim), gallery_vectors: (n_gallery, dim), both unit rows of one model's space.

    >>> g = np.eye(3, dtype=np.float32); q = g[:1]
    >>> crop_precision(q, ["jeans"], g, ["Jeans", "Tops", "Jeans"], {"jeans": ("Jeans",)}, k=2).hits.tolist()
    [0.5]
    """
    if crop_vectors.shape[1] != gallery_vectors.shape[1]:
        raise CatalogError(f"crop vectors have {crop_vectors.shape[1]} dimensions, the gallery "
                           f"{gallery_vectors.shape[1]}: they must come from one model")
    k = min(k, len(gallery_vectors))
    sims = crop_vectors @ gallery_vectors.T  # (n_crops, n_gallery)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (n_crops, k)
    types = np.asarray(gallery_types, dtype=object)
    hits = np.array([np.isin(types[row], mapping[lab]).mean() for row, lab in zip(top, crop_labels)])  # (n_crops,)
    return CrossDomain(list(crop_labels), hits, top, k)
