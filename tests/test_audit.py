"""Audits: planted label errors are found, planted near-duplicates grouped, planted outliers ranked first."""
from __future__ import annotations

import numpy as np
import pytest

from fclip_workbench.audit import ISSUE_COLUMNS, find_label_issues, near_duplicates, outliers, plant_label_errors
from fclip_workbench.errors import InvalidArgumentError


def clusters(n_per_class=80, n_classes=5, dim=24, spread=1.2, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.5, (n_classes, dim))
    X = np.concatenate([c + rng.normal(0, spread, (n_per_class, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.array([f"c{i}" for i in range(n_classes)], dtype=object), n_per_class)
    return X, y


def plant_flips(y, share, seed):
    noisy, pos = plant_label_errors(y, share, seed)
    return noisy, set(pos.tolist())


@pytest.mark.parametrize("method", ["confident_learning", "self_confidence", "normalized_margin"])
def test_label_issues_find_planted_flips(method):
    X, y = clusters()
    noisy, flipped = plant_flips(y, 0.05, seed=1)
    issues = find_label_issues(X, noisy, cv=5, method=method)
    assert list(issues.columns) == ISSUE_COLUMNS
    assert sorted(issues.position) == list(range(len(y)))  # one row per item
    top = set(issues.position[:len(flipped)])
    assert len(top & flipped) / len(flipped) >= 0.8
    first = issues.iloc[0]
    assert first.given_label == noisy[first.position] and first.suggested_label == y[first.position]
    assert issues.score.iloc[0] >= issues.score.iloc[-1]
    assert len(set(issues.position[issues.is_issue]) & flipped) >= 0.8 * len(flipped)


def test_label_issues_with_given_probabilities_and_clean_labels():
    X, y = clusters()
    clean = find_label_issues(X, y, cv=5)
    assert clean.is_issue.sum() <= 0.02 * len(y)  # separable clusters, correct labels: hardly anything flagged
    classes = np.unique(y)
    probs = np.full((len(y), len(classes)), 0.01)
    probs[np.arange(len(y)), np.searchsorted(classes, y)] = 0.96
    probs[7] = probs[7][::-1]  # the model believes item 7 is another class
    given = find_label_issues(X, y, pred_probs=probs / probs.sum(1, keepdims=True))
    assert given.position.iloc[0] == 7 and bool(given.is_issue.iloc[0])


def test_label_issue_bad_input():
    X, y = clusters(n_per_class=10)
    with pytest.raises(InvalidArgumentError, match="Unknown label-issue method 'magic'"):
        find_label_issues(X, y, method="magic")
    with pytest.raises(InvalidArgumentError, match="50 vectors but 3 labels"):
        find_label_issues(X, y[:3])
    with pytest.raises(InvalidArgumentError, match="pred_probs must have shape \\(50, 5\\)"):
        find_label_issues(X, y, pred_probs=np.ones((50, 2)) / 2)
    X[4, 0] = np.nan
    with pytest.raises(InvalidArgumentError, match="bad rows: \\[4\\]"):
        find_label_issues(X, y)
    with pytest.raises(InvalidArgumentError, match="at least 2 classes"):
        find_label_issues(np.zeros((4, 2)), ["a"] * 4)


def test_near_duplicates_groups_planted_copies():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 32)).astype(np.float32)  # random 32-d directions: cosine well below 0.95
    X[10] = X[3] + 0.05 * rng.normal(size=32)  # a pair
    X[20] = X[3] + 0.05 * rng.normal(size=32)  # ... that becomes a triple
    X[400] = X[300] * 2.0  # same direction, other norm: cosine 1
    ids = [f"id{i}" for i in range(500)]
    groups = near_duplicates(X, ids, threshold=0.95)
    assert list(groups.columns) == ["group", "group_size", "position", "item_id", "max_similarity"]
    assert groups.groupby("group").position.apply(sorted).tolist() == [[3, 10, 20], [300, 400]]
    assert groups.group_size.tolist() == [3, 3, 3, 2, 2]
    assert (groups.max_similarity >= 0.95).all()
    assert near_duplicates(X, ids, threshold=0.99999).position.tolist() == [300, 400]


def test_near_duplicates_bad_input():
    X = np.eye(3, dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match="threshold must be a cosine similarity in \\[-1, 1\\], got 2"):
        near_duplicates(X, list("abc"), threshold=2)
    with pytest.raises(InvalidArgumentError, match="3 vectors but 2 ids"):
        near_duplicates(X, list("ab"))
    assert near_duplicates(X, list("abc")).empty


def test_outliers_rank_the_planted_point_first():
    X, _ = clusters(n_per_class=50, n_classes=3)
    far = np.full((1, X.shape[1]), -40.0, np.float32) * np.sign(X.mean(0))
    V = np.r_[X, far]
    table = outliers(V, [f"i{i}" for i in range(len(V))], k=5)
    assert table.position.iloc[0] == len(V) - 1 and table.item_id.iloc[0] == f"i{len(V) - 1}"
    assert table["rank"].tolist() == list(range(1, len(V) + 1))
    assert table.score.is_monotonic_decreasing
    dup = np.r_[X[:5], X[:5]]  # exact duplicates: the self-match may not come first
    assert np.allclose(outliers(dup, list("abcdefghij"), k=1).score, 0.0, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="k=200 neighbours but only 151 items"):
        outliers(V, [str(i) for i in range(len(V))], k=200)
    with pytest.raises(InvalidArgumentError, match="k must be"):
        outliers(V, [str(i) for i in range(len(V))], k=0)
