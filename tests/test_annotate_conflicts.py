"""Two annotators, one SQLite label file: no decision the session derives from what it showed overwrites a
label someone else set after it was shown, and undo never erases someone else's later decision.

Each annotator has their own `LabelStore` connection on the same file (as two browser tabs or two
processes would), and their own `AnnotationSession`. The interleavings are forced step by step.
"""
from __future__ import annotations

import pytest

from fclip_workbench.labelling.annotate import BATCH, AnnotationSession, SessionConflictError
from fclip_workbench.errors import ConflictError, InvalidArgumentError, LabelValueError, UndoConflictError
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.taxonomy import Taxonomy
from tests.test_annotate import COLOURS, PrototypeSuggester, WordModel, catalog, embeddings  # noqa: F401 (fixtures)


@pytest.fixture
def label_file(tmp_path):
    return tmp_path / "team.sqlite"


@pytest.fixture
def open_session(catalog, embeddings, label_file):  # noqa: F811 (fixtures)
    opened: list[LabelStore] = []

    def make(name: str, **kw) -> AnnotationSession:
        store = LabelStore(label_file, catalog=catalog)  # one connection per annotator
        opened.append(store)
        return AnnotationSession(catalog, "colour", store, PrototypeSuggester(COLOURS, embeddings.vectors.shape[1]),
                                 embeddings, model=WordModel(embeddings.vectors.shape[1]), annotator=name,
                                 background=False, refit_every=0, taxonomy=Taxonomy.from_values("colour", COLOURS),
                                 **kw)

    yield make
    for s in opened:
        s.close()


def label(session: AnnotationSession, item_id: str) -> str | None:
    return session.store.get(item_id, "colour")


def history(session: AnnotationSession):
    return session.store.history(field="colour")


