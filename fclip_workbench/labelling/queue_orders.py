"""Queue orders that save labels: "diversity" and "activelab" (called from `annotate_queue._make_queue`).

- "diversity": uncertainty within diversity. Among the `DIVERSITY_POOL` most uncertain unlabelled products,
  k-center greedy (farthest-first traversal, cosine distance on the L2-normalised image embeddings) picks
  `DIVERSITY_STEPS` products, each the farthest from every labelled product and every product picked
  before it: successive products cover the catalog instead of piling up in one confusing corner. The rest
  follow by uncertainty. The queue is rebuilt at every refit, so the picks stay few and cheap: one build on
  40,000 x 512 takes well under a second (`benchmarks/bench_suggest.py --queue` measures it).
- "activelab": label a new product or re-label a doubtful one, whichever helps most, by the ActiveLab
  scores of cleanlab (`cleanlab.multiannotator.get_active_learning_scores`, Goh et al. 2023): a labelled
  product scores (2 p(its label) + 1/K) / 3, an unlabelled one (max p + 1/K) / 2 (one annotator per
  product, K classes); lowest first. For a labelled product p is held out (`held_out_proba`: its 10
  nearest labelled neighbours' labels, the model, which fits its own labels, as an 11th). Re-label
  candidates are labelled products whose label is not the top class of that p, not re-labelled in this
  run of the order, not overlap products (those are answered independently). A re-label is shown with its current label and written as a normal decision,
  compare-and-set on the label's last event.

Both keep the uncertainty order's calibration items in every `CAL_EVERY`-th place (`interleave_calibration`).

Example:
    >>> x = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2, 2]]           # three pairs of identical products
    >>> kcenter_greedy(x, np.arange(6), np.array([], dtype=np.int64), k=3, seed=0).tolist()
    [5, 0, 2]
"""
from __future__ import annotations

import numpy as np

from fclip_workbench.errors import InvalidArgumentError

DIVERSITY_POOL = 2000  # the most uncertain unlabelled products the k-center picks among
DIVERSITY_STEPS = 200  # k-center picks per queue build (rebuilt at each refit); the rest of the pool by uncertainty
MAX_CENTRES = 2000  # labelled products the picks keep away from, or vote (a seeded sample beyond this: bounded time)
NEIGHBOURS = 10  # activelab: nearest labelled products whose labels stand in for a held-out prediction
_CHUNK = 4096  # centres per matrix product: (pool, chunk) float32 at a time


def _check(vectors: np.ndarray, rows: np.ndarray, what: str) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or (len(rows) and (not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0
                                         or rows.max() >= len(vectors))):
        raise InvalidArgumentError(f"{what} must be row numbers 0..{len(vectors) - 1} of the vectors (got {rows!r:.80})")
    return rows.astype(np.int64)


def kcenter_greedy(vectors: np.ndarray, candidates: np.ndarray, centres: np.ndarray, k: int,
                   seed: int | None = 0) -> np.ndarray:
    """`k` rows of `candidates` by farthest-first traversal: each the farthest (1 - cosine) from the `centres`
    rows and from the rows picked before it; without centres the first is a seeded random candidate.

    `vectors`: (n, dim), L2-normalised. Cost: (len(candidates) x len(centres) + k x len(candidates)) x dim.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or not len(vectors):
        raise InvalidArgumentError(f"vectors must be a non-empty (n, dim) array (got shape {vectors.shape})")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InvalidArgumentError(f"k must be a whole number >= 0 (got {k!r})")
    candidates = _check(vectors, candidates, "candidates")
    centres = _check(vectors, centres, "centres")
    k = min(int(k), len(candidates))
    if not k:
        return np.empty(0, dtype=np.int64)
    x = np.asarray(vectors[candidates], dtype=np.float32)  # (m, dim)
    near = np.full(len(x), -np.inf, dtype=np.float32)  # (m,) highest cosine to a centre so far
    for s in range(0, len(centres), _CHUNK):
        c = np.asarray(vectors[centres[s:s + _CHUNK]], dtype=np.float32)  # (chunk, dim)
        np.maximum(near, (x @ c.T).max(axis=1), out=near)
    picked = np.empty(k, dtype=np.int64)
    for step in range(k):
        if step == 0 and not len(centres):
            j = int(np.random.default_rng(seed).integers(len(x)))
        else:
            j = int(np.argmin(near))  # farthest from every centre: the lowest highest-cosine
        picked[step] = j
        np.maximum(near, x @ x[j], out=near)
        near[j] = np.inf  # never picked twice
    return candidates[picked]


def diversity_order(vectors: np.ndarray, uncertainty: np.ndarray, exclude: np.ndarray, labelled: np.ndarray,
                    seed: int | None, pool: int = DIVERSITY_POOL, steps: int = DIVERSITY_STEPS) -> np.ndarray:
    """Every row (n,): the k-center picks among the `pool` most uncertain rows not in `exclude` (bool (n,)),
    kept away from the `labelled` rows (bool (n,)), then the other rows not excluded by uncertainty, then the
    excluded ones."""
    n = len(vectors)
    uncertainty = np.asarray(uncertainty)
    if uncertainty.shape != (n,) or exclude.shape != (n,) or labelled.shape != (n,):
        raise InvalidArgumentError(f"uncertainty, exclude and labelled must be ({n},) like the vectors (got "
                                   f"{uncertainty.shape}, {exclude.shape}, {labelled.shape})")
    open_ = np.flatnonzero(~exclude)
    by_unc = open_[np.argsort(-uncertainty[open_], kind="stable")]  # (m,) most uncertain first
    centres = np.flatnonzero(labelled)
    if len(centres) > MAX_CENTRES:
        centres = np.sort(np.random.default_rng(seed).choice(centres, MAX_CENTRES, replace=False))
    first = kcenter_greedy(vectors, by_unc[:pool], centres, steps, seed)
    rest = by_unc[~np.isin(by_unc, first)]
    return np.concatenate([first, rest, np.flatnonzero(exclude)])


def activelab_scores(proba: np.ndarray, labelled_rows: np.ndarray, label_idx: np.ndarray,
                     open_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ActiveLab scores (cleanlab) of the labelled rows (their labels: class numbers `label_idx`) and of the
    unlabelled `open_rows`; lower is more worth (re-)labelling. `proba`: (n, K)."""
    from cleanlab.multiannotator import get_active_learning_scores

    proba = np.asarray(proba, dtype=np.float64)
    proba = proba / proba.sum(axis=1, keepdims=True)  # exactly 1 per row, as cleanlab checks
    if len(labelled_rows):
        labels = np.asarray(label_idx, dtype=float)[:, None]  # (L, 1): one annotator's label per product
        lab, unl = get_active_learning_scores(labels, proba[labelled_rows],
                                              proba[open_rows] if len(open_rows) else None)
    else:
        lab, unl = np.empty(0), get_active_learning_scores(None, None, proba[open_rows])[1]
    return np.asarray(lab, dtype=np.float64), np.asarray(unl, dtype=np.float64)


