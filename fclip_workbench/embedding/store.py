"""EmbeddingStore: an SQLite file of vectors keyed by (model key, kind, content hash).

Each `put_many` is one transaction, so a run killed half-way keeps every batch it
finished and a rerun computes only the rest. Several processes may embed into
one store at once (WAL mode, a busy timeout, writes retried with backoff).

Wrong data is never served: every row carries a checksum (blake2b-8 of
model|kind|key|unit_norm|dim|vector bytes) and a `unit_norm` flag; on read, a row
whose checksum does not match, whose vector is not finite, or (when flagged
unit-norm) whose L2 norm is not within 1e-3 of 1 is a miss, to be recomputed.
File digests are memoised by (path, size, mtime_ns, inode, ctime_ns), so a
cached rerun does not re-read every image and a same-size replacement with its
mtime restored (`cp -p`) is still seen.

`path` may be a file, a folder (then `folder/embeddings.sqlite` is used), or
":memory:"; None means `paths.default_store_path()`. A store that cannot be
written (read-only file or file system, or `readonly=True`) serves its vectors
and silently drops new ones after ONE warning. A file that is not a store, a
damaged store, or a full disk raise `CacheError` with one line saying what to do.

Example:
    >>> store = EmbeddingStore(":memory:")
    >>> store.put_many("m", "text", ["k1"], np.ones((1, 4), np.float32) / 2)
    1
    >>> store.get_many("m", "text", ["k1", "k2"])["k1"].shape
    (4,)
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np

from fclip_workbench.errors import CacheError
from fclip_workbench.embedding.images import file_digest
from fclip_workbench.paths import default_store_path  # noqa: F401  (re-exported: the one default lives in paths.py)

log = logging.getLogger(__name__)
T = TypeVar("T")

STORE_FILE = "embeddings.sqlite"  # the file used when `path` is a folder
SCHEMA_VERSION = 2  # PRAGMA user_version; 0/1: the layout without checksums (its rows are dropped)
NORM_TOL = 1e-3  # |L2 norm - 1| allowed for a row flagged unit-norm
CHUNK = 900  # keys per `IN (...)` query (old SQLite builds allow 999 parameters)
PAGE_SIZE = 16384  # bytes per SQLite page of a new store

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS vectors (
        model TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        dim INTEGER NOT NULL,
        unit_norm INTEGER NOT NULL,  -- 1: stored L2-normalised, so the norm is checked on read
        checksum BLOB NOT NULL,      -- blake2b-8, see _checksum
        vec BLOB NOT NULL,           -- dim float32
        PRIMARY KEY (model, kind, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS file_digests (
        path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, digest TEXT NOT NULL
    ) WITHOUT ROWID""",
)


def _checksum(model: str, kind: str, key: str, unit_norm: int, dim: int, blob: bytes) -> bytes:
    """8-byte blake2b of a row: any flipped byte of the vector or its identity changes it."""
    h = hashlib.blake2b(f"{model}|{kind}|{key}|{unit_norm}|{dim}|".encode(), digest_size=8)
    h.update(blob)
    return h.digest()


def _code(e: sqlite3.Error) -> str:
    """SQLite's error name (SQLITE_BUSY, ...) or, when unknown, the message, upper-cased."""
    return (getattr(e, "sqlite_errorname", None) or "") + " " + str(e).upper()


def _is_busy(e: sqlite3.Error) -> bool:
    c = _code(e)
    return "SQLITE_BUSY" in c or "SQLITE_LOCKED" in c or "DATABASE IS LOCKED" in c or "DATABASE TABLE IS LOCKED" in c


def _is_readonly(e: sqlite3.Error) -> bool:
    c = _code(e)
    return ("SQLITE_READONLY" in c or "READONLY DATABASE" in c or "READ-ONLY" in c
            or "SQLITE_CANTOPEN" in c or "UNABLE TO OPEN DATABASE" in c or "SQLITE_PERM" in c)


def finite_rows(mat: np.ndarray) -> np.ndarray:
    """(n, dim) -> (n,) bool: no NaN or inf in the row (a fast sum first, exact check where it fails)."""
    with np.errstate(all="ignore"):
        ok = np.isfinite(mat.sum(axis=1, dtype=np.float64))
    if not ok.all():
        ok[~ok] = np.isfinite(mat[~ok]).all(axis=1)
    return ok


