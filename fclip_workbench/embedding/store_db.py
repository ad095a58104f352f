"""The database under an `EmbeddingStore`: one SQLAlchemy implementation for SQLite and PostgreSQL.

- a path, a folder or `sqlite:///PATH`: one SQLite file (WAL, 16 KiB pages, `PRAGMA user_version` = layout
  version, read-only fallbacks `mode=ro` then `immutable=1`), as the store has always been: existing cache
  files open unchanged;
- `postgresql://...`, `postgres://...` or `postgresql+psycopg://...` (psycopg 3): a team server, next to
  the label store's `label_*` tables; layout version in `embedding_meta`.

Every read and write after opening is the same SQLAlchemy Core statement on both (`vectors_t`,
`digests_t`): upserts `INSERT ... ON CONFLICT DO UPDATE` in one transaction per batch, lookups of many
keys per statement (`IN (...)` of 900 keys on SQLite, `= ANY(:keys)` of 20,000 on PostgreSQL). Vectors
are `BLOB`/`bytea` of float32. Busy files, deadlocks and a lost server connection are retried until
`timeout` (a write is an idempotent upsert); everything else is a one-line `CacheError`.

Example:
    >>> db = VectorDB(":memory:", readonly=False, timeout=5)
    >>> db.backend, db.count()
    ('sqlite', 0)
"""
from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.pool import StaticPool

from fclip_workbench.errors import CacheError

log = logging.getLogger("fclip_workbench.embedding.store")
T = TypeVar("T")

STORE_FILE = "embeddings.sqlite"  # the file used when `path` is a folder
SCHEMA_VERSION = 2  # SQLite: PRAGMA user_version (0/1: the layout without checksums, its rows are dropped)
PAGE_SIZE = 16384  # bytes per SQLite page of a new store
CHUNK = {"sqlite": 900, "postgresql": 20000}  # keys per lookup statement (old SQLite builds: 999 parameters)
WRITE_BATCH = 5000  # rows per upsert statement group (PostgreSQL: insertmanyvalues pages of 1000)
_RETRY_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08003", "08006"}
_READONLY_SQLSTATES = {"25006", "42501"}  # read-only transaction, insufficient privilege

metadata = sa.MetaData()
vectors_t = sa.Table(
    "vectors", metadata,
    sa.Column("model", sa.Text, primary_key=True), sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("unit_norm", sa.Integer, nullable=False),  # 1: stored L2-normalised (norm checked on read)
    sa.Column("checksum", sa.LargeBinary, nullable=False),  # blake2b-8, see store._checksum
    sa.Column("vec", sa.LargeBinary, nullable=False),  # dim float32 (BLOB / bytea)
)
digests_t = sa.Table(
    "file_digests", metadata,
    sa.Column("path", sa.Text, primary_key=True), sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False), sa.Column("inode", sa.BigInteger, nullable=False),
    sa.Column("ctime_ns", sa.BigInteger, nullable=False), sa.Column("digest", sa.Text, nullable=False),
)
meta_t = sa.Table("embedding_meta", metadata,  # PostgreSQL only (SQLite keeps PRAGMA user_version)
                  sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False))
KNOWN_COLUMNS = {"vectors": ["model", "kind", "key", "dim", "vec"],  # the first layout's columns (v0/v1)
                 "file_digests": ["path", "size", "mtime_ns", "digest"]}

SQLITE_SCHEMA = (  # the file layout of every existing cache (WITHOUT ROWID: one b-tree per table)
    """CREATE TABLE IF NOT EXISTS vectors (
        model TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        dim INTEGER NOT NULL, unit_norm INTEGER NOT NULL, checksum BLOB NOT NULL, vec BLOB NOT NULL,
        PRIMARY KEY (model, kind, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS file_digests (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, digest TEXT NOT NULL
    ) WITHOUT ROWID""",
)


# ----------------------------------------------------------------------------- error classification
def _orig(e: BaseException) -> BaseException:
    return getattr(e, "orig", None) or e


def _code(e: BaseException) -> str:
    """The driver's error name (SQLITE_BUSY, ...) and message, upper-cased."""
    o = _orig(e)
    return (getattr(o, "sqlite_errorname", None) or "") + " " + str(o).upper()


def _first_line(e: BaseException) -> str:
    text = str(_orig(e)).strip().splitlines()
    return text[0] if text else type(_orig(e)).__name__


def is_busy(e: BaseException) -> bool:
    c = _code(e)
    return ("SQLITE_BUSY" in c or "SQLITE_LOCKED" in c or "DATABASE IS LOCKED" in c or "DATABASE TABLE IS LOCKED" in c
            or getattr(_orig(e), "sqlstate", None) in _RETRY_SQLSTATES)


