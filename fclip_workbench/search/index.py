"""Nearest-neighbour search over embeddings: exact (matrix product) or FAISS, one interface.

Vectors are L2-normalised, so inner product = cosine similarity. `build_index(..., kind="auto")`
picks by catalog size: exact search below `EXACT_MAX` (50,000) vectors, an IVF index above
(IVF-PQ with `low_memory=True`). Approximate indexes tune their search breadth (IVF `nprobe`,
HNSW `efSearch`) at build time until Recall@10 against exact search reaches `target_recall`
(0.95) for every kind of query they will serve: image queries (held-out rows of the vectors) and,
when given, text queries (`text_queries`, e.g. the catalog's titles: text vectors sit apart from
image vectors, and IVF cells trained on images need a wider search for them). Each kind's recall
is then measured on a second held-out sample and recorded in `build_info` (`recall_at_10_image`,
`recall_at_10_text`; `recall_at_10` is the lower of the two).
Every index reports `memory_bytes()`, takes new products with `add(vectors, ids)` without a
rebuild (an id already in the index is refused), and records the embedding space its vectors came
from (`space`, an `EmbeddingSpace`) and the image weight of blended product vectors; `search(...,
space=)` refuses queries of another space. `save_index(index, folder)` / `load_index(folder)` are in saved.py.

Example:
    >>> idx = build_index(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    >>> idx.search(np.array([[0, 1, 0]], np.float32), k=1)[1]
    [['b']]
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.embedding.space import EmbeddingSpace
from fclip_workbench.search.base import (ADD_CHUNK, EXACT_MAX, FAISS_METHODS, INDEX_KINDS, ExactIndex, VectorIndex,
                                         blend, check_k, check_weight, choose_kind, is_approximate, normalize,
                                         recall_at_k)
from fclip_workbench.search.faiss_index import TARGET_RECALL, FaissIndex

__all__ = ["ADD_CHUNK", "EXACT_MAX", "FAISS_METHODS", "INDEX_KINDS", "TARGET_RECALL", "ExactIndex", "FaissIndex",
           "VectorIndex", "blend", "build_index", "check_k", "check_weight", "choose_kind", "is_approximate",
           "normalize", "recall_at_k"]


def build_index(vectors: np.ndarray, ids: Sequence[str], kind: str = "exact", exact_max: int = EXACT_MAX,
                low_memory: bool = False, space: EmbeddingSpace | None = None, image_weight: float = 1.0,
                text_queries: np.ndarray | None = None, **kwargs) -> VectorIndex:
    """An index over (n, d) vectors. `kind`:

    "auto" (exact below `exact_max` vectors, else "ivf", or "ivfpq" when `low_memory`), "exact" (NumPy),
    "faiss" (FAISS flat, or `method=` one of flat/ivf/ivfpq/hnsw), or "ivf"/"ivfpq"/"hnsw" directly.
    `space` (the model's `EmbeddingSpace`; needed to save) and `image_weight` (of blended product vectors)
    are recorded. `text_queries` (m, d): text vectors the approximate index is also tuned for (exact
    search ignores them). `kwargs` go to `FaissIndex` (nlist, nprobe, ef_search, target_recall,
    tune_queries, refine, seed); "auto" ignores them when it picks exact search, "exact" refuses them.

    >>> build_index(np.eye(4, dtype=np.float32), list("abcd"), "auto").kind
    'exact'
    """
    if kind == "auto":
        kind = choose_kind(len(vectors), exact_max, low_memory)
        if kind == "exact":  # the FAISS settings were for a catalog large enough to need them
            kwargs = {}
    if kind == "exact":
        if kwargs:
            raise InvalidArgumentError(f"an exact index takes no parameters, got {', '.join(sorted(kwargs))}")
        return ExactIndex(vectors, ids, space=space, image_weight=image_weight)
    common: dict[str, Any] = {"space": space, "image_weight": image_weight, "text_queries": text_queries}
    if kind == "faiss":
        return FaissIndex(vectors, ids, **common, **kwargs)
    if kind in ("ivf", "ivfpq", "hnsw"):
        return FaissIndex(vectors, ids, method=kind, **common, **kwargs)
    raise InvalidArgumentError(f"Unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
