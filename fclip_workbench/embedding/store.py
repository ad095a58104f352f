"""EmbeddingStore: vectors keyed by (model key, kind, content hash), in an SQLite file or on PostgreSQL.

Each `put_many` is one transaction, so a run killed half-way keeps every batch it
finished and a rerun computes only the rest. Several processes may embed into
one store at once (SQLite: WAL mode, a busy timeout, writes retried with backoff;
PostgreSQL: upserts in one key order, deadlocks and lost connections retried).

Wrong data is never served: every row carries a checksum (blake2b-8 of
model|kind|key|unit_norm|dim|vector bytes) and a `unit_norm` flag; on read, a row
whose checksum does not match, whose vector is not finite, or (when flagged
unit-norm) whose L2 norm is not within 1e-3 of 1 is a miss, to be recomputed.
File digests are memoised by (path, size, mtime_ns, inode, ctime_ns), so a
cached rerun does not re-read every image and a same-size replacement with its
mtime restored (`cp -p`) is still seen.

`path` may be a file, a folder (then `folder/embeddings.sqlite` is used), ":memory:",
`sqlite:///PATH`, or a team server `postgresql://USER:PW@HOST/DB` (also `postgresql+psycopg://`):
the same keys, checksums and rules on both, one SQLAlchemy implementation (`store_db.VectorDB`).
None means the store `$FCLIP_EMBEDDING_STORE` names (a team's server URL: every notebook and app
then reads the team's vectors), else `paths.default_store_path()`. A store that cannot be written (read-only
file or file system, a role that may only read, or `readonly=True`) serves its vectors
and silently drops new ones after ONE warning. A file that is not a store, a
damaged store, a full disk or an unreachable server raise `CacheError` with one line
saying what to do.

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
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fclip_workbench.embedding.images import file_digest
from fclip_workbench.embedding.store_db import (CHUNK, PAGE_SIZE, SCHEMA_VERSION, STORE_FILE, VectorDB,  # noqa: F401
                                                digests_t, vectors_t)
from fclip_workbench.errors import CacheError  # noqa: F401  (raised by store_db; documented here)
from fclip_workbench.paths import default_store_path  # noqa: F401  (re-exported: the one default lives in paths.py)

log = logging.getLogger(__name__)

NORM_TOL = 1e-3  # |L2 norm - 1| allowed for a row flagged unit-norm
STORE_ENV = "FCLIP_EMBEDDING_STORE"  # the default store (path or URL) when none is given


def _checksum(model: str, kind: str, key: str, unit_norm: int, dim: int, blob: bytes) -> bytes:
    """8-byte blake2b of a row: any flipped byte of the vector or its identity changes it."""
    h = hashlib.blake2b(f"{model}|{kind}|{key}|{unit_norm}|{dim}|".encode(), digest_size=8)
    h.update(blob)
    return h.digest()


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
    """Vectors and file digests in one SQLite file (WAL mode, safe to kill at any time) or PostgreSQL database.

    >>> EmbeddingStore(":memory:").count()
    0
    """

    def __init__(self, path: str | Path | None = None, readonly: bool = False, timeout: float = 60.0) -> None:
        path = (os.environ.get(STORE_ENV) or default_store_path()) if path is None else path
        self.timeout = timeout
        self._warned_readonly = False
        self._db = VectorDB(path, readonly=readonly, timeout=timeout)
        self.path = self._db.path  # a file path, or the server URL (with its password: other processes reopen it)
        self.name = self._db.name  # for messages (password hidden)
        self.backend = self._db.backend  # "sqlite" | "postgresql"

    @property
    def db(self) -> Any:
        """SQLite: the DBAPI connection (PRAGMAs, query plans); PostgreSQL: the SQLAlchemy engine."""
        return self._db.raw if self._db.raw is not None else self._db.engine

    @property
    def readonly(self) -> bool:
        return self._db.readonly

    @property
    def _legacy(self) -> bool:
        return self._db.legacy

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.name!r}{', readonly' if self.readonly else ''})"

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # ---- vectors ------------------------------------------------------
    def get_many(self, model: str, kind: str, keys: Iterable[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """Stored, intact vectors among `keys`, as {key: (dim,) float32}; damaged rows are misses, and so
        are rows of another width than `dim` (the embedding space's, when given).

        Cost: one primary-key index search per key asked (never a scan of the store), 900 keys per statement
        on SQLite and 20,000 on PostgreSQL (see benchmarks/bench_store.py), plus one checksum per row.
        """
        keys = list(dict.fromkeys(keys))
        if self._legacy or not keys:
            return {}
        t = vectors_t.c
        rows = self._db.lookup([t.key, t.dim, t.unit_norm, t.checksum, t.vec], [t.model == model, t.kind == kind],
                               t.key, sorted(keys))
        head, blake = f"{model}|{kind}|".encode(), hashlib.blake2b
        by_dim: dict[int, tuple[list[str], list[int], list[bytes]]] = {}
        want, n_other_dim = dim, 0
        for key, dim, unit, checksum, blob in rows:  # the checksum of _checksum, inlined (hot loop)
            if want is not None and dim != want:
                n_other_dim += 1
                continue
            blob = bytes(blob)  # psycopg may hand bytea back as a memoryview
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
                        "treated as missing and recomputed", self.name, n_other_dim, kind, want)
        if len(out) < len(rows) - n_other_dim:
            log.warning("cache %s: %d stored %s vectors failed their integrity check (checksum, finiteness or "
                        "norm); they are treated as missing and recomputed", self.name, len(rows) - n_other_dim - len(out),
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
            log.warning("cache %s: %d non-finite %s vectors not stored", self.name, int((~finite).sum()), kind)
        dim = vectors.shape[1]
        rows = []
        for key, vec, ok, u in zip(keys, vectors, finite, unit):
            if ok:
                blob = vec.tobytes()
                rows.append({"model": model, "kind": kind, "key": key, "dim": dim, "unit_norm": int(u),
                             "checksum": _checksum(model, kind, key, int(u), dim, blob), "vec": blob})
        if not rows:
            return 0
        if not self._db.upsert(vectors_t, rows):
            if not self._warned_readonly:
                self._warned_readonly = True
                log.warning("cache %s is read-only: new vectors are not saved", self.name)
            return 0
        return len(rows)

    def count(self, model: str | None = None, kind: str | None = None) -> int:
        """Number of stored rows (intact or not), optionally of one model and kind."""
        return self._db.count(model, kind)

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
            d = digests_t.c
            known = {p: rest for p, *rest in self._db.lookup(
                [d.path, d.size, d.mtime_ns, d.inode, d.ctime_ns, d.digest], [], d.path, present)}
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
            fresh.append(dict(zip(("path", "size", "mtime_ns", "inode", "ctime_ns", "digest"), (key, *memo, digest))))
        if fresh:
            self._db.upsert(digests_t, fresh)
        return out