def is_disconnect(e: BaseException) -> bool:
    """A PostgreSQL connection lost or refused (server restarting, network): retried until the timeout."""
    return bool(getattr(e, "connection_invalidated", False)) or (
        isinstance(e, sa.exc.OperationalError) and getattr(_orig(e), "sqlstate", None) in (None, *_RETRY_SQLSTATES)
        and any(w in _code(e) for w in ("CONNECT", "SERVER CLOSED", "TERMINATING", "SHUTTING DOWN",
                                        "STARTING UP", "CONSISTENT RECOVERY")))


def is_readonly(e: BaseException) -> bool:
    c = _code(e)
    return ("SQLITE_READONLY" in c or "READONLY DATABASE" in c or "READ-ONLY" in c
            or "SQLITE_CANTOPEN" in c or "UNABLE TO OPEN DATABASE" in c or "SQLITE_PERM" in c
            or getattr(_orig(e), "sqlstate", None) in _READONLY_SQLSTATES)


def parse_target(target: str | os.PathLike) -> tuple[str, str]:
    """(backend, SQLite path or SQLAlchemy URL) of what `--cache` names.

    >>> parse_target("postgres://u:p@h/db")
    ('postgresql', 'postgresql+psycopg://u:p@h/db')
    """
    text = os.fspath(target)
    if "://" not in text:
        if text == ":memory:":
            return "sqlite", text
        as_dir = text.endswith(("/", os.sep))
        path = Path(text).expanduser()
        return "sqlite", str(path / STORE_FILE if as_dir or path.is_dir() else path)
    try:
        url = sa.engine.make_url(text)
    except Exception as e:
        raise CacheError(f"embedding store URL {text!r} cannot be parsed ({e}); use a file path, sqlite:///PATH "
                         "or postgresql://USER:PW@HOST/DB") from e
    if url.drivername == "sqlite":
        return parse_target(url.database or ":memory:")
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql", url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise CacheError(f"embedding store URL scheme {url.drivername!r} is not supported; use a file path, "
                     "sqlite:///PATH, postgresql://... or postgresql+psycopg://...")


