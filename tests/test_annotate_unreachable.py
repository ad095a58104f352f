"""The label store's server goes away in the middle of an annotation session (its own throwaway PostgreSQL
cluster, stopped and started again): the decision made meanwhile is kept, the widget says the store is
unreachable, and the decision is saved once the server is back, before the next one."""
from __future__ import annotations

import pytest

from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.widgets import Annotator
from tests.test_annotate import catalog, embeddings, make_session  # noqa: F401 - fixtures


@pytest.fixture
def pg_store(own_postgres, catalog):  # noqa: F811
    s = LabelStore(own_postgres.url, catalog=catalog, timeout=3)
    yield s
    s.close()


def test_a_decision_made_while_the_store_is_unreachable_is_kept_then_saved(own_postgres, pg_store, catalog,  # noqa: F811
                                                                          embeddings):  # noqa: F811
    session = make_session(catalog, pg_store, embeddings)
    widget = Annotator(session)
    first = session.current.item_id
    widget.correct("red")
    assert widget.status == f"saved: {first} colour = red"

    own_postgres.stop("fast")  # the team server goes away mid-session
    second = session.current.item_id
    widget.correct("blue")
    assert widget.status.startswith(f"not saved yet: {second} colour = blue (the label store is unreachable")
    assert "unreachable" in widget.status_html.value and session.unsaved == 1
    assert session.save_unsaved() == 1  # still down: still kept
    assert session.current.item_id == second  # the next product cannot be read from the store: this one stays
    assert "the next product shows once the store answers" in widget.status
    widget.correct("blue")  # the annotator insists: still kept, once
    assert widget.status.startswith(f"not saved yet: {second} colour = blue") and session.unsaved == 1

    own_postgres.start()
    widget.correct("blue")  # the store answers: the kept decision is saved, the session moves on
    assert widget.status.startswith(f"saved: {second} colour = blue") and session.unsaved == 0
    third = session.current.item_id
    assert third not in (first, second)
    widget.correct("green")
    assert widget.status == f"saved: {third} colour = green" and session.unsaved == 0
    again = LabelStore(own_postgres.url, catalog=catalog)
    assert {i: again.get(i, "colour") for i in (first, second, third)} == {first: "red", second: "blue",
                                                                        third: "green"}
    assert list(again.history(field="colour")["annotator"]) == ["ana"] * 3
    again.close()
    assert session.progress()["labelled"] == 3 and session.unsaved_conflicts == []


def test_a_kept_decision_never_overwrites_a_later_change(own_postgres, pg_store, catalog, embeddings):  # noqa: F811
    session = make_session(catalog, pg_store, embeddings)
    own_postgres.stop("fast")
    item = session.current.item_id
    assert session.correct("blue").kept
    own_postgres.start()
    other = LabelStore(own_postgres.url, catalog=catalog)
    other.set(item, "colour", "red", annotator="bob")  # bob labels it while ana's decision waits
    assert session.save_unsaved() == 0
    assert other.get(item, "colour") == "red"  # not overwritten
    other.close()
    assert len(session.unsaved_conflicts) == 1 and item in session.unsaved_conflicts[0]
