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
