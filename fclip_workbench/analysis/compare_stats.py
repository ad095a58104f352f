"""Paired statistics for comparing two models on the same products: F1 per class, weighted F1, and a paired
bootstrap over products (each resample draws the same products for both models).

Example:
    >>> truth, a, b = ["x", "x", "y", "y"], ["x", "x", "y", "x"], ["x", "y", "y", "y"]
    >>> codes, classes = encode([truth, a, b])
    >>> round(weighted_f1_codes(codes[0], codes[1], len(classes)), 3)
    0.733
    >>> ci = paired_bootstrap(codes[0], codes[1], codes[2], len(classes), n_boot=200, seed=0)
    >>> ci.a <= 1.0 and ci.lo <= ci.delta <= ci.hi
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fclip_workbench.errors import InvalidArgumentError

DEFAULT_BOOT = 1000  # bootstrap resamples
CI_LEVEL = 0.95  # two-sided percentile interval


def encode(label_lists: Sequence[Sequence[str]]) -> tuple[list[np.ndarray], list[str]]:
    """Each list as int codes into one sorted class list: ([(n,) int64, ...], classes)."""
    classes = sorted({str(v) for labels in label_lists for v in labels})
    index = {c: i for i, c in enumerate(classes)}
    return [np.array([index[str(v)] for v in labels], dtype=np.int64) for labels in label_lists], classes


def per_class_f1(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """((L,) F1 of each class, (L,) support): F1 = 2 tp / (n_true + n_pred), 0 where both are 0."""
    tp = np.bincount(truth[truth == pred], minlength=n_classes).astype(np.float64)  # (L,)
    n_true = np.bincount(truth, minlength=n_classes).astype(np.float64)  # (L,)
    n_pred = np.bincount(pred, minlength=n_classes).astype(np.float64)  # (L,)
    denom = n_true + n_pred
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return f1, n_true


def weighted_f1_codes(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Weighted F1 (sklearn's `average="weighted"`, `zero_division=0`) of int-coded labels."""
    f1, support = per_class_f1(truth, pred, n_classes)
    return float((f1 * support).sum() / max(support.sum(), 1.0))


@dataclass(frozen=True)
class PairedCI:
    """A metric for A and B, B - A, and the bootstrap interval of B - A."""

    a: float
    b: float
    delta: float  # b - a
    lo: float  # CI_LEVEL interval of delta
    hi: float
    n: int  # products (or queries) resampled

    @property
    def significant(self) -> bool:
        """True when the interval of B - A excludes 0."""
        return self.lo > 0 or self.hi < 0

    def describe(self) -> str:
        return f"{self.a:.3f} → {self.b:.3f} ({self.delta:+.3f}, 95% CI {self.lo:+.3f} to {self.hi:+.3f})"


def _interval(samples: np.ndarray) -> tuple[float, float]:
    tail = (1 - CI_LEVEL) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement (the same draws serve both models: paired)."""
    if n < 1:
        raise InvalidArgumentError("a bootstrap needs at least one product")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def paired_bootstrap(truth: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int,
                     n_boot: int = DEFAULT_BOOT, seed: int = 0) -> PairedCI:
    """Weighted F1 of A and B with a paired bootstrap interval of B - A over products."""
    return paired_bootstrap_stat(lambda idx, p: weighted_f1_codes(truth[idx], p[idx], n_classes),
                                 pred_a, pred_b, len(truth), n_boot, seed)


def paired_bootstrap_stat(stat: Callable[[np.ndarray, np.ndarray], float], a: np.ndarray, b: np.ndarray, n: int,
                          n_boot: int = DEFAULT_BOOT, seed: int = 0) -> PairedCI:
    """`stat(indices, values)` for A's and B's values, with a paired bootstrap interval of B - A."""
    full = np.arange(n)
    va, vb = stat(full, a), stat(full, b)
    draws = resample_indices(n, n_boot, seed)  # (n_boot, n)
    deltas = np.array([stat(idx, b) - stat(idx, a) for idx in draws])  # (n_boot,)
    lo, hi = _interval(deltas)
    return PairedCI(va, vb, vb - va, lo, hi, n)


def mean_ci(values_a: np.ndarray, values_b: np.ndarray, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> PairedCI:
    """Mean of per-item values (hits, reciprocal ranks) of A and B, with a paired bootstrap interval."""
    a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)  # (n,), (n,)
    draws = resample_indices(len(a), n_boot, seed)  # (n_boot, n)
    deltas = (b[draws] - a[draws]).mean(axis=1)  # (n_boot,)
    lo, hi = _interval(deltas)
    return PairedCI(float(a.mean()), float(b.mean()), float(b.mean() - a.mean()), lo, hi, len(a))


def per_class_bootstrap(truth: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int,
                        n_boot: int = DEFAULT_BOOT, seed: int = 0) -> list[PairedCI]:
    """F1 of each class for A and B with a paired bootstrap interval of B - A (one entry per class)."""
    fa, support = per_class_f1(truth, pred_a, n_classes)
    fb, _ = per_class_f1(truth, pred_b, n_classes)
    draws = resample_indices(len(truth), n_boot, seed)  # (n_boot, n)
    deltas = np.stack([per_class_f1(truth[i], pred_b[i], n_classes)[0] - per_class_f1(truth[i], pred_a[i], n_classes)[0]
                       for i in draws])  # (n_boot, L)
    tail = (1 - CI_LEVEL) / 2 * 100
    lo, hi = np.percentile(deltas, [tail, 100 - tail], axis=0)  # (L,), (L,)
    return [PairedCI(float(fa[c]), float(fb[c]), float(fb[c] - fa[c]), float(lo[c]), float(hi[c]), int(support[c]))
            for c in range(n_classes)]