def held_out_proba(vectors: np.ndarray, rows: np.ndarray, label_idx: np.ndarray, proba: np.ndarray,
                   k: int = NEIGHBOURS, seed: int | None = 0) -> np.ndarray:
    """(len(rows), K) probabilities of the labelled `rows` that do not rest on their own label: the labels
    of their `k` nearest other labelled products (cosine; at most `MAX_CENTRES` of them, a seeded sample),
    with the model's `proba` counted as one more neighbour (it was fitted on those labels, so agrees with them).

    ActiveLab needs out-of-sample probabilities (cleanlab: cross-validated); a probe refitted every 5 labels
    fits its own labels, so with `proba` alone no label is ever doubted (measured: 0 re-labels in 1,000 with
    an annotator wrong 1 time in 10; with the model as half the vote, still 0)."""
    n_cls = proba.shape[1]
    refs = np.arange(len(rows))
    if len(refs) > MAX_CENTRES:
        refs = np.sort(np.random.default_rng(seed).choice(refs, MAX_CENTRES, replace=False))
    x, xr = vectors[rows], vectors[rows[refs]]  # (L, dim), (R, dim)
    votes = np.zeros((len(rows), n_cls))
    k = min(k, len(refs) - 1)
    for s in range(0, len(rows), _CHUNK):
        sim = x[s:s + _CHUNK] @ xr.T  # (chunk, R)
        own = np.flatnonzero((refs >= s) & (refs < s + _CHUNK))
        sim[refs[own] - s, own] = -np.inf  # never one's own label
        if k > 0:
            near = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (chunk, k)
            np.add.at(votes, (np.arange(s, s + len(sim))[:, None], label_idx[refs[near]]), 1.0 / k)
    return (k * votes + proba[rows]) / (k + 1) if k > 0 else np.asarray(proba[rows], dtype=np.float64)


def activelab_order(proba: np.ndarray, classes, labels: dict[int, str], exclude: np.ndarray,
                    labelled: np.ndarray, vectors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows most worth a label first, re-label candidates bool (n,)).

    `labels`: {row: its current label} of the labelled rows; `labelled`: bool (n,); `exclude`: bool (n,), rows
    never queued here (calibration items, overlap products, rows decided in this run). Candidates are labelled
    rows not excluded whose label is doubted: not the top class of their held-out probabilities
    (`held_out_proba` over `vectors`, the (n, dim) embeddings; without them, of `proba`); every unlabelled row
    not excluded competes with them by score. The rest follow: excluded unlabelled rows, then labelled ones.
    """
    n = len(labelled)
    if proba.ndim != 2 or proba.shape[0] != n or proba.shape[1] < 2:
        raise InvalidArgumentError(f"the activelab order needs the suggester's probabilities over at least 2 "
                                   f"classes (got shape {proba.shape}): refit the suggester")
    pos = {c: j for j, c in enumerate(classes)}
    known = np.array([r for r, v in sorted(labels.items()) if v in pos], dtype=np.int64)  # (L,)
    y = np.array([pos[labels[r]] for r in known], dtype=np.int64)  # (L,)
    p_lab = proba[known] if vectors is None or not len(known) else held_out_proba(vectors, known, y, proba)
    doubt = (p_lab.argmax(axis=1) != y) & ~exclude[known] if len(known) else np.zeros(0, bool)
    cand_rows = known[doubt]
    cand = np.zeros(n, dtype=bool)
    cand[cand_rows] = True
    open_rows = np.flatnonzero(~labelled & ~exclude)
    lab, unl = activelab_scores(np.concatenate([p_lab[doubt], proba[open_rows]]), np.arange(len(cand_rows)),
                                y[doubt], len(cand_rows) + np.arange(len(open_rows)))
    rows = np.concatenate([cand_rows, open_rows])
    order = rows[np.argsort(np.concatenate([lab, unl]), kind="stable")]
    rest = np.flatnonzero(~cand & ~np.isin(np.arange(n), order))
    rest = rest[np.argsort(labelled[rest], kind="stable")]  # unlabelled first
    return np.concatenate([order, rest]), cand


__all__ = ["kcenter_greedy", "diversity_order", "activelab_scores", "activelab_order", "held_out_proba", "DIVERSITY_POOL",
           "DIVERSITY_STEPS", "MAX_CENTRES"]
