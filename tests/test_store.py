"""EmbeddingStore: integrity checks, key-indexed lookups, old layouts, bad files, read-only and full disks.

Tests taking `target` run on SQLite (a file) AND PostgreSQL (`postgres_url`: a fresh database per test,
skipped locally without FCLIP_TEST_POSTGRES_URL); the others are about SQLite files.
"""
import logging
import os
import sqlite3

import numpy as np
import pytest
import sqlalchemy as sa

from fclip_workbench.embedding import store as store_mod
from fclip_workbench.embedding import store_db
from fclip_workbench.errors import CacheError, FclipError
from fclip_workbench.embedding.store import EmbeddingStore, _checksum


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    """What --cache names: an SQLite file, or a fresh PostgreSQL database's URL."""
    return str(tmp_path / "s.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _engine(target):
    return sa.create_engine(target if "://" in str(target) else f"sqlite:///{target}")


def _unit(n, dim=8, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)  # (n, dim)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _set_row(target, key, **cols):
    """Change a stored row behind the store's back (another program, a bad disk)."""
    engine = _engine(target)
    with engine.begin() as conn:
        for col, value in cols.items():
            conn.execute(sa.text(f"UPDATE vectors SET {col}=:v WHERE key=:k"), {"v": value, "k": key})
    engine.dispose()


def test_corrupt_checksum_nonfinite_or_unnormalised_rows_are_misses(target, caplog):
    path = target
    vecs = _unit(4)
    EmbeddingStore(path).put_many("m", "image", ["a", "b", "c", "d"], vecs, normalised=True)
    _set_row(path, "a", vec=os.urandom(4 * 8))  # garbage bytes, checksum of the old vector
    nan = vecs[1].copy()
    nan[0] = np.nan  # a non-finite vector whose checksum matches
    _set_row(path, "b", vec=nan.tobytes(), checksum=_checksum("m", "image", "b", 1, 8, nan.tobytes()))
    long = vecs[2] * 2  # norm 2 in a row flagged unit-norm, checksum matching
    _set_row(path, "c", vec=long.tobytes(), checksum=_checksum("m", "image", "c", 1, 8, long.tobytes()))
    with caplog.at_level(logging.WARNING, logger="fclip_workbench.embedding.store"):
        got = EmbeddingStore(path).get_many("m", "image", ["a", "b", "c", "d"])
    assert set(got) == {"d"}
    np.testing.assert_array_equal(got["d"], vecs[3])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 stored image vectors failed" in warnings[0]


def test_flipping_the_unit_norm_flag_breaks_the_checksum(target):
    path = target
    EmbeddingStore(path).put_many("m", "text", ["a"], _unit(1) * 3, normalised=False)
    assert "a" in EmbeddingStore(path).get_many("m", "text", ["a"])
    _set_row(path, "a", unit_norm=1)
    assert EmbeddingStore(path).get_many("m", "text", ["a"]) == {}


def test_raw_features_are_served_when_not_declared_normalised(target):
    """Training caches un-normalised text-trunk features: checksum + finiteness only."""
    store = EmbeddingStore(target)
    raw = _unit(3) * np.array([[5.0], [0.2], [1.0]], np.float32)  # (3, 8), norms 5, 0.2, 1
    assert store.put_many("trunk:x", "text", ["a", "b", "c"], raw) == 3  # normalised=None: per row
    assert store.put_many("trunk:y", "text", ["a", "b", "c"], raw, normalised=False) == 3
    for model in ("trunk:x", "trunk:y"):
        got = store.get_many(model, "text", ["a", "b", "c"])
        np.testing.assert_array_equal(np.stack([got[k] for k in "abc"]), raw)
    with pytest.raises(ValueError, match="not unit-norm"):
        store.put_many("m", "image", ["a"], raw[:1], normalised=True)


def test_non_finite_vectors_are_never_stored(target):
    store = EmbeddingStore(target)
    vecs = _unit(3)
    vecs[1, 2] = np.inf
    assert store.put_many("m", "image", ["a", "b", "c"], vecs) == 2
    assert store.count("m", "image") == 2 and set(store.get_many("m", "image", "abc")) == {"a", "c"}


def _instructions(store, fn):
    """SQLite virtual-machine steps `fn()` costs: a full scan of n rows costs at least n of them."""
    steps = [0]

    def tick():
        steps[0] += 1
        return 0
    store.db.set_progress_handler(tick, 1)
    try:
        out = fn()
    finally:
        store.db.set_progress_handler(None, 1)
    return out, steps[0]


def test_lookups_cost_the_keys_asked_not_the_rows_stored(tmp_path):
    store = EmbeddingStore(tmp_path / "s.sqlite")
    n = 20000
    keys = [f"k{i}" for i in range(n)]
    store.put_many("m", "text", keys, np.tile(_unit(1, 4), (n, 1)), normalised=True)
    got, steps = _instructions(store, lambda: store.get_many("m", "text", ["k7", "k19999", "missing"]))
    assert set(got) == {"k7", "k19999"}
    assert steps < 2000, f"{steps} SQLite steps to look up 3 keys among {n} rows: a scan, not a key lookup"
    many, steps = _instructions(store, lambda: store.get_many("m", "text", keys[:1200]))
    assert len(many) == 1200  # more keys than one IN (...) chunk

    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(bytes([i]) * 10)
    store.file_digests(files)
    db = sqlite3.connect(tmp_path / "s.sqlite")
    with db:  # many other memoised files
        db.executemany("INSERT INTO file_digests VALUES (?, 1, 1, 1, 1, 'x')", [(f"/nowhere/{i}",) for i in range(n)])
    db.close()
    digests, steps = _instructions(store, lambda: store.file_digests(files[:2]))
    assert digests == store.file_digests(files[:2]) and None not in digests
    assert steps < 2000, f"{steps} SQLite steps for 2 file digests among {n} memoised files"


OLD_SCHEMA = """
CREATE TABLE vectors (model TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, kind, key)) WITHOUT ROWID;
CREATE TABLE file_digests (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    digest TEXT NOT NULL) WITHOUT ROWID;
"""


def _old_store(path):
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    with db:
        db.execute("INSERT INTO vectors VALUES ('m', 'text', 'k', 8, ?)", (_unit(1)[0].tobytes(),))
    db.close()


def test_an_old_layout_store_is_never_served_unchecked(tmp_path):
    _old_store(tmp_path / "ro.sqlite")
    ro = EmbeddingStore(tmp_path / "ro.sqlite", readonly=True)
    assert ro.get_many("m", "text", ["k"]) == {} and ro.count() == 0
    _old_store(tmp_path / "old.sqlite")
    store = EmbeddingStore(tmp_path / "old.sqlite")  # migrated: old rows dropped
    assert store.get_many("m", "text", ["k"]) == {} and store.count() == 0
    assert store.put_many("m", "text", ["k"], _unit(1), normalised=True) == 1
    assert set(EmbeddingStore(tmp_path / "old.sqlite").get_many("m", "text", ["k"])) == {"k"}


def test_default_path_comes_from_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("FCLIP_CACHE", raising=False)
    monkeypatch.setenv("FCLIP_HOME", str(tmp_path / "home"))
    from fclip_workbench.paths import default_store_path
    assert EmbeddingStore().path == str(default_store_path()) == str(tmp_path / "home" / "cache" / "embeddings.sqlite")


def test_a_folder_means_the_store_file_inside_it(tmp_path):
    EmbeddingStore(tmp_path).put_many("m", "text", ["k"], _unit(1), normalised=True)
    assert (tmp_path / "embeddings.sqlite").is_file()
    assert EmbeddingStore(str(tmp_path) + "/").path == str(tmp_path / "embeddings.sqlite")
    assert set(EmbeddingStore(tmp_path / "embeddings.sqlite").get_many("m", "text", ["k"])) == {"k"}


def test_a_file_that_is_not_a_store_gives_one_line(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("these are my notes, not a database\n" * 50)
    with pytest.raises(CacheError, match=r"is not an embedding store \(not an SQLite database\); pass --cache elsewhere$") as e:
        EmbeddingStore(bad).get_many("m", "image", ["k"])
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, FclipError)


def test_a_truncated_store_gives_one_line(tmp_path):
    path = tmp_path / "s.sqlite"
    store = EmbeddingStore(path)
    store.put_many("m", "image", [f"k{i}" for i in range(3000)], np.tile(_unit(1, 64), (3000, 1)), normalised=True)
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="if it is an fclip cache, delete it .*else pass --cache elsewhere") as e:
        EmbeddingStore(path).get_many("m", "image", [f"k{i}" for i in range(3000)])
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def _filled(path, n=3):
    store = EmbeddingStore(path)
    store.put_many("m", "image", [f"k{i}" for i in range(n)], _unit(n), normalised=True)
    store.close()


