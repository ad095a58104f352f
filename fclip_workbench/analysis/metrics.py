"""Metrics of the FashionCLIP paper's protocol: retrieval (Recall@K, HITS@K, MRR) and
zero-shot classification (weighted F1).

Retrieval convention: query i's relevant items are those with `relevant[i, j]`
True (by default only item i: the product's own image for its own text).
Recall@K is the fraction of relevant items found in the top K, averaged over
queries; HITS@K the fraction of queries with at least one relevant item in
the top K; MRR the mean of 1 / rank of the first relevant item.

Every metric refuses input it cannot score honestly (NaN/inf scores, lengths that do not match,
empty input, probability rows that are not distributions) with one `InvalidArgumentError` line
(a `ValueError`), never a number.

Example:
    >>> sims = np.array([[0.9, 0.1], [0.8, 0.3]])   # 2 text queries x 2 images
    >>> retrieval_metrics(sims, ks=(1,))["R@1"]
    0.5
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import f1_score

from fclip_workbench.errors import InvalidArgumentError

PROB_TOL = 1e-3  # |row sum - 1| allowed in a probability row (float32 softmax rounds to ~1e-7 per entry)


def _float_matrix(values: object, what: str, name: str) -> np.ndarray:
    """`values` as a float64 array, or one `InvalidArgumentError` line (strings, ragged rows, None)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        why = " ".join(str(e).split())[:120] or type(e).__name__
        raise InvalidArgumentError(f"{what}: {name} must be a numeric array ({why})") from None
    return arr


def _non_finite_rows(arr: np.ndarray, what: str, name: str) -> None:
    """One line naming how many rows of 2-d `arr` hold NaN/inf (and the first), if any."""
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise InvalidArgumentError(f"{what}: {name} has non-finite values (NaN/inf) in {len(bad)} of {len(arr)} "
                                   f"row(s), first row {int(bad[0])}: drop or re-embed those items")


def ranks_of_relevant(sims: np.ndarray, relevant: np.ndarray | None = None) -> list[np.ndarray]:
    """1-based ranks of each query's relevant items. sims: (n_queries, n_items), finite.

    >>> [r.tolist() for r in ranks_of_relevant(np.array([[0.2, 0.9], [0.1, 0.3]]))]
    [[2], [1]]
    """
    sims = _float_matrix(sims, "retrieval", "sims")
    if sims.ndim != 2:
        raise InvalidArgumentError(f"sims must be 2-D (n_queries, n_items), got shape {sims.shape}")
    n_q, n_items = sims.shape
    if n_q == 0 or n_items == 0:
        raise InvalidArgumentError(f"retrieval of no queries or no items is undefined (sims has shape {sims.shape})")
    _non_finite_rows(sims, "retrieval", "sims")
    if relevant is None:
        if n_q != n_items:
            raise InvalidArgumentError(f"Without `relevant`, sims must be square (query i matches item i), "
                                       f"got {sims.shape}")
        relevant = np.eye(n_q, dtype=bool)
    rel = _float_matrix(relevant, "retrieval", "relevant")
    if rel.shape != sims.shape:
        raise InvalidArgumentError(f"relevant has shape {rel.shape}, sims {sims.shape}: they must match")
    not_flag = ~np.isin(rel, (0.0, 1.0))  # NaN, 0.5, 2: not a yes/no (bool() would call them all relevant)
    if not_flag.any():
        i, j = (int(v) for v in np.argwhere(not_flag)[0])
        raise InvalidArgumentError(f"relevant must hold True/False (or 1/0) only; {int(not_flag.sum())} entries "
                                   f"do not, first [{i}, {j}] = {float(rel[i, j])!r}")
    mask = rel.astype(bool)
    order = np.argsort(-sims, axis=1, kind="stable")  # (q, n) item indices, best first
    rank_of = np.empty_like(order)
    np.put_along_axis(rank_of, order, np.arange(1, n_items + 1)[None, :].repeat(n_q, 0), axis=1)
    return [rank_of[i][mask[i]] for i in range(n_q)]


