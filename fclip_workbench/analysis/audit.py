"""Audits of a labelled catalog's embeddings: label issues, near-duplicate groups, outliers.

Each audit returns a DataFrame, most suspicious first, with `position` (the row
of the input vectors) so callers can map back to catalog items.

- `find_label_issues`: out-of-sample class probabilities from three signals, combined
  by a geometric mean (`label_probabilities`): 5-fold cross-validated `LinearProbe`s,
  leave-one-out class centroids (cosine), and the labels of each item's nearest
  neighbours in one shared kNN graph (`knn_graph`, the one `outliers` uses). Ranked by
  cleanlab's self-confidence (confident learning first-then-rank and normalized margin
  are options); cleanlab's confident learning (`cleanlab.filter`) marks the items it
  judges mislabelled (`is_issue`). Items of a class with fewer than `min_class_size`
  items cannot be judged by cross-validation (no fold learns their class): they are
  marked `judged=False` with the `reason`, and ranked after every judged item.
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

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.search.base import normalize
from fclip_workbench.search.faiss_index import _faiss
from fclip_workbench.analysis.probes import LinearProbe
from fclip_workbench.analysis.probe_eval import _as_matrix, check_vectors_labels, out_of_fold
from fclip_workbench.embedding.space import EmbeddingSpace, space_of

log = logging.getLogger(__name__)

ISSUE_METHODS = ("self_confidence", "confident_learning", "normalized_margin")
ISSUE_COLUMNS = ["position", "given_label", "suggested_label", "score", "label_quality", "is_issue",
                 "class_size", "judged", "reason"]
QUERY_BATCH = 4096  # query rows per FAISS call (bounds the memory of a range search)
MIN_CLASS_SIZE = 3  # a class with fewer items cannot be judged by cross-validation (no fold can learn it)
CENTROID_TEMPERATURE = 0.05  # softmax temperature over cosine similarities to the class centroids
KNN_K = 30  # neighbours per item in the shared kNN graph (label issues use 30; outliers the nearest k of them)
KNN_TEMPERATURE = 0.05  # neighbour weight exp((cos - 1) / t): closer neighbours count more
PRIOR = 1e-3  # floor of every class's kNN vote (a geometric mean needs no zeros)


def _space(space, vectors: np.ndarray, what: str) -> EmbeddingSpace | None:
    """The space of `space` (an EmbeddingModel or EmbeddingSpace; None: not recorded), checked against the vectors."""
    if space is None:
        return None
    sp = space_of(space)
    sp.check_vectors(vectors, what)
    return sp


def check_space(table: pd.DataFrame, model_or_space, what: str = "audit table") -> None:
    """Refuse an audit table made in another embedding space than `model_or_space` (one SpaceMismatchError line).

    Tables made without a space (`space=None`) are not checked.
    """
    recorded = table.attrs.get("space") if isinstance(table, pd.DataFrame) else None
    if isinstance(recorded, EmbeddingSpace) and model_or_space is not None:
        recorded.check(space_of(model_or_space), what)


# ------------------------------------------------------------------ one kNN graph for every check
def knn_graph(vectors, k: int = KNN_K) -> tuple[np.ndarray, np.ndarray]:
    """(similarities (n, k), neighbours (n, k)): each item's k nearest other items by cosine, exact FAISS.

    Shared by `find_label_issues` and `outliers` (pass `graph=`), so a catalog is searched once.

    >>> sims, nbrs = knn_graph(np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32), k=1)
    >>> nbrs[:, 0].tolist()
    [1, 0, 1]
    """
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise InvalidArgumentError(f"k must be a whole number >= 1, got {k!r}")
    X = normalize(_as_matrix(vectors, "vectors").astype(np.float32))  # (n, dim) unit rows
    if k >= len(X):
        raise InvalidArgumentError(f"k={k} neighbours but only {len(X)} items; use k <= {len(X) - 1}")
    faiss = _faiss()
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    sims, nbrs = np.empty((len(X), k), np.float32), np.empty((len(X), k), np.int64)
    for start in range(0, len(X), QUERY_BATCH):
        D, I = index.search(X[start:start + QUERY_BATCH], k + 1)  # (b, k + 1), self usually first
        q = np.arange(start, start + len(D))[:, None]
        others = I != q
        others[others.all(axis=1), -1] = False  # self not among the k + 1 (ties): drop the farthest
        sims[start:start + len(D)] = D[others].reshape(len(D), k)
        nbrs[start:start + len(D)] = I[others].reshape(len(D), k)
    return sims, nbrs


def _check_graph(graph, n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        sims, nbrs = (np.asarray(a) for a in graph)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"graph must be (similarities, neighbours) from knn_graph, got {type(graph).__name__}") from e
    if sims.shape != nbrs.shape or sims.ndim != 2 or len(sims) != n or not np.isfinite(sims).all() \
            or not np.issubdtype(nbrs.dtype, np.integer) or (nbrs.size and not (0 <= nbrs.min() <= nbrs.max() < n)):
        raise InvalidArgumentError(f"graph does not belong to these {n} vectors (similarities {sims.shape}, "
                                   f"neighbours {nbrs.shape}); build it with knn_graph(vectors)")
    return sims, nbrs


def _centroid_probs(X: np.ndarray, enc: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes): softmax over cosine to each class centroid, an item's own class leaving the item out."""
    Xn = normalize(X.astype(np.float32))  # (n, dim)
    sums = np.zeros((n_classes, X.shape[1]), np.float64)
    np.add.at(sums, enc, Xn)
    sim = Xn @ (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).T.astype(np.float32)
    own = sums[enc] - Xn  # (n, dim): the own class without the item
    norm = np.linalg.norm(own, axis=1)
    sim[np.arange(len(X)), enc] = np.where(norm > 1e-6, (Xn * own).sum(1) / np.maximum(norm, 1e-12), -1.0)
    z = sim / CENTROID_TEMPERATURE
    z -= z.max(axis=1, keepdims=True)
    P = np.exp(z)
    return P / P.sum(axis=1, keepdims=True)


