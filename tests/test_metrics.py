"""Metrics against examples computed by hand; the train/validation split."""
import numpy as np
import pytest

from fclip_workbench.analysis.metrics import (expected_calibration_error, ranks_of_relevant, retrieval_metrics,
                                     top_k_accuracy, weighted_f1)
from fclip_workbench.data.splits import is_validation, split_rows


def test_retrieval_by_hand():
    # 3 queries x 3 items; query i's item is i.
    sims = np.array([[0.9, 0.5, 0.1],   # item 0 ranked 1
                     [0.8, 0.3, 0.6],   # item 1 ranked 3
                     [0.2, 0.9, 0.4]])  # item 2 ranked 2
    assert [r.tolist() for r in ranks_of_relevant(sims)] == [[1], [3], [2]]
    m = retrieval_metrics(sims, ks=(1, 2))
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@2"] == pytest.approx(2 / 3)
    assert m["HITS@2"] == pytest.approx(2 / 3)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_recall_vs_hits_with_several_relevant():
    sims = np.array([[0.9, 0.8, 0.1, 0.0]])
    rel = np.array([[True, False, True, False]])  # relevant at ranks 1 and 3
    m = retrieval_metrics(sims, rel, ks=(1, 3))
    assert m["R@1"] == 0.5 and m["HITS@1"] == 1.0 and m["R@3"] == 1.0 and m["MRR"] == 1.0


def test_weighted_f1_by_hand():
    y = ["a", "a", "a", "b"]
    p = ["a", "a", "b", "b"]
    # class a: P=1, R=2/3 -> F1=0.8 (weight 3); class b: P=1/2, R=1 -> F1=2/3 (weight 1)
    assert weighted_f1(y, p) == pytest.approx((3 * 0.8 + 1 * 2 / 3) / 4)


def test_split_has_no_product_on_both_sides():
    ids = [f"p{i}" for i in range(5000)] + [f"p{i}" for i in range(100)]  # repeated ids (two rows each)
    train, val = split_rows(ids, 0.2, seed=3)
    assert not set(np.array(ids)[train]) & set(np.array(ids)[val])
    assert 0.17 < len(val) / len(ids) < 0.23
    # deterministic and independent of catalog order / size
    sub = ids[:1000][::-1]
    assert (is_validation(sub, 0.2, 3) == is_validation(ids, 0.2, 3)[:1000][::-1]).all()
    assert (is_validation(ids, 0.2, 4) != is_validation(ids, 0.2, 3)).any()


def test_weighted_f1_refuses_empty_or_mismatched_input():
    with pytest.raises(ValueError, match="no products"):
        weighted_f1([], [])
    with pytest.raises(ValueError, match="2 true labels but 1 predictions"):
        weighted_f1(["a", "b"], ["a"])


def test_relevant_must_match_sims():
    with pytest.raises(ValueError, match="relevant has shape"):
        retrieval_metrics(np.zeros((2, 3)), np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.zeros(3))


def test_top_k_accuracy_by_hand():
    probs = np.array([[0.5, 0.3, 0.2],   # true 1: rank 2
                      [0.1, 0.3, 0.6],   # true 2: rank 1
                      [0.4, 0.4, 0.2]])  # true 1: tie with class 0, which comes first -> rank 2
    assert top_k_accuracy(probs, [1, 2, 1], k=1) == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, [1, 2, 1], k=2) == 1.0
    assert top_k_accuracy(probs, [1, 2, 1], k=10) == 1.0


def test_expected_calibration_error_by_hand():
    # bins of width 0.5: confidences 0.9, 0.8 (bin 2), 0.6 (bin 2), 0.4 (bin 1: 3 classes)
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.6, 0.4, 0.0], [0.4, 0.3, 0.3]])
    y = [0, 1, 0, 0]  # right, wrong, right, right
    # bin 2: 3 items, accuracy 2/3, confidence 2.3/3 -> gap 0.1; bin 1: 1 item, 1 vs 0.4 -> gap 0.6
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx((3 * 0.1 + 1 * 0.6) / 4)
    # a calibrated predictor: 60% confident, right 60% of the time
    p = np.tile([0.6, 0.4], (10, 1))
    assert expected_calibration_error(p, [0] * 6 + [1] * 4) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.array([[1.0, 0.0]]), [1]) == 1.0


