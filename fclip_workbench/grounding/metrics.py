"""Scores of a grounding map against a garment mask, and the two baselines every table shows.

All maps and masks are in the image's own pixels: map (H, W) float, mask (H, W) bool.
- `pointing_game`: is the map's maximum inside the mask, grown by a tolerance? By default
  relative to the image: 15/375 (4 %) of its shorter side. The pointing game (Zhang et al. 2016;
  TorchRay's reference `PointingGame`) grows masks by 15 px at PASCAL VOC 2007's own resolution,
  whose photos are mostly 500 x 375 (COCO's 640 x 480 gives 3.1 %), so a 375-px photo gets their
  15 px, a 64-px teaching image 2.6 px and a 550-px CCP photo 22 px: the score does not depend on
  the resolution, and a small image is not all "near" its mask.
  Ties (a flat map) score the share of maximal pixels that hit, so the uniform map scores the
  (grown) mask's area share: chance level.
- `energy_share`: share of the map's positive mass inside the mask.
- `topk_iou`: IoU of the map's top k% pixels with the mask (k = the mask's own area share by
  default, so a perfect map scores 1); ties broken by a fixed random order.
- `deletion_auc`: similarity as the most-attributed pixels are replaced by the mean colour, in
  `steps` equal steps, area under that curve (lower = more faithful). Needs the model.
Baselines: `centre_map` (a Gaussian at the image centre) and `uniform_map`.

Example:
    >>> mask = np.zeros((4, 4), bool); mask[:2, :2] = True
    >>> m = np.zeros((4, 4)); m[0, 0] = 1
    >>> pointing_game(m, mask, tolerance=0), energy_share(m, mask)
    (1.0, 1.0)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from fclip_workbench.errors import InvalidArgumentError

NON_GARMENT = ("null", "skin", "hair")  # mask labels that are no garment to point at
POINTING_TOLERANCE = 15 / 375  # share of the image's shorter side: 15 px on a 500 x 375 VOC photo


def pointing_tolerance(shape: tuple[int, ...], share: float = POINTING_TOLERANCE) -> float:
    """The pointing game's tolerance in px for an image of `shape` (H, W, ...): `share` x the shorter side.

    >>> pointing_tolerance((375, 500)), round(pointing_tolerance((64, 64)), 2)
    (15.0, 2.56)
    """
    return float(share) * min(shape[:2])


def _check(map_: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    map_, mask = np.asarray(map_, np.float64), np.asarray(mask, bool)
    if map_.ndim != 2 or map_.shape != mask.shape:
        raise InvalidArgumentError(f"map {map_.shape} and mask {mask.shape} must be the same (H, W) shape")
    if not mask.any():
        raise InvalidArgumentError("the mask is empty: nothing to point at")
    if not np.isfinite(map_).all():
        raise InvalidArgumentError("the map has NaN or infinite values")
    return map_, mask


def pointing_game(map_: np.ndarray, mask: np.ndarray, tolerance: float | None = None) -> float:
    """1.0 when the map's maximum falls in the mask grown by `tolerance` px (default None:
    `pointing_tolerance(shape)`, 15/375 of the shorter side); ties: the share that hit.

    >>> pointing_game(np.ones((3, 3)), np.eye(3, dtype=bool), tolerance=0)
    0.3333333333333333
    """
    map_, mask = _check(map_, mask)
    tolerance = pointing_tolerance(mask.shape) if tolerance is None else float(tolerance)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise InvalidArgumentError(f"pointing tolerance must be a distance in px >= 0, got {tolerance!r}")
    if tolerance > 0:  # grow the mask by `tolerance` px (Euclidean)
        mask = ndimage.distance_transform_edt(~mask) <= tolerance
    top = map_ >= map_.max()
    return float(mask[top].mean())


def energy_share(map_: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's positive mass inside the mask (a map with no positive mass: the mask's area share)."""
    map_, mask = _check(map_, mask)
    pos = np.clip(map_, 0, None)
    total = pos.sum()
    return float(mask.mean()) if total <= 0 else float(pos[mask].sum() / total)


