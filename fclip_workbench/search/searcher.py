"""Searcher: a model + a catalog's (cached) embeddings + an index, answering text or image queries.

A Searcher keeps the embedding space it was built in (`space`) and the image weight of its product
vectors: an index made in another space is refused when the Searcher is built, and a query is
refused when the model's space has changed since (e.g. weights fine-tuned in place), in one
`SpaceMismatchError` line naming both spaces.

An index also records what each of its vectors was made from (`item_contents`: the image bytes'
SHA-256, the embedding store's content key, and the title when title-blended), and a catalog that
reuses its ids for other products (other images or titles) is refused in one line naming how many
ids differ and one of them. An index that records no content (built from bare vectors) is checked
by its vectors when it is exact, else used with one warning.

Example:
    >>> s = Searcher.build("fclip-mini", catalog)             # doctest: +SKIP
    >>> s.by_text("navy blue shirt", k=5)                      # doctest: +SKIP
       rank item_id  score                       text
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.embed import EmbeddingResult, embed_images, embed_texts
from fclip_workbench.errors import CatalogError, SavedIndexError, SpaceMismatchError
from fclip_workbench.embedding.images import ImageLoadError, load_rgb, text_digest, to_rgb
from fclip_workbench.search.index import (EXACT_MAX, INDEX_KINDS, ExactIndex, InvalidArgumentError, VectorIndex, blend, build_index,
                    check_k, check_weight, choose_kind, is_approximate)
from fclip_workbench.embedding.models import EmbeddingModel, load_model
from fclip_workbench.embedding.space import EmbeddingSpace
from fclip_workbench.embedding.store import EmbeddingStore


def _no_images(catalog: Catalog) -> CatalogError:
    return CatalogError(f"no product of catalog {catalog.name} has a usable image: see `fclip embed` report")


def require_images(catalog: Catalog) -> None:
    """Raise `CatalogError` when no row of `catalog` has a usable image (cheap: no decoding)."""
    if len(catalog.usable_rows("image")) == 0:
        raise _no_images(catalog)


def check_query(query: object) -> str:
    """A text query with something in it, else `InvalidArgumentError`.

    >>> check_query(" navy shirt ")
    ' navy shirt '
    """
    if not isinstance(query, str) or not any(c.isprintable() and not c.isspace() for c in query):
        raise InvalidArgumentError(f"give a non-empty query: {query!r} has no visible character")
    return query


def load_query_image(image: str | Path | Image.Image) -> Image.Image:
    """A query image decoded in full now (RGB), so a bad file fails before any slow work.

    Missing, folder, not an image, truncated or too large (decompression bomb):
    `InvalidArgumentError` naming the file.
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    path = Path(image)
    if not path.exists():
        raise InvalidArgumentError(f"query image {path} does not exist")
    if path.is_dir():
        raise InvalidArgumentError(f"query image {path} is a folder; give an image file")
    try:
        return load_rgb(path)
    except ImageLoadError as e:
        raise InvalidArgumentError(f"cannot use query image: {e}") from e
    except Image.DecompressionBombError as e:
        raise InvalidArgumentError(f"query image {path} is too large to decode safely: {e}") from e


def check_index_weight(index: VectorIndex, image_weight: float | None) -> float:
    """The image weight to search `index` with: its own; another `image_weight` is refused in one line.

    A saved index holds product vectors blended at one weight; searching it "at another weight" would
    silently ignore the option, so it is refused (rebuild the index at that weight instead).
    """
    recorded = float(getattr(index, "image_weight", 1.0))
    if image_weight is None:
        return recorded
    w = check_weight(image_weight)
    if abs(w - recorded) > 1e-9:
        where = getattr(index, "_describe", lambda: "the index")()
        raise InvalidArgumentError(f"image_weight {w:g} differs from the {recorded:g} {where} was built with "
                                   f"(its product vectors are blended once, at build): leave it out, or rebuild "
                                   f"with `fclip index --image-weight {w:g}`")
    return recorded


def product_vectors(model: EmbeddingModel, catalog: Catalog, images: EmbeddingResult, store: EmbeddingStore,
                    image_weight: float, progress: bool = True) -> np.ndarray:
    """(n, dim) product vectors of `images`' items: image vectors, blended with title vectors when w < 1."""
    vectors = images.vectors  # (n, dim)
    if image_weight < 1.0:
        texts = embed_texts(model, catalog, store, progress=progress)
        text_row = texts.row_of()
        zero = np.zeros(vectors.shape[1], np.float32)
        tv = np.stack([texts.vectors[text_row[i]] if i in text_row else zero for i in images.ids])  # (n, dim)
        vectors = blend(vectors, tv, image_weight)
    return vectors