def test_calibration_metrics_refuse_bad_input():
    p = np.array([[0.7, 0.3], [0.2, 0.8]])
    with pytest.raises(ValueError, match=r"must have shape \(2,\)"):
        expected_calibration_error(p, [0])
    with pytest.raises(ValueError, match=r"whole numbers in \[0, 1\]"):
        top_k_accuracy(p, [0, 2])
    with pytest.raises(ValueError, match="no items"):
        top_k_accuracy(np.zeros((0, 2)), [])
    with pytest.raises(ValueError, match="k must be a whole number >= 1"):
        top_k_accuracy(p, [0, 1], k=0)
    with pytest.raises(ValueError, match="n_bins must be a whole number >= 1"):
        expected_calibration_error(p, [0, 1], n_bins=0)
    with pytest.raises(ValueError, match="non-finite"):
        expected_calibration_error(np.array([[np.nan, 1.0]]), [0])


# ---------------------------------------------------------------- hostile inputs: one line, never a number
def _one_line(exc: pytest.ExceptionInfo) -> str:
    from fclip_workbench.errors import InvalidArgumentError
    assert isinstance(exc.value, InvalidArgumentError) and isinstance(exc.value, ValueError)
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("probs, first", [
    (np.array([[0.7, 0.3], [0.5, 0.4], [0.9, 0.9]]), 1),        # sums to 0.9 (and a later row to 1.8)
    (np.array([[0.7, 0.3], [0.6, 0.4], [2.0, 1.0]]), 2),        # logits, not probabilities
    (np.array([[0.7, 0.3], [1.2, -0.2], [0.5, 0.5]]), 1),       # sums to 1 but has a negative entry
    (np.array([[0.7, 0.3], [0.5, 0.5], [0.0, 0.0]]), 2),        # all zeros
    (np.array([[0.7, 0.3], [np.nan, 0.5], [0.5, 0.5]]), 1),     # NaN
    (np.array([[0.7, 0.3], [0.5, 0.5], [np.inf, 0.0]]), 2),     # inf
    (np.array([[0.7, 0.3], [0.5, 0.5], [0.4995, 0.4995]]), 2),  # sums to 0.999: just outside the 1e-3 tolerance
])
def test_ece_refuses_rows_that_are_not_distributions_naming_the_first(probs, first):
    with pytest.raises(ValueError, match=rf"first row {first}\b") as e:
        expected_calibration_error(probs, [0, 0, 0])
    _one_line(e)


def test_ece_accepts_float32_softmax_rows_and_refuses_mismatched_shapes():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (500, 37)).astype(np.float32)
    e = np.exp(logits - logits.max(1, keepdims=True))
    p32 = (e / e.sum(1, keepdims=True)).astype(np.float32)  # rows sum to 1 +- ~1e-6
    p32[0] *= np.float32(1 + 5e-4)  # well inside the tolerance
    y = rng.integers(0, 37, 500)
    assert 0.0 <= expected_calibration_error(p32, y) <= 1.0
    for probs, labels, word in [(np.full((3, 2), 0.5), [0, 1], r"shape \(3,\)"),
                                (np.full((3, 2), 0.5), [[0], [1], [0]], r"shape \(3,\)"),
                                (np.full(4, 0.25), [0], "2-D"),
                                (np.zeros((0, 2)), [], "no items"),
                                (np.zeros((2, 0)), [0, 0], "no items or no classes"),
                                ([[0.5, 0.5], [1.0]], [0, 1], "numeric array"),
                                ([["a", "b"]], [0], "numeric array"),
                                (np.full((2, 2), 0.5), [0, None], "whole numbers"),
                                (np.full((2, 2), 0.5), [True, False], "whole numbers"),
                                (np.full((2, 2), 0.5), ["a", "b"], "whole numbers")]:
        with pytest.raises(ValueError, match=word) as exc:
            expected_calibration_error(probs, labels)
        _one_line(exc)


