"""Two annotators and an adjudicator in real `AnnotationSession`s over one label store (SQLite and
PostgreSQL): overlap products are answered independently, never shown as labelled, never batched; a
disagreement reaches the adjudicator's queue with both answers; the adjudicated label is the one exported."""
from __future__ import annotations

import pandas as pd
import pytest

from fclip_workbench.errors import RoleError
from fclip_workbench.labelling.labels import LabelStore
from tests.test_annotate import COLOURS, catalog, embeddings, make_session  # noqa: F401 - fixtures


@pytest.fixture(params=["sqlite", "postgres"])
def team_store(request, tmp_path, catalog):  # noqa: F811
    url = str(tmp_path / "labels.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = LabelStore(url, catalog=catalog, timeout=10)
    s.grant("lea", "lead", by="lea")
    s.set_overlap("colour", 0.5, by="lea")
    yield s
    s.close()


def overlap_ids(store, catalog):  # noqa: F811
    return set(store.overlap_items("colour", catalog.ids))


def label_all(session, value_of) -> list:
    out = []
    while session.current is not None:
        out.append(session.correct(value_of(session.current.item_id)))
    return out


def test_overlap_products_are_answered_by_two_and_disagreements_adjudicated(team_store, catalog, embeddings,  # noqa: F811
                                                                             tmp_path):
    store = team_store
    overlap = overlap_ids(store, catalog)
    assert 0 < len(overlap) < len(catalog)
    truth = dict(zip(catalog.ids, catalog.table["colour"]))
    ana = make_session(catalog, store, embeddings, annotator="ana", refit_every=0)
    assert ana.overlap_share == 0.5
    first = ana.current
    assert first.independent == (first.item_id in overlap)
    decisions = label_all(ana, lambda i: truth[i])
    answered = [d for d in decisions if d.item_ids[0] in overlap]
    assert answered and all("independent answer" in d.status for d in answered)
    for item in overlap:  # ana's answers are not labels: nobody sees them as current
        assert store.get(item, "colour") is None
    assert ana.progress()["labelled"] == len(catalog) - len(overlap)

    # bob opens after: only the overlap products are left for him; he disagrees on two
    bob = make_session(catalog, store, embeddings, annotator="bob", refit_every=0)
    assert bob.current is not None and bob.current.item_id in overlap and bob.current.current is None
    disagree = sorted(overlap)[:2]
    other = {c: next(o for o in COLOURS if o != c) for c in COLOURS}
    shown = set()

    def bob_value(item):
        shown.add(item)
        return other[truth[item]] if item in disagree else truth[item]

    bob_decisions = label_all(bob, bob_value)
    assert shown == overlap  # bob saw exactly the overlap products
    assert sum("agreed" in d.status for d in bob_decisions) == len(overlap) - 2
    for item in set(overlap) - set(disagree):
        assert store.get(item, "colour") == truth[item]
    cy = make_session(catalog, store, embeddings, annotator="cy", refit_every=0)
    assert cy.current is None  # a third annotator gets nothing: every product is labelled or answered twice

    # the adjudicator: only with the role, sees both answers
    with pytest.raises(RoleError):
        cy.set_order("adjudication")
    assert cy.order != "adjudication"
    store.grant("cy", "adjudicator", by="lea")
    item = cy.set_order("adjudication")
    assert item.item_id in disagree and item.answers == {"ana": truth[item.item_id], "bob": other[truth[item.item_id]]}
    seen = []
    while cy.current is not None:
        seen.append(cy.current.item_id)
        d = cy.correct(truth[cy.current.item_id])
        assert d.status.endswith("(adjudicated)")
    assert sorted(seen) == disagree and store.pending_adjudication("colour").empty
    out = pd.read_csv(store.export(tmp_path / "out.csv"))
    assert dict(zip(out["item_id"], out["value"])) == truth  # every product, the adjudicated ones included
    ag = store.agreement("colour")
    assert ag.answered_twice == len(overlap) and ag.agreed == len(overlap) - 2
    acc = ag.accuracy.set_index("annotator")["accuracy"]
    assert acc["ana"] == 1.0 and acc["bob"] == pytest.approx(1 - 2 / len(overlap))
    for s in (ana, bob, cy):
        s.close()


def test_undo_of_an_answer_gives_the_product_back(team_store, catalog, embeddings):  # noqa: F811
    store = team_store
    overlap = overlap_ids(store, catalog)
    ana = make_session(catalog, store, embeddings, annotator="ana", refit_every=0)
    while ana.current is not None and ana.current.item_id not in overlap:
        ana.skip()
    item = ana.current.item_id
    ana.correct("red")
    assert len(store.answers("colour")) == 1
    undone = ana.undo()
    assert undone is not None and undone.item_ids == [item]
    assert store.answers("colour").empty and ana.current.item_id == item
    ana.correct("blue")
    assert store.answers("colour")["value"].tolist() == ["blue"]
    ana.close()


def test_batch_pages_leave_overlap_products_out(team_store, catalog, embeddings):  # noqa: F811
    store = team_store
    overlap = overlap_ids(store, catalog)
    s = make_session(catalog, store, embeddings, annotator="ana", refit_every=0)
    page = s.batch_candidates(label="red", n=len(catalog))
    assert page and not {c.item_id for c in page} & overlap
    s.close()


def test_no_overlap_share_changes_nothing(tmp_path, catalog, embeddings):  # noqa: F811
    with LabelStore(tmp_path / "solo.sqlite", catalog=catalog) as store:
        s = make_session(catalog, store, embeddings, annotator="ana", refit_every=0)
        d = s.correct("red")
        assert not s.current.independent and store.get(d.item_ids[0], "colour") == "red"
        assert d.status == f"saved: {d.item_ids[0]} colour = red"
        s.close()