def _check_ks(ks: Sequence[int]) -> list[int]:
    """`ks` as a list of whole numbers >= 1, or one `InvalidArgumentError` line."""
    if isinstance(ks, (str, bytes)) or np.ndim(ks) != 1:
        raise InvalidArgumentError(f"retrieval_metrics: ks must be a list of whole numbers >= 1, got {ks!r}")
    bad = [k for k in ks if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1]
    if bad:
        raise InvalidArgumentError(f"retrieval_metrics: ks must be whole numbers >= 1, got {bad[0]!r} in {list(ks)!r}")
    return [int(k) for k in ks]


def retrieval_metrics(sims: np.ndarray, relevant: np.ndarray | None = None,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K, HITS@K for each K, and MRR, averaged over queries with a relevant item.

    NaN/inf in `sims` (e.g. from a NaN embedding) is refused with one line naming how many rows hold it.

    >>> retrieval_metrics(np.array([[0.9, 0.1], [0.8, 0.3]]), ks=(1, 2))["R@2"]
    1.0
    """
    k_list = _check_ks(ks)
    ranks = [r for r in ranks_of_relevant(sims, relevant) if len(r)]
    if not ranks:
        raise InvalidArgumentError("retrieval_metrics: no query has a relevant item")
    out = {}
    for k in k_list:
        out[f"R@{k}"] = float(np.mean([np.mean(r <= k) for r in ranks]))
        out[f"HITS@{k}"] = float(np.mean([np.any(r <= k) for r in ranks]))
    out["MRR"] = float(np.mean([1.0 / r.min() for r in ranks]))
    return out


def _check_label_list(values: Sequence, name: str) -> list:
    """`values` as a list of scalar labels, none missing (None, NaN/inf), or one `InvalidArgumentError` line."""
    if values is None or isinstance(values, (str, bytes)) or np.ndim(values) != 1:
        raise InvalidArgumentError(f"weighted_f1: {name} must be a list of labels, got {type(values).__name__} "
                                   f"of shape {np.shape(values) if values is not None else None}")
    out = list(values)
    missing = [i for i, v in enumerate(out) if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v))]
    if missing:
        raise InvalidArgumentError(f"weighted_f1: {len(missing)} of {len(out)} {name} are missing (None/NaN/inf), "
                                   f"first at position {missing[0]}; drop those items")
    return out


def weighted_f1(y_true: Sequence, y_pred: Sequence) -> float:
    """F1 per class, averaged with class frequencies as weights (the paper's zero-shot figure).

    Lists of different lengths, empty lists, missing labels (None/NaN) and strings mixed with numbers
    are one `InvalidArgumentError` line.

    >>> weighted_f1(["a", "a", "b"], ["a", "b", "b"])
    0.6666666666666666
    """
    y_true, y_pred = _check_label_list(y_true, "true labels"), _check_label_list(y_pred, "predictions")
    if len(y_true) != len(y_pred):
        raise InvalidArgumentError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if not y_true:
        raise InvalidArgumentError("weighted_f1 of no products is undefined (got empty label lists)")
    texts = [isinstance(v, (str, np.str_)) for v in y_true + y_pred]
    if any(texts) and not all(texts):
        i = texts.index(False) if texts[0] else texts.index(True)
        v = (y_true + y_pred)[i]
        raise InvalidArgumentError(f"weighted_f1: labels mix strings with other values ({v!r} of type "
                                   f"{type(v).__name__}): give all labels as strings or all as numbers")
    try:
        return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))
    except (TypeError, ValueError) as e:  # e.g. nested lists
        raise InvalidArgumentError(f"weighted_f1: {' '.join(str(e).split()) or type(e).__name__}") from None


def _check_probs(probs: np.ndarray, y_true_idx: Sequence[int], what: str,
                 distributions: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(n, n_classes) float scores and (n,) int class indices, checked against each other.

    `distributions`: each row must also be a probability distribution (entries >= 0, summing to 1 within
    `PROB_TOL`); the first row that is not is named.
    """
    probs = _float_matrix(probs, what, "probs")
    y = np.asarray(y_true_idx)
    if probs.ndim != 2:
        raise InvalidArgumentError(f"{what}: probs must be 2-D (n_items, n_classes), got shape {probs.shape}")
    if y.shape != (len(probs),):
        raise InvalidArgumentError(f"{what}: y_true_idx must have shape ({len(probs)},) to match probs, "
                                   f"got {y.shape}")
    if len(y) == 0 or probs.shape[1] == 0:
        raise InvalidArgumentError(f"{what} of no items or no classes is undefined (probs has shape {probs.shape})")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= probs.shape[1]:
        span = f"values from {y.min()} to {y.max()}" if np.issubdtype(y.dtype, np.number) else "other values"
        raise InvalidArgumentError(f"{what}: y_true_idx must be whole numbers in [0, {probs.shape[1] - 1}], "
                                   f"got {span} ({y.dtype})")
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if len(bad):
        raise InvalidArgumentError(f"{what}: probs has {int((~np.isfinite(probs)).sum())} non-finite values "
                                   f"(NaN/inf) in {len(bad)} row(s), first row {int(bad[0])}: {probs[bad[0]].tolist()[:6]}")
    if distributions:
        sums = probs.sum(axis=1)
        bad = np.flatnonzero((probs < 0).any(axis=1) | (np.abs(sums - 1.0) > PROB_TOL))
        if len(bad):
            i = int(bad[0])
            why = "has a negative entry" if (probs[i] < 0).any() else f"sums to {sums[i]:.6g}"
            raise InvalidArgumentError(f"{what}: probs rows must be probability distributions (>= 0, summing to 1 "
                                       f"within {PROB_TOL:g}); {len(bad)} row(s) are not, first row {i} {why}: "
                                       f"{probs[i].tolist()[:6]} (scores or logits? pass softmax probabilities)")
    return probs, y.astype(np.int64)


def top_k_accuracy(probs: np.ndarray, y_true_idx: Sequence[int], k: int = 1) -> float:
    """Share of items whose true class is among the k highest scores (ties: lower class index first).

    Any finite scores will do (probabilities, logits, similarities).

    >>> top_k_accuracy(np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]]), [1, 1], k=2)
    1.0
    """
    probs, y = _check_probs(probs, y_true_idx, "top_k_accuracy")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"top_k_accuracy: k must be a whole number >= 1, got {k!r}")
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (n, min(k, n_classes))
    return float(np.mean((top == y[:, None]).any(axis=1)))


def expected_calibration_error(probs: np.ndarray, y_true_idx: Sequence[int], n_bins: int = 15) -> float:
    """Top-label ECE: items binned by confidence (max prob) into `n_bins` equal-width bins of (0, 1];
    the |accuracy - mean confidence| gap of each bin, weighted by its share of items.

    Each row of `probs` must be a probability distribution (>= 0, summing to 1 within `PROB_TOL`, e.g. a
    float32 softmax): logits, negatives or NaN are one `InvalidArgumentError` line naming the first bad
    row, and so are rows that do not match `y_true_idx` one to one.

    >>> expected_calibration_error(np.array([[0.9, 0.1], [0.6, 0.4]]), [0, 1], n_bins=10)
    0.35
    """
    probs, y = _check_probs(probs, y_true_idx, "expected_calibration_error", distributions=True)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise InvalidArgumentError(f"expected_calibration_error: n_bins must be a whole number >= 1, got {n_bins!r}")
    conf = probs.max(axis=1)  # (n,)
    correct = probs.argmax(axis=1) == y  # (n,)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (n,) bin (lo, hi]
    gap = np.abs(np.bincount(bins, correct, n_bins) - np.bincount(bins, conf, n_bins))  # per bin, summed
    return float(gap.sum() / len(y))