# ------------------------------------------------------------------ the model batch (the case in the issue)
def test_confirm_batch_never_overwrites_a_label_set_after_the_page_was_drawn(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    page = [c.item_id for c in ana.batch_candidates(label="red", n=4)]
    bob.review([page[1]])
    bob.correct("blue")  # after ana's page was drawn
    n_events = len(history(ana))
    with pytest.raises(SessionConflictError, match=rf"item '{page[1]}' \(colour\): bob set it to 'blue' after this was "
                                                   r"shown; nothing saved: 1 of the 4 products changed") as err:
        ana.confirm_batch(page, "red")
    assert isinstance(err.value, ConflictError) and isinstance(err.value, LabelValueError)
    assert len(history(ana)) == n_events, "all or nothing: no label of the batch was written"
    assert label(ana, page[1]) == "blue" and all(label(ana, i) is None for i in page if i != page[1])
    again = [c.item_id for c in ana.batch_candidates(label="red", n=4)]
    assert page[1] not in again, "the next page is drawn from the labels as they are now"
    d = ana.confirm_batch(again, "red")
    assert d.status == "saved: 4 labels" and label(ana, page[1]) == "blue"


def test_confirm_batch_refuses_a_product_labelled_before_the_page_too(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    bob.review(["p3"])
    bob.correct("green")
    with pytest.raises(LabelValueError, match=r"p3 \(green\).*nothing saved"):  # never on a page: refused, not replaced
        ana.confirm_batch(["p0", "p3"], "red")
    assert label(ana, "p0") is None and label(ana, "p3") == "green"


def test_a_page_never_offers_a_product_labelled_since_the_session_read_the_store(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    first = ana.batch_candidates(label="red", n=1)[0].item_id
    ana._rejected.clear()
    ana._last_page = (None, [])
    bob.review([first])
    bob.correct("green")  # ana's session still believes it unlabelled
    page = [c.item_id for c in ana.batch_candidates(label="red", n=3)]
    assert first not in page and len(page) == 3


def test_another_annotator_setting_the_same_value_is_still_a_conflict(open_session):
    """Events, not values: bob decided too; ana's batch was drawn before that and is refused."""
    ana, bob = open_session("ana"), open_session("bob")
    page = [c.item_id for c in ana.batch_candidates(label="red", n=2)]
    bob.review([page[0]])
    bob.correct("red")
    with pytest.raises(SessionConflictError, match="bob set it to 'red'"):
        ana.confirm_batch(page, "red")
    assert [e for e in history(ana).annotator] == ["bob"]


# ------------------------------------------------------------------ the current item
def test_accept_on_an_item_someone_labelled_since_it_was_shown_is_refused_and_shows_the_new_label(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    shown = ana.current.item_id
    bob.review([shown])
    bob.correct("blue")
    with pytest.raises(SessionConflictError, match=rf"item '{shown}' \(colour\): bob set it to 'blue' .*nothing "
                                                   r"saved: it shows 'blue' now"):
        ana.accept(1)
    assert label(ana, shown) == "blue" and list(history(ana).annotator) == ["bob"]
    assert ana.current.item_id == shown and ana.current.current == "blue", "shown again as it is now"
    d = ana.correct("green")  # a decision taken on what is shown now: written
    assert d.value == "green" and label(ana, shown) == "green"


def test_correct_after_another_removed_the_label_is_refused(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    shown = ana.current.item_id
    bob.review([shown])
    bob.correct("red")
    bob.undo()  # back to unlabelled: the value is what ana saw, but two events happened
    with pytest.raises(SessionConflictError, match=r"bob removed its label .*it shows no label now"):
        ana.correct("green")
    assert label(ana, shown) is None


# ------------------------------------------------------------------ the selection batch
def test_apply_batch_is_conditional_on_the_events_the_grid_showed(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    grid = ana.selection_batch(["p0", "p1", "p2"])
    assert [c.event_id for c in grid] == [None, None, None]
    bob.review(["p2"])
    bob.correct("red")
    bob.undo()  # the same (empty) value as the grid shows, by another event
    with pytest.raises(SessionConflictError, match=r"item 'p2' \(colour\): bob removed its label"):
        ana.apply_batch(["p0", "p1", "p2"], "green", replace=True,
                        expected={c.item_id: c.current for c in grid})
    assert all(label(ana, i) is None for i in ("p0", "p1", "p2"))
    grid = ana.selection_batch(["p0", "p1", "p2"])  # redrawn: now it holds
    assert ana.apply_batch(["p0", "p1", "p2"], "green").status == "saved: 3 labels"


def test_apply_batch_with_values_changed_since_shown_names_them(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    grid = {c.item_id: c.current for c in ana.selection_batch(["p4", "p5"])}
    bob.review(["p5"])
    bob.correct("blue")
    with pytest.raises(SessionConflictError, match=r"1 labels changed since the grid was shown: p5 \(unlabelled -> "
                                                   r"blue\); nothing saved"):
        ana.apply_batch(["p4", "p5"], "red", replace=True, expected=grid)
    assert label(ana, "p4") is None and label(ana, "p5") == "blue"


# ------------------------------------------------------------------ undo
def test_undo_refused_once_another_annotator_changed_the_item(open_session):
    """The hostile case: ana sets red, bob sets blue, cy sets red again; ana's undo must not erase cy's red."""
    ana, bob, cy = open_session("ana"), open_session("bob"), open_session("cy")
    item = ana.current.item_id
    ana.correct("red")
    for other, value in ((bob, "blue"), (cy, "red")):
        other.selection_batch([item])  # shown in their grid, then deliberately relabelled
        other.apply_batch([item], value, replace=True)
    n_events = len(history(ana))
    with pytest.raises(UndoConflictError, match=rf"cannot undo ana's label of item '{item}' \(colour\): cy set it "
                                                r"to 'red' since"):
        ana.undo()
    assert label(ana, item) == "red" and len(history(ana)) == n_events


def test_undo_refused_when_the_same_annotator_changed_it_in_another_session(open_session):
    tab1, tab2 = open_session("ana"), open_session("ana")
    item = tab1.current.item_id
    tab1.correct("red")
    tab2.selection_batch([item])
    tab2.apply_batch([item], "blue", replace=True)
    with pytest.raises(UndoConflictError, match=r"ana \(in another session\) set it to 'blue'"):
        tab1.undo()
    assert label(tab1, item) == "blue"


def test_undo_in_one_tab_never_undoes_the_same_annotators_decision_in_another(open_session):
    tab1 = open_session("ana")
    before = tab1.current.item_id
    tab1.correct("green")  # made before tab 2 opened
    tab2 = open_session("ana")
    tab1.review(["p3" if before != "p3" else "p4"])
    mine = tab1.current.item_id
    tab1.correct("red")
    tab2.review(["p5"])
    theirs = tab2.current.item_id
    tab2.correct("blue")  # the same name's newest decision, in the other tab
    d = tab1.undo()
    assert d.item_ids == [mine] and label(tab1, mine) is None
    assert label(tab1, theirs) == "blue"  # the other tab's decision stands
    d = tab2.undo()  # its own decision
    assert d.item_ids == [theirs] and label(tab2, theirs) is None
    d = tab2.undo()  # then what was decided before it opened
    assert d.item_ids == [before] and label(tab2, before) is None
    assert tab2.undo() is None  # tab 1's red, made after tab 2 opened, is never tab 2's to undo (undone anyway)
    fresh = open_session("ana")
    tab1.review(["p6"])
    tab1.correct("red")  # after `fresh` opened
    assert fresh.undo() is None and label(tab1, "p6") == "red"


def test_undo_of_a_batch_refused_when_one_of_its_products_changed(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    page = [c.item_id for c in ana.batch_candidates(label="green", n=3)]
    ana.confirm_batch(page, "green")
    bob.selection_batch([page[2]])
    bob.apply_batch([page[2]], "blue", replace=True)
    with pytest.raises(UndoConflictError, match=rf"item '{page[2]}' \(colour\): bob set it to 'blue'"):
        ana.undo()
    assert [label(ana, i) for i in page] == ["green", "green", "blue"]
    assert (history(ana).source == BATCH).sum() == 4 and not (history(ana).source == "undo").any()


def test_undo_still_works_when_nobody_else_touched_the_item(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    item = ana.current.item_id
    ana.correct("red")
    bob.review(["p11" if item != "p11" else "p10"])
    bob.correct("blue")  # another item: no conflict
    d = ana.undo()
    assert d.item_ids == [item] and label(ana, item) is None and ana.current.item_id == item


# ------------------------------------------------------------------ the name every write carries
@pytest.mark.parametrize("name", ["ana\u200b", "bob\u202e", "a" * 1000])
def test_names_break_the_one_name_rule_before_anything_is_written(open_session, name):
    s = open_session(name)
    with pytest.raises(InvalidArgumentError, match="annotator name"):
        s.accept(1)
    with pytest.raises(InvalidArgumentError, match="annotator name"):
        s.confirm_batch([s.current.item_id], "red")
    assert history(s).empty


def test_a_name_is_written_in_its_canonical_spelling(open_session):
    s = open_session(" Ana\u0308 ")
    s.accept(1)
    assert list(history(s).annotator) == ["An\u00e4"]
    assert s.undo() is not None, "undo finds the decision under the same canonical name"


def test_undoing_a_batch_after_undoing_ones_own_later_change_is_not_blocked_by_that_undo(open_session):
    ana = open_session("ana")
    ana.selection_batch(["p0", "p1"])
    ana.apply_batch(["p0", "p1"], "red")
    ana.selection_batch(["p0"])
    ana.apply_batch(["p0"], "blue", replace=True)
    assert ana.undo().value == "red" and label(ana, "p0") == "red"
    d = ana.undo()  # the batch: ana's own undo since is no one else's decision
    assert sorted(d.item_ids) == ["p0", "p1"] and label(ana, "p0") is None and label(ana, "p1") is None


def test_a_value_another_annotator_added_is_valid_here_in_their_spelling(open_session):
    ana, bob = open_session("ana"), open_session("bob")
    assert bob.add_to_taxonomy("Teal") == "Teal"
    item = ana.current.item_id
    d = ana.correct("teal")  # not in ana's copy when her session opened: read from the store
    assert d.value == "Teal" and label(ana, item) == "Teal" and "Teal" in ana.taxonomy
    assert ana.add_to_taxonomy("TEAL") == "Teal" and ana.taxonomy.values.count("Teal") == 1