def _read_only_warnings(caplog):
    return [r for r in caplog.records if "is read-only: new vectors are not saved" in r.getMessage()]


def test_readonly_store_serves_hits_and_drops_new_vectors_with_one_warning(target, caplog):
    path = target
    _filled(path)
    before = open(path, "rb").read() if "://" not in path else None
    with caplog.at_level(logging.WARNING, logger="fclip_workbench.embedding.store"):
        ro = EmbeddingStore(path, readonly=True)
        assert set(ro.get_many("m", "image", ["k0", "k1", "new"])) == {"k0", "k1"}
        assert ro.put_many("m", "image", ["new"], _unit(1), normalised=True) == 0
        assert ro.put_many("m", "image", ["new2"], _unit(1), normalised=True) == 0
        assert None not in ro.file_digests([__file__])
    assert len(_read_only_warnings(caplog)) == 1
    ro.close()
    assert before is None or open(path, "rb").read() == before
    assert EmbeddingStore(path).count() == 3


def test_store_falls_back_to_readonly_when_sqlite_refuses_writes(tmp_path, monkeypatch, caplog):
    path = tmp_path / "s.sqlite"
    _filled(path)

    def refuse(self):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    monkeypatch.setattr(store_db.VectorDB, "_connect_rw", refuse)
    with caplog.at_level(logging.WARNING, logger="fclip_workbench.embedding.store"):
        store = EmbeddingStore(path)
        assert store.readonly and set(store.get_many("m", "image", ["k0", "k9"])) == {"k0"}
        assert store.put_many("m", "image", ["k9"], _unit(1), normalised=True) == 0
    assert len(_read_only_warnings(caplog)) == 1


