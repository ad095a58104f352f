"""Audits of a labelled catalog's embeddings: label issues, near-duplicate groups, outliers.

Each audit returns a DataFrame, most suspicious first, with `position` (the row
of the input vectors) so callers can map back to catalog items.

- `find_label_issues`: out-of-sample `LinearProbe` probabilities (stratified
  cross-validation), ranked by cleanlab's self-confidence label quality (measured
  best on planted KAGL errors; confident learning first-then-rank and normalized
  margin are options); cleanlab's confident learning (`cleanlab.filter`) marks
  the items it judges mislabelled (`is_issue`).
- `near_duplicates`: FAISS range search (exact inner product, unit vectors)
  for every pair with cosine >= threshold, then connected components.
- `outliers`: mean cosine distance to the k nearest other items (kNN, exact FAISS).

Example:
    >>> issues = find_label_issues(vectors, labels)           # doctest: +SKIP
    >>> issues.head(3)[["position", "given_label", "suggested_label", "score"]]   # doctest: +SKIP
"""
from __future__ import annotations

import logging
import warnings
from numbers import Integral, Real
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import InvalidArgumentError
from .index import _faiss, normalize
from .probes import LinearProbe, check_vectors_labels, out_of_fold

log = logging.getLogger(__name__)

ISSUE_METHODS = ("self_confidence", "confident_learning", "normalized_margin")
ISSUE_COLUMNS = ["position", "given_label", "suggested_label", "score", "label_quality", "is_issue"]
QUERY_BATCH = 4096  # query rows per FAISS call (bounds the memory of a range search)


def _rank_quality(labels_enc: np.ndarray, pred_probs: np.ndarray, method: str) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    return get_label_quality_scores(labels_enc, pred_probs, method=method)  # (n,) in [0, 1], low = suspicious


def find_label_issues(vectors, labels, cv: int = 5, method: str = "self_confidence",
                      probe: LinearProbe | None = None, pred_probs: np.ndarray | None = None,
                      random_state: int = 0) -> pd.DataFrame:
    """One row per item, most suspicious first: position, given_label, suggested_label, score, label_quality, is_issue.

    Ranking (`method`): "self_confidence" (default: the probe's out-of-sample probability
    of the given label, lowest first; it found planted KAGL errors best, see
    benchmarks/bench_audit.py), "confident_learning" (cleanlab's flagged items first,
    then by self-confidence) or "normalized_margin" (cleanlab). `score` = 1 - label
    quality (higher = more suspicious); `is_issue` marks the items cleanlab's confident
    learning (`cleanlab.filter.find_label_issues`) flags, for every method. Pass
    `pred_probs` ((n, n_classes), columns in sorted label order) to skip the cross-validation.

    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (40, 4)), rng.normal(4, 1, (40, 4))]   # (80, 4)
    >>> y = ["a"] * 40 + ["b"] * 40
    >>> y[3] = "b"                                   # a planted error
    >>> int(find_label_issues(X, y, cv=4).position.iloc[0])
    3
    """
    if method not in ISSUE_METHODS:
        raise InvalidArgumentError(f"Unknown label-issue method {method!r}; choose one of {', '.join(ISSUE_METHODS)}")
    X, y = check_vectors_labels(vectors, labels)
    classes, y_enc = np.unique(y, return_inverse=True)  # classes sorted, as the probe's classes_
    if pred_probs is None:
        pred_probs = out_of_fold(X, y, cv=cv, probe=probe, random_state=random_state)  # (n, n_classes)
    pred_probs = np.asarray(pred_probs, dtype=float)
    if pred_probs.shape != (len(y), len(classes)):
        raise InvalidArgumentError(f"pred_probs must have shape {(len(y), len(classes))} (items x classes in "
                                   f"sorted order), got {pred_probs.shape}")
    suggested = classes[pred_probs.argmax(axis=1)]
    from cleanlab.filter import find_label_issues as cl_find

    flagged = np.zeros(len(y), dtype=bool)  # cleanlab's confident-learning verdict, whatever the ranking
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="May not flag all label issues")  # rare classes
        flagged[cl_find(y_enc, pred_probs, filter_by="prune_by_noise_rate", return_indices_ranked_by=None)] = True
    quality = _rank_quality(y_enc, pred_probs, "self_confidence" if method == "confident_learning" else method)
    # ties keep input order; confident_learning puts its flagged items first
    keys = (np.arange(len(y)), quality) + ((~flagged,) if method == "confident_learning" else ())
    order = np.lexsort(keys)
    out = pd.DataFrame({"position": order, "given_label": y[order], "suggested_label": suggested[order],
                        "score": 1.0 - quality[order], "label_quality": quality[order], "is_issue": flagged[order]})
    log.info("find_label_issues (%s): %d of %d items flagged", method, int(flagged.sum()), len(y))
    return out.reset_index(drop=True)