def item_contents(catalog: Catalog, ids: list[str], store: EmbeddingStore, image_weight: float) -> dict[str, str]:
    """{item id: digest of what its product vector is made from} for products `ids` of `catalog`.

    The digest covers the image bytes' SHA-256 (the embedding store's content key: read from its memo, so
    an image is not hashed again unless it changed) and, when title-blended (`image_weight` < 1), the title.
    An image that cannot be read now gets "missing". Record it on an index (`index.content = ...`)
    before saving it, so that `Searcher.build` can refuse another catalog reusing its ids.

    >>> item_contents(catalog, ["p1"], store, 1.0)                     # doctest: +SKIP
    {'p1': '5d41402abc4b2a76b9719d911017c592'}
    """
    rows = [catalog.row_of(i) for i in ids]
    images = store.file_digests([catalog.image_path(r) for r in rows])
    blended = image_weight < 1.0
    out = {}
    for item_id, r, image in zip(ids, rows, images):
        part = image or "missing"
        if blended:
            part = hashlib.sha256(f"{part}|{text_digest(str(catalog.texts[r]))}".encode()).hexdigest()
        out[item_id] = part[:32]  # 128 bits: a mismatch check, kept short (one per id in index.json)
    return out


def _where(index: VectorIndex) -> str:
    return getattr(index, "_describe", lambda: "the index")()


def _content_error(index: VectorIndex, catalog: Catalog, differ: list[str], what: str, how: str = "") -> ValueError:
    source = getattr(index, "source", None)
    rebuild = f"`fclip index --out {source}`" if source is not None else "`fclip index` (or Searcher.build)"
    cls = SavedIndexError if source is not None else InvalidArgumentError
    return cls(f"{_where(index)} was built from other products than catalog {catalog.name}: {len(differ)} of its "
               f"{len(index.ids)} ids have another {what} there{how} (e.g. {differ[0]!r}); rebuild it for this "
               f"catalog with {rebuild}")


def check_index_content(index: VectorIndex, model: EmbeddingModel, catalog: Catalog, images: EmbeddingResult,
                        store: EmbeddingStore) -> None:
    """Refuse (one line) an index whose ids are products of `catalog` made of other content than it recorded.

    Recorded digests (`index.content`) are compared with `item_contents` now; an exact index without them
    is compared by its vectors (those of `catalog` now, at its image weight); an approximate one without
    them cannot be checked and is used with one warning.
    """
    w = float(getattr(index, "image_weight", 1.0))
    what = "image or title" if w < 1.0 else "image"
    recorded = getattr(index, "content", None)
    if recorded is not None:
        now = item_contents(catalog, list(index.ids), store, w)
        differ = [i for i in index.ids if recorded.get(i) != now[i]]
        if differ:
            raise _content_error(index, catalog, differ, what)
        return
    if isinstance(index, ExactIndex):
        row = images.row_of()
        want = product_vectors(model, catalog, images, store, w, progress=False)  # (n, dim), unit rows
        sims = np.einsum("ij,ij->i", index.vectors, want[[row[i] for i in index.ids]])  # (len(index),)
        differ = [index.ids[j] for j in np.flatnonzero(sims < 0.999)]
        if differ:
            raise _content_error(index, catalog, differ, what, " (their vectors differ)")
        return
    warnings.warn(f"{_where(index)} records no content digests, so it cannot be checked against catalog "
                  f"{catalog.name} (same ids, other products would pass): record them before saving "
                  f"(index.content = item_contents(catalog, index.ids, store, image_weight)) or rebuild it "
                  f"with `fclip index`", UserWarning, stacklevel=3)


def title_queries(model: EmbeddingModel, catalog: Catalog, store: EmbeddingStore, progress: bool = True) -> np.ndarray:
    """(m, dim) distinct title vectors of `catalog`: the text queries an approximate index is tuned for."""
    texts = embed_texts(model, catalog, store, progress=progress)
    return np.unique(texts.vectors, axis=0) if len(texts) else texts.vectors


