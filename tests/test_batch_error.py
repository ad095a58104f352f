"""A batch states its error: the Poisson-binomial count of wrong labels (exact), its interval, bad input, and
the session and widget reporting it when a model batch is confirmed."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.labelling.batch_error import BatchError, batch_error, check_probabilities, wrong_count_distribution
from fclip_workbench.widgets.viz import html_text
from tests.test_annotate import catalog, embeddings, make_session, store  # noqa: F401 (fixtures)
from tests.test_annotator_widget import status, widget, with_class  # noqa: F401 (fixtures)


def brute_force(p) -> np.ndarray:
    """P(k wrong) by enumerating all 2^n right/wrong outcomes."""
    out = np.zeros(len(p) + 1)
    for wrong in itertools.product((0, 1), repeat=len(p)):
        out[sum(wrong)] += math.prod((1 - pi) if w else pi for pi, w in zip(p, wrong))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_distribution_is_exact_against_enumeration(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, size=seed + 3)
    p[0] = [0.0, 1.0, 0.5][seed % 3]  # an edge value in each
    np.testing.assert_allclose(wrong_count_distribution(p), brute_force(p), atol=1e-12)


def test_interval_is_the_central_quantiles_and_holds_at_least_the_level():
    rng = np.random.default_rng(7)
    for _ in range(20):
        p = rng.beta(5, 1, size=int(rng.integers(1, 40)))
        e = batch_error(p, level=0.9)
        pmf = brute_force(p) if len(p) <= 12 else wrong_count_distribution(p)
        cdf = np.cumsum(pmf)
        assert e.low == int(np.argmax(cdf >= 0.05 - 1e-12)) and e.high == int(np.argmax(cdf >= 0.95 - 1e-12))
        assert e.coverage >= 0.9 - 1e-9 and math.isclose(e.coverage, pmf[e.low:e.high + 1].sum())
        assert math.isclose(e.expected_wrong, float((1 - p).sum())) and 0 <= e.low <= e.high <= e.n == len(p)


def test_all_right_is_zero_of_n():
    e = batch_error([1.0] * 24)
    assert (e.n, e.expected_wrong, e.low, e.high, e.coverage) == (24, 0.0, 0, 0, 1.0)
    assert str(e) == "expected wrong: 0.0 of 24 (90 % interval 0–0)"
    assert batch_error([0.0] * 5).low == batch_error([0.0] * 5).high == 5


def test_all_one_half_is_the_binomial():
    from scipy.stats import binom

    n = 24
    np.testing.assert_allclose(wrong_count_distribution([0.5] * n), binom.pmf(np.arange(n + 1), n, 0.5), atol=1e-12)
    e = batch_error([0.5] * n, level=0.9)
    assert (e.low, e.high) == (int(binom.ppf(0.05, n, 0.5)), int(binom.ppf(0.95, n, 0.5)))
    assert e.expected_wrong == 12.0 and e.rate == 0.5


def test_agrees_with_scipy_poisson_binomial_where_scipy_has_it():
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "poisson_binom"):
        pytest.skip("scipy < 1.15 has no poisson_binom")
    p = np.random.default_rng(3).uniform(0.6, 1.0, size=300)
    np.testing.assert_allclose(wrong_count_distribution(p), stats.poisson_binom.pmf(np.arange(301), 1 - p), atol=1e-10)


def test_text_and_small_expectations():
    assert str(BatchError(23, 1.26, 0, 3, 0.9, 0.93)) == "expected wrong: 1.3 of 23 (90 % interval 0–3)"
    assert str(batch_error([0.999] * 10, level=0.95)) == "expected wrong: < 0.1 of 10 (95 % interval 0–0)"
    assert BatchError(0, 0.0, 0, 0, 0.9, 1.0).rate != BatchError(0, 0.0, 0, 0, 0.9, 1.0).rate  # nan


@pytest.mark.parametrize("bad, match", [
    ([], "no probabilities: a batch needs at least one product"),
    ([0.5, float("nan")], r"must lie in \[0, 1\]: nan at position 1"),
    ([0.5, 1.2, -0.1], r"must lie in \[0, 1\]: 1.2 at position 1 \(and 1 more\)"),
    ([0.5, float("inf")], r"inf at position 1"),
    ("0.5", "not a string"),
    ([["a"]], "must be numbers"),
    ([[0.5, 0.5]], r"1-d\), got shape \(1, 2\)"),
])
def test_bad_probabilities_are_one_line(bad, match):
    with pytest.raises(InvalidArgumentError, match=match) as info:
        batch_error(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidArgumentError, match=match):
        check_probabilities(bad)


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, float("nan"), True, "0.9"])
def test_bad_level_is_refused(level):
    with pytest.raises(InvalidArgumentError, match="level must be a probability strictly between 0 and 1"):
        batch_error([0.9], level=level)


def test_large_batch_is_fast_and_sums_to_one():
    import time

    p = np.random.default_rng(0).uniform(0.5, 1, size=2000)
    t = time.perf_counter()
    pmf = wrong_count_distribution(p)
    assert time.perf_counter() - t < 2.0
    assert math.isclose(pmf.sum(), 1.0, rel_tol=1e-9) and (pmf >= 0).all()


# ------------------------------------------------------------------ the session and the widget
def test_confirm_batch_states_the_error_of_the_confirmed_products(catalog, store, embeddings):  # noqa: F811
    s = make_session(catalog, store, embeddings)
    page = s.batch_candidates(label="red", n=4)
    ticked = page[:3]
    p = s._view.proba[[c.row for c in ticked], s._view.classes.index("red")]  # what the page's scores are
    np.testing.assert_allclose(p, [c.score for c in ticked], rtol=1e-6)
    before = s.expected_error(ticked, "red")
    d = s.confirm_batch(ticked, "red")
    assert d.status == "saved: 3 labels"
    assert isinstance(d.batch_error, BatchError) and d.batch_error == before == batch_error(p)
    assert d.batch_error.n == 3 and math.isclose(d.batch_error.expected_wrong, float((1 - p).sum()), rel_tol=1e-6)
    assert d.report == f"saved: 3 labels · {d.batch_error}" and "expected wrong:" in d.report


def test_expected_error_is_none_for_a_value_the_suggester_does_not_know(catalog, store, embeddings):  # noqa: F811
    s = make_session(catalog, store, embeddings)
    page = s.batch_candidates(label="red", n=2)
    s.add_to_taxonomy("mauve")
    assert s.expected_error(page, "mauve") is None and s.expected_error([], "red") is None
    d = s.confirm_batch(page, "mauve")
    assert d.batch_error is None and d.report == d.status == "saved: 2 labels"


def test_widget_labels_tile_scores_and_states_the_batch_error(widget):  # noqa: F811
    with_class(widget, "fclip-mode")[0].value = "batch"
    with_class(widget, "fclip-batch-label")[0].value = "blue"
    page = list(widget._page)
    caps = [cap.value for _, _, cap, _ in widget._cells[:len(page)]]
    for c, cap in zip(page, caps):
        assert f"{c.score:.0%} blue" in cap and 'class="fclip-batch-score"' in cap and "probability" in cap
    err = with_class(widget, "fclip-batch-error")[0]
    assert html_text(str(widget.session.expected_error(page, "blue"))) in err.value and " of 4 (90 % " in err.value
    boxes = with_class(widget, "fclip-batch-item")
    boxes[3].value = False
    assert "of 3 (90 % interval" in err.value
    stated = widget.session.expected_error(page[:3], "blue")
    with_class(widget, "fclip-batch-confirm")[0].click()
    assert html_text(f"saved: 3 labels · {stated}") in status(widget)


def test_widget_query_tiles_say_similarity(widget):  # noqa: F811
    with_class(widget, "fclip-mode")[0].value = "batch"
    with_class(widget, "fclip-batch-query")[0].value = "red"
    caps = [cap.value for _, _, cap, _ in widget._cells[:len(widget._page)]]
    assert caps and all("similarity " in c and "cosine similarity" in c for c in caps)
