"""Audits: planted label errors are found, planted near-duplicates grouped, planted outliers ranked first."""
from __future__ import annotations

import numpy as np
import pytest

from fclip_workbench.analysis.audit import (ISSUE_COLUMNS, check_space, find_label_issues, knn_graph, label_probabilities,
                                   near_duplicates, outliers, plant_label_errors)
from fclip_workbench.errors import InvalidArgumentError, SpaceMismatchError
from fclip_workbench.embedding.space import EmbeddingSpace


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
    with pytest.raises(InvalidArgumentError, match="NaN/inf, first \\[4\\]"):
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


def test_one_of_a_kind_products_are_not_judged_and_come_last():
    """A class with one or two items cannot be judged by cross-validation: such items say so and rank after
    every judged item, so the list opens with real suspects (planted flips), not with one-of-a-kind products."""
    X, y = clusters(n_per_class=60, n_classes=4)
    rng = np.random.default_rng(3)
    unique = (rng.normal(0, 2.5, (3, X.shape[1])) + rng.normal(0, 1.2, (3, X.shape[1]))).astype(np.float32)
    X = np.r_[X, unique, unique[2:] + 0.1]  # 'shoe laces' (1 item), 'tie clip' (1), 'brooch' (2)
    y = np.r_[y, ["shoe laces", "tie clip", "brooch", "brooch"]].astype(object)
    noisy, flipped = plant_label_errors(y[:240], 0.05, seed=2)
    y[:240] = noisy
    issues = find_label_issues(X, y, cv=5)
    assert list(issues.columns) == ISSUE_COLUMNS
    rare = issues[~issues.judged]
    assert sorted(rare.position) == [240, 241, 242, 243]
    assert (issues.judged.to_numpy()[:-4]).all()  # judged first, all of them
    assert not rare.is_issue.any()
    assert rare.set_index("position").reason[240] == ("class 'shoe laces' has 1 item (< 3): cross-validation "
                                                      "cannot judge it")
    assert "has 2 items" in rare.set_index("position").reason[243]
    assert (issues[issues.judged].reason == "").all() and (issues[issues.judged].class_size >= 3).all()
    top = set(issues.position[:len(flipped)])
    assert len(top & set(flipped.tolist())) >= 0.8 * len(flipped)
    everything = find_label_issues(X, y, cv=5, min_class_size=1)
    assert everything.judged.all()


def test_the_ensemble_finds_flips_the_probe_alone_misses_in_small_classes():
    """Small classes (4-8 items): centroids and neighbours judge them where a 5-fold probe barely learns them."""
    X, y = clusters(n_per_class=6, n_classes=20, spread=1.0, dim=32, seed=4)
    noisy, flipped = plant_label_errors(y, 0.05, seed=0)
    P = label_probabilities(X, noisy, cv=3)
    assert P.shape == (len(y), 20) and np.allclose(P.sum(1), 1)
    found = set(find_label_issues(X, noisy, cv=3, pred_probs=P).position[:len(flipped)])
    assert len(found & set(flipped.tolist())) >= 0.8 * len(flipped)


def space(weights="a", dim=24):
    return EmbeddingSpace(weights * 32, "fp32", "c" * 16, dim, model=f"m-{weights}")


def test_audit_tables_record_their_space_and_refuse_another():
    X, y = clusters(n_per_class=20, n_classes=3)
    ids = [f"i{i}" for i in range(len(X))]
    tables = [find_label_issues(X, y, cv=3, space=space()), near_duplicates(X, ids, space=space()),
              outliers(X, ids, k=3, space=space())]
    for table in tables:
        assert table.attrs["space"] == space()
        check_space(table, space())
        with pytest.raises(SpaceMismatchError, match=r"audit table was made in space m-a .* not in m-b") as e:
            check_space(table, space("b"))
        assert "\n" not in str(e.value)
    assert find_label_issues(X, y, cv=3).attrs["space"] is None  # no space given: not recorded, not checked
    check_space(find_label_issues(X, y, cv=3), space("b"))
    with pytest.raises(SpaceMismatchError, match=r"shape \(60, 24\), but its space .* is 16-d"):
        outliers(X, ids, k=3, space=space(dim=16))


