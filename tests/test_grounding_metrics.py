"""Grounding metrics: hand-computed values, the baselines' chance levels, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from fclip_workbench.analysis import metrics
from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.grounding.metrics import (POINTING_TOLERANCE, centre_map, deletion_auc, deletion_curve,
                                               energy_share, grounding_scores, pointing_game, topk_iou, uniform_map)


def square_mask(shape=(40, 60), top=5, left=30, size=10) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top:top + size, left:left + size] = True
    return m


def test_pointing_game_hit_miss_and_tolerance():
    mask = square_mask()
    m = np.zeros(mask.shape)
    m[10, 35] = 1.0  # inside
    assert pointing_game(m, mask, tolerance=0) == 1.0
    m = np.zeros(mask.shape)
    m[10, 44] = 1.0  # 5 px right of the mask (columns 30..39)
    assert pointing_game(m, mask, tolerance=0) == 0.0
    assert pointing_game(m, mask, tolerance=4) == 0.0
    assert pointing_game(m, mask, tolerance=5) == 1.0


def test_ties_score_the_share_of_maximal_pixels_that_hit():
    mask = square_mask()
    assert pointing_game(uniform_map(mask.shape), mask, tolerance=0) == pytest.approx(100 / 2400)
    m = np.zeros(mask.shape)
    m[10, 35] = m[30, 5] = 1.0  # two maxima, one in
    assert pointing_game(m, mask, tolerance=0) == 0.5


def test_energy_share_counts_positive_mass_only():
    mask = square_mask()
    m = np.zeros(mask.shape)
    m[10, 35] = 3.0
    m[30, 5] = 1.0
    m[0, 0] = -10.0  # negative evidence is not mass
    assert energy_share(m, mask) == pytest.approx(0.75)
    assert energy_share(uniform_map(mask.shape), mask) == pytest.approx(mask.mean())
    assert energy_share(-np.ones(mask.shape), mask) == pytest.approx(mask.mean())  # no positive mass: chance


def test_topk_iou_perfect_partial_and_fixed_k():
    mask = square_mask()
    assert topk_iou(mask.astype(float), mask) == 1.0
    shifted = np.roll(mask, 5, axis=1).astype(float)  # half the square overlaps
    assert topk_iou(shifted, mask) == pytest.approx(50 / 150)
    # k = 2 x the mask's share: the top 200 pixels hold the mask (100) + 100 ties picked at random
    assert topk_iou(mask.astype(float), mask, k=200 / 2400) == pytest.approx(0.5)
    with pytest.raises(InvalidArgumentError, match="k must be"):
        topk_iou(mask.astype(float), mask, k=0)


def test_uniform_topk_iou_is_near_chance_not_the_top_rows():
    mask = np.zeros((40, 60), bool)
    mask[:8] = True  # the top rows: raster-order tie breaking would score 1.0
    iou = topk_iou(uniform_map(mask.shape), mask)
    share = mask.mean()
    assert iou == pytest.approx(share / (2 - share), abs=0.05)


def test_centre_map_peaks_in_the_middle_and_baseline_scores():
    c = centre_map((41, 61))
    assert np.unravel_index(c.argmax(), c.shape) == (20, 30)
    mid = square_mask((41, 61), top=15, left=25, size=11)
    corner = square_mask((41, 61), top=0, left=0, size=8)
    assert pointing_game(c, mid) == 1.0 and pointing_game(c, corner, tolerance=0) == 0.0
    s = grounding_scores(c, mid)
    assert set(s) == {"pointing", "energy", "iou"} and s["energy"] > mid.mean()


def test_deletion_removes_the_top_pixels_first():
    img = np.full((10, 10, 3), 200, np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[:, :3] = True

    def score(frames):  # similarity = share of the mask region still intact
        return np.array([(f[:, :3] == 200).all(axis=-1).mean() for f in frames])

    good, bad = mask.astype(float), (~mask).astype(float)
    curve = deletion_curve(good, img, score, fill=(0, 0, 0), steps=10)
    assert curve[0] == 1.0 and curve[3] == 0.0 and len(curve) == 11
    assert deletion_auc(good, img, score, (0, 0, 0), 10) < deletion_auc(bad, img, score, (0, 0, 0), 10)
    with pytest.raises(InvalidArgumentError, match="sizes differ"):
        deletion_curve(np.zeros((5, 5)), img, score)


def test_bad_maps_and_masks_are_named():
    mask = square_mask()
    with pytest.raises(InvalidArgumentError, match="same"):
        pointing_game(np.zeros((3, 3)), mask)
    with pytest.raises(InvalidArgumentError, match="empty"):
        energy_share(np.zeros(mask.shape), np.zeros(mask.shape, bool))
    bad = np.zeros(mask.shape)
    bad[0, 0] = np.nan
    with pytest.raises(InvalidArgumentError, match="NaN"):
        topk_iou(bad, mask)


def test_analysis_metrics_does_not_reexport_grounding_metrics():
    """Each name has one home: grounding's metrics live in grounding.metrics only."""
    assert not hasattr(metrics, "pointing_game") and not hasattr(metrics, "deletion_auc")


# ------------------------------------------------------------------ the tolerance follows the image's size
def corner_masks(side: int) -> list[np.ndarray]:
    """Four off-centre garments, a 12/64 x 12/64 square in each quadrant, 10/64 of the side from the edges."""
    a, n = side * 10 // 64, side * 12 // 64
    out = []
    for top in (a, side - a - n):
        for left in (a, side - a - n):
            m = np.zeros((side, side), bool)
            m[top:top + n, left:left + n] = True
            out.append(m)
    return out


def mean_pointing(make_map, side: int) -> float:
    return float(np.mean([pointing_game(make_map(m), m) for m in corner_masks(side)]))


def test_baselines_score_clearly_below_a_correct_map_on_small_images():
    correct = mean_pointing(lambda m: m.astype(float), 64)  # peaks on the garment
    centre = mean_pointing(lambda m: centre_map(m.shape), 64)
    uniform = mean_pointing(lambda m: uniform_map(m.shape), 64)
    assert correct == 1.0
    assert centre <= 0.25 and uniform <= 0.25, (centre, uniform)  # a fixed 15 px: centre 0.75, uniform 0.31


@pytest.mark.parametrize("away", [0.03, 0.08])  # of the side, right of the garment's right edge
def test_the_same_geometry_scores_the_same_at_64_and_640_px(away):
    def point(m):
        ys, xs = np.nonzero(m)
        out = np.zeros(m.shape)
        out[int(ys.mean()), min(m.shape[1] - 1, xs.max() + round(away * m.shape[1]))] = 1.0
        return out

    small, big = mean_pointing(point, 64), mean_pointing(point, 640)
    assert small == big == (1.0 if away < POINTING_TOLERANCE else 0.0)
    assert mean_pointing(lambda m: uniform_map(m.shape), 64) == pytest.approx(
        mean_pointing(lambda m: uniform_map(m.shape), 640), abs=0.02)
    assert mean_pointing(lambda m: centre_map(m.shape), 64) == mean_pointing(lambda m: centre_map(m.shape), 640)


def test_tolerance_defaults_to_15_px_at_375_and_refuses_negative():
    from fclip_workbench.grounding.metrics import pointing_tolerance

    assert pointing_tolerance((375, 500)) == 15.0 and pointing_tolerance((640, 480)) == pytest.approx(480 * 15 / 375)
    mask = square_mask()
    with pytest.raises(InvalidArgumentError, match="tolerance"):
        pointing_game(mask.astype(float), mask, tolerance=-1)
