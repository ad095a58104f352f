"""Every exercise's checker: recomputes the right value from the learner's context and names the likely
mistake on a wrong answer (never the answer itself). One section per notebook.

Example:
    >>> from fclip_workbench.course import verify
    >>> verify("chance_r10", 10 * 200, n=200).message
    'not yet. Hint: a chance is a share between 0 and 1: how many of the n candidates count as a hit, out of n?'
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fclip_workbench.course.core import close, register


# ------------------------------------------------------------------ 01 embed and search
@register("top_ids", "right: the K highest dot products are exactly what the search returned",
          "score every image with one dot product (`vectors @ query_vector`), then take the K best")
def _top_ids(value: Any, vectors: np.ndarray, query_vector: np.ndarray, ids: list[str], k: int) -> bool | str:
    scores = vectors @ query_vector                       # (n,) cosine, all vectors have length 1
    order = np.argsort(-scores, kind="stable")
    got = [str(v) for v in list(value)]
    if len(got) != k:
        return f"give K = {k} item ids, you gave {len(got)}"
    if set(got) == {ids[i] for i in order[:k]}:
        return True
    if set(got) == {ids[i] for i in order[-k:]}:
        return "those are the K *least* similar products: sort the scores from high to low"
    if all(g.isdigit() for g in got) and set(int(g) for g in got) == set(order[:k].tolist()):
        return "those are row numbers: turn them into item ids with `searcher.images.ids`"
    return False


@register("same_share", "right: that share says how much the look-alikes agree with the first result",
          "compare each look-alike's label with the first one's (the first one itself counts)")
def _same_share(value: Any, catalog, similar, field: str) -> bool | str:
    vals = [str(catalog.table[field].iloc[catalog.row_of(i)]) for i in similar.item_id]
    want = float(np.mean([v == vals[0] for v in vals]))
    if close(value, want, 1e-6):
        return True
    if close(value, want * len(vals), 1e-6):
        return "that is a count: divide by the number of look-alikes to get a share"
    return False


# ------------------------------------------------------------------ 02 explore map
@register("cluster_purity", "right: the share of the cluster's commonest value, its purity",
          "take the cluster's members, count each label value, divide the commonest count by the size")
def _cluster_purity(value: Any, table, cluster: str, field: str) -> bool | str:
    members = table[table["cluster"].str.startswith(f"{cluster}:")]
    counts = members[field].astype(str).value_counts()
    want = counts.iloc[0] / counts.sum()
    if close(value, want, 1e-6):
        return True
    if close(value, counts.iloc[0], 1e-6):
        return "that is a count: divide by the cluster's size"
    return False


@register("dup_pairs", "right: pairs counted once, each product never paired with itself",
          "compare every pair with one matrix product, keep sims >= the threshold, count each pair once")
def _dup_pairs(value: Any, vectors: np.ndarray, threshold: float) -> bool | str:
    sims = vectors @ vectors.T                            # (n, n)
    pairs = int(np.triu(sims >= threshold, k=1).sum())
    n = len(vectors)
    if int(value) == pairs:
        return True
    if int(value) == 2 * pairs + n or int(value) == 2 * pairs:
        return "each pair is counted twice (a, b and b, a): keep only the upper triangle"
    if int(value) == pairs + n:
        return "every product is its own duplicate (the diagonal is 1): leave it out"
    return False


# ------------------------------------------------------------------ 03 label with suggestions
@register("zero_shot", "right: with no labels yet, a suggestion is the label whose text vector is closest",
          "score every product against every label with one matrix product, take each row's best label")
def _zero_shot(value: Any, vectors: np.ndarray, text_vectors: np.ndarray, labels) -> bool | str:
    sims = np.asarray(vectors, float) @ np.asarray(text_vectors, float).T   # (n, L) cosine
    names = [str(v) for v in labels]
    got = np.asarray(value, dtype=object).ravel()
    if len(got) == sims.shape[1] != sims.shape[0]:
        return "that is one answer per label: take the best label of each product (the argmax along axis 1)"
    if len(got) != sims.shape[0]:
        return f"give one label per product ({sims.shape[0]}), you gave {len(got)}"
    if all(isinstance(g, (int, np.integer)) for g in got):
        return "those are label positions: turn each into its label with `labels[i]`"
    pos = {n: j for j, n in enumerate(names)}
    if any(str(g) not in pos for g in got):
        return "some answers are not labels of the taxonomy: pick from `labels`"
    cols = np.array([pos[str(g)] for g in got])
    picked = sims[np.arange(len(cols)), cols]             # (n,) cosine of the chosen label
    if np.all(picked >= sims.max(axis=1) - 1e-6):          # ties: any of the best labels is right
        return True
    if np.all(picked <= sims.min(axis=1) + 1e-6):
        return "those are the *least* similar labels: the suggestion is the highest cosine"
    return False


@register("margin_first", "right: the products whose two best labels are nearest in probability",
          "for each product take its two highest probabilities; the smallest gap (p1 - p2) is the most unsure")
def _margin_first(value: Any, proba: np.ndarray, ids: list[str], k: int) -> bool | str:
    p = np.asarray(proba, float)                          # (n, L)
    top2 = -np.partition(-p, 1, axis=1)[:, :2]             # (n, 2) best, second best
    margin = top2[:, 0] - top2[:, 1]                       # (n,) small = unsure
    got = [str(v) for v in list(value)]
    if len(got) != k:
        return f"give K = {k} item ids, you gave {len(got)}"
    row = {str(i): r for r, i in enumerate(ids)}
    if any(g not in row for g in got):
        if all(g.isdigit() for g in got):
            return "those look like row numbers: turn them into item ids with `ids[i]`"
        return "some of those are not item ids of this session"
    rows = np.array([row[g] for g in got])
    if len(set(got)) == k and close(np.sort(margin[rows]), np.sort(margin)[:k], 1e-6):
        return True
    if close(np.sort(margin[rows]), np.sort(margin)[-k:], 1e-6):
        return "those are the products the model is surest about: a *small* margin is an unsure one"
    least = np.sort(p.max(axis=1))[:k]
    if close(np.sort(p.max(axis=1)[rows]), least, 1e-6):
        return "that is least-confident order (the top probability alone): the margin compares the top two"
    return False


@register("kappa", "right: agreement beyond what chance alone gives (1 = perfect, 0 = chance)",
          "compute p_o (the share they agree on) and p_e (chance agreement from each one's value shares) "
          "first, then combine them as the definition says")
def _kappa(value: Any, a, b) -> bool | str:
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(a).astype(str), np.asarray(b).astype(str)
    want = cohen_kappa_score(a, b)
    p_o = float(np.mean(a == b))
    if close(value, want, 1e-4):
        return True
    if close(value, p_o, 1e-4):
        return "that is the raw agreement p_o: kappa takes away the agreement chance alone would give"
    n_values = len(set(a) | set(b))
    if close(value, (p_o - 1 / n_values) / (1 - 1 / n_values), 1e-4):
        return "chance uses each annotator's own value shares (share_a(v) * share_b(v)), not 1 / number of values"
    if close(value, 100 * want, 1e-2):
        return "give kappa as a number of at most 1, not a percentage"
    return False


# ------------------------------------------------------------------ 04 grounding
@register("argmax_pixel", "right: (row, column) of the map's hottest pixel",
          "find the largest value of the (H, W) map and give its (row, column)")
def _argmax_pixel(value: Any, map_: np.ndarray) -> bool | str:
    r, c = np.unravel_index(int(np.argmax(map_)), map_.shape)
    got = tuple(int(v) for v in value)
    if got == (r, c):
        return True
    if got == (c, r):
        return "that is (x, y): numpy arrays are indexed (row, column)"
    if len(got) == 1 or got == (int(np.argmax(map_)),):
        return "that is a flat index: `np.unravel_index` turns it into (row, column)"
    return False


@register("energy", "right: the share of the map's positive mass that lies on the garment",
          "sum the (positive) map over the mask's pixels, divide by its sum over the whole photo")
def _energy(value: Any, map_: np.ndarray, mask: np.ndarray) -> bool | str:
    pos = np.clip(map_, 0, None)
    want = pos[mask].sum() / pos.sum()
    if close(value, want, 1e-3):
        return True
    if close(value, map_[mask].sum() / map_.sum(), 1e-3):
        return "negative values count too here: clip the map at 0 first"
    if close(value, mask.mean(), 1e-3):
        return "that is the garment's area share (what a uniform map scores): weigh pixels by the map"
    return False


# ------------------------------------------------------------------ 05 linear probes
@register("majority_f1", "right: the score of a model that learned nothing but the commonest class",
          "predict the most common *training* label for every held-out product, then score weighted F1")
def _majority_f1(value: Any, train_labels, test_labels) -> bool | str:
    from fclip_workbench.analysis.metrics import weighted_f1

    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    top = values[np.argmax(counts)]
    test = np.asarray(test_labels)
    want = weighted_f1(test.tolist(), [top] * len(test))
    if close(value, want, 1e-4):
        return True
    if close(value, float(np.mean(test == top)), 1e-4):
        return "that is accuracy: the table scores weighted F1 (`weighted_f1`)"
    return False


@register("probe_accuracy", "right: the share of held-out products the probe labels correctly",
          "compare `probe.predict(...)` on the held-out vectors with their labels, take the mean")
def _probe_accuracy(value: Any, probe, test_vectors: np.ndarray, test_labels) -> bool | str:
    pred = np.asarray(probe.predict(test_vectors))
    want = float(np.mean(pred == np.asarray(test_labels)))
    if close(value, want, 1e-4):
        return True
    if close(value, 100 * want, 1e-2):
        return "give a share between 0 and 1, not a percentage"
    return False


# ------------------------------------------------------------------ 06 train and evaluate
@register("chance_r10", "right: 10 of n candidates by luck is what any model must beat",
          "a chance is a share between 0 and 1: how many of the n candidates count as a hit, out of n?")
def _chance_r10(value: Any, n: int) -> bool | str:
    if close(value, 10 / n, 1e-6):
        return True
    if close(value, 1 / n, 1e-6):
        return "that is the chance of ranking first; R@10 counts a hit anywhere in the first 10"
    return False


@register("loss_drop", "right: the share of the starting loss that training took away",
          "compare the last step's loss with the first: 1 - last / first")
def _loss_drop(value: Any, losses) -> bool | str:
    arr = np.asarray(losses, float)
    want = 1 - arr[-1] / arr[0]
    if close(value, want, 1e-3):
        return True
    if close(value, arr[0] - arr[-1], 1e-3):
        return "that is the drop in loss units: divide by the first loss to get a share"
    if close(value, -want, 1e-3):
        return "the sign is flipped: a falling loss gives a positive drop"
    return False