def test_top_k_accuracy_takes_any_finite_scores_but_not_nan():
    logits = np.array([[2.0, -1.0], [0.5, 3.0]])  # not distributions: fine for a ranking
    assert top_k_accuracy(logits, [0, 1]) == 1.0
    with pytest.raises(ValueError, match="1 row.*first row 1") as e:
        top_k_accuracy(np.array([[2.0, -1.0], [np.nan, 3.0]]), [0, 1])
    _one_line(e)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_retrieval_metrics_refuse_non_finite_similarities_naming_how_many_rows(bad):
    rng = np.random.default_rng(0)
    txt, img = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    txt[[1, 4], 2] = bad  # two NaN/inf text embeddings -> two bad rows of sims
    sims = txt @ img.T
    for call in (lambda: retrieval_metrics(sims), lambda: ranks_of_relevant(sims),
                 lambda: retrieval_metrics(sims, np.eye(6, dtype=bool), ks=(1,))):
        with pytest.raises(ValueError, match=r"non-finite values \(NaN/inf\) in 2 of 6 row\(s\), first row 1") as e:
            call()
        _one_line(e)
    one = np.eye(3)
    one[2, 0] = bad  # a single bad similarity, not the whole row
    with pytest.raises(ValueError, match=r"in 1 of 3 row\(s\), first row 2") as e:
        retrieval_metrics(one)
    _one_line(e)


@pytest.mark.parametrize("call, word", [
    (lambda: retrieval_metrics(np.zeros((0, 0))), "no queries or no items"),
    (lambda: retrieval_metrics(np.zeros((0, 3)), np.zeros((0, 3), bool)), "no queries or no items"),
    (lambda: retrieval_metrics(np.zeros((2, 3))), "must be square"),
    (lambda: retrieval_metrics(np.zeros((2, 3)), np.ones((3, 2), bool)), "relevant has shape"),
    (lambda: retrieval_metrics(np.zeros((2, 2)), np.zeros((2, 2), bool)), "no query has a relevant item"),
    (lambda: retrieval_metrics(np.eye(2), np.array([[np.nan, 0.0], [0.0, 1.0]])), r"first \[0, 0\]"),
    (lambda: retrieval_metrics(np.eye(2), np.array([[1.0, 0.0], [0.0, 0.5]])), r"first \[1, 1\] = 0.5"),
    (lambda: retrieval_metrics([["a", "b"], ["c", "d"]]), "numeric array"),
    (lambda: retrieval_metrics(np.eye(3), ks=(0, 1)), "ks must be whole numbers >= 1, got 0"),
    (lambda: retrieval_metrics(np.eye(3), ks=(1.5,)), "ks must be whole numbers >= 1"),
    (lambda: retrieval_metrics(np.eye(3), ks=5), "ks must be a list"),
    (lambda: weighted_f1(["a", "b"], ["a"]), "2 true labels but 1 predictions"),
    (lambda: weighted_f1([], []), "no products"),
    (lambda: weighted_f1(["a", None], ["a", "b"]), "1 of 2 true labels are missing"),
    (lambda: weighted_f1([1.0, 2.0], [1.0, np.nan]), "1 of 2 predictions are missing .* position 1"),
    (lambda: weighted_f1(["a", 1], ["a", 1]), "mix strings"),
    (lambda: weighted_f1("ab", "ab"), "must be a list of labels"),
    (lambda: weighted_f1([["a"], ["b"]], [["a"], ["b"]]), "must be a list of labels"),
])
def test_every_metric_refuses_empty_mismatched_or_malformed_input_in_one_line(call, word):
    with pytest.raises(ValueError, match=word) as e:
        call()
    _one_line(e)