def _knn_probs(graph: tuple[np.ndarray, np.ndarray], enc: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes): the similarity-weighted labels of each item's neighbours (itself excluded)."""
    sims, nbrs = graph
    w = np.exp((sims.astype(np.float64) - 1.0) / KNN_TEMPERATURE)  # (n, k)
    P = np.full((len(enc), n_classes), PRIOR)
    np.add.at(P, (np.repeat(np.arange(len(enc)), nbrs.shape[1]), enc[nbrs].ravel()), w.ravel())
    return P / P.sum(axis=1, keepdims=True)


def label_probabilities(vectors, labels, cv: int = 5, probe: LinearProbe | None = None, graph=None,
                        random_state: int = 0) -> np.ndarray:
    """(n, n_classes) out-of-sample probabilities, columns in sorted label order: the geometric mean of
    cross-validated probe probabilities, leave-one-out class centroids and kNN votes.

    Each signal judges an item without its own label; the probe is strong on large classes, the
    centroids and neighbours on small ones. On KAGL held-out products with 2% of articleType flipped,
    the combination ranks more flips first than the probe alone (benchmarks/bench_audit.py).
    """
    X, y = check_vectors_labels(vectors, labels)
    classes, enc = np.unique(y, return_inverse=True)
    graph = knn_graph(X, min(KNN_K, len(X) - 1)) if graph is None else _check_graph(graph, len(X))
    probe_p = out_of_fold(X, y, cv=cv, probe=probe, random_state=random_state)  # (n, n_classes)
    logs = [np.log(np.clip(P, 1e-12, None)) for P in
            (probe_p, _centroid_probs(X, enc, len(classes)), _knn_probs(graph, enc, len(classes)))]
    L = sum(logs) / len(logs)
    L -= L.max(axis=1, keepdims=True)
    P = np.exp(L)
    return P / P.sum(axis=1, keepdims=True)


