"""Team labelling in the store, on SQLite and PostgreSQL: overlap products answered independently, the
second answer settling or sending to adjudication, roles, undo of answers, agreement and consensus, and a
simulated team whose annotators have known error rates (the figures must recover them)."""
from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from fclip_workbench.errors import ConflictError, InvalidArgumentError, LabelStoreError, RoleError, UndoConflictError
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.store.overlap import overlap_mask
from fclip_workbench.labelling.taxonomy import Taxonomy

COLOURS = ["red", "blue", "green", "black", "white", "pink"]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = str(tmp_path / "labels.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = LabelStore(url, timeout=10)
    s.grant("lea", "lead", by="lea")
    s.set_overlap("colour", 1.0, by="lea")
    s.set_taxonomy("colour", Taxonomy("colour", COLOURS))
    yield s
    s.close()


def url_of(store: LabelStore) -> str:
    return store.url.render_as_string(hide_password=False) if store.url is not None else str(store.path)


def test_overlap_mask_is_stable_and_about_the_share():
    ids = [f"p{i}" for i in range(20000)]
    m10, m20 = overlap_mask(ids, "colour", 0.10), overlap_mask(ids, "colour", 0.20)
    assert 0.09 < m10.mean() < 0.11 and 0.19 < m20.mean() < 0.21
    assert not (m10 & ~m20).any()  # growing the share only adds products
    assert (overlap_mask(ids, "colour", 0.10) == m10).all()
    assert (overlap_mask(ids, "pattern", 0.10) != m10).any()  # each field draws its own


def test_first_answer_is_not_the_label_and_agreeing_second_settles(store):
    (a,) = store.answer("p1", "colour", "red", annotator="ana")
    assert store.get("p1", "colour") is None and store.current_events("colour", ["p1"])["p1"] == (None, None)
    assert store.labels("colour").empty
    ev = store.answer("p1", "colour", "Red", annotator="bob", source="suggestion-accepted")  # canonical spelling
    assert [e.source for e in ev] == ["answer-accepted", "agreed"]
    assert store.get("p1", "colour") == "red"  # the taxonomy's spelling: "Red" agrees with "red"
    assert store.pending_adjudication("colour").empty
    assert len(store.answers("colour")) == 2


def test_disagreement_goes_to_the_adjudicator_and_is_exported(store, tmp_path):
    store.answer("p1", "colour", "red", annotator="ana")
    store.answer("p1", "colour", "blue", annotator="bob")
    assert store.get("p1", "colour") is None
    q = store.pending_adjudication("colour")
    assert q["item_id"].tolist() == ["p1"] and q["answers"][0] == {"ana": "red", "bob": "blue"}
    with pytest.raises(ConflictError, match="two independent answers"):
        store.answer("p1", "colour", "green", annotator="cy")  # a third annotator never gets it
    with pytest.raises(RoleError, match="adjudicator role"):
        store.adjudicate("p1", "colour", "red", annotator="cy")
    store.grant("ana", "adjudicator", by="lea")
    with pytest.raises(RoleError, match="answered"):
        store.adjudicate("p1", "colour", "red", annotator="ana")  # never one's own dispute
    ev = store.adjudicate("p1", "colour", "blue", annotator="lea")
    assert ev.source == "adjudicated" and store.get("p1", "colour") == "blue"
    assert store.pending_adjudication("colour").empty
    with pytest.raises(ConflictError, match="settled already"):
        store.adjudicate("p1", "colour", "red", annotator="lea")
    out = store.export(tmp_path / "labels.csv")
    exported = pd.read_csv(out)
    assert exported.loc[exported["item_id"] == "p1", "value"].tolist() == ["blue"]
    assert set(store.history(item_id="p1")["source"]) == {"answer-corrected", "adjudicated"}


def test_answer_refused_once_labelled_or_answered(store):
    store.set("p2", "colour", "red", annotator="zoe")
    with pytest.raises(ConflictError, match="has the label 'red'"):
        store.answer("p2", "colour", "blue", annotator="ana")
    store.answer("p3", "colour", "red", annotator="ana")
    with pytest.raises(ConflictError, match="answered item 'p3'"):
        store.answer("p3", "colour", "blue", annotator="ana")
    with pytest.raises(InvalidArgumentError, match="answer source"):
        store.answer("p4", "colour", "red", annotator="ana", source="import")
    with pytest.raises(InvalidArgumentError, match="independent answer"):
        store.adjudicate("p3", "colour", "red", annotator="lea")  # one answer: nothing to settle


def test_undo_withdraws_an_answer_and_the_label_it_agreed(store):
    store.answer("p1", "colour", "red", annotator="ana")
    store.answer("p1", "colour", "red", annotator="bob")
    assert store.get("p1", "colour") == "red"
    with pytest.raises(UndoConflictError, match="bob answered it too"):
        store.undo("ana", field="colour")  # bob's agreeing answer came since: kept
    ev = store.undo("bob", field="colour")
    assert ev.undoes is not None and store.get("p1", "colour") is None
    assert store.answers("colour")["annotator"].tolist() == ["ana"]
    store.answer("p1", "colour", "blue", annotator="bob")  # answers again, now disagreeing
    assert store.pending_adjudication("colour")["item_id"].tolist() == ["p1"]
    assert store.undo("bob", field="colour").new_value is None
    assert store.pending_adjudication("colour").empty


def test_roles_need_a_lead(store):
    with pytest.raises(RoleError, match="only a lead"):
        store.grant("bob", "adjudicator", by="ana")
    with pytest.raises(RoleError, match="only lead"):
        store.revoke("lea", "lead", by="lea")
    with pytest.raises(RoleError, match="has a lead"):
        store.set_overlap("colour", 0.2)
    with pytest.raises(InvalidArgumentError, match="unknown role"):
        store.grant("bob", "boss", by="lea")
    with pytest.raises(InvalidArgumentError, match="from 0 to 1"):
        store.set_overlap("colour", 1.5, by="lea")
    store.grant("bob", "adjudicator", by="lea")
    assert store.has_role("bob", "adjudicator") and not store.has_role("bob", "lead")
    assert store.has_role("lea", "adjudicator")  # a lead adjudicates too
    store.revoke("bob", "adjudicator", by="lea")
    assert not store.has_role("bob", "adjudicator")
    assert store.overlap_share("colour") == 1.0 and store.overlap_share("pattern") == 0.0


def test_racing_second_answers_give_one_settlement(store):
    """Five annotators answer the same overlap product at once: exactly two answers are kept."""
    go, results = threading.Barrier(5), []

    def answer(k: int) -> None:
        with LabelStore(url_of(store), timeout=20) as s:
            go.wait()
            try:
                s.answer("p9", "colour", "red" if k % 2 else "blue", annotator=f"a{k}")
                results.append("ok")
            except ConflictError:
                results.append("refused")

    threads = [threading.Thread(target=answer, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "ok", "refused", "refused", "refused"]
    assert len(store.answers("colour")) == 2


def simulate_team(store: LabelStore, error_rates: dict[str, float], n_items: int, classes: list[str],
                  seed: int = 0) -> dict[str, str]:
    """Every product answered by two annotators drawn at random, each wrong with their rate (a uniformly
    drawn other class); the lead adjudicates disagreements with the truth. Returns the truth."""
    rng = np.random.default_rng(seed)
    names = list(error_rates)
    truth = {f"p{i}": classes[int(rng.integers(len(classes)))] for i in range(n_items)}
    for item, true in truth.items():
        for name in rng.choice(names, size=2, replace=False):
            wrong = rng.random() < error_rates[str(name)]
            value = str(rng.choice([c for c in classes if c != true])) if wrong else true
            store.answer(item, "colour", value, annotator=str(name))
    for item in store.pending_adjudication("colour")["item_id"]:
        store.adjudicate(item, "colour", truth[item], annotator="lea")
    return truth


def test_agreement_recovers_known_error_rates(store):
    rates = {"ana": 0.05, "bob": 0.20, "cy": 0.40}
    classes = ["red", "blue", "green", "black", "white", "pink"]
    n = 300 if store.backend == "sqlite" else 150
    truth = simulate_team(store, rates, n, classes)
    ag = store.agreement("colour")
    assert ag.answered_twice == n and ag.pending == 0 and ag.settled == n
    acc = ag.accuracy.set_index("annotator")["accuracy"]
    for name, rate in rates.items():  # each annotator's accuracy within ~3.5 binomial standard errors
        k = ag.accuracy.set_index("annotator").loc[name, "items"]
        assert abs((1 - rate) - acc[name]) < 3.5 * np.sqrt(rate * (1 - rate) / k) + 0.01, (name, acc[name])
    kappa = ag.kappa.set_index(["annotator_a", "annotator_b"])["kappa"]
    assert kappa[("ana", "bob")] > kappa[("bob", "cy")]  # the worst pair agrees least
    assert 0.2 < ag.alpha < 0.9
    assert str(ag).startswith("colour:") and "kappa ana-bob" in str(ag)
    labels = store.labels("colour").set_index("item_id")["value"]
    wrong = [i for i in truth if labels[i] != truth[i]]  # only where both answers were the same wrong value
    answers = store.answers("colour").groupby("item_id")["value"].agg(set)
    assert all(answers[i] == {labels[i]} for i in wrong) and len(wrong) < 0.05 * n


def test_consensus_with_and_without_probabilities(store):
    rates = {"ana": 0.05, "bob": 0.30, "cy": 0.30}
    classes = ["red", "blue", "green"]
    truth = simulate_team(store, rates, 60, classes, seed=1)
    for i in range(60, 90):  # single-annotator products: their label is their annotation
        store.set(f"p{i}", "colour", "red", annotator="bob")
        truth[f"p{i}"] = "red"
    vote = store.consensus("colour")
    assert set(vote["method"]) == {"majority vote"} and len(vote) == 90
    ids = sorted(truth)
    probs = pd.DataFrame(0.1, index=ids, columns=classes)
    for i in ids:
        probs.loc[i, truth[i]] = 0.8
    crowd = store.consensus("colour", pred_probs=probs)
    assert set(crowd["method"]) == {"crowdlab"} and len(crowd) == 90
    assert (crowd["consensus_label"] == crowd["item_id"].map(truth)).mean() > 0.95
    assert crowd["quality"].between(0, 1).all()
    with pytest.raises(InvalidArgumentError, match="no row for"):
        store.consensus("colour", pred_probs=probs.iloc[:10])


def test_old_store_is_upgraded_and_read_only_reads_it(tmp_path):
    path = tmp_path / "old.sqlite"
    with LabelStore(path) as s:
        s.set("p1", "colour", "red", annotator="ana")
    con = sqlite3.connect(path)
    con.execute("DROP TABLE label_roles")
    con.execute("UPDATE label_meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    with LabelStore(path, read_only=True) as ro:  # read as it is
        assert ro.get("p1", "colour") == "red" and ro.roles().empty
    with LabelStore(path) as s:  # upgraded in place
        s.grant("lea", "lead", by="lea")
        assert s.has_role("lea", "lead") and s.get("p1", "colour") == "red"
    con = sqlite3.connect(path)
    con.execute("UPDATE label_meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(LabelStoreError, match="schema version 99"):
        LabelStore(path)


def test_dashboard_figures_count_what_the_log_holds(store):
    from fclip_workbench.labelling.dashboard import TeamDashboard, remaining_counts, team_figures

    rates = {"ana": 0.1, "bob": 0.3}
    simulate_team(store, rates, 40, COLOURS, seed=2)
    store.answer("q1", "colour", "red", annotator="ana")  # answered once
    store.answer("q2", "colour", "red", annotator="ana")
    store.answer("q2", "colour", "blue", annotator="bob")  # waiting for adjudication
    store.set_overlap("colour", 0.0, by="lea")
    store.set("q3", "colour", "pink", annotator="bob", source="suggestion-accepted")
    figs = team_figures(store, "colour", total=50)
    assert sorted(figs) == ["acceptance", "agreement", "labels_per_hour", "remaining"]
    per_hour = sum(sum(t.y) for t in figs["labels_per_hour"].data)
    assert per_hour == 80 + 3 + 1 + len(store.history()[lambda h: h["source"] == "adjudicated"])
    ag = store.agreement("colour")
    share = figs["agreement"].data[0].y
    assert len(share) == 1 and share[0] == pytest.approx(ag.agreed / ag.answered_twice)
    counts = remaining_counts(store.labels("colour"), store.answers("colour"), 1, 50)
    assert counts == {"labelled": 41, "answered once": 1, "waiting for adjudication": 1, "not started": 7}
    assert [t.x[0] for t in figs["remaining"].data] == [41, 1, 1, 7]
    acc = {t: y for t, y in zip(figs["acceptance"].data[0].x, figs["acceptance"].data[0].y)}
    bob_answers = int((store.answers("colour")["annotator"] == "bob").sum())
    assert acc["ana"] == 0 and acc["bob"] == pytest.approx(1 / (bob_answers + 1))  # q3 was an accepted suggestion
    box = TeamDashboard(store, "colour", total=50)
    assert "kappa" in box.children[1].value and len(box.children[2].children) == 4


def test_team_cli_sets_up_a_team_and_reports(tmp_path, capsys, tiny_model_dir):
    from fclip_workbench.cli import main
    from fclip_workbench.data.datasets import make_teaching_catalog

    db = str(tmp_path / "team.sqlite")
    assert main(["team", "grant", "lea", "lead", "--by", "lea", "--store", db]) == 0
    assert main(["team", "grant", "cy", "adjudicator", "--by", "bob", "--store", db]) == 2
    assert "only a lead can" in capsys.readouterr().err
    assert main(["team", "overlap", "colour", "1", "--by", "lea", "--store", db]) == 0
    data = tmp_path / "teaching"
    make_teaching_catalog(data, n=30)
    from fclip_workbench.data.datasets import open_catalog

    cat = open_catalog(data)
    truth = dict(zip(cat.ids, cat.table["colour"]))
    with LabelStore(db) as s:
        for i, item in enumerate(cat.ids[:10]):
            s.answer(item, "colour", truth[item], annotator="ana")
            s.answer(item, "colour", truth[item] if i % 3 else "zzz-wrong", annotator="bob")
    capsys.readouterr()
    assert main(["team", "status", "colour", "--store", db]) == 0
    out = capsys.readouterr().out
    assert "10 products answered twice, 6 agreed" in out and "4 waiting for adjudication" in out
    assert main(["team", "pending", "colour", "--store", db]) == 0
    assert "4 products wait for an adjudicator" in capsys.readouterr().out
    csv = tmp_path / "consensus.csv"
    assert main(["team", "consensus", "colour", "--store", db, "--data", str(data), "--model", str(tiny_model_dir),
                 "-q", "--out", str(csv)]) == 0
    assert "consensus by crowdlab" in capsys.readouterr().out
    table = pd.read_csv(csv)
    assert len(table) == 10 and set(table["method"]) == {"crowdlab"}  # every annotated product, pending ones too
    disputed = table[table["agreement"] < 1]
    assert len(disputed) == 4 and (disputed["quality"] < table.loc[table["agreement"] == 1, "quality"].min()).all()
