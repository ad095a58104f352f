"""Each view of an annotation session keeps what IT showed: a later grid, page or pane never stands in for
an earlier one, so a decision taken on the earlier view cannot overwrite a label set in between.

Two annotators on one SQLite file; the interleavings are forced step by step.
"""
from __future__ import annotations

import pytest

from fclip_workbench.labelling.annotate import SessionConflictError
from tests.test_annotate import COLOURS, PrototypeSuggester, WordModel, catalog, embeddings  # noqa: F401 (fixtures)
from tests.test_annotate_conflicts import history, label, label_file, open_session  # noqa: F401 (fixtures)


def test_pane_accept_is_conditional_on_the_pane_not_on_a_later_grid(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    shown = ana.current  # the pane shows this item, unlabelled
    bob.review([shown.item_id])
    bob.correct("blue")
    ana.selection_batch([shown.item_id])  # a later grid shows bob's label: the pane still shows the old state
    n = len(history(ana))
    with pytest.raises(SessionConflictError, match="bob set it to 'blue'"):
        ana.accept(1)
    assert label(ana, shown.item_id) == "blue" and len(history(ana)) == n


def test_apply_on_an_older_grid_is_conditional_on_that_grid(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    item = ana.ids[0]
    old_grid = ana.selection_batch([item])  # shows it unlabelled
    bob.review([item])
    bob.correct("blue")
    ana.selection_batch([item])  # a newer grid (another tab of the widget) shows bob's label
    with pytest.raises(SessionConflictError):
        ana.apply_batch(old_grid, "red", replace=True)  # decided on the older grid
    assert label(ana, item) == "blue"
    # the same decision on the newer grid, which showed bob's label, is a deliberate change
    newer = ana.selection_batch([item])
    assert ana.apply_batch(newer, "red", replace=True).item_ids == [item]
    assert label(ana, item) == "red"


def test_confirm_on_an_older_page_is_conditional_on_that_page(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    old_page = ana.batch_candidates(label="red", n=3)
    target = old_page[0].item_id
    bob.review([target])
    bob.correct("blue")
    bob.undo()  # the label is gone again, but the item's last event is not the one the old page showed
    ana.batch_candidates(label="red", n=3)  # a newer page
    with pytest.raises(SessionConflictError, match="changed since the page was drawn"):
        ana.confirm_batch(old_page, "red")
    assert label(ana, target) is None


def test_explicit_shown_events_are_checked(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    item = ana.ids[1]
    before = ana.store.current_events("colour", [item])[item][1]
    bob.review([item])
    bob.correct("green")
    with pytest.raises(SessionConflictError):
        ana.apply_batch([item], "red", replace=True, shown={item: before})
    assert label(ana, item) == "green"


def test_review_shows_labelled_items_with_their_label(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    a, b, c = ana.ids[:3]
    bob.review([a, b])
    bob.correct("blue")
    bob.correct("green")
    item = ana.review([a, c, b])  # e.g. the audit's most suspicious labels
    assert (item.item_id, item.current) == (a, "blue")
    assert ana.queue() == [a, c, b]
    ana.correct("red")  # a deliberate change of a label the pane showed
    assert label(ana, a) == "red"
    assert ana.current.item_id == c and ana.current.current is None
    ana.skip()
    assert ana.current.item_id == b and ana.current.current == "green"
    bob.review([b])
    bob.correct("red")  # after ana's pane showed 'green'
    with pytest.raises(SessionConflictError, match="bob set it to 'red'"):
        ana.correct("green")
    assert label(ana, b) == "red"
