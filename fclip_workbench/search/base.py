"""What every index shares: argument checks, normalising and blending, the space it records,
the `VectorIndex` protocol, and exact search (`ExactIndex`). FAISS indexes are in faiss_index.py,
`build_index` (which picks one) in index.py, saving and loading in saved.py.

Example:
    >>> ExactIndex(np.eye(2, dtype=np.float32), ["a", "b"]).search(np.array([[0, 1]], np.float32), k=1)[1]
    [['b']]
"""
from __future__ import annotations

import math
import sys
from numbers import Integral
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from fclip_workbench.errors import InvalidArgumentError, SpaceMismatchError
from fclip_workbench.embedding.space import EmbeddingSpace

INDEX_KINDS = ("auto", "exact", "faiss", "ivf", "ivfpq", "hnsw")  # "faiss" = FAISS flat (exact) unless method=...
FAISS_METHODS = ("flat", "ivf", "ivfpq", "hnsw")
EXACT_MAX = 50_000  # auto: exact search below this many vectors, IVF (or IVF-PQ) from here on
ADD_CHUNK = 65_536  # rows normalised and added at a time (no full normalised copy of a big matrix)


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


def choose_kind(n: int, exact_max: int = EXACT_MAX, low_memory: bool = False) -> str:
    """The index kind "auto" builds for `n` vectors: "exact" below `exact_max`, else "ivf" ("ivfpq" if low_memory).

    >>> choose_kind(1000), choose_kind(10**6), choose_kind(10**6, low_memory=True)
    ('exact', 'ivf', 'ivfpq')
    """
    if isinstance(exact_max, bool) or not isinstance(exact_max, Integral) or exact_max < 0:
        raise InvalidArgumentError(f"exact_max must be a whole number >= 0, got {exact_max!r}")
    if n < exact_max:
        return "exact"
    return "ivfpq" if low_memory else "ivf"


def is_approximate(kind: str, method: str | None = None) -> bool:
    """Whether `build_index(kind, method=)` builds an index that is tuned (and so needs tuning queries).

    >>> is_approximate("ivf"), is_approximate("faiss"), is_approximate("exact")
    (True, False, False)
    """
    return kind in ("ivf", "ivfpq", "hnsw") or (kind == "faiss" and (method or "flat") != "flat")


def recall_at_k(approx: Sequence[Sequence], exact: Sequence[Sequence]) -> float:
    """Mean over queries of |approx ∩ exact| / |exact| (ids or row numbers).

    >>> recall_at_k([["a", "b"]], [["a", "c"]])
    0.5
    """
    if len(approx) != len(exact):
        raise ValueError(f"{len(approx)} approximate result lists but {len(exact)} exact ones")
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact) if len(e)])) if exact else 1.0