def _rank_quality(labels_enc: np.ndarray, pred_probs: np.ndarray, method: str) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    return get_label_quality_scores(labels_enc, pred_probs, method=method)  # (n,) in [0, 1], low = suspicious


def find_label_issues(vectors, labels, cv: int = 5, method: str = "self_confidence",
                      probe: LinearProbe | None = None, pred_probs: np.ndarray | None = None,
                      random_state: int = 0, min_class_size: int = MIN_CLASS_SIZE, graph=None,
                      space=None) -> pd.DataFrame:
    """One row per item, most suspicious first (columns `ISSUE_COLUMNS`).

    Probabilities: `label_probabilities` (probe x centroids x kNN; pass `pred_probs`,
    (n, n_classes) in sorted label order, to use your own). Ranking (`method`):
    "self_confidence" (the probability of the given label, lowest first),
    "confident_learning" (cleanlab's flagged items first, then by self-confidence) or
    "normalized_margin" (cleanlab). `score` = 1 - label quality (higher = more suspicious);
    `is_issue` marks what cleanlab's confident learning flags. Items whose given class has
    fewer than `min_class_size` items get `judged=False` and a `reason`: cross-validation
    cannot judge them (a one-of-a-kind product looks "contradicted" by every fold). They
    come after every judged item, the most clearly other-class first, and are never
    `is_issue`. `space` (a model or `EmbeddingSpace`) is checked against the vectors and
    recorded in `table.attrs["space"]`; `check_space(table, model)` refuses another space.

    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal([4, 0, 0, 0], 1, (40, 4)), rng.normal([0, 4, 0, 0], 1, (40, 4))]   # (80, 4)
    >>> y = ["a"] * 40 + ["b"] * 40
    >>> y[3] = "b"                                   # a planted error
    >>> int(find_label_issues(X, y, cv=4).position.iloc[0])
    3
    """
    if method not in ISSUE_METHODS:
        raise InvalidArgumentError(f"Unknown label-issue method {method!r}; choose one of {', '.join(ISSUE_METHODS)}")
    if isinstance(min_class_size, bool) or not isinstance(min_class_size, Integral) or min_class_size < 1:
        raise InvalidArgumentError(f"min_class_size must be a whole number >= 1, got {min_class_size!r}")
    X, y = check_vectors_labels(vectors, labels)
    sp = _space(space, X, "label-issue vectors")
    classes, y_enc = np.unique(y, return_inverse=True)  # classes sorted, as the probe's classes_
    if pred_probs is not None:
        try:
            pred_probs = np.asarray(pred_probs, dtype=float)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"pred_probs must be a numeric (n_items, n_classes) array: {e}") from e
        if pred_probs.shape != (len(y), len(classes)):
            raise InvalidArgumentError(f"pred_probs must have shape {(len(y), len(classes))} (items x classes in "
                                       f"sorted order), got {pred_probs.shape}")
        if not np.isfinite(pred_probs).all() or (pred_probs < 0).any() or (pred_probs > 1).any():
            raise InvalidArgumentError("pred_probs must be probabilities in [0, 1] (no NaN/inf)")
    else:
        graph = None if graph is None else _check_graph(graph, len(y))
        pred_probs = label_probabilities(X, y, cv=cv, probe=probe, graph=graph, random_state=random_state)
    suggested = classes[pred_probs.argmax(axis=1)]
    sizes = np.bincount(y_enc)[y_enc]  # (n,) items of each item's given class
    judged = sizes >= min_class_size
    from cleanlab.filter import find_label_issues as cl_find

    flagged = np.zeros(len(y), dtype=bool)  # cleanlab's confident-learning verdict, whatever the ranking
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="May not flag all label issues")  # rare classes
        flagged[cl_find(y_enc, pred_probs, filter_by="prune_by_noise_rate", return_indices_ranked_by=None)] = True
    flagged &= judged
    quality = _rank_quality(y_enc, pred_probs, "self_confidence" if method == "confident_learning" else method)
    other = pred_probs.copy()
    other[np.arange(len(y)), y_enc] = -1.0
    # judged first; within each part ties keep input order; confident_learning puts its flagged items first;
    # unjudged items: the most clearly other-class first
    rank = np.where(judged, quality, -other.max(axis=1))
    keys = (np.arange(len(y)), rank) + ((~flagged,) if method == "confident_learning" else ()) + (~judged,)
    order = np.lexsort(keys)
    reason = np.array([""] * len(y), dtype=object)
    for i in np.flatnonzero(~judged):
        reason[i] = (f"class {str(y[i])!r} has {sizes[i]} item{'s' if sizes[i] > 1 else ''} (< {min_class_size}): "
                     f"cross-validation cannot judge it")
    out = pd.DataFrame({"position": order, "given_label": y[order], "suggested_label": suggested[order],
                        "score": 1.0 - quality[order], "label_quality": quality[order], "is_issue": flagged[order],
                        "class_size": sizes[order], "judged": judged[order], "reason": reason[order]})
    out = out.reset_index(drop=True)
    out.attrs["space"] = sp
    log.info("find_label_issues (%s): %d of %d items flagged, %d in classes too small to judge", method,
             int(flagged.sum()), len(y), int((~judged).sum()))
    return out


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
    X = _as_matrix(vectors, "vectors")
    if ids is None or isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise InvalidArgumentError(f"ids must be a list of {len(X)} item ids, one per row of vectors; got "
                                   f"{type(ids).__name__}")
    ids = [str(i) for i in ids]
    if len(ids) != len(X):
        raise InvalidArgumentError(f"{len(X)} vectors but {len(ids)} ids; pass one id per row of vectors")
    seen = pd.Index(ids)
    if not seen.is_unique:
        raise InvalidArgumentError(f"ids must be unique; repeated: {seen[seen.duplicated()].unique()[:5].tolist()}")
    return normalize(X.astype(np.float32)), ids  # (n, dim) unit rows