# ------------------------------------------------------------------ neighbours
def plant_label_errors(labels, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped positions): `share` of the items moved to another class, uniformly at random.

    The protocol of the audit benchmark and tests: how many planted errors does `find_label_issues` flag?

    >>> noisy, pos = plant_label_errors(np.array(["a", "b"] * 50, dtype=object), 0.1, seed=0)
    >>> len(pos), int((noisy != np.array(["a", "b"] * 50, dtype=object)).sum())
    (10, 10)
    """
    y = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    if len(classes) < 2:
        raise InvalidArgumentError(f"planting label errors needs at least 2 classes, got {len(classes)}")
    pos = rng.choice(len(y), size=int(round(share * len(y))), replace=False)  # (n_flipped,)
    noisy = y.copy()
    for i in pos:
        noisy[i] = rng.choice(classes[classes != y[i]])
    return noisy, pos


def _check_ids(vectors, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    X = np.asarray(vectors)
    if X.ndim != 2 or len(X) == 0 or not np.issubdtype(X.dtype, np.number):
        raise InvalidArgumentError(f"vectors must be a non-empty numeric (n, dim) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))[:5].tolist()
        raise InvalidArgumentError(f"vectors must be finite; non-finite rows {bad}; drop or re-embed them")
    ids = [str(i) for i in ids]
    if len(ids) != len(X):
        raise InvalidArgumentError(f"{len(X)} vectors but {len(ids)} ids; pass one id per row of vectors")
    return normalize(X), ids  # (n, dim) unit rows


def near_duplicates(vectors, ids: Sequence[str], threshold: float = 0.95) -> pd.DataFrame:
    """Groups of items linked by cosine >= `threshold` (connected components), largest group first.

    One row per item in a group of 2 or more: group, group_size, position, item_id,
    max_similarity (to another member). Exact: FAISS flat inner-product range search.

    >>> v = np.array([[1, 0], [0.999, 0.01], [0, 1]], np.float32)
    >>> near_duplicates(v, ["a", "b", "c"]).item_id.tolist()
    ['a', 'b']
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not -1.0 <= threshold <= 1.0:
        raise InvalidArgumentError(f"threshold must be a cosine similarity in [-1, 1], got {threshold!r}")
    X, ids = _check_ids(vectors, ids)
    faiss = _faiss()
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    rows, cols, sims = [], [], []
    for start in range(0, len(X), QUERY_BATCH):
        lims, D, I = index.range_search(X[start:start + QUERY_BATCH], float(threshold) - 1e-6)
        q = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = I != q  # drop self-matches
        rows.append(q[keep]), cols.append(I[keep]), sims.append(D[keep])
    r, c, s = np.concatenate(rows), np.concatenate(cols).astype(np.int64), np.concatenate(sims)
    n = len(X)
    _, comp = connected_components(coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)), directed=False)
    best = np.full(n, np.nan)
    np.fmax.at(best, r, s)
    in_pair = ~np.isnan(best)
    sizes = np.bincount(comp[in_pair], minlength=comp.max() + 1)
    members = np.flatnonzero(in_pair)
    table = pd.DataFrame({"component": comp[members], "group_size": sizes[comp[members]], "position": members,
                          "item_id": [ids[i] for i in members], "max_similarity": best[members]})
    table = table.sort_values(["group_size", "component", "max_similarity", "position"],
                              ascending=[False, True, False, True], kind="stable")
    table["group"] = pd.factorize(table["component"])[0]
    return table[["group", "group_size", "position", "item_id", "max_similarity"]].reset_index(drop=True)


def outliers(vectors, ids: Sequence[str], k: int = 10) -> pd.DataFrame:
    """Every item, most isolated first: position, item_id, score (mean cosine distance to its k nearest others), rank.

    Method: kNN distance (exact FAISS inner-product search), not IsolationForest:
    it needs no contamination guess and reads as "how far is the nearest company".

    >>> v = np.array([[1, 0], [0.99, 0.1], [0.98, 0.2], [0, 1]], np.float32)
    >>> outliers(v, list("abcd"), k=2).item_id.iloc[0]
    'd'
    """
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise InvalidArgumentError(f"k must be a whole number >= 1, got {k!r}")
    X, ids = _check_ids(vectors, ids)
    if k >= len(X):
        raise InvalidArgumentError(f"k={k} neighbours but only {len(X)} items; use k <= {len(X) - 1}")
    faiss = _faiss()
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    score = np.empty(len(X))
    for start in range(0, len(X), QUERY_BATCH):
        D, I = index.search(X[start:start + QUERY_BATCH], k + 1)  # (b, k + 1), self usually first
        q = np.arange(start, start + len(D))[:, None]
        others = I != q
        # drop the self-match (or, when it is not among the k + 1, the farthest neighbour)
        others[others.all(axis=1), -1] = False
        sims = D[others].reshape(len(D), k)  # (b, k)
        score[start:start + len(D)] = 1.0 - sims.mean(axis=1)
    order = np.lexsort((np.arange(len(X)), -score))
    return pd.DataFrame({"position": order, "item_id": [ids[i] for i in order], "score": score[order],
                         "rank": np.arange(1, len(X) + 1)})
