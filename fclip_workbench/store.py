"""EmbeddingStore: an SQLite file of vectors keyed by (model fingerprint, kind, content hash).

Each `put_many` is one transaction, so a run killed half-way keeps every batch it
finished and a rerun computes only the rest. File digests are memoised by
(path, size, mtime) so a cached rerun does not re-read every image.

Example:
    >>> store = EmbeddingStore(":memory:")
    >>> store.put_many("m", "text", ["k1"], np.ones((1, 4), np.float32))
    >>> store.get_many("m", "text", ["k1", "k2"])["k1"].shape
    (4,)
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .images import file_digest

SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    model TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    dim INTEGER NOT NULL, vec BLOB NOT NULL,
    PRIMARY KEY (model, kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL
) WITHOUT ROWID;
"""


def default_store_path() -> Path:
    """$FCLIP_CACHE or ~/.cache/fclip-workbench/embeddings.sqlite."""
    root = os.environ.get("FCLIP_CACHE") or Path.home() / ".cache" / "fclip-workbench"
    return Path(root) / "embeddings.sqlite"


class EmbeddingStore:
    """Vectors and file digests in one SQLite file (WAL mode, safe to kill at any time)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else str(default_store_path())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.path!r})"

    def close(self) -> None:
        self.db.close()

    # ---- vectors ------------------------------------------------------
    def get_many(self, model: str, kind: str, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Stored vectors among `keys`, as {key: (dim,) float32}."""
        wanted = set(keys)
        out = {}
        for key, dim, blob in self.db.execute(
                "SELECT key, dim, vec FROM vectors WHERE model=? AND kind=?", (model, kind)):
            if key in wanted:
                out[key] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return out

    def put_many(self, model: str, kind: str, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store rows of `vectors` (n, dim) under `keys`, atomically (one transaction)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)",
                [(model, kind, k, vectors.shape[1], v.tobytes()) for k, v in zip(keys, vectors)])

    def count(self, model: str | None = None, kind: str | None = None) -> int:
        q, args = "SELECT COUNT(*) FROM vectors WHERE 1=1", []
        if model is not None:
            q, args = q + " AND model=?", args + [model]
        if kind is not None:
            q, args = q + " AND kind=?", args + [kind]
        return self.db.execute(q, args).fetchone()[0]

    # ---- file digests ---------------------------------------------------
    def file_digests(self, paths: Sequence[Path]) -> list[str | None]:
        """SHA-256 of each file (None if it is missing), re-read only when size or mtime changed."""
        known = {p: (s, m, d) for p, s, m, d in self.db.execute("SELECT path, size, mtime_ns, digest FROM file_digests")}
        out: list[str | None] = []
        fresh = []
        for path in paths:
            key = str(path)
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
                continue
            hit = known.get(key)
            if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                out.append(hit[2])
                continue
            try:
                digest = file_digest(path)
            except OSError:
                out.append(None)
                continue
            out.append(digest)
            fresh.append((key, st.st_size, st.st_mtime_ns, digest))
        if fresh:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO file_digests VALUES (?, ?, ?, ?)", fresh)
        return out
