"""The label store's connection: opening SQLite or PostgreSQL, write transactions with retry, locks, and
database errors as one line.

- a path or `sqlite:///` URL: one SQLite file (WAL, `synchronous=FULL`: a decision is on disk when a write
  returns), writers serialised with `BEGIN IMMEDIATE`;
- `postgresql://...` or `postgresql+psycopg://...` (psycopg 3): a team server, writers on the same item
  serialised with transaction-scoped advisory locks (`_lock_keys`).

A lock held longer than `timeout` gives `LabelStoreBusyError`.

Example:
    >>> import tempfile, os
    >>> c = StoreConnection(os.path.join(tempfile.mkdtemp(), "l.sqlite"), timeout=2)
    >>> c.backend, c._write(lambda conn: 42)
    ('sqlite', 42)
    >>> c.close()
"""
from __future__ import annotations

import math
import os
import random
import stat
import time
from pathlib import Path
from urllib.parse import quote
from typing import Callable, Iterable, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url

from fclip_workbench.errors import (InvalidArgumentError, LabelStoreBusyError, LabelStoreError, LabelStoreReadOnlyError,
                                    LabelStoreUnreachableError)
from fclip_workbench.labelling.store.schema import SCHEMA_VERSION, UPGRADABLE_VERSIONS, chunks, meta_t, metadata

T = TypeVar("T")

_SQLITE_BUSY_MS = 200  # SQLite's own wait per attempt; the retry loop runs up to the store's timeout
_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock_not_available
_READONLY_SQLSTATES = {"25006", "42501"}  # read-only transaction, insufficient privilege


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _sqlstate(e: BaseException) -> str | None:
    return getattr(getattr(e, "orig", None), "sqlstate", None)


