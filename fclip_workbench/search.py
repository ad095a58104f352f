"""Searcher: a model + a catalog's (cached) embeddings + an index, answering text or image queries.

Example:
    >>> s = Searcher.build("fclip-mini", catalog)             # doctest: +SKIP
    >>> s.by_text("navy blue shirt", k=5)                      # doctest: +SKIP
       rank item_id  score                       text
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .catalog import Catalog
from .embed import EmbeddingResult, embed_images, embed_texts
from .images import load_rgb
from .index import VectorIndex, blend, build_index
from .models import EmbeddingModel, load_model
from .store import EmbeddingStore


@dataclass
class Searcher:
    model: EmbeddingModel
    catalog: Catalog
    images: EmbeddingResult
    index: VectorIndex

    @classmethod
    def build(cls, model: str | EmbeddingModel, catalog: Catalog, store: EmbeddingStore | None = None,
              index: str = "exact", image_weight: float = 1.0, device=None, progress: bool = True) -> "Searcher":
        """Embed (or read from cache) and index; `image_weight` < 1 blends in title embeddings."""
        model = load_model(model, device=device) if not isinstance(model, EmbeddingModel) else model
        store = store or EmbeddingStore()
        images = embed_images(model, catalog, store, progress=progress)
        vectors = images.vectors
        if image_weight < 1.0:
            texts = embed_texts(model, catalog, store, progress=progress)
            text_row = texts.row_of()
            zero = np.zeros(vectors.shape[1], np.float32)
            tv = np.stack([texts.vectors[text_row[i]] if i in text_row else zero for i in images.ids])
            vectors = blend(vectors, tv, image_weight)
        return cls(model, catalog, images, build_index(vectors, images.ids, index))

    def _table(self, scores: np.ndarray, ids: list[str]) -> pd.DataFrame:
        rows = [self.catalog.row_of(i) for i in ids]
        return pd.DataFrame({"rank": np.arange(1, len(ids) + 1), "item_id": ids, "score": np.round(scores, 4),
                             "text": [self.catalog.texts[r] for r in rows]})

    def by_text(self, query: str, k: int = 10) -> pd.DataFrame:
        q = self.model.encode_texts([query])  # (1, dim)
        scores, ids = self.index.search(q, k)
        return self._table(scores[0], ids[0])

    def by_image(self, image: str | Path, k: int = 10) -> pd.DataFrame:
        q = self.model.encode_pil([load_rgb(image)])  # (1, dim)
        scores, ids = self.index.search(q, k)
        return self._table(scores[0], ids[0])

    def by_item(self, item_id: str, k: int = 10) -> pd.DataFrame:
        """Items that look like catalog item `item_id` (the item itself ranks first)."""
        row = self.images.row_of().get(str(item_id))
        if row is None:
            raise KeyError(f"Item {item_id!r} has no image embedding (see searcher.images.failures)")
        scores, ids = self.index.search(self.images.vectors[row:row + 1], k)
        return self._table(scores[0], ids[0])
