"""The audit of a multi-valued field: which items' SETS of values look wrong (a missing or extra value).

Out-of-fold per-value probabilities (`labelling.suggest_multi.MultiSuggester`, probes only, k folds) go to
cleanlab's multi-label methods: `cleanlab.multilabel_classification.filter.find_label_issues` marks the
items, `cleanlab.multilabel_classification.rank.get_label_quality_scores` ranks them.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(120, 6)).astype(np.float32)                  # (n, d)
    >>> sets = [[v for v, j in (("a", 0), ("b", 1)) if x[i, j] > 0] for i in range(120)]
    >>> sets[0] = ["b"] if sets[0] == ["a"] else ["a"]                     # one wrong set
    >>> t = find_multilabel_issues(x, sets, ["a", "b"]); t.columns.tolist()
    ['position', 'given', 'suggested', 'score', 'is_issue']
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.labelling.suggest_multi import MultiSuggester, labels_matrix


def out_of_fold_multi(vectors: np.ndarray, y: np.ndarray, values: Sequence[str], cv: int = 5,
                      seed: int = 0) -> np.ndarray:
    """(n, V) probabilities of each item from per-value probes fitted on the other folds."""
    x = np.asarray(vectors, dtype=np.float32)
    out = np.zeros(y.shape, dtype=np.float32)
    for train, test in KFold(n_splits=cv, shuffle=True, random_state=seed).split(x):
        s = MultiSuggester(values).fit(x[train], y[train])
        out[test] = s.predict_proba(x[test])
    return out


def find_multilabel_issues(vectors, sets: Sequence[Sequence[str]], values: Sequence[str], cv: int = 5,
                           pred_probs: np.ndarray | None = None) -> pd.DataFrame:
    """Items ranked most suspicious first: DataFrame[position, given, suggested, score, is_issue].

    `sets`: each item's values; `score` = 1 - cleanlab's label quality; `is_issue`: cleanlab's verdict;
    `suggested`: the values with out-of-fold probability >= 0.5. `pred_probs` (n, V): use these instead."""
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(sets):
        raise InvalidArgumentError(f"{len(sets)} label sets for vectors of shape {x.shape}; give one set per row")
    if len(x) < 2 * cv:
        raise InvalidArgumentError(f"{len(x)} items are too few for a {cv}-fold audit; label at least {2 * cv}")
    y = labels_matrix(sets, values)  # (n, V)
    p = out_of_fold_multi(x, y, values, cv) if pred_probs is None else np.asarray(pred_probs, dtype=np.float64)
    if p.shape != y.shape:
        raise InvalidArgumentError(f"pred_probs of shape {p.shape}; need {y.shape}")
    given = [[j for j in range(len(values)) if y[i, j]] for i in range(len(y))]
    flagged = find_label_issues(labels=given, pred_probs=p)
    quality = get_label_quality_scores(labels=given, pred_probs=p)
    table = pd.DataFrame({
        "position": np.arange(len(y)),
        "given": [tuple(values[j] for j in g) for g in given],
        "suggested": [tuple(values[int(j)] for j in np.flatnonzero(row >= 0.5)) for row in p],
        "score": 1.0 - np.asarray(quality, dtype=np.float64),
        "is_issue": np.asarray(flagged, dtype=bool),
    })
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
