"""LabelStore on SQLite AND PostgreSQL: the same tests on both backends.

PostgreSQL comes from `postgres_url` (tests/plugins/services.py): a fresh database per test, skipped
locally without FCLIP_TEST_POSTGRES_URL, failing in CI.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from fclip_workbench.errors import (FclipError, InvalidArgumentError, LabelImportError, LabelStoreBusyError,
                                    LabelStoreError, LabelStoreReadOnlyError, LabelValueError, UndoConflictError,
                                    UnknownItemError)
from fclip_workbench.labelling.labels import LabelEvent, LabelStore
from fclip_workbench.labelling.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    return str(tmp_path / "labels.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    s = LabelStore(store_url, timeout=5)
    yield s
    s.close()


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- set / get / labels / history
def test_set_get_labels_history(store):
    ev = store.set("p1", "colour", "red", annotator="ana", source="suggestion-accepted")
    assert isinstance(ev, LabelEvent)
    assert (ev.old_value, ev.new_value, ev.annotator, ev.source) == (None, "red", "ana", "suggestion-accepted")
    assert ev.time.tzinfo is not None and abs(time.time() - ev.time.timestamp()) < 60
    ev2 = store.set("p1", "colour", "blue", annotator="bo")
    assert (ev2.old_value, ev2.new_value, ev2.source) == ("red", "blue", "corrected") and ev2.id > ev.id
    store.set("p2", "colour", "green", annotator="ana")
    store.set("p2", "garment", "shirt", annotator="ana")
    assert store.get("p1", "colour") == "blue" and store.get("p9", "colour") is None
    assert store.get("p2", "garment") == "shirt"

    lab = store.labels("colour")
    assert list(lab.columns) == ["item_id", "value", "annotator", "time"]
    assert lab[["item_id", "value", "annotator"]].values.tolist() == [["p1", "blue", "bo"], ["p2", "green", "ana"]]
    assert str(lab["time"].dt.tz) == "UTC"

    hist = store.history(item_id="p1")
    assert hist["id"].is_monotonic_increasing
    assert hist[["annotator", "old_value", "new_value", "source"]].values.tolist() == [
        ["ana", None, "red", "suggestion-accepted"], ["bo", "red", "blue", "corrected"]]
    assert len(store.history()) == 4 and len(store.history(field="garment")) == 1
    assert store.history(item_id="p2", field="colour")["new_value"].tolist() == ["green"]

    removed = store.set("p1", "colour", None, annotator="bo")  # None removes the label, logged like any decision
    assert removed.old_value == "blue" and store.get("p1", "colour") is None
    assert store.labels("colour")["item_id"].tolist() == ["p2"]


def test_set_many_is_one_batch(store):
    evs = store.set_many([("a", "red"), ("b", "blue"), ("c", "red")], "colour", annotator="ana")
    assert [e.item_id for e in evs] == ["a", "b", "c"] and {e.source for e in evs} == {"batch"}
    assert len({e.batch_id for e in evs}) == 1 and evs[0].batch_id
    assert store.labels("colour")["value"].tolist() == ["red", "blue", "red"]
    again = store.set_many([("a", "green"), ("d", "red")], "colour", annotator="bo")
    assert [(e.old_value, e.new_value) for e in again] == [("red", "green"), (None, "red")]
    assert store.set_many([], "colour", annotator="bo") == []


def test_stats_acceptance_rate(store):
    store.set("a", "colour", "red", annotator="ana", source="suggestion-accepted")
    store.set("b", "colour", "red", annotator="ana", source="suggestion-accepted")
    store.set("c", "colour", "blue", annotator="bo", source="corrected")
    store.set("d", "colour", "blue", annotator="bo", source="suggestion-accepted")
    store.undo("bo")  # the undone acceptance no longer counts
    st = store.stats("colour")
    assert (st.decisions, st.accepted, st.undone, st.labelled) == (3, 2, 1, 3)
    assert st.acceptance_rate == pytest.approx(2 / 3)
    counts = {(r.annotator, r.source): r.events for r in st.counts.itertuples()}
    assert counts == {("ana", "suggestion-accepted"): 2, ("bo", "corrected"): 1, ("bo", "suggestion-accepted"): 1,
                      ("bo", "undo"): 1}
    assert store.stats("other").acceptance_rate is None


# ----------------------------------------------------------------------------- undo
def test_undo_reverts_own_decisions_one_by_one(store):
    store.set("p1", "colour", "red", annotator="ana")
    store.set("p2", "colour", "blue", annotator="bo")
    first = store.set("p1", "colour", "green", annotator="ana")
    store.set("p3", "garment", "shirt", annotator="ana")

    u = store.undo("ana", field="colour")  # field filter: skips ana's later garment decision
    assert (u.source, u.undoes, u.old_value, u.new_value) == ("undo", first.id, "green", "red")
    assert store.get("p1", "colour") == "red" and store.get("p3", "garment") == "shirt"
    u2 = store.undo("ana", field="colour")  # undo twice: the decision before
    assert (u2.item_id, u2.new_value) == ("p1", None) and store.get("p1", "colour") is None
    assert store.undo("ana", field="colour") is None  # nothing left on colour
    assert store.get("p2", "colour") == "blue"  # bo's decision untouched
    assert store.undo("ana").item_id == "p3" and store.get("p3", "garment") is None
    assert store.undo("ana") is None and store.undo("carl") is None
    assert store.undo("bo").item_id == "p2"
    assert store.history()["source"].tolist().count("undo") == 4


def test_undo_refuses_to_overwrite_someone_elses_later_decision(store):
    store.set("p1", "colour", "red", annotator="ana")
    store.set("p1", "colour", "blue", annotator="bo")
    with pytest.raises(UndoConflictError) as e:
        store.undo("ana")
    assert "bo" in one_line(e) and "'p1'" in str(e.value) and "'blue'" in str(e.value)
    assert store.get("p1", "colour") == "blue" and len(store.history()) == 2


def test_undo_reverts_a_whole_batch(store):
    store.set("a", "colour", "blue", annotator="ana")
    store.set_many([("a", "red"), ("b", "red"), ("c", "red")], "colour", annotator="ana")
    last = store.undo("ana")
    assert last.source == "undo"
    assert [store.get(i, "colour") for i in "abc"] == ["blue", None, None]
    assert store.undo("ana").item_id == "a" and store.get("a", "colour") is None


# ----------------------------------------------------------------------------- taxonomy and ids
def test_out_of_taxonomy_refused_with_valid_values(store):
    values = [f"colour{i:02d}" for i in range(25)] + ["Red"]
    store.set_taxonomy("colour", Taxonomy("colour", values))
    with pytest.raises(LabelValueError) as e:
        store.set("p1", "colour", "purple", annotator="ana")
    msg = one_line(e)
    assert "'purple'" in msg and "colour00" in msg and "colour19" in msg and "... and 6 more" in msg
    assert "colour20" not in msg and "add_to_taxonomy" in msg
    assert store.history().empty
    ev = store.set("p1", "colour", "RED", annotator="ana")  # case-insensitive, stored in canonical spelling
    assert ev.new_value == "Red" and store.get("p1", "colour") == "Red"
    with pytest.raises(LabelValueError):
        store.set_many([("p2", "Red"), ("p3", "mauve")], "colour", annotator="ana")
    assert store.get("p2", "colour") is None  # nothing of a refused batch is written
    # a per-call taxonomy is checked too
    with pytest.raises(LabelValueError, match="'boot'.*shirt, dress"):
        store.set("p1", "garment", "boot", annotator="ana", taxonomy=Taxonomy("garment", ["shirt", "dress"]))


def test_add_to_taxonomy_extends_and_persists(store_url):
    with LabelStore(store_url) as s:
        s.set_taxonomy("colour", Taxonomy("colour", ["red", "blue"], source="catalog:t"))
        ev = s.set("p1", "colour", "Teal", annotator="ana", add_to_taxonomy=True)
        assert ev.new_value == "Teal" and s.taxonomy("colour").values == ["red", "blue", "Teal"]
        # set_taxonomy again (the widget starts with the catalog's values): the added value stays
        assert s.set_taxonomy("colour", Taxonomy("colour", ["red", "blue", "green"])).values == \
            ["red", "blue", "Teal", "green"]
    with LabelStore(store_url) as s2:  # another process/session sees it
        assert "teal" in s2.taxonomy("colour")
        assert s2.set("p2", "colour", "TEAL", annotator="bo").new_value == "Teal"
        with s2.engine.connect() as conn:
            added = conn.execute(sa.text("SELECT added_by, source FROM label_taxonomies WHERE value = 'Teal'")).one()
        assert tuple(added) == ("ana", "added by ana")
        # per-call taxonomy + add: the given taxonomy grows and is stored for the field
        tx = Taxonomy("fit", ["slim"])
        s2.set("p1", "fit", "loose", annotator="bo", taxonomy=tx, add_to_taxonomy=True)
        assert tx.values == ["slim", "loose"] and s2.taxonomy("fit").values == ["slim", "loose"]


def test_unknown_item_refused(store_url):
    with LabelStore(store_url, known_ids=["p1", "p2", 3]) as s:
        s.set(3, "colour", "red", annotator="ana")  # ids compare as text
        with pytest.raises(UnknownItemError) as e:
            s.set("p404", "colour", "red", annotator="ana")
        assert "'p404'" in one_line(e)
        with pytest.raises(UnknownItemError, match="'zz'"):
            s.set_many([("p1", "red"), ("zz", "red")], "colour", annotator="ana")
        assert s.labels("colour")["item_id"].tolist() == ["3"]


def test_known_ids_from_catalog(store_url, small_catalog_dir):
    from fclip_workbench.data.catalog import Catalog

    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    with LabelStore(store_url, catalog=cat) as s:
        assert s.set("p0", "colour", "red", annotator="ana").item_id == "p0"
        with pytest.raises(UnknownItemError, match="'p12'.*12 known ids"):
            s.set("p12", "colour", "red", annotator="ana")


def test_postgres_database_with_other_tables_is_fine(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE team_notes (x text)")
    engine.dispose()
    with LabelStore(postgres_url) as s:
        assert s.set("p1", "c", "v", annotator="ana").new_value == "v"


def test_bad_arguments_one_line(store):
    for kwargs, match in [(dict(annotator=""), "annotator"), (dict(annotator="  "), "annotator"),
                          (dict(annotator="ana", source="guess"), "source 'guess'"),
                          (dict(annotator="ana", source="undo"), "undo")]:
        with pytest.raises(InvalidArgumentError, match=match) as e:
            store.set("p1", "colour", "red", **kwargs)
        one_line(e)
    with pytest.raises(LabelValueError, match="empty"):
        store.set("p1", "colour", "  ", annotator="ana")
    with pytest.raises(InvalidArgumentError, match="item id"):
        store.set("", "colour", "red", annotator="ana")
    with pytest.raises(InvalidArgumentError, match="annotator name ''"):
        store.undo("")
    with pytest.raises(InvalidArgumentError, match="timeout"):
        LabelStore(store.url or store.path, timeout=0)
    assert store.history().empty


# ----------------------------------------------------------------------------- export / import
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_import_round_trip(store, tmp_path, suffix):
    store.set_many([("p1", "red"), ("p2", "blue"), ("3", "red, dark")], "colour", annotator="ana")
    store.set("p1", "garment", "shirt", annotator="bo")
    out = store.export(tmp_path / f"labels{suffix}")
    table = pd.read_csv(out, dtype=str) if suffix == ".csv" else pd.read_parquet(out)
    assert sorted(table[["field", "item_id", "value"]].values.tolist()) == sorted(
        [["colour", "p1", "red"], ["colour", "p2", "blue"], ["colour", "3", "red, dark"], ["garment", "p1", "shirt"]])
    hist_file = store.export(tmp_path / f"history{suffix}", history=True)
    hist = pd.read_csv(hist_file) if suffix == ".csv" else pd.read_parquet(hist_file)
    assert len(hist) == 4 and list(hist.columns)[:3] == ["id", "time", "annotator"]

    store.set("p1", "colour", "green", annotator="bo")  # change things, then import the export back
    store.set("p2", "colour", None, annotator="bo")
    rep = store.import_(out, annotator="carl")
    assert rep.ok and rep.rows == 4 and len(rep.applied) == 2 and rep.unchanged == 2
    assert {e.source for e in rep.applied} == {"import"} and {e.annotator for e in rep.applied} == {"carl"}
    assert [store.get(i, "colour") for i in ("p1", "p2", "3")] == ["red", "blue", "red, dark"]
    assert store.get("p1", "garment") == "shirt"
    assert store.undo("carl") is not None and store.get("p1", "colour") == "green"  # an import undoes as a whole
    assert store.get("p2", "colour") is None


def test_import_with_bad_rows_applies_nothing_and_reports_each(store, tmp_path):
    store.set_taxonomy("colour", Taxonomy("colour", ["red", "blue"]))
    store.set("p1", "colour", "blue", annotator="ana")
    f = tmp_path / "in.csv"
    f.write_text("item_id,value\n"
                 "p1,red\n"          # 1 good
                 "p404,red\n"        # 2 unknown id
                 "p2,purple\n"       # 3 out of taxonomy
                 "p3,\n"             # 4 empty value
                 "p4,red,extra\n"    # 5 malformed
                 ",red\n"            # 6 empty id
                 "p5,BLUE\n"         # 7 good (canonical 'blue')
                 "p5,red\n")         # 8 conflicting repeat
    known = ["p1", "p2", "p3", "p4", "p5"]
    rep = store.import_(f, field="colour", annotator="ana", known_ids=known)
    assert not rep.ok and rep.applied == [] and rep.rows == 8
    reasons = {p.row: p.reason for p in rep.problems}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 8]
    assert "unknown item id 'p404'" in reasons[2] and "'purple' is not in the colour taxonomy" in reasons[3]
    assert "empty value" in reasons[4] and "malformed" in reasons[5] and "3 fields" in reasons[5]
    assert "empty item id" in reasons[6] and "row 7" in reasons[8]
    assert "nothing applied" in str(rep) and "row 2" in str(rep)
    assert store.get("p1", "colour") == "blue" and len(store.history()) == 1  # untouched
    assert list(rep.problem_table().columns) == ["row", "item_id", "field", "value", "reason"]

    part = store.import_(f, field="colour", annotator="ana", known_ids=known, partial=True)
    assert [(e.item_id, e.new_value) for e in part.applied] == [("p1", "red"), ("p5", "blue")]
    assert len(part.problems) == 6 and store.get("p5", "colour") == "blue"
    assert len({e.batch_id for e in part.applied}) == 1


def test_import_file_errors(store, tmp_path):
    with pytest.raises(LabelImportError, match="does not exist"):
        store.import_(tmp_path / "nope.csv", field="c", annotator="ana")
    bad = tmp_path / "l.xlsx"
    bad.write_text("x")
    with pytest.raises(LabelImportError, match="'.xlsx'"):
        store.import_(bad, field="c", annotator="ana")
    nocol = tmp_path / "l.csv"
    nocol.write_text("item_id,value\np1,red\n")
    with pytest.raises(LabelImportError, match="field.*pass field="):
        store.import_(nocol, annotator="ana")
    with pytest.raises(InvalidArgumentError, match="'.txt'"):
        store.export(tmp_path / "x.txt")


# ----------------------------------------------------------------------------- backends and bad stores
def test_postgres_plain_url_uses_psycopg(postgres_url):
    plain = sa.engine.make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with LabelStore(plain) as s:
        assert s.engine.dialect.driver == "psycopg" and "fclip:***@" in s.name
        s.set("p1", "colour", "red", annotator="ana")
        assert s.get("p1", "colour") == "red"


def test_default_path_and_sqlite_url(tmp_path, monkeypatch):
    monkeypatch.setenv("FCLIP_HOME", str(tmp_path / "home"))
    with LabelStore() as s:
        assert s.path == (tmp_path / "home" / "labels.sqlite").resolve() and s.path.is_file()
    with LabelStore(f"sqlite:///{tmp_path / 'u.sqlite'}") as s:
        s.set("p1", "c", "v", annotator="ana")
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    with pytest.raises(LabelStoreError, match="postgresql://"):
        LabelStore("mysql://x@y/z")
    with pytest.raises(LabelStoreError, match="names no file"):
        LabelStore("sqlite://")


def test_read_only_store_clear_error(tmp_path):
    path = tmp_path / "ro" / "labels.sqlite"
    path.parent.mkdir()
    with LabelStore(path) as s:
        s.set("p1", "colour", "red", annotator="ana")
    path.chmod(stat.S_IRUSR | stat.S_IRGRP)
    try:
        with pytest.raises(LabelStoreReadOnlyError) as e:
            LabelStore(path)
        msg = one_line(e)
        assert str(path) in msg and "read-only: your labels could not be saved" in msg
        path.chmod(0o644)
        path.parent.chmod(0o555)  # the folder (SQLite's journal lives beside the file)
        with pytest.raises(LabelStoreReadOnlyError, match="folder"):
            LabelStore(path)
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)
    assert isinstance(e.value, PermissionError) and isinstance(e.value, FclipError)


def test_read_only_postgres_clear_error(postgres_url):
    with LabelStore(postgres_url) as s:
        s.set("p1", "colour", "red", annotator="ana")
    db = sa.engine.make_url(postgres_url).database
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
        with pytest.raises(LabelStoreReadOnlyError) as e:
            LabelStore(postgres_url)
        assert "read-only: your labels could not be saved" in one_line(e) and "***" in str(e.value)
        with LabelStore(postgres_url, read_only=True) as ro:  # a standby can still be read
            assert ro.get("p1", "colour") == "red"
            with pytest.raises(LabelStoreReadOnlyError, match="opened read-only"):
                ro.set("p1", "colour", "blue", annotator="bob")
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
        engine.dispose()


def test_unreachable_postgres_one_line():
    with pytest.raises(LabelStoreError) as e:
        LabelStore("postgresql://ana:secret@127.0.0.1:1/labels", timeout=2)
    msg = one_line(e)
    assert "cannot be opened" in msg and "secret" not in msg and "ana:***@127.0.0.1:1/labels" in msg


def test_corrupt_or_foreign_file_clear_error(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LabelStoreError) as e:
        LabelStore(junk)
    assert str(junk) in one_line(e) and "not a SQLite database" in str(e.value)
    other = tmp_path / "embeddings.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE vectors (k TEXT)")
    conn.close()
    with pytest.raises(LabelStoreError, match="not a label store.*vectors"):
        LabelStore(other)
    with pytest.raises(LabelStoreError, match="folder"):
        LabelStore(tmp_path)


def test_locked_longer_than_timeout_gives_busy_error(store_url):
    store = LabelStore(store_url, timeout=1.0)
    store.set("p0", "colour", "red", annotator="ana")
    if store.backend == "sqlite":
        holder = sqlite3.connect(store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write lock
    else:
        engine = sa.create_engine(store.url)
        holder = engine.connect()
        holder.exec_driver_sql("LOCK TABLE label_current IN ACCESS EXCLUSIVE MODE")
    try:
        t0 = time.monotonic()
        with pytest.raises(LabelStoreBusyError) as e:
            store.set("p1", "colour", "blue", annotator="ana")
        took = time.monotonic() - t0
        assert 0.9 <= took < 4.0, took
        assert one_line(e) == f"label store {store.name} is locked by another process for more than 1 s; retry"
    finally:
        if store.backend == "sqlite":
            holder.rollback() if holder.in_transaction else None
            holder.close()
        else:
            holder.rollback()
            holder.close()
            engine.dispose()
    assert store.set("p1", "colour", "blue", annotator="ana").new_value == "blue"  # free again: works
    assert store.get("p1", "colour") == "blue"
    store.close()


# ----------------------------------------------------------------------------- processes
WRITER = textwrap.dedent("""
    import sys
    from fclip_workbench.labelling.labels import LabelStore
    url, who, n, shared = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "same"
    store = LabelStore(url, timeout=60)
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for i in range(n):
        item = f"item{i}" if shared else f"{who}-{i}"
        store.set(item, "colour", f"{who}-{i}", annotator=who)
    store.close()
    print("done", flush=True)