class VectorDB:
    """Engine, layout check and retried transactions of one embedding store (see the module docstring)."""

    def __init__(self, target: str | os.PathLike, readonly: bool, timeout: float) -> None:
        self.backend, self.path = parse_target(target)
        self.name = (sa.engine.make_url(self.path).render_as_string(hide_password=True)
                     if self.backend == "postgresql" else self.path)
        self.timeout = timeout
        self.readonly = False  # True once writes are known to be impossible
        self.legacy = False  # a read-only store of another layout (or none): every lookup is a miss
        self.raw: sqlite3.Connection | None = None  # SQLite: the one DBAPI connection (tests and benchmarks use it)
        if self.backend == "sqlite":
            self.raw = self._open_sqlite(readonly)
            raw = self.raw
            self.engine = sa.create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool)
            sa.event.listen(self.engine, "begin", lambda c: c.exec_driver_sql(
                "BEGIN IMMEDIATE" if c.get_execution_options().get("fclip_write") else "BEGIN"))
        else:
            self.engine = sa.create_engine(self.path, pool_pre_ping=True, pool_size=2, max_overflow=2,
                                           connect_args={"connect_timeout": max(1, int(min(timeout, 10)))})
            try:
                self._open_postgres(readonly)
            except BaseException:
                self.engine.dispose()
                raise
        self.insert = sqlite_dialect.insert if self.backend == "sqlite" else pg_dialect.insert

    def close(self) -> None:
        self.engine.dispose()
        if self.raw is not None:
            self.raw.close()

    # ---- SQLite opening ---------------------------------------------------
    def _connect_rw(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE for writes)
        return sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)

    def _open_sqlite(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            db = None
            try:
                db = self._connect_rw()
                self._setup_sqlite(db)
                return db
            except OSError as e:  # the folder cannot be created: nothing to read either
                log.debug("cannot create %s: %s", self.path, e)
            except sqlite3.Error as e:
                if db is not None:
                    db.close()
                if not is_readonly(e):
                    raise self.error(e) from e
            except BaseException:
                if db is not None:
                    db.close()
                raise
        self.readonly = True
        return self._open_sqlite_readonly()

    def _setup_sqlite(self, db: sqlite3.Connection) -> None:
        """WAL mode, tables, layout migration; retried while another process holds the lock."""
        if self.path != ":memory:":
            # 16 KiB pages (a new file only): a row of up to ~950 floats stays on its leaf page
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            for delay in (0.0, 0.01, 0.05, 0.1, 0.2, 0.5):  # WAL: readers and one writer never block each other
                time.sleep(delay)
                try:
                    if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                        break  # (a locked file answers its old mode instead of switching)
                except sqlite3.OperationalError as e:
                    if not is_busy(e):
                        raise
        db.execute("PRAGMA synchronous=NORMAL")
        if self._sqlite_version(db) != SCHEMA_VERSION:
            self.retry(lambda: self._migrate_sqlite(db))

    def _sqlite_version(self, db: sqlite3.Connection) -> int:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        self._check_version(version)
        return version

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise CacheError(f"{self.name} was written by a newer fclip-workbench (store layout {version}); "
                             "upgrade fclip-workbench or pass --cache elsewhere")

    def _migrate_sqlite(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._sqlite_version(db) != SCHEMA_VERSION:  # another process may have done it meanwhile
                tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                self._check_is_ours(tables, lambda t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")])
                if "vectors" in tables:
                    n = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
                    log.warning("cache %s has the old layout without checksums: its %d vectors are dropped "
                                "and will be recomputed", self.name, n)
                for name in ("vectors", "file_digests"):
                    if name in tables:
                        db.execute(f"DROP TABLE {name}")
                for stmt in SQLITE_SCHEMA:
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _check_is_ours(self, tables: set[str], columns: Callable[[str], list[str]]) -> None:
        """Refuse to migrate (drop tables of) a database that is not an fclip embedding store."""
        foreign = sorted(t for t in tables if t not in KNOWN_COLUMNS and not t.startswith("sqlite_"))
        wrong = [t for t in tables & KNOWN_COLUMNS.keys() if columns(t) != KNOWN_COLUMNS[t]]
        if foreign or wrong:
            raise CacheError(f"{self.name} is an SQLite database but not an embedding store (tables: "
                             f"{', '.join(sorted(tables))}); pass --cache elsewhere")

    def _open_sqlite_readonly(self) -> sqlite3.Connection:
        """Open without ever writing (no WAL switch, no schema): `mode=ro`, else `immutable=1`."""
        if self.path == ":memory:" or not Path(self.path).is_file():
            self.legacy = True  # nothing to serve
            return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        uri = Path(self.path).resolve().as_uri()
        last: sqlite3.Error | None = None
        for query in ("mode=ro", "immutable=1"):  # WAL files in a read-only folder need immutable
            db = None
            try:
                db = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=self.timeout, isolation_level=None,
                                     check_same_thread=False)
                self.legacy = self._sqlite_version(db) != SCHEMA_VERSION
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return db
            except sqlite3.Error as e:
                if db is not None:
                    db.close()
                if not is_readonly(e):
                    raise self.error(e) from e
                last = e
        raise CacheError(f"cannot read cache {self.name} ({last}); check its permissions or pass --cache elsewhere")

    # ---- PostgreSQL opening -----------------------------------------------
    def _open_postgres(self, readonly: bool) -> None:
        """Create the tables (first use) or check they are an embedding store of a known layout."""
        def columns(conn: sa.Connection, t: str) -> list[str]:
            return [c["name"] for c in sa.inspect(conn).get_columns(t)]

        def init(conn: sa.Connection) -> None:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x656D_6265_6473})  # 'embeds'
            tables = set(sa.inspect(conn).get_table_names()) & {"vectors", "file_digests", "embedding_meta"}
            if "embedding_meta" not in tables:  # a team database holds other tables (label_*): only ours matter
                if tables:
                    self._check_is_ours(tables, lambda t: columns(conn, t))
                    raise CacheError(f"{self.name} has tables {', '.join(sorted(tables))} of another program; "
                                     "pass --cache elsewhere (another database)")
                metadata.create_all(conn)
                conn.execute(meta_t.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])
            self._check_version(int(conn.execute(
                sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar_one()))

        try:
            if readonly:
                self.readonly = True
                with self.engine.connect() as conn:
                    if "embedding_meta" not in sa.inspect(conn).get_table_names():
                        self.legacy = True
                    else:
                        self._check_version(int(conn.execute(
                            sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar_one()))
                return
            self.retry(lambda: self._transaction(init))
        except sa.exc.DBAPIError as e:
            if is_readonly(e):  # a role that may only read, a standby
                self.readonly = True
                return self._open_postgres(readonly=True)
            raise self.error(e) from e

    # ---- errors, retries, transactions ------------------------------------
    def error(self, e: BaseException) -> CacheError:
        """One line for the user: what is wrong with the store and what to do."""
        c = _code(e)
        if "SQLITE_NOTADB" in c or "NOT A DATABASE" in c:
            msg = f"{self.name} is not an embedding store (not an SQLite database); pass --cache elsewhere"
        elif "SQLITE_CORRUPT" in c or "MALFORMED" in c:
            msg = (f"{self.name} is damaged ({_orig(e)}); if it is an fclip cache, delete it (its vectors are "
                   "recomputed), else pass --cache elsewhere")
        elif "SQLITE_FULL" in c or "DISK IS FULL" in c or getattr(_orig(e), "sqlstate", None) == "53100":
            msg = f"cache {self.name}: database or disk is full; free space or use --cache elsewhere"
        elif is_disconnect(e):
            msg = (f"embedding store {self.name} cannot be reached ({_first_line(e)}); start the server, check the "
                   "URL, or pass --cache elsewhere")
        elif is_busy(e):
            msg = f"cache {self.name} stayed locked by another process ({_first_line(e)}); try again or use --cache elsewhere"
        else:
            msg = f"cache {self.name}: {_first_line(e)}; pass --cache elsewhere"
        return CacheError(msg)

    def retry(self, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying with backoff while the store is busy or the server unreachable (up to `timeout` s)."""
        deadline, delay = time.monotonic() + self.timeout, 0.01
        while True:
            try:
                return fn()
            except (sqlite3.OperationalError, sa.exc.OperationalError, sa.exc.DBAPIError) as e:
                if not (is_busy(e) or (self.backend == "postgresql" and is_disconnect(e))) \
                        or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    def _transaction(self, work: Callable[[sa.Connection], T]) -> T:
        with self.engine.execution_options(fclip_write=True).begin() as conn:
            return work(conn)

    def execute_many(self, conn: sa.Connection, stmt: Any, rows: list[dict]) -> None:
        """The one place rows are sent (a seam for tests that simulate driver errors)."""
        conn.execute(stmt, rows)

    def upsert(self, table: sa.Table, rows: list[dict]) -> bool:
        """Insert or replace `rows` in one transaction; False (and nothing written) if read-only."""
        if self.readonly:
            return False
        ins = self.insert(table)
        pk = [c.name for c in table.primary_key.columns]
        stmt = ins.on_conflict_do_update(index_elements=pk, set_={c.name: ins.excluded[c.name]
                                                                  for c in table.columns if c.name not in pk})
        rows = sorted(rows, key=lambda r: tuple(r[k] for k in pk))  # one lock order: no deadlock between writers

        def work(conn: sa.Connection) -> None:
            for i in range(0, len(rows), WRITE_BATCH):
                self.execute_many(conn, stmt, rows[i:i + WRITE_BATCH])

        try:
            self.retry(lambda: self._transaction(work))
            return True
        except (sqlite3.Error, sa.exc.DBAPIError) as e:
            if is_readonly(e):
                self.readonly = True
                return False
            raise self.error(e) from e

    def read(self, stmt: Any, params: dict | None = None) -> list[Any]:
        def run() -> list[Any]:
            with self.engine.connect() as conn:
                return list(conn.execute(stmt, params or {}).all())
        try:
            return self.retry(run)
        except (sqlite3.Error, sa.exc.DBAPIError) as e:
            raise self.error(e) from e

    def lookup(self, cols: Sequence[sa.Column], where: list[Any], key_col: sa.Column,
               keys: list[str]) -> list[Any]:
        """Rows of `SELECT cols WHERE where AND key_col IN keys`, many keys per statement."""
        if self.backend == "postgresql":
            cond = key_col == sa.any_(sa.bindparam("keys", type_=pg_dialect.ARRAY(sa.Text)))
        else:
            cond = key_col.in_(sa.bindparam("keys", expanding=True))
        stmt = sa.select(*cols).where(*where, cond)
        out: list[Any] = []
        step = CHUNK[self.backend]
        for i in range(0, len(keys), step):
            out += self.read(stmt, {"keys": keys[i:i + step]})
        return out

    def count(self, model: str | None = None, kind: str | None = None) -> int:
        if self.legacy:
            return 0
        stmt = sa.select(sa.func.count()).select_from(vectors_t)
        if model is not None:
            stmt = stmt.where(vectors_t.c.model == model)
        if kind is not None:
            stmt = stmt.where(vectors_t.c.kind == kind)
        return int(self.read(stmt)[0][0])