def test_one_knn_graph_serves_label_issues_and_outliers():
    X, y = clusters(n_per_class=20, n_classes=3)
    ids = [f"i{i}" for i in range(len(X))]
    graph = knn_graph(X)  # the default (30 neighbours): what find_label_issues builds itself
    assert graph[0].shape == graph[1].shape == (60, 30) and not (graph[1] == np.arange(60)[:, None]).any()
    shared, own = outliers(X, ids, k=5, graph=graph), outliers(X, ids, k=5)
    assert np.allclose(shared.score, own.score, atol=1e-5) and shared.position[:10].tolist() == own.position[:10].tolist()
    assert find_label_issues(X, y, cv=3, graph=graph).equals(find_label_issues(X, y, cv=3))
    with pytest.raises(InvalidArgumentError, match="graph does not belong to these 59 vectors"):
        find_label_issues(X[:59], y[:59], cv=3, graph=graph)
    with pytest.raises(InvalidArgumentError, match="needs 40"):
        outliers(X, ids, k=40, graph=graph)


X24 = np.random.default_rng(0).normal(size=(30, 24)).astype(np.float32)
Y24 = np.array(["a", "b", "c"] * 10, dtype=object)
NAN24 = X24.copy()
NAN24[7, 3] = np.nan


@pytest.mark.parametrize("vectors, labels, kwargs, word", [
    (X24, Y24[:29], {}, "30 vectors but 29 labels"),
    (X24[:0], Y24[:0], {}, "non-empty"),
    (X24, ["a"] * 30, {}, "at least 2 classes, got 1"),
    (NAN24, Y24, {}, "NaN/inf, first \\[7\\]"),
    (X24, None, {}, "list of 30 labels"),
    (X24, "a", {}, "list of 30 labels"),
    (X24, list(Y24[:29]) + [None], {}, "1 labels are missing"),
    (X24, list(Y24[:29]) + [3], {}, "strings or all integers"),
    (X24[0], Y24, {}, "non-empty \\(n, dim\\)"),
    (X24, Y24, {"cv": 31}, "cv=31 folds but only 30 items"),
    (X24, Y24, {"cv": 1}, "cv must be"),
    (X24, Y24, {"method": "best"}, "Unknown label-issue method"),
    (X24, Y24, {"min_class_size": 0}, "min_class_size"),
    (X24, Y24, {"pred_probs": np.full((30, 3), np.nan)}, "probabilities in \\[0, 1\\]"),
    (X24, Y24, {"pred_probs": np.ones((29, 3)) / 3}, "pred_probs must have shape \\(30, 3\\)"),
    (X24, Y24, {"graph": "knn"}, "graph"),
    (X24, Y24, {"space": space(dim=16)}, "24-d|16-d"),
])
def test_hostile_label_issue_inputs_are_one_line(vectors, labels, kwargs, word):
    from fclip_workbench.errors import FclipError

    with pytest.raises(FclipError, match=word) as e:
        find_label_issues(vectors, labels, **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("vectors, ids, word", [
    (X24, [f"i{i}" for i in range(29)], "30 vectors but 29 ids"),
    (X24, None, "ids must be a list of 30"),
    (X24, "abc", "ids must be a list of 30"),
    (X24, ["same"] * 30, "ids must be unique"),
    (NAN24, [f"i{i}" for i in range(30)], "NaN/inf, first \\[7\\]"),
    (X24[:0], [], "non-empty"),
    (np.full((30, 24), "x"), [f"i{i}" for i in range(30)], "must be numbers"),
])
@pytest.mark.parametrize("call", ["near_duplicates", "outliers"])
def test_hostile_neighbour_audit_inputs_are_one_line(vectors, ids, word, call):
    fn = near_duplicates if call == "near_duplicates" else lambda v, i: outliers(v, i, k=3)
    with pytest.raises(InvalidArgumentError, match=word) as e:
        fn(vectors, ids)
    assert "\n" not in str(e.value)