""")


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


@pytest.mark.parametrize("items", ["distinct", "same"])
def test_two_processes_1000_labels_each(store_url, items):
    n = 1000
    LabelStore(store_url).close()  # create the tables once; the writers race on everything else
    procs = [_spawn(WRITER, store_url, who, str(n), items) for who in ("ana", "bo")]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        t0 = time.monotonic()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0 and "done" in out, err[-2000:]
        took = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"2 x {n} concurrent sets ({items} items): {took:.1f} s")
    with LabelStore(store_url) as s:
        hist = s.history(field="colour")
        assert len(hist) == 2 * n and hist["id"].is_unique
        assert sorted(hist.groupby("annotator").size().tolist()) == [n, n]
        labels = s.labels("colour")
        if items == "distinct":
            assert len(labels) == 2 * n and set(labels["item_id"]) == {f"{w}-{i}" for w in ("ana", "bo")
                                                                       for i in range(n)}
            assert hist["old_value"].isna().all()
        else:
            assert len(labels) == n
            current = dict(zip(labels["item_id"], labels["value"]))
            for item, ev in hist.groupby("item_id"):  # no lost update: each event saw the one before it
                ev = ev.sort_values("id")
                assert ev["old_value"].iloc[0] is None or pd.isna(ev["old_value"].iloc[0])
                assert ev["old_value"].iloc[1:].tolist() == ev["new_value"].iloc[:-1].tolist(), item
                assert current[item] == ev["new_value"].iloc[-1]
        if s.backend == "sqlite":
            with s.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


KILLED = textwrap.dedent("""
    import sys
    from fclip_workbench.labelling.labels import LabelStore
    store = LabelStore(sys.argv[1])
    for i in range(100000):
        ev = store.set(f"p{i}", "colour", f"v{i}", annotator="ana")
        print("ACK", ev.id, ev.item_id, flush=True)
""")


def test_acknowledged_label_survives_sigkill(store_url):
    LabelStore(store_url).close()
    proc = _spawn(KILLED, store_url)
    acked = []
    try:
        while len(acked) < 25:
            line = proc.stdout.readline()
            assert line.startswith("ACK"), line + proc.stderr.read()
            acked.append(line.split())
        os.kill(proc.pid, signal.SIGKILL)  # right after the 25th ACK
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with LabelStore(store_url) as s:
        for _, eid, item in acked:
            assert s.get(item, "colour") == f"v{item[1:]}"
        assert set(map(int, (a[1] for a in acked))) <= set(s.history()["id"])
        if s.backend == "sqlite":
            with s.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_docstring_examples_run():
    import doctest

    import fclip_workbench.labelling.labels as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 8 and res.failed == 0
