"""Metrics of the FashionCLIP paper's protocol: retrieval (Recall@K, HITS@K, MRR) and
zero-shot classification (weighted F1).

Retrieval convention: query i's relevant items are those with `relevant[i, j]`
True (by default only item i: the product's own image for its own text).
Recall@K is the fraction of relevant items found in the top K, averaged over
queries; HITS@K the fraction of queries with at least one relevant item in
the top K; MRR the mean of 1 / rank of the first relevant item.

Example:
    >>> sims = np.array([[0.9, 0.1], [0.8, 0.3]])   # 2 text queries x 2 images
    >>> retrieval_metrics(sims, ks=(1,))["R@1"]
    0.5
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import f1_score


def ranks_of_relevant(sims: np.ndarray, relevant: np.ndarray | None = None) -> list[np.ndarray]:
    """1-based ranks of each query's relevant items. sims: (n_queries, n_items)."""
    if sims.ndim != 2:
        raise ValueError(f"sims must be 2-D (n_queries, n_items), got shape {sims.shape}")
    n_q, n_items = sims.shape
    if relevant is None:
        if n_q != n_items:
            raise ValueError(f"Without `relevant`, sims must be square (query i matches item i), got {sims.shape}")
        relevant = np.eye(n_q, dtype=bool)
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.shape != sims.shape:
        raise ValueError(f"relevant has shape {relevant.shape}, sims {sims.shape}: they must match")
    order = np.argsort(-sims, axis=1, kind="stable")  # (q, n) item indices, best first
    rank_of = np.empty_like(order)
    np.put_along_axis(rank_of, order, np.arange(1, n_items + 1)[None, :].repeat(n_q, 0), axis=1)
    return [rank_of[i][relevant[i]] for i in range(n_q)]


def retrieval_metrics(sims: np.ndarray, relevant: np.ndarray | None = None,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K, HITS@K for each K, and MRR, averaged over queries with a relevant item."""
    ranks = [r for r in ranks_of_relevant(sims, relevant) if len(r)]
    if not ranks:
        raise ValueError("No query has a relevant item")
    out = {}
    for k in ks:
        out[f"R@{k}"] = float(np.mean([np.mean(r <= k) for r in ranks]))
        out[f"HITS@{k}"] = float(np.mean([np.any(r <= k) for r in ranks]))
    out["MRR"] = float(np.mean([1.0 / r.min() for r in ranks]))
    return out


def weighted_f1(y_true: Sequence, y_pred: Sequence) -> float:
    """F1 per class, averaged with class frequencies as weights (the paper's zero-shot figure).

    >>> weighted_f1(["a", "a", "b"], ["a", "b", "b"])
    0.6666666666666666
    """
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if not y_true:
        raise ValueError("weighted_f1 of no products is undefined (got empty label lists)")
    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def _check_probs(probs: np.ndarray, y_true_idx: Sequence[int], what: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, n_classes) float scores and (n,) int class indices, checked against each other."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true_idx)
    if probs.ndim != 2:
        raise ValueError(f"{what}: probs must be 2-D (n_items, n_classes), got shape {probs.shape}")
    if y.shape != (len(probs),):
        raise ValueError(f"{what}: y_true_idx must have shape ({len(probs)},) to match probs, got {y.shape}")
    if len(y) == 0:
        raise ValueError(f"{what} of no items is undefined (got empty arrays)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= probs.shape[1]:
        raise ValueError(f"{what}: y_true_idx must be whole numbers in [0, {probs.shape[1] - 1}], "
                         f"got values from {y.min()} to {y.max()} ({y.dtype})")
    if not np.isfinite(probs).all():
        raise ValueError(f"{what}: probs has {int((~np.isfinite(probs)).sum())} non-finite values")
    return probs, y.astype(np.int64)


def top_k_accuracy(probs: np.ndarray, y_true_idx: Sequence[int], k: int = 1) -> float:
    """Share of items whose true class is among the k highest scores (ties: lower class index first).

    >>> top_k_accuracy(np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]]), [1, 1], k=2)
    1.0
    """
    probs, y = _check_probs(probs, y_true_idx, "top_k_accuracy")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k_accuracy: k must be a whole number >= 1, got {k!r}")
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (n, min(k, n_classes))
    return float(np.mean((top == y[:, None]).any(axis=1)))


def expected_calibration_error(probs: np.ndarray, y_true_idx: Sequence[int], n_bins: int = 15) -> float:
    """Top-label ECE: items binned by confidence (max prob) into `n_bins` equal-width bins of (0, 1];
    the |accuracy - mean confidence| gap of each bin, weighted by its share of items.

    >>> expected_calibration_error(np.array([[0.9, 0.1], [0.6, 0.4]]), [0, 1], n_bins=10)
    0.35
    """
    probs, y = _check_probs(probs, y_true_idx, "expected_calibration_error")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"expected_calibration_error: n_bins must be a whole number >= 1, got {n_bins!r}")
    conf = probs.max(axis=1)  # (n,)
    correct = probs.argmax(axis=1) == y  # (n,)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (n,) bin (lo, hi]
    gap = np.abs(np.bincount(bins, correct, n_bins) - np.bincount(bins, conf, n_bins))  # per bin, summed
    return float(gap.sum() / len(y))

