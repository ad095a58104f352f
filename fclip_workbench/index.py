"""Nearest-neighbour search over embeddings: exact (matrix product) or FAISS, one interface.

Vectors are L2-normalised, so inner product = cosine similarity.

Example:
    >>> idx = build_index(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    >>> idx.search(np.array([[0, 1, 0]], np.float32), k=1)[1]
    [['b']]
"""
from __future__ import annotations

import json
import math
from numbers import Integral
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .errors import InvalidArgumentError, MissingExtraError

INDEX_KINDS = ("exact", "faiss")
HNSW_M = 32  # neighbours per node
HNSW_EF_CONSTRUCTION = 200  # build-time beam (FAISS default 40 gives a poorer graph)
HNSW_EF_SEARCH = 128  # query-time beam; FAISS's default 16 gives recall@10 well under 0.9 on 2k random vectors


def check_k(k: object) -> int:
    """`k` as an int >= 1, else `InvalidArgumentError`.

    >>> check_k(3)
    3
    """
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise InvalidArgumentError(f"k must be a whole number >= 1, got {k!r}")
    return int(k)


def check_weight(image_weight: object) -> float:
    """`image_weight` as a float in [0, 1] (NaN refused), else `InvalidArgumentError`.

    >>> check_weight(0.5)
    0.5
    """
    try:
        w = float(image_weight)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"image_weight must be a number in [0, 1], got {image_weight!r}") from None
    if math.isnan(w) or not 0.0 <= w <= 1.0:
        raise InvalidArgumentError(f"image_weight must be in [0, 1], got {image_weight!r}")
    return w


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero). (n, d) -> (n, d) float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def blend(image_vectors: np.ndarray, text_vectors: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Product vectors: normalise(w * image + (1 - w) * text), both (n, d) for the same items.

    >>> blend(np.array([[1., 0.]]), np.array([[0., 1.]]), 0.5).round(3)
    array([[0.707, 0.707]], dtype=float32)
    """
    image_weight = check_weight(image_weight)
    if image_vectors.shape != text_vectors.shape:
        raise ValueError(f"image and text vectors differ in shape: {image_vectors.shape} vs {text_vectors.shape}")
    return normalize(image_weight * image_vectors + (1.0 - image_weight) * text_vectors)


class VectorIndex(Protocol):
    ids: list[str]

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[list[str]]]: ...

    def save(self, path: str | Path) -> Path: ...


class ExactIndex:
    """Brute-force inner-product search; exact, fine up to ~10^6 items on a laptop."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        self.vectors = normalize(vectors)  # (n, d)
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k (scores (q, k), ids) for each query row, best first; k > len(self) gives all items."""
        q = normalize(np.atleast_2d(queries))  # (q, d)
        k = min(check_k(k), len(self.ids))
        if k == 0:  # empty index
            return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
        sims = q @ self.vectors.T  # (q, n)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(np.arange(sims.shape[1]), (len(q), 1))
        order = np.take_along_axis(sims, top, 1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, 1)  # (q, k)
        return np.take_along_axis(sims, top, 1), [[self.ids[j] for j in row] for row in top]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "vectors.npy", self.vectors)
        (path / "index.json").write_text(json.dumps({"kind": self.kind, "ids": self.ids}))
        return path


class FaissIndex:
    """FAISS inner-product index (flat = exact; "hnsw" = approximate, faster on large catalogs).

    HNSW searches with a beam of max(`ef_search`, k) candidates, so recall stays
    high (>= 0.95 recall@10 against exact search on 2,000 random 64-d vectors).
    """

    kind = "faiss"

    def __init__(self, vectors: np.ndarray, ids: Sequence[str], method: str = "flat",
                 ef_search: int = HNSW_EF_SEARCH, _index=None) -> None:
        faiss = _faiss()
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        if method not in ("flat", "hnsw"):
            raise ValueError(f"Unknown FAISS method {method!r}; choose 'flat' or 'hnsw'")
        self.ids, self.method, self.ef_search = list(ids), method, check_k(ef_search)
        if _index is not None:
            self.index = _index
            return
        vectors = normalize(vectors)  # (n, d)
        d = vectors.shape[1]
        if method == "flat":
            self.index = faiss.IndexFlatIP(d)
        else:
            self.index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self.index.add(vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k (scores (q, k), ids) for each query row, best first; k > len(self) gives all items."""
        q = normalize(np.atleast_2d(queries))  # (q, d)
        k = min(check_k(k), len(self.ids))
        if k == 0:  # empty index: FAISS would abort on k=0
            return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
        if self.method == "hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, k)
        scores, idx = self.index.search(q, k)  # (q, k) each; idx -1 where HNSW found fewer than k
        if (idx < 0).any():
            n_found = int((idx >= 0).sum(1).min())
            scores, idx = scores[:, :n_found], idx[:, :n_found]
        return scores, [[self.ids[j] for j in row] for row in idx]

    def save(self, path: str | Path) -> Path:
        faiss = _faiss()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path / "faiss.index"))
        (path / "index.json").write_text(json.dumps({"kind": self.kind, "method": self.method, "ef_search": self.ef_search,
                                                     "ids": self.ids}))
        return path


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise MissingExtraError("FAISS search needs faiss-cpu: pip install 'fclip-workbench[faiss]'") from e
    return faiss


def build_index(vectors: np.ndarray, ids: Sequence[str], kind: str = "exact", **kwargs) -> VectorIndex:
    """An index of `kind` "exact" or "faiss" over (n, d) vectors."""
    if kind == "exact":
        return ExactIndex(vectors, ids)
    if kind == "faiss":
        return FaissIndex(vectors, ids, **kwargs)
    raise InvalidArgumentError(f"Unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")


def load_index(path: str | Path) -> VectorIndex:
    """Load an index written by `.save(path)`."""
    path = Path(path)
    meta_path = path / "index.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"No saved index at {path} (index.json missing)")
    meta = json.loads(meta_path.read_text())
    if meta["kind"] == "exact":
        return ExactIndex(np.load(path / "vectors.npy"), meta["ids"])
    if meta["kind"] == "faiss":
        index = _faiss().read_index(str(path / "faiss.index"))
        return FaissIndex(np.zeros((len(meta["ids"]), index.d), np.float32), meta["ids"], meta["method"],
                          ef_search=meta.get("ef_search", HNSW_EF_SEARCH), _index=index)
    raise ValueError(f"Unknown index kind {meta['kind']!r} in {meta_path}")
