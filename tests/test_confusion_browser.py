"""ConfusionBrowser: a click on a cell of a model's confusion matrix shows exactly the products in it."""
from __future__ import annotations

import pytest
from plotly.callbacks import Points

from fclip_workbench.analysis.compare import compare
from fclip_workbench.embedding.models import load_model
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.widgets.confusion import ConfusionBrowser
from tests.test_compare import catalog, other_model_dir, pick_seeds, with_split  # noqa: F401  (fixtures)


@pytest.fixture
def report(tiny_model_dir, other_model_dir, tmp_path, catalog):  # noqa: F811
    sa, sb = pick_seeds(catalog)
    dir_a, _ = with_split(tiny_model_dir, tmp_path / "a", catalog, sa)
    dir_b, _ = with_split(other_model_dir, tmp_path / "b", catalog, sb)
    return compare(load_model(dir_a, device="cpu"), load_model(dir_b, device="cpu"), catalog, ["garment"],
                   store=EmbeddingStore(tmp_path / "e.sqlite"), n_boot=20, n_retrieval=50)


@pytest.mark.parametrize("which", [0, 1])
def test_a_click_on_a_cell_shows_the_products_with_that_true_and_predicted_value(report, which):
    res = report.fields["garment"]
    pred = (res.pred_a, res.pred_b)[which]
    browser = ConfusionBrowser(report, "garment", which=which)
    assert browser.counts.sum() == sum(t in browser.classes and p in browser.classes
                                       for t, p in zip(res.truth, pred))
    assert len(browser.classes) >= 2
    drawn = 0
    for true, predicted in [(t, p) for t in browser.classes for p in browser.classes]:  # every cell, empty ones too
        trace = browser.figure.data[0]
        # what plotly sends for a click on the cell: its x (predicted) and y (true) categories
        browser._on_click(trace, Points(point_inds=[0], xs=[predicted], ys=[true], trace_name="", trace_index=0), None)
        want = [i for i, t, p in zip(res.ids, res.truth, pred) if (t, p) == (true, predicted)]
        assert browser.shown == want
        assert f"<b>{len(want):,}</b> products" in browser.head.value
        assert browser.grid.value.count("<figure") == min(len(want), 48)
        assert all(f"{i}: {true} -&gt; {predicted}" in browser.grid.value or f"{i}: {true} -> {predicted}"
                   in browser.grid.value for i in want[:48])
        drawn += len(browser.shown)
    assert drawn == browser.counts.sum()  # the cells' products are the matrix's counts


def test_unknown_field_value_or_model_is_one_line(report):
    with pytest.raises(InvalidArgumentError, match="no field 'colour'; it has: garment"):
        ConfusionBrowser(report, "colour")
    with pytest.raises(InvalidArgumentError, match="which must be 0"):
        ConfusionBrowser(report, "garment", which=2)
    with pytest.raises(InvalidArgumentError, match="is not a value of this matrix"):
        ConfusionBrowser(report, "garment").show_cell("no-such-garment", "dress")
