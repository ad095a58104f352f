"""Nearest-neighbour search over embeddings: exact (matrix product) or FAISS, one interface.

Vectors are L2-normalised, so inner product = cosine similarity.

Example:
    >>> idx = build_index(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    >>> idx.search(np.array([[0, 1, 0]], np.float32), k=1)[1]
    [['b']]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .errors import MissingExtraError


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
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
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
        """Top-k (scores (q, k), ids) for each query row, best first."""
        q = normalize(np.atleast_2d(queries))  # (q, d)
        k = min(k, len(self.ids))
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
    """FAISS inner-product index (flat = exact; "hnsw" = approximate, faster on large catalogs)."""

    kind = "faiss"

    def __init__(self, vectors: np.ndarray, ids: Sequence[str], method: str = "flat", _index=None) -> None:
        faiss = _faiss()
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
        self.ids, self.method = list(ids), method
        if _index is not None:
            self.index = _index
            return
        vectors = normalize(vectors)
        d = vectors.shape[1]
        if method == "flat":
            self.index = faiss.IndexFlatIP(d)
        elif method == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        else:
            raise ValueError(f"Unknown FAISS method {method!r}; choose 'flat' or 'hnsw'")
        self.index.add(vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[list[str]]]:
        scores, idx = self.index.search(normalize(np.atleast_2d(queries)), min(k, len(self.ids)))
        return scores, [[self.ids[j] for j in row if j >= 0] for row in idx]

    def save(self, path: str | Path) -> Path:
        faiss = _faiss()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path / "faiss.index"))
        (path / "index.json").write_text(json.dumps({"kind": self.kind, "method": self.method, "ids": self.ids}))
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
    raise ValueError(f"Unknown index kind {kind!r}; choose 'exact' or 'faiss'")


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
        return FaissIndex(np.zeros((len(meta["ids"]), index.d), np.float32), meta["ids"], meta["method"], _index=index)
    raise ValueError(f"Unknown index kind {meta['kind']!r} in {meta_path}")