def _top_pixels(map_: np.ndarray, frac: float, seed: int = 0) -> np.ndarray:
    """Boolean (H, W): the `frac` highest pixels, ties broken by a fixed random order."""
    n = max(1, int(round(frac * map_.size)))
    jitter = np.random.default_rng(seed).random(map_.size)
    order = np.lexsort((jitter, -map_.ravel()))  # by value (desc), then the random key
    top = np.zeros(map_.size, bool)
    top[order[:n]] = True
    return top.reshape(map_.shape)


def topk_iou(map_: np.ndarray, mask: np.ndarray, k: float | None = None) -> float:
    """IoU of the top `k` share of the map's pixels (default: the mask's area share) with the mask."""
    map_, mask = _check(map_, mask)
    frac = float(mask.mean()) if k is None else float(k)
    if not 0 < frac <= 1:
        raise InvalidArgumentError(f"k must be a share in (0, 1], got {k}")
    top = _top_pixels(map_, frac)
    return float((top & mask).sum() / (top | mask).sum())


def deletion_curve(map_: np.ndarray, image: np.ndarray, score: Callable[[Sequence[np.ndarray]], np.ndarray],
                   fill: Sequence[int] = (124, 117, 104), steps: int = 10) -> np.ndarray:
    """Similarity (steps + 1,) after removing 0, 1/steps, ..., all of the pixels, most-attributed first."""
    image = np.asarray(image, np.uint8)
    if image.shape[:2] != np.shape(map_):
        raise InvalidArgumentError(f"image {image.shape[:2]} and map {np.shape(map_)} sizes differ")
    order = np.lexsort((np.random.default_rng(0).random(image.shape[0] * image.shape[1]),
                        -np.asarray(map_, np.float64).ravel()))
    frames = []
    for i in range(steps + 1):
        n = int(round(i / steps * order.size))
        flat = image.reshape(-1, 3).copy()
        flat[order[:n]] = fill
        frames.append(flat.reshape(image.shape))
    return np.asarray(score(frames), np.float64)


def deletion_auc(map_: np.ndarray, image: np.ndarray, score: Callable[[Sequence[np.ndarray]], np.ndarray],
                 fill: Sequence[int] = (124, 117, 104), steps: int = 10) -> float:
    """Area under `deletion_curve` over the removed share 0..1 (trapezoids): lower = more faithful."""
    curve = deletion_curve(map_, image, score, fill, steps)
    return float(np.trapezoid(curve, dx=1.0 / steps))