def _writable(path: Path) -> bool:
    """Writable by us; for root (who may write anything) a file or folder without write bits counts as read-only."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return False
        if os.geteuid() == 0:
            return bool(path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    except OSError:
        return False
    return os.access(path, os.W_OK)


class StoreConnection:
    """The database under a `LabelStore`: engine, schema check, transactions, locks.

    Args:
        url_or_path: a file path, `sqlite:///path`, or `postgresql[+psycopg]://user:pw@host/db`;
            default `paths.default_labels_path()` (data/labels.sqlite).
        timeout: seconds a write waits for another process's lock before `LabelStoreBusyError`.
        read_only: open an existing store only to read it (a colleague's file, a read-only copy): every write
            raises `LabelStoreReadOnlyError`; `sqlite:///PATH?mode=ro` says the same.
    """

    def __init__(self, url_or_path: str | os.PathLike | None = None, timeout: float = 10.0,
                 read_only: bool = False) -> None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0 \
                or not math.isfinite(timeout):
            raise InvalidArgumentError(f"label store timeout {timeout!r} must be a positive number of seconds")
        self.timeout = float(timeout)
        self._closed = False
        if url_or_path is None:
            from fclip_workbench.paths import default_labels_path

            url_or_path = default_labels_path()
        self.backend, where, url_ro = self._parse(url_or_path)
        # a SQLite store has a file path, a PostgreSQL one a server URL
        self.path: Path | None = where if isinstance(where, Path) else None
        self.url: sa.engine.URL | None = None if isinstance(where, Path) else where
        self.read_only = bool(read_only) or url_ro
        self.name = str(where) if isinstance(where, Path) else where.render_as_string(hide_password=True)
        if isinstance(where, Path):
            if self.read_only:
                self._check_sqlite_readable(where)
            else:
                self._check_sqlite_path(where)
            uri = f"file:{quote(str(where))}?mode=ro" if self.read_only else str(where)
            self.engine = sa.create_engine(
                sa.engine.URL.create("sqlite", database=uri, query={"uri": "true"} if self.read_only else {}),
                connect_args={"timeout": _SQLITE_BUSY_MS / 1000, "check_same_thread": False})
            sa_event.listen(self.engine, "connect", _sqlite_connect_ro if self.read_only else _sqlite_connect)
            sa_event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = sa.create_engine(where, pool_pre_ping=True,
                                           connect_args={"connect_timeout": max(1, math.ceil(self.timeout))})
        self._writer = self.engine.execution_options(fclip_write=True)
        try:
            self._open()
        except BaseException:
            self.engine.dispose()
            raise

    # ---- opening -------------------------------------------------------
    @staticmethod
    def _parse(url_or_path: str | os.PathLike) -> tuple[str, sa.engine.URL | Path, bool]:
        """(backend, SQLite path or server URL, read-only asked by the URL)."""
        text = os.fspath(url_or_path)
        if "://" not in text and (text.startswith("file:") or "?" in text):  # an SQLite URI, not a file name
            raise LabelStoreError(f"label store {text!r} looks like a URI, not a file name: give the file's path, "
                                  "or sqlite:///PATH?mode=ro to open it to read")
        if "://" not in text:
            return "sqlite", Path(text).expanduser().resolve(), False
        try:
            url = make_url(text)
        except Exception as e:
            raise LabelStoreError(f"label store URL {text!r} cannot be parsed ({e}); "
                                  "use a file path, sqlite:///PATH or postgresql://USER:PW@HOST/DB") from e
        driver = url.drivername
        if driver.startswith("sqlite"):
            if not url.database or url.database == ":memory:":
                raise LabelStoreError(f"label store URL {text!r} names no file; labels must be saved in a file: "
                                      "use sqlite:///path/to/labels.sqlite")
            query = dict(url.query)
            mode = query.pop("mode", "rw")
            if mode not in ("ro", "rw", "rwc") or query:
                raise LabelStoreError(f"label store URL {text!r}: only the query ?mode=ro (open to read) is "
                                      f"understood, not ?{'&'.join(f'{k}={v}' for k, v in url.query.items())}")
            return "sqlite", Path(url.database).expanduser().resolve(), mode == "ro"
        if driver in ("postgresql", "postgres", "postgresql+psycopg"):
            return "postgresql", url.set(drivername="postgresql+psycopg"), False
        raise LabelStoreError(f"label store URL scheme {driver!r} is not supported; use a file path, "
                              "sqlite:///PATH, postgresql://... or postgresql+psycopg://...")

    def _check_sqlite_path(self, path: Path) -> None:
        if path.is_dir():
            raise LabelStoreError(f"label store {path} is a folder; give a file path such as {path / 'labels.sqlite'}")
        folder = path.parent
        if not folder.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LabelStoreReadOnlyError(
                    f"label store {path} is read-only: your labels could not be saved; its folder {folder} "
                    f"cannot be created ({e.strerror}): choose another path") from e
        what = None
        if path.exists() and not _writable(path):
            what = "the file is read-only"
        elif not _writable(folder):
            what = f"its folder {folder} is read-only (SQLite writes a journal beside the file)"
        if what:
            raise LabelStoreReadOnlyError(
                f"label store {path} is read-only: your labels could not be saved; {what}: "
                "make it writable (chmod u+w), open it with read_only=True to read it, or open a store at "
                "another path")

    def _check_sqlite_readable(self, path: Path) -> None:
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise LabelStoreError(f"label store {path} {what}: a store opened read-only must be an existing file")
        if not os.access(path, os.R_OK):
            raise LabelStoreError(f"label store {path} cannot be read (permission denied)")

    def _open(self) -> None:
        """Create the tables (first use) or check that the database is a label store of a known version."""
        if self.read_only:
            self._check_schema_read_only()
            return

        def init(conn: sa.Connection) -> None:
            if self.backend == "postgresql":
                ro = conn.exec_driver_sql("SHOW transaction_read_only").scalar()
                if ro == "on":
                    raise LabelStoreReadOnlyError(
                        f"label store {self.name} is read-only: your labels could not be saved; the server "
                        "accepts no writes (a standby?): connect to the primary")
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x6C61_6265_6C73})  # 'labels'
            existing = set(sa.inspect(conn).get_table_names())
            # a SQLite file of another kind (e.g. the embedding cache) is a mistake; a team's PostgreSQL
            # database may hold other tables beside the label_* ones
            if self.backend == "sqlite" and existing and "label_meta" not in existing:
                raise LabelStoreError(
                    f"label store {self.name} is a database but not a label store (it has tables "
                    f"{', '.join(sorted(existing)[:5])}); give another file or database")
            metadata.create_all(conn)
            version = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar()
            if version is None:
                conn.execute(meta_t.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])
            elif version in UPGRADABLE_VERSIONS:  # the new tables were just created: nothing else changed
                conn.execute(meta_t.update().where(meta_t.c.key == "schema_version"), {"value": str(SCHEMA_VERSION)})
            elif version != str(SCHEMA_VERSION):
                raise LabelStoreError(f"label store {self.name} has schema version {version}, this workbench "
                                      f"reads version {SCHEMA_VERSION}; upgrade fclip-workbench")

        self._write(init, opening=True)

    def _check_schema_read_only(self) -> None:
        try:
            with self.engine.connect() as conn:
                existing = set(sa.inspect(conn).get_table_names())
                if "label_meta" not in existing:
                    kind = (f"a database but not a label store (it has tables {', '.join(sorted(existing)[:5])})"
                            if existing else "an empty database, not a label store")
                    raise LabelStoreError(f"label store {self.name} is {kind}; give another file or database")
                version = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar()
        except sa.exc.DBAPIError as e:
            self._raise_for(e, opening=True)
            raise
        if version != str(SCHEMA_VERSION) and version not in UPGRADABLE_VERSIONS:  # an old one reads as is
            raise LabelStoreError(f"label store {self.name} has schema version {version}, this workbench "
                                  f"reads version {SCHEMA_VERSION}; upgrade fclip-workbench")
        self.schema_version = version

    # ---- transactions --------------------------------------------------
    def _write(self, work: Callable[[sa.Connection], T], opening: bool = False) -> T:
        """Run `work(conn)` in one write transaction; retry on lock/serialisation errors up to `timeout`."""
        self._check_open()
        if self.read_only:
            raise LabelStoreReadOnlyError(f"label store {self.name} was opened read-only: your labels could not be "
                                          "saved; open it without read_only (or ?mode=ro) to label")
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                with self._writer.begin() as conn:
                    if self.backend == "postgresql":
                        left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {left_ms}")
                    return work(conn)
            except sa.exc.DBAPIError as e:
                self._raise_for(e, opening)
                attempt += 1
                if time.monotonic() >= deadline:
                    raise LabelStoreBusyError(
                        f"label store {self.name} is locked by another process for more than "
                        f"{self.timeout:g} s; retry") from e
                pause = min(0.25, 0.002 * 2 ** min(attempt, 8)) * (0.5 + random.random())
                time.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    def _read(self) -> sa.Connection:
        self._check_open()
        try:
            return self.engine.connect()
        except sa.exc.OperationalError as e:  # the server is down or restarting: one line, not a traceback
            raise LabelStoreUnreachableError(f"label store {self.name} is unreachable ({_first_line(e)}): this change "
                                             "was not saved; retry when the server is back") from e

    def _raise_for(self, e: sa.exc.DBAPIError, opening: bool) -> None:
        """Re-raise `e` as a one-line LabelStore error unless it is a retryable lock/serialisation error."""
        msg = _first_line(e)
        low = msg.lower()
        state = _sqlstate(e)
        if state in _RETRY_SQLSTATES or "database is locked" in low or "database is busy" in low \
                or "database table is locked" in low:
            return
        if state in _READONLY_SQLSTATES or "readonly" in low or "read-only" in low:
            raise LabelStoreReadOnlyError(f"label store {self.name} is read-only: your labels could not be saved; "
                                          f"{msg}: make it writable or open another store") from e
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            raise LabelStoreError(f"label store {self.name} is damaged or not a SQLite database ({msg}); "
                                  "move it aside and restore a backup or an export") from e
        if "nul" in low and "0x00" in low:  # PostgreSQL text cannot hold NUL (canon refuses it first)
            raise LabelStoreError(f"label store {self.name}: text with a NUL character cannot be stored ({msg}); "
                                  "remove it") from e
        if "disk" in low and "full" in low:
            raise LabelStoreError(f"label store {self.name}: the disk is full ({msg}); free space and retry") from e
        if isinstance(e, sa.exc.OperationalError) and not opening and ("connect" in low or "connection" in low
                                                                       or "shutting down" in low):
            raise LabelStoreUnreachableError(f"label store {self.name} is unreachable ({msg}): this change was not "
                                             "saved; retry when the server is back") from e
        if isinstance(e, sa.exc.OperationalError) and (opening or "connect" in low or "connection" in low):
            raise LabelStoreError(f"label store {self.name} cannot be opened: {msg}") from e
        raise e

    def _check_open(self) -> None:
        if self._closed:
            raise LabelStoreError(f"label store {self.name} is closed; open a new LabelStore")

    def close(self) -> None:
        """Release the connections (idempotent)."""
        if not self._closed:
            self._closed = True
            self.engine.dispose()

    def __enter__(self) -> "StoreConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, backend={self.backend!r})"

    # ---- locking -------------------------------------------------------
    def _lock_keys(self, conn: sa.Connection, keys: Iterable[str]) -> None:
        """PostgreSQL: transaction advisory locks on `keys`, in a fixed order (no deadlock). SQLite: already
        serialised by BEGIN IMMEDIATE."""
        if self.backend != "postgresql":
            return
        keys = sorted(set(keys))
        for chunk in chunks(keys, 1000):
            conn.execute(sa.text(
                "SELECT count(pg_advisory_xact_lock(h)) FROM "
                "(SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY h) s"),
                {"keys": list(chunk)})

    @staticmethod
    def _item_key(item_id: str, field: str) -> str:
        return f"{field}\x1f{item_id}"

# ----------------------------------------------------------------------------- SQLite connection setup
def _sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (BEGIN IMMEDIATE for writes)
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _sqlite_connect_ro(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    dbapi_conn.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
    dbapi_conn.execute("PRAGMA query_only = ON")


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("fclip_write") else "BEGIN")