def _check_vectors(vectors: object, ids: Sequence[str], dim: int | None = None) -> np.ndarray:
    """(n, d) float32 array, one id per row, finite, of width `dim` if given; else `InvalidArgumentError`."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise InvalidArgumentError(f"vectors must be a 2-d (n, dim) array, got shape {arr.shape}")
    if len(arr) != len(ids):
        raise InvalidArgumentError(f"{len(arr)} vectors but {len(ids)} ids")
    if dim is not None and arr.shape[1] != dim:
        raise InvalidArgumentError(f"vectors of dimension {arr.shape[1]} for an index of dimension {dim}")
    for start in range(0, len(arr), ADD_CHUNK):
        chunk = arr[start:start + ADD_CHUNK]
        if not np.isfinite(chunk.sum(axis=1)).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise InvalidArgumentError(f"vector of id {ids[bad]!r} (row {bad}) has NaN or inf values")
    return arr


def _check_new_ids(ids: Sequence[str], known: dict[str, int] | set[str]) -> list[str]:
    """`ids` as a list of str; an id repeated in `ids` or already `known` raises `InvalidArgumentError`."""
    ids = [str(i) for i in ids]
    seen: set[str] = set()
    for i in ids:
        if i in known or i in seen:
            raise InvalidArgumentError(f"id {i!r} is already in the index; ids must be unique "
                                       "(build a new index to replace a product's vector)")
        seen.add(i)
    return ids


def _check_queries(queries: np.ndarray, dim: int, what: str = "queries") -> np.ndarray:
    """(q, dim) finite queries, normalised; else `InvalidArgumentError`."""
    try:
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))  # (q, d)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} must be a numeric (n, {dim}) array") from None
    if q.ndim != 2 or q.shape[1] != dim:
        raise InvalidArgumentError(f"{what} of shape {np.shape(queries)} for an index of dimension {dim}")
    if not np.isfinite(q).all():
        raise InvalidArgumentError(f"{what} contain NaN or inf values")
    return normalize(q)


def _check_space(space: object, dim: int) -> EmbeddingSpace | None:
    """`space` (None or an `EmbeddingSpace` of width `dim`), else a one-line error."""
    if space is None:
        return None
    if not isinstance(space, EmbeddingSpace):
        raise InvalidArgumentError(f"space must be an EmbeddingSpace (model.space), got {type(space).__name__}")
    if space.dim != dim:
        raise SpaceMismatchError(f"vectors of dimension {dim} for an index in space {space.describe()} "
                                 f"({space.dim}-d)")
    return space


class _SpaceMixin:
    """What every index knows beyond its vectors: the embedding space and the blend of its product vectors."""

    space: EmbeddingSpace | None = None  # where the vectors came from (model.space); required to save
    image_weight: float = 1.0  # product vectors = normalise(w * image + (1 - w) * text); 1: images only
    source: Path | None = None  # the folder it was loaded from, for messages
    content: dict[str, str] | None = None  # {id: digest of its image (+ title)}: search.item_contents; None: unknown

    def _describe(self) -> str:
        return f"index {str(self.source)!r}" if self.source is not None else "the index"

    def check_space(self, space: object, what: str = "") -> None:
        """Raise `SpaceMismatchError` unless `space` (a model or its space) is this index's space.

        An index without a recorded space (built from bare vectors) accepts any space of its width.
        """
        from fclip_workbench.embedding.space import space_of

        actual = space_of(space)
        if self.space is not None:
            self.space.check(actual, what or self._describe())
        elif actual.dim != self.dim:  # type: ignore[attr-defined]
            raise SpaceMismatchError(f"{what or self._describe()} is {self.dim}-d, "  # type: ignore[attr-defined]
                                     f"not in {actual.describe()}")

    def _search_args(self, queries: np.ndarray, k: object, space: object) -> tuple[np.ndarray, int]:
        """(q, d) checked query rows and k capped at the index size (0: empty index); `space` refused unless
        it is the index's. The shared start of every index's `search`."""
        if space is not None:
            self.check_space(space)
        q = _check_queries(queries, self.dim)  # type: ignore[attr-defined]  # (q, d)
        return q, min(check_k(k), len(self.ids))  # type: ignore[attr-defined]


def _ids_bytes(ids: list[str]) -> int:
    """Python memory of the id list (list slots + str objects, a sample when large)."""
    if not ids:
        return sys.getsizeof(ids)
    sample = ids if len(ids) <= 10_000 else ids[:: len(ids) // 10_000]
    return sys.getsizeof(ids) + int(np.mean([sys.getsizeof(s) for s in sample]) * len(ids))


class VectorIndex(Protocol):
    ids: list[str]
    kind: str
    space: EmbeddingSpace | None
    image_weight: float
    build_info: dict
    source: Path | None
    content: dict[str, str] | None

    def __len__(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def check_space(self, space: object, what: str = "") -> None: ...

    def search(self, queries: np.ndarray, k: int = 10, space: object = None) -> tuple[np.ndarray, list[list[str]]]: ...

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None: ...

    def memory_bytes(self) -> int: ...


class ExactIndex(_SpaceMixin):
    """Brute-force inner-product search; exact, fine up to ~10^5 items (`build_index` "auto" picks it below 50k)."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray, ids: Sequence[str], space: EmbeddingSpace | None = None,
                 image_weight: float = 1.0) -> None:
        ids = _check_new_ids(ids, set())
        vectors = _check_vectors(vectors, ids)  # (n, d); NaN/inf refused
        self.space = _check_space(space, vectors.shape[1])
        self.image_weight = check_weight(image_weight)
        self.vectors = normalize(vectors)  # (n, d)
        self.ids = ids
        self.build_info: dict = {"recall_at_10": 1.0, "recall_at_10_image": 1.0, "recall_at_10_text": 1.0}
        self._known: set[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def search(self, queries: np.ndarray, k: int = 10,
               space: object = None) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k (scores (q, k), ids) for each query row, best first; k > len(self) gives all items.

        `space`: the queries' embedding space (or their model): refused unless it is the index's.
        """
        q, k = self._search_args(queries, k, space)  # (q, d)
        if k == 0:  # empty index
            return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
        sims = q @ self.vectors.T  # (q, n)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(np.arange(sims.shape[1]), (len(q), 1))
        order = np.take_along_axis(sims, top, 1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, 1)  # (q, k)
        return np.take_along_axis(sims, top, 1), [[self.ids[j] for j in row] for row in top]

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Append new products (O(n) copy of the matrix); an id already present raises `InvalidArgumentError`."""
        if self._known is None:
            self._known = set(self.ids)
        vectors = _check_vectors(vectors, ids, self.dim)  # (m, d)
        ids = _check_new_ids(ids, self._known)
        self.vectors = np.concatenate([self.vectors, normalize(vectors)])  # (n + m, d)
        self.ids += ids
        self._known.update(ids)

    def memory_bytes(self) -> int:
        """Bytes held: the float32 matrix plus the id list."""
        return int(self.vectors.nbytes) + _ids_bytes(self.ids)