def near_duplicates(vectors, ids: Sequence[str], threshold: float = 0.95, space=None) -> pd.DataFrame:
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
    sp = _space(space, X, "near-duplicate vectors")
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
    table = table[["group", "group_size", "position", "item_id", "max_similarity"]].reset_index(drop=True)
    table.attrs["space"] = sp
    return table


def outliers(vectors, ids: Sequence[str], k: int = 10, graph=None, space=None) -> pd.DataFrame:
    """Every item, most isolated first: position, item_id, score (mean cosine distance to its k nearest others), rank.

    Method: kNN distance (exact FAISS inner-product search, `knn_graph`; pass `graph=` to reuse the
    one `find_label_issues` used), not IsolationForest: it needs no contamination guess and reads as
    "how far is the nearest company".

    >>> v = np.array([[1, 0], [0.99, 0.1], [0.98, 0.2], [0, 1]], np.float32)
    >>> outliers(v, list("abcd"), k=2).item_id.iloc[0]
    'd'
    """
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise InvalidArgumentError(f"k must be a whole number >= 1, got {k!r}")
    X, ids = _check_ids(vectors, ids)
    sp = _space(space, X, "outlier vectors")
    if k >= len(X):
        raise InvalidArgumentError(f"k={k} neighbours but only {len(X)} items; use k <= {len(X) - 1}")
    if graph is not None:
        sims, _ = _check_graph(graph, len(X))
        if sims.shape[1] < k:
            raise InvalidArgumentError(f"graph has {sims.shape[1]} neighbours per item; outliers(k={k}) needs {k}")
        sims = sims[:, :k]
    else:
        sims, _ = knn_graph(X, k)  # (n, k)
    score = 1.0 - sims.astype(np.float64).mean(axis=1)
    order = np.lexsort((np.arange(len(X)), -score))
    table = pd.DataFrame({"position": order, "item_id": [ids[i] for i in order], "score": score[order],
                          "rank": np.arange(1, len(X) + 1)})
    table.attrs["space"] = sp
    return table