@dataclass
class Searcher:
    model: EmbeddingModel
    catalog: Catalog
    images: EmbeddingResult
    index: VectorIndex
    space: EmbeddingSpace | None = None  # the space the searcher was built in; queries must be in it
    image_weight: float = 1.0  # product vectors = w * image + (1 - w) * title

    def __post_init__(self) -> None:
        if self.space is None:
            self.space = self.model.space

    @classmethod
    def build(cls, model: str | EmbeddingModel, catalog: Catalog, store: EmbeddingStore | None = None,
              index: str | VectorIndex = "auto", image_weight: float | None = None, device=None,
              progress: bool = True, index_options: dict | None = None) -> "Searcher":
        """Embed (or read from cache) and index; `image_weight` < 1 blends in title embeddings (default 1).

        `index`: a kind for `build_index` ("auto": exact below 50,000 products, else IVF tuned to
        Recall@10 >= 0.95 for image and title queries; see index.py) with `index_options` passed on, or
        an index already built (e.g. `load_index(folder)`): it must be in the model's embedding space
        (`SpaceMismatchError` otherwise, before any embedding), hold exactly the products of `catalog` with
        an image vector (one it lacks could never be found: refused), and is searched at the image weight it was built with (another is refused).
        Bad arguments and a catalog without any usable image fail before the model loads.
        """
        if not isinstance(index, str):
            image_weight = check_index_weight(index, image_weight)
        image_weight = check_weight(1.0 if image_weight is None else image_weight)
        if isinstance(index, str) and index not in INDEX_KINDS:
            raise InvalidArgumentError(f"Unknown index kind {index!r}; choose one of {', '.join(INDEX_KINDS)}")
        require_images(catalog)
        model = load_model(model, device=device) if not isinstance(model, EmbeddingModel) else model
        space = model.space
        if not isinstance(index, str):
            if getattr(index, "space", None) is None:
                raise SpaceMismatchError("the index records no embedding space: build it with "
                                         "build_index(..., space=model.space), or load a saved one")
            index.check_space(space)  # before any embedding
        store = store or EmbeddingStore()
        images = embed_images(model, catalog, store, progress=progress)
        if len(images) == 0:  # every image failed to decode
            raise _no_images(catalog)
        if not isinstance(index, str):
            known = set(images.ids)
            stray = [i for i in index.ids if i not in known]
            if stray:
                raise InvalidArgumentError(f"the index holds {len(stray)} ids that are not products of catalog "
                                           f"{catalog.name!r} with an image vector (first {stray[0]!r}): it was built "
                                           "for another catalog; rebuild it with `fclip index`")
            held = set(index.ids)
            missing = [i for i in images.ids if i not in held]
            if missing:  # they could never be found, silently
                raise InvalidArgumentError(f"the index lacks {len(missing)} product(s) of catalog {catalog.name!r} "
                                           f"with an image vector (first {missing[0]!r}): it was built before they "
                                           "were added; rebuild it with `fclip index`")
            check_index_content(index, model, catalog, images, store)
            return cls(model, catalog, images, index, space, image_weight)
        vectors = product_vectors(model, catalog, images, store, image_weight, progress)  # (n, dim)
        options = dict(index_options or {})
        kind = index
        if kind == "auto":
            kind = choose_kind(len(vectors), options.pop("exact_max", EXACT_MAX), options.pop("low_memory", False))
            if kind == "exact":
                options = {}
        if is_approximate(kind, options.get("method")) and "text_queries" not in options:  # tune for titles too
            options["text_queries"] = title_queries(model, catalog, store, progress)
        built = build_index(vectors, images.ids, kind, space=space, image_weight=image_weight, **options)
        built.content = item_contents(catalog, images.ids, store, image_weight)
        return cls(model, catalog, images, built, space, image_weight)

    def check_space(self) -> EmbeddingSpace:
        """The model's space now, refused (`SpaceMismatchError`) unless it is the one the searcher was built in."""
        now = self.model.space
        self.space.check(now, "this searcher")  # type: ignore[union-attr]
        return now

    def __len__(self) -> int:
        """Products that can be found (those with an image vector)."""
        return len(self.images)

    def _table(self, scores: np.ndarray, ids: list[str]) -> pd.DataFrame:
        scores = scores[: len(ids)]
        rows = [self.catalog.row_of(i) for i in ids]
        return pd.DataFrame({"rank": np.arange(1, len(ids) + 1), "item_id": ids, "score": np.round(scores, 4),
                             "text": [self.catalog.texts[r] for r in rows]})

    def by_text(self, query: str, k: int = 10) -> pd.DataFrame:
        """The k products nearest to a text (all of them when k > len(self)); a blank query is refused."""
        check_query(query)
        k = check_k(k)
        space = self.check_space()
        q = self.model.encode_texts([query])  # (1, dim)
        scores, ids = self.index.search(q, k, space=space)
        return self._table(scores[0], ids[0])

    def by_image(self, image: str | Path | Image.Image, k: int = 10) -> pd.DataFrame:
        """The k products nearest to an image file or PIL image."""
        k = check_k(k)
        space = self.check_space()
        q = self.model.encode_pil([load_query_image(image)])  # (1, dim)
        scores, ids = self.index.search(q, k, space=space)
        return self._table(scores[0], ids[0])

    def by_item(self, item_id: str, k: int = 10) -> pd.DataFrame:
        """Items that look like catalog item `item_id` (the item itself ranks first)."""
        k = check_k(k)
        row = self.images.row_of().get(str(item_id))
        if row is None:
            raise KeyError(f"Item {item_id!r} has no image embedding (see searcher.images.failures)")
        scores, ids = self.index.search(self.images.vectors[row:row + 1], k, space=self.space)
        return self._table(scores[0], ids[0])