def test_writes_refused_mid_run_are_dropped_with_one_warning(tmp_path, caplog):
    """A real SQLITE_READONLY on write (query_only) does not abort the run."""
    store = EmbeddingStore(tmp_path / "s.sqlite")
    store.db.execute("PRAGMA query_only=ON")
    with caplog.at_level(logging.WARNING, logger="fclip_workbench.embedding.store"):
        assert store.put_many("m", "image", ["a"], _unit(1), normalised=True) == 0
        assert store.put_many("m", "image", ["b"], _unit(1), normalised=True) == 0
    assert len(_read_only_warnings(caplog)) == 1 and store.readonly


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file modes")
def test_store_in_a_read_only_folder(tmp_path, caplog):
    folder = tmp_path / "ro"
    folder.mkdir()
    _filled(folder / "s.sqlite")
    os.chmod(folder / "s.sqlite", 0o444)
    os.chmod(folder, 0o555)
    try:
        with caplog.at_level(logging.WARNING, logger="fclip_workbench.embedding.store"):
            store = EmbeddingStore(folder / "s.sqlite")
            assert set(store.get_many("m", "image", ["k0", "k9"])) == {"k0"}
            assert store.put_many("m", "image", ["k9"], _unit(1), normalised=True) == 0
        assert len(_read_only_warnings(caplog)) == 1
    finally:
        os.chmod(folder, 0o755)


def test_full_disk_raises_cache_error_and_keeps_earlier_batches(tmp_path):
    path = tmp_path / "s.sqlite"
    store = EmbeddingStore(path)
    first = _unit(10, 64)
    store.put_many("m", "image", [f"a{i}" for i in range(10)], first, normalised=True)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")  # the file may not grow: SQLITE_FULL
    with pytest.raises(CacheError, match="free space or use --cache elsewhere") as e:
        store.put_many("m", "image", [f"b{i}" for i in range(2000)], np.tile(_unit(1, 64), (2000, 1)),
                       normalised=True)
    assert str(path) in str(e.value)
    store.close()
    again = EmbeddingStore(path)
    got = again.get_many("m", "image", [f"a{i}" for i in range(10)] + ["b0"])
    assert set(got) == {f"a{i}" for i in range(10)}
    np.testing.assert_array_equal(np.stack([got[f"a{i}"] for i in range(10)]), first)


def test_disk_full_error_from_the_driver_is_translated(tmp_path, monkeypatch):
    store = EmbeddingStore(tmp_path / "s.sqlite")
    store.put_many("m", "image", ["a"], _unit(1), normalised=True)

    def full(*a, **k):
        raise sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    monkeypatch.setattr(store._db, "execute_many", full)
    with pytest.raises(CacheError, match=r"s\.sqlite: database or disk is full; free space"):
        store.put_many("m", "image", ["b"], _unit(1, seed=1), normalised=True)
    monkeypatch.undo()
    assert set(EmbeddingStore(tmp_path / "s.sqlite").get_many("m", "image", ["a", "b"])) == {"a"}