def unit_rows(mat: np.ndarray) -> np.ndarray:
    """(n, dim) -> (n,) bool: L2 norm within NORM_TOL of 1 (False for non-finite rows)."""
    with np.errstate(all="ignore"):
        sq = np.einsum("ij,ij->i", mat, mat, dtype=np.float64)  # (n,) squared norms
    return np.abs(np.sqrt(sq) - 1.0) <= NORM_TOL


class EmbeddingStore:
    """Vectors and file digests in one SQLite file (WAL mode, safe to kill at any time).

    >>> EmbeddingStore(":memory:").count()
    0
    """

    def __init__(self, path: str | Path | None = None, readonly: bool = False, timeout: float = 60.0) -> None:
        path = default_store_path() if path is None else path
        if str(path) != ":memory:":
            as_dir = str(path).endswith(("/", os.sep))
            path = Path(path).expanduser()
            if as_dir or path.is_dir():
                path = path / STORE_FILE
        self.path = str(path)
        self.timeout = timeout
        self.readonly = False  # True once writes are known to be impossible
        self._warned_readonly = False
        self._legacy = False  # a read-only store of another layout: every lookup is a miss
        self.db = self._open(readonly)

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.path!r}{', readonly' if self.readonly else ''})"

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # ---- opening --------------------------------------------------------
    def _connect_rw(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE in _write)
        return sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)

    def _open(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            db = None
            try:
                db = self._connect_rw()
                self._setup(db)
                return db
            except OSError as e:  # the folder cannot be created: nothing to read either
                log.debug("cannot create %s: %s", self.path, e)
            except sqlite3.Error as e:
                if db is not None:
                    db.close()
                if not _is_readonly(e):
                    raise self._error(e) from e
            except BaseException:
                if db is not None:
                    db.close()
                raise
        self.readonly = True
        return self._open_readonly()

    def _setup(self, db: sqlite3.Connection) -> None:
        """WAL mode, tables, layout migration; retried while another process holds the lock."""
        if self.path != ":memory:":
            # 16 KiB pages (a new file only): a row of up to ~950 floats stays on its leaf page instead of
            # spilling into an overflow page of its own (3x smaller file, lookups ~2x faster)
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            for delay in (0.0, 0.01, 0.05, 0.1, 0.2, 0.5):  # WAL: readers and one writer never block each other
                time.sleep(delay)
                try:
                    if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                        break  # (a locked file answers its old mode instead of switching)
                except sqlite3.OperationalError as e:
                    if not _is_busy(e):
                        raise
            else:
                log.debug("cache %s stays in %s journal mode", self.path,
                          db.execute("PRAGMA journal_mode").fetchone()[0])
        db.execute("PRAGMA synchronous=NORMAL")
        if self._version(db) != SCHEMA_VERSION:
            self._retry(lambda: self._migrate(db))

    def _version(self, db: sqlite3.Connection) -> int:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CacheError(f"{self.path} was written by a newer fclip-workbench (store layout {version}); "
                             "upgrade fclip-workbench or pass --cache elsewhere")
        return version

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            if self._version(db) != SCHEMA_VERSION:  # another process may have done it meanwhile
                tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                self._check_is_ours(db, tables)
                if "vectors" in tables:
                    n = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
                    log.warning("cache %s has the old layout without checksums: its %d vectors are dropped "
                                "and will be recomputed", self.path, n)
                for name in ("vectors", "file_digests"):
                    if name in tables:
                        db.execute(f"DROP TABLE {name}")
                for stmt in SCHEMA:
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _check_is_ours(self, db: sqlite3.Connection, tables: set[str]) -> None:
        """Refuse to migrate (drop tables of) a database that is not an fclip embedding store."""
        known = {"vectors": ["model", "kind", "key", "dim", "vec"],
                 "file_digests": ["path", "size", "mtime_ns", "digest"]}
        foreign = sorted(t for t in tables if t not in known and not t.startswith("sqlite_"))
        wrong = [t for t in tables & known.keys()
                 if [r[1] for r in db.execute(f"PRAGMA table_info({t})")] != known[t]]
        if foreign or wrong:
            raise CacheError(f"{self.path} is an SQLite database but not an embedding store (tables: "
                             f"{', '.join(sorted(tables))}); pass --cache elsewhere")

    def _open_readonly(self) -> sqlite3.Connection:
        """Open without ever writing (no WAL switch, no schema): `mode=ro`, else `immutable=1`."""
        if self.path == ":memory:" or not Path(self.path).is_file():
            self._legacy = True  # nothing to serve
            return sqlite3.connect(":memory:", isolation_level=None)
        uri = Path(self.path).resolve().as_uri()
        last: sqlite3.Error | None = None
        for query in ("mode=ro", "immutable=1"):  # WAL files in a read-only folder need immutable
            db = None
            try:
                db = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=self.timeout, isolation_level=None)
                self._legacy = self._version(db) != SCHEMA_VERSION
                db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return db
            except sqlite3.Error as e:
                if db is not None:
                    db.close()
                if not _is_readonly(e):
                    raise self._error(e) from e
                last = e
        raise CacheError(f"cannot read cache {self.path} ({last}); check its permissions or pass --cache elsewhere")

    # ---- errors, retries, writes ------------------------------------------
    def _error(self, e: sqlite3.Error) -> CacheError:
        """One line for the user: what is wrong with the file and what to do."""
        c = _code(e)
        if "SQLITE_NOTADB" in c or "NOT A DATABASE" in c:
            msg = f"{self.path} is not an embedding store (not an SQLite database); pass --cache elsewhere"
        elif "SQLITE_CORRUPT" in c or "MALFORMED" in c:
            msg = (f"{self.path} is damaged ({e}); if it is an fclip cache, delete it (its vectors are recomputed), "
                   "else pass --cache elsewhere")
        elif "SQLITE_FULL" in c or "DISK IS FULL" in c:
            msg = f"cache {self.path}: database or disk is full; free space or use --cache elsewhere"
        elif _is_busy(e):
            msg = f"cache {self.path} stayed locked by another process ({e}); try again or use --cache elsewhere"
        else:
            msg = f"cache {self.path}: {e}; pass --cache elsewhere"
        return CacheError(msg)

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying with backoff while SQLite reports the file busy (up to `timeout` s)."""
        deadline, delay = time.monotonic() + self.timeout, 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _is_busy(e) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _write(self, sql: str, rows: list[tuple]) -> bool:
        """`executemany(sql, rows)` in one transaction; False (and nothing written) if read-only."""
        if self.readonly:
            return False

        def txn() -> None:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(sql, rows)
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

        try:
            self._retry(txn)
            return True
        except sqlite3.Error as e:
            if _is_readonly(e):
                self.readonly = True
                return False
            raise self._error(e) from e

    def _read(self, sql: str, args: Sequence) -> list[tuple]:
        try:
            return self._retry(lambda: self.db.execute(sql, args).fetchall())
        except sqlite3.Error as e:
            raise self._error(e) from e

    def _chunked(self, sql: str, head: tuple, keys: list[str]) -> list[tuple]:
        """Rows of `sql % '?,?,...'` for `keys` in chunks of CHUNK (one indexed lookup per key)."""
        out: list[tuple] = []
        for i in range(0, len(keys), CHUNK):
            chunk = keys[i:i + CHUNK]
            out += self._read(sql % ",".join("?" * len(chunk)), (*head, *chunk))
        return out

    # ---- vectors ------------------------------------------------------
    def get_many(self, model: str, kind: str, keys: Iterable[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """Stored, intact vectors among `keys`, as {key: (dim,) float32}; damaged rows are misses, and so
        are rows of another width than `dim` (the embedding space's, when given).

        Cost: one primary-key b-tree SEARCH per key asked (never a scan of the store; see
        benchmarks/bench_store.py: 40,000 keys of a 1,000,000-vector store), plus one checksum per row.
        """
        keys = list(dict.fromkeys(keys))
        if self._legacy or not keys:
            return {}
        rows = self._chunked("SELECT key, dim, unit_norm, checksum, vec FROM vectors "
                             "WHERE model=? AND kind=? AND key IN (%s)", (model, kind), sorted(keys))
        head, blake = f"{model}|{kind}|".encode(), hashlib.blake2b
        by_dim: dict[int, tuple[list[str], list[int], list[bytes]]] = {}
        want, n_other_dim = dim, 0
        for key, dim, unit, checksum, blob in rows:  # the checksum of _checksum, inlined (hot loop)
            if want is not None and dim != want:
                n_other_dim += 1
                continue
            if len(blob) == 4 * dim and checksum == blake(b"%s%s|%d|%d|%s" % (head, key.encode(), unit, dim, blob),
                                                          digest_size=8).digest():
                ks, us, bs = by_dim.setdefault(dim, ([], [], []))
                ks.append(key)
                us.append(unit)
                bs.append(blob)
        out: dict[str, np.ndarray] = {}
        for dim, (ks, us, bs) in by_dim.items():
            mat = np.frombuffer(b"".join(bs), dtype=np.float32).reshape(len(ks), dim)  # (n, dim)
            unit = np.array(us, dtype=bool)  # (n,)
            ok = finite_rows(mat) & (~unit | unit_rows(mat))
            if ok.all():
                out.update(zip(ks, mat))
            else:
                out.update((k, mat[i]) for i, k in enumerate(ks) if ok[i])
        if n_other_dim:
            log.warning("cache %s: %d stored %s vectors are not %d-d as this embedding space is; they are "
                        "treated as missing and recomputed", self.path, n_other_dim, kind, want)
        if len(out) < len(rows) - n_other_dim:
            log.warning("cache %s: %d stored %s vectors failed their integrity check (checksum, finiteness or "
                        "norm); they are treated as missing and recomputed", self.path, len(rows) - n_other_dim - len(out),
                        kind)
        return out

    def put_many(self, model: str, kind: str, keys: Sequence[str], vectors: np.ndarray,
                 normalised: bool | None = None) -> int:
        """Store rows of `vectors` (n, dim) under `keys` in one transaction; returns how many were stored.

        `normalised`: True for L2-normalised rows (their norm is checked on every read; a row that is
        not unit-norm raises ValueError), False for raw features (checksum and finiteness only),
        None to decide per row from the data. Non-finite rows are never stored (logged).
        A read-only store stores nothing (one warning per store).
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, dim)
        if vectors.ndim != 2 or len(keys) != len(vectors):
            raise ValueError(f"put_many: {len(keys)} keys for vectors of shape {vectors.shape}")
        finite = finite_rows(vectors)  # (n,)
        unit = unit_rows(vectors)  # (n,)
        if normalised is True and not unit[finite].all():
            bad = [k for k, f, u in zip(keys, finite, unit) if f and not u]
            raise ValueError(f"put_many(normalised=True): {len(bad)} rows are not unit-norm (first key {bad[0]!r})")
        if normalised is False:
            unit[:] = False
        if not finite.all():
            log.warning("cache %s: %d non-finite %s vectors not stored", self.path, int((~finite).sum()), kind)
        dim = vectors.shape[1]
        rows = []
        for key, vec, ok, u in zip(keys, vectors, finite, unit):
            if ok:
                blob = vec.tobytes()
                rows.append((model, kind, key, dim, int(u), _checksum(model, kind, key, int(u), dim, blob), blob))
        if not rows:
            return 0
        if not self._write("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?, ?, ?)", rows):
            if not self._warned_readonly:
                self._warned_readonly = True
                log.warning("cache %s is read-only: new vectors are not saved", self.path)
            return 0
        return len(rows)

    def count(self, model: str | None = None, kind: str | None = None) -> int:
        """Number of stored rows (intact or not), optionally of one model and kind."""
        if self._legacy:
            return 0
        q = "SELECT COUNT(*) FROM vectors WHERE 1=1"
        args: list[object] = []
        if model is not None:
            q, args = q + " AND model=?", args + [model]
        if kind is not None:
            q, args = q + " AND kind=?", args + [kind]
        return self._read(q, args)[0][0]

    # ---- file digests ---------------------------------------------------
    def file_digests(self, paths: Sequence[str | Path]) -> list[str | None]:
        """SHA-256 of each file (None if it is missing), re-read only when its size, mtime,
        inode or ctime changed."""
        keys = [str(p) for p in paths]
        stats: list[os.stat_result | None] = []
        for key in keys:
            try:
                st = os.stat(key)
            except OSError:
                st = None
            stats.append(st if st is not None and stat.S_ISREG(st.st_mode) else None)  # a FIFO would block
        known: dict[str, list[Any]] = {}  # path -> [size, mtime_ns, inode, ctime_ns, digest]
        if not self._legacy:
            present = sorted({k for k, st in zip(keys, stats) if st is not None})  # sorted: b-tree locality
            known = {p: rest for p, *rest in self._chunked(
                "SELECT path, size, mtime_ns, inode, ctime_ns, digest FROM file_digests WHERE path IN (%s)",
                (), present)}
        out: list[str | None] = []
        fresh = []
        for key, st in zip(keys, stats):
            if st is None:
                out.append(None)
                continue
            memo = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
            hit = known.get(key)
            if hit is not None and tuple(hit[:4]) == memo:
                out.append(hit[4])
                continue
            try:
                digest = file_digest(key)
            except OSError:
                out.append(None)
                continue
            out.append(digest)
            fresh.append((key, *memo, digest))
        if fresh:
            self._write("INSERT OR REPLACE INTO file_digests VALUES (?, ?, ?, ?, ?, ?)", fresh)
        return out