def centre_map(shape: tuple[int, int], sigma: float = 0.25) -> np.ndarray:
    """Baseline: a Gaussian at the image centre, `sigma` x the side in each direction.

    >>> np.unravel_index(centre_map((5, 7)).argmax(), (5, 7))
    (np.int64(2), np.int64(3))
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-(((yy - (h - 1) / 2) / (sigma * h)) ** 2 + ((xx - (w - 1) / 2) / (sigma * w)) ** 2) / 2)


def uniform_map(shape: tuple[int, int]) -> np.ndarray:
    """Baseline: every pixel the same (scores chance level)."""
    return np.ones(shape)


def grounding_scores(map_: np.ndarray, mask: np.ndarray, tolerance: float | None = None,
                     k: float | None = None) -> dict[str, float]:
    """pointing, energy and IoU of one map in one dict (deletion needs the model: `deletion_auc`)."""
    return {"pointing": pointing_game(map_, mask, tolerance), "energy": energy_share(map_, mask),
            "iou": topk_iou(map_, mask, k)}


# ------------------------------------------------------------------ scoring methods over a catalog with masks
def mask_legend(catalog) -> list[str] | None:
    """Label names of a catalog whose masks are label-index images (value i = garment `names[i]`, as
    CCP's), read from the `label_list.json` beside its images; None for binary masks (one garment each).

    Decided by the data, not the catalog's name: a subset or renamed copy ("ccp-heldout") is the same data.
    """
    root = getattr(catalog, "image_root", None)
    if root is None or not (Path(root) / "label_list.json").is_file():
        return None
    from fclip_workbench.data.datasets.ccp import ccp_labels

    return ccp_labels(root)


def mask_queries(catalog, row: int, min_share: float = 0.02) -> list[tuple[str, np.ndarray]]:
    """(query, (H, W) bool mask) pairs of one product of a catalog with a `mask` column.

    Label-index masks (a `mask_legend`, e.g. CCP and its held-out subset): one query per garment label
    covering >= `min_share` of the photo (not null, skin or hair); binary masks (the teaching
    catalog's 0/255): one query, the product's `garment` (else its text), over the whole mask.
    """
    from PIL import Image

    r = catalog.table.iloc[row]
    if "mask" not in catalog.table.columns or not isinstance(r["mask"], str) or not r["mask"]:
        raise InvalidArgumentError(f"product {r['item_id']!r} has no mask; grounding scores need a catalog with "
                                   "masks (CCP or the teaching catalog)")
    mask = np.asarray(Image.open(catalog.image_root / r["mask"]))
    names = mask_legend(catalog)
    if names is not None:
        if mask.max(initial=0) >= len(names):
            raise InvalidArgumentError(f"mask {r['mask']} has label {int(mask.max())}, the label list only "
                                       f"{len(names)} labels")
        return [(names[v], mask == v) for v in np.unique(mask)
                if names[v] not in NON_GARMENT and (mask == v).mean() >= min_share]
    return [(str(r["garment"]) if "garment" in catalog.table.columns else str(r["text"]), mask > 0)]


def grounding_table(model, catalog, rows, methods: Sequence[str], deletion_steps: int = 0,
                    tolerance: float | None = None):
    """Mean pointing / energy / IoU (and deletion AUC when `deletion_steps`) per method and per
    baseline over the products `rows`, plus seconds per map: a DataFrame, one row per method.

    >>> grounding_table(model, resolve_data("teaching"), range(5), ["grad_eclip"])   # doctest: +SKIP
    """
    import pandas as pd

    from fclip_workbench.grounding.maps import GroundingExplainer, load_image

    explainers = {m: GroundingExplainer(model, method=m) for m in methods}
    scores: dict[str, dict[str, list]] = {name: {} for name in [*methods, "centre", "uniform"]}
    secs: dict[str, list] = {m: [] for m in methods}
    for row in rows:
        path = catalog.image_path(row)
        queries = mask_queries(catalog, row)
        if not queries:
            continue
        img = np.asarray(load_image(path))
        texts = [q for q, _ in queries]
        maps: dict[str, np.ndarray] = {}
        for meth, ex in explainers.items():
            maps[meth] = ex.attribute(img, texts)
            secs[meth].append(ex.last_seconds_ / len(texts))
        maps["centre"] = np.stack([centre_map(img.shape[:2])] * len(texts))
        maps["uniform"] = np.stack([uniform_map(img.shape[:2])] * len(texts))
        some = next(iter(explainers.values()))
        for j, (text, mask) in enumerate(queries):
            scorer = some.scorer(text) if deletion_steps else None
            for name, m in maps.items():
                row_scores = grounding_scores(m[j], mask, tolerance)
                if scorer is not None:  # deletion_steps asked
                    row_scores["deletion AUC"] = deletion_auc(m[j], img, scorer, some.fill, deletion_steps)
                for k, v in row_scores.items():
                    scores[name].setdefault(k, []).append(v)
    table = pd.DataFrame({name: {k: float(np.mean(v)) for k, v in d.items()} for name, d in scores.items()}).T
    table["s/map"] = [float(np.mean(secs[n])) if secs.get(n) else np.nan for n in table.index]
    table["pairs"] = [len(scores[n].get("pointing", [])) for n in table.index]
    return table
