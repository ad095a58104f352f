"""Compare-and-set label writes and event-based undo, on SQLite and PostgreSQL.

A write the UI derives from what it showed passes the last event id it saw (`current_events`); when
anyone's event came since, nothing is written and `ConflictError` names who changed it. Undo compares
events, not values.
"""
from __future__ import annotations

import pytest

from fclip_workbench.errors import ConflictError, InvalidArgumentError, LabelStoreError, UndoConflictError
from fclip_workbench.labelling.labels import ANY_EVENT, LabelStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = str(tmp_path / "labels.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = LabelStore(url, timeout=5)
    yield s
    s.close()


def one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------- current_events
def test_current_events_gives_value_and_last_event(store):
    assert store.current_events("colour", ["p1"]) == {"p1": (None, None)}
    ev = store.set("p1", "colour", "red", annotator="ana")
    store.set("p1", "garment", "shirt", annotator="ana")  # another field: not this one's event
    assert store.current_events("colour", ["p1", "p2", "p1"]) == {"p1": ("red", ev.id), "p2": (None, None)}
    removed = store.set("p1", "colour", None, annotator="bob")
    assert store.current_events("colour", ["p1"]) == {"p1": (None, removed.id)}
    u = store.undo("bob")  # an undo is an event too
    assert store.current_events("colour", ["p1"]) == {"p1": ("red", u.id)}


def test_current_events_after_group_undo_is_the_last_event(store):
    store.set_many([("a", "red"), ("b", "red")], "colour", annotator="ana", batch_id="s1")
    store.set_many([("a", "blue")], "colour", annotator="ana", batch_id="s1")  # same group, item set twice
    store.undo("ana")
    last = store.history(item_id="a", field="colour")["id"].max()
    assert store.current_events("colour", ["a"])["a"] == (None, last)


# ----------------------------------------------------------------------------- set with expect_event
def test_set_with_the_shown_event_writes(store):
    assert store.set("p1", "colour", "red", annotator="ana", expect_event=None).new_value == "red"
    shown = store.current_events("colour", ["p1"])["p1"][1]
    assert store.set("p1", "colour", "blue", annotator="ana", expect_event=shown).old_value == "red"
    assert store.set("p1", "colour", "green", annotator="ana", expect_event=ANY_EVENT).old_value == "blue"
    assert repr(ANY_EVENT) == "ANY_EVENT"


def test_set_after_someone_else_changed_it_is_refused(store):
    shown = store.current_events("articleType", ["p12"])["p12"][1]  # None: never labelled when drawn
    store.set("p12", "articleType", "Shirts", annotator="bob")
    with pytest.raises(ConflictError) as e:
        store.set("p12", "articleType", "Tshirts", annotator="ana", expect_event=shown)
    msg = one_line(e)
    assert "'p12'" in msg and "bob" in msg and "'Shirts'" in msg and "articleType" in msg
    assert isinstance(e.value, LabelStoreError)
    assert store.get("p12", "articleType") == "Shirts" and len(store.history()) == 1


def test_same_value_set_again_is_still_a_conflict(store):
    """Compare events, not values: bob writing the value ana saw is still news to ana."""
    ev = store.set("p1", "colour", "red", annotator="ana")
    store.set("p1", "colour", "red", annotator="bob")
    with pytest.raises(ConflictError, match="bob set it to 'red'"):
        store.set("p1", "colour", "blue", annotator="ana", expect_event=ev.id)
    store.set("p2", "colour", "red", annotator="cy")
    store.set("p2", "colour", None, annotator="cy")
    with pytest.raises(ConflictError, match="cy removed its label"):  # labelled then removed: not "never"
        store.set("p2", "colour", "blue", annotator="ana", expect_event=None)
    assert store.get("p2", "colour") is None


def test_expect_event_checked_before_anything(store):
    for bad in ("3", 1.0, True, 0, -2, [1]):
        with pytest.raises(InvalidArgumentError) as e:
            store.set("p1", "colour", "red", annotator="ana", expect_event=bad)
        one_line(e)
    assert len(store.history()) == 0


def test_conflict_adds_nothing_to_the_taxonomy(store):
    from fclip_workbench.labelling.taxonomy import Taxonomy
    store.set_taxonomy("colour", Taxonomy("colour", ["red", "blue"]))
    store.set("p1", "colour", "red", annotator="bob")
    with pytest.raises(ConflictError):
        store.set("p1", "colour", "teal", annotator="ana", add_to_taxonomy=True, expect_event=None)
    assert store.taxonomy("colour", refresh=True).values == ["red", "blue"]


# ----------------------------------------------------------------------------- set_many with expect_events
def test_set_many_is_all_or_nothing(store):
    store.set("b", "colour", "red", annotator="ana")
    shown = {i: e for i, (_, e) in store.current_events("colour", ["a", "b", "c"]).items()}
    store.set("c", "colour", "green", annotator="bob")  # after the page was drawn
    with pytest.raises(ConflictError) as e:
        store.set_many([("a", "blue"), ("b", "blue"), ("c", "blue")], "colour", annotator="ana",
                       expect_events=shown)
    assert "'c'" in one_line(e) and "bob" in str(e.value) and "'green'" in str(e.value)
    assert [store.get(i, "colour") for i in "abc"] == [None, "red", "green"] and len(store.history()) == 2
    shown = {i: e for i, (_, e) in store.current_events("colour", ["a", "b", "c"]).items()}
    evs = store.set_many([("a", "blue"), ("b", "blue"), ("c", "blue")], "colour", annotator="ana",
                         expect_events=shown)
    assert len(evs) == 3 and [store.get(i, "colour") for i in "abc"] == ["blue"] * 3


def test_set_many_expect_events_must_cover_every_item(store):
    with pytest.raises(InvalidArgumentError) as e:
        store.set_many([("a", "red"), ("b", "red")], "colour", annotator="ana", expect_events={"a": None})
    assert "'b'" in one_line(e)
    with pytest.raises(InvalidArgumentError):
        store.set_many([("a", "red")], "colour", annotator="ana", expect_events=[("a", None)])
    assert len(store.history()) == 0
    # ids are canonical text: an int id or one with spaces names the same item
    assert len(store.set_many([(7, "red")], "colour", annotator="ana", expect_events={" 7 ": None})) == 1


# ----------------------------------------------------------------------------- undo compares events
def test_undo_refused_when_someone_else_set_the_same_value_since(store):
    """ana sets red, bob blue, cy red: ana's undo must not erase cy's label."""
    store.set("p1", "colour", "red", annotator="ana")
    store.set("p1", "colour", "blue", annotator="bob")
    store.set("p1", "colour", "red", annotator="cy")
    with pytest.raises(UndoConflictError) as e:
        store.undo("ana")
    assert "cy" in one_line(e) and "'p1'" in str(e.value)
    assert store.get("p1", "colour") == "red" and len(store.history()) == 3
    assert store.history()["annotator"].tolist()[-1] == "cy"


def test_undo_refused_after_someone_elses_undo_or_removal(store):
    store.set("p1", "colour", "red", annotator="ana")
    store.set("p1", "colour", "blue", annotator="bob")
    store.undo("bob")  # back to ana's red, by bob
    with pytest.raises(UndoConflictError, match="bob"):
        store.undo("ana")
    assert store.get("p1", "colour") == "red"
    store.set("p2", "colour", "red", annotator="ana")
    store.set("p2", "colour", None, annotator="cy")
    with pytest.raises(UndoConflictError, match="cy removed its label"):
        store.undo("ana", field="colour")


def test_undo_of_a_batch_refused_when_one_item_was_touched(store):
    store.set_many([("a", "red"), ("b", "red"), ("c", "red")], "colour", annotator="ana")
    store.set("b", "colour", "red", annotator="bob")  # same value, other person
    with pytest.raises(UndoConflictError, match="'b'"):
        store.undo("ana")
    assert [store.get(i, "colour") for i in "abc"] == ["red"] * 3 and len(store.history()) == 4


def test_own_undo_chain_still_works(store):
    store.set("p1", "colour", "red", annotator="ana")
    store.set("p1", "colour", "blue", annotator="ana")
    store.set("p2", "colour", "red", annotator="bob")  # other items do not matter
    assert store.undo("ana").new_value == "red"
    assert store.undo("ana").new_value is None  # over ana's own undo and undone decision
    assert store.get("p1", "colour") is None and store.get("p2", "colour") == "red"


def test_other_fields_do_not_block_undo(store):
    store.set("p1", "colour", "red", annotator="ana")
    store.set("p1", "garment", "shirt", annotator="bob")
    assert store.undo("ana").item_id == "p1" and store.get("p1", "colour") is None


def test_expect_events_same_item_twice_with_different_ids_refused(store):
    with pytest.raises(InvalidArgumentError, match="twice"):
        store.set_many([(7, "red")], "colour", annotator="ana", expect_events={"7": None, 7: 3})


def test_racing_conditional_writes_exactly_one_wins(store):
    """Eight annotators saw the same never-labelled item and decide at once: one write, seven conflicts."""
    import threading

    url = store.url.render_as_string(hide_password=False) if store.url is not None else str(store.path)
    go, results = threading.Barrier(8), []

    def decide(k: int) -> None:
        with LabelStore(url, timeout=20) as s:
            go.wait()
            try:
                s.set("p1", "colour", f"v{k}", annotator=f"a{k}", expect_event=None)
                results.append("ok")
            except ConflictError:
                results.append("conflict")

    threads = [threading.Thread(target=decide, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 7 + ["ok"] and len(store.history()) == 1