def test_a_write_waits_for_another_process_lock(tmp_path):
    """Another connection holds the write lock for 0.5 s: the write waits (busy retried), nothing is lost."""
    import threading

    path = tmp_path / "s.sqlite"
    store = EmbeddingStore(path, timeout=20)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    assert store.put_many("m", "image", ["a"], _unit(1), normalised=True) == 1
    other.close()
    assert store_mod.EmbeddingStore(path).count() == 1


def test_wal_store_in_an_unwritable_folder_is_opened_immutable(tmp_path, monkeypatch):
    """No -shm can be created beside the file: `mode=ro` fails to open, `immutable=1` serves it."""
    path = tmp_path / "s.sqlite"
    _filled(path)
    real = sqlite3.connect
    tried = []

    def connect(target, *a, **k):
        tried.append(str(target))
        if str(target).endswith("?mode=ro"):
            raise sqlite3.OperationalError("unable to open database file")
        return real(target, *a, **k)

    def refuse(self):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    monkeypatch.setattr(store_db.VectorDB, "_connect_rw", refuse)
    monkeypatch.setattr(store_db.sqlite3, "connect", connect)
    store = EmbeddingStore(path)
    assert set(store.get_many("m", "image", ["k0", "k1", "k2", "k3"])) == {"k0", "k1", "k2"}
    assert any(t.endswith("?immutable=1") for t in tried)


def test_another_apps_database_is_refused_and_left_untouched(target):
    """A database with its own `vectors` table is not an old cache: nothing is dropped."""
    engine = _engine(target)
    with engine.begin() as db:
        db.execute(sa.text("CREATE TABLE vectors (id INTEGER PRIMARY KEY, embedding BYTEA)".replace(
            "BYTEA", "BYTEA" if "://" in target else "BLOB")))
        db.execute(sa.text("CREATE TABLE users (name TEXT)"))
        db.execute(sa.text("INSERT INTO vectors VALUES (1, :a), (2, :b)"), {"a": b"\x00", "b": b"\x01"})
        db.execute(sa.text("INSERT INTO users VALUES ('ana')"))
    with pytest.raises(CacheError, match="not an embedding store .*vectors|vectors of another program") as e:
        EmbeddingStore(target).get_many("m", "image", ["k"])
    assert "\n" not in str(e.value) and "--cache elsewhere" in str(e.value)
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT COUNT(*) FROM vectors")).scalar() == 2
        assert db.execute(sa.text("SELECT name FROM users")).all() == [("ana",)]
    engine.dispose()


def test_many_keys_are_looked_up_in_few_statements(target):
    """5,000 keys: SQLite 6 statements (900 keys each), PostgreSQL 1 (= ANY of an array)."""
    store = EmbeddingStore(target)
    keys = [f"k{i}" for i in range(5000)]
    store.put_many("m", "text", keys, np.tile(_unit(1, 4), (5000, 1)), normalised=True)
    statements = []
    sa.event.listen(store._db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    got = store.get_many("m", "text", keys + ["missing"])
    assert len(got) == 5000
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == (1 if store.backend == "postgresql" else 6), selects[:2]


def test_vectors_are_stored_compactly(target):
    """4 bytes per float, no text encoding: a 256-d vector is a 1,024-byte BLOB / bytea."""
    store = EmbeddingStore(target)
    store.put_many("m", "image", ["a"], _unit(1, 256), normalised=True)
    engine = _engine(target)
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT length(vec) FROM vectors")).scalar() == 1024
    engine.dispose()


def test_an_unreachable_server_is_one_line(tmp_path):
    from tests.plugins.services import free_port

    url = f"postgresql://nobody:pw@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(CacheError, match=r"embedding store postgresql\+psycopg://nobody:\*\*\*@127\.0\.0\.1:\d+/nothing "
                                         r"cannot be reached \(.*\); start the server") as e:
        EmbeddingStore(url, timeout=1)
    assert "\n" not in str(e.value) and "pw" not in str(e.value)


def test_a_store_url_that_is_not_understood_is_one_line():
    with pytest.raises(CacheError, match="scheme 'mysql' is not supported; use a file path"):
        EmbeddingStore("mysql://u@h/db")
