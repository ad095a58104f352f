"""Embed a catalog's images and texts: batched, cached, resumable, with a progress bar.

An engine (`engines.py`) computes the vectors: `local` decodes in DataLoader worker
processes and runs the model here under `torch.inference_mode`; `ray` on a Ray cluster. Each finished batch is committed to the
`EmbeddingStore`, so a second run (or a run after appending items, or after a
kill) computes only what is missing. Items that cannot be embedded are listed in
`result.failures` with the reason; `result.ids[i]` is the item of `vectors[i]`.

Example:
    >>> res = embed_images(load_model("fclip-mini"), catalog)    # doctest: +SKIP
    >>> res.vectors.shape, len(res.failures)                      # doctest: +SKIP
    ((39609, 256), 344)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from fclip_workbench.data.catalog import Catalog, Problem
from fclip_workbench.embedding.decode import DecodeDataset, collate_decoded, default_num_workers, worker_init  # noqa: F401 (re-exported)
from fclip_workbench.embedding.engines import Engine, get_engine
from fclip_workbench.embedding.images import image_file_problem, text_digest
from fclip_workbench.embedding.models import EmbeddingModel
from fclip_workbench.embedding.space import EmbeddingSpace, space_of
from fclip_workbench.embedding.store import EmbeddingStore, finite_rows, unit_rows

log = logging.getLogger(__name__)


@dataclass
class EmbeddingResult:
    """Vectors for the items that could be embedded, and why the others could not."""

    ids: list[str]  # item id of each row of `vectors`
    vectors: np.ndarray  # (n_ok, dim) float32, L2-normalised
    failures: list[Problem] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0
    space: EmbeddingSpace | None = None  # the space the vectors are in (None: not known, e.g. bare vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.ids)}

    def summary(self) -> str:
        return (f"{len(self.ids)} embedded ({self.n_cached} from cache, {self.n_computed} computed), "
                f"{len(self.failures)} failed")


def image_model_key(model: "EmbeddingModel | EmbeddingSpace") -> str:
    """Store key of image vectors of an embedding space: its vectors' fingerprint (weights + precision) +
    the image pipeline's salt; the space's width is checked on every read (`EmbeddingStore.get_many(dim=)`).

    >>> image_model_key(model).startswith(model.fingerprint + ":")     # doctest: +SKIP
    True
    """
    return space_of(model).image_store_key


def text_model_key(model: "EmbeddingModel | EmbeddingSpace") -> str:
    """Store key of text vectors of an embedding space: weights + precision (no image pipeline in texts)."""
    return space_of(model).text_store_key


NON_FINITE = "model produced a non-finite vector"


def _check_vectors(feats: np.ndarray) -> list[str | None]:
    """Per row of `feats` (b, dim): None when usable, else why it must not be used or cached."""
    finite, unit = finite_rows(feats), unit_rows(feats)  # (b,), (b,)
    return [None if u else NON_FINITE if not f
            else f"model produced a vector of norm {np.linalg.norm(v):.3g}, not 1"
            for f, u, v in zip(finite, unit, feats)]


def embed_images(
    model: EmbeddingModel,
    catalog: Catalog,
    store: EmbeddingStore | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = True,
    engine: "str | Engine" = "local",
    address: str | None = None,
) -> EmbeddingResult:
    """Image embeddings of every usable row of `catalog` (catalog order).

    `num_workers` decoding processes (None: `default_num_workers()`). Vectors are
    cached under `image_model_key(model)`; non-finite ones are failures, never cached.
    `engine` computes the missing vectors: "local" (this process), "ray" (a Ray cluster at
    `address`, see `engines.RayEngine`) or an `Engine`; the store, keys and failures are the same for all.
    """
    runner = get_engine(engine, address=address, num_workers=num_workers)  # bad name or missing Ray: fail first
    store = store or EmbeddingStore()
    space = model.space
    model_key = image_model_key(space)
    failures = [p for p in catalog.problems if p.field in ("image", "item_id") and p.row is not None]
    rows = catalog.usable_rows("image")
    paths = [catalog.image_path(int(r)) for r in rows]
    digests = store.file_digests(paths)
    keys: dict[int, str] = {}
    for r, path, digest in zip(rows, paths, digests):
        if digest is None:
            failures.append(catalog.problem(r, "image", image_file_problem(path) or f"cannot read {path}"))
        else:
            keys[int(r)] = digest
    cached = store.get_many(model_key, "image", set(keys.values()), dim=space.dim)
    todo = [r for r, k in keys.items() if k not in cached]
    n_cached = len(keys) - len(todo)
    log.info("%s: %d images cached, %d to compute", catalog.name, n_cached, len(todo))

    vectors = dict(cached)
    n_computed = 0
    if todo:
        shards = runner.embed(model, [str(catalog.image_path(r)) for r in todo], batch_size)
        with tqdm(total=len(todo), desc=f"embedding images ({catalog.name}, {runner.name})", unit="img",
                  disable=not progress) as bar:
            for shard in shards:
                positions, feats, bad = shard.positions, shard.vectors, shard.errors  # feats: (b, dim)
                for pos, err in bad:
                    failures.append(catalog.problem(todo[pos], "image", err))
                if positions:
                    good = []
                    for j, (pos, why) in enumerate(zip(positions, _check_vectors(feats))):
                        if why is None:
                            good.append(j)
                        else:
                            failures.append(catalog.problem(todo[pos], "image", why))
                    _rekey_rewritten(catalog, keys, [todo[positions[j]] for j in good],
                                     None if shard.digests is None else [shard.digests[j] for j in good])
                    batch_keys = [keys[todo[positions[j]]] for j in good]
                    store.put_many(model_key, "image", batch_keys, feats[good], normalised=True)
                    vectors.update(zip(batch_keys, feats[good]))
                    n_computed += len(batch_keys)
                bar.update(len(positions) + len(bad))
    return _assemble(catalog, keys, vectors, failures, n_computed, n_cached, space)


def _rekey_rewritten(catalog: Catalog, keys: dict[int, str], rows: list[int], digests: list[str] | None) -> None:
    """Key each row by the hash of the bytes its vector was decoded from (`digests`, from the engine).

    A file rewritten between the first hash and the decode thus gets its vector under its new content's
    hash, never another picture's vector under its old hash.
    """
    if digests is None:
        return
    for r, digest in zip(rows, digests):
        if digest and digest != keys[r]:
            log.warning("%s row %d: %s changed while it was being embedded; keyed by the bytes decoded",
                        catalog.name, r, catalog.image_path(r))
            keys[r] = digest


def _assemble(catalog: Catalog, keys: dict[int, str], vectors: dict[str, np.ndarray],
              failures: list[Problem], n_computed: int, n_cached: int,
              space: EmbeddingSpace | None = None) -> EmbeddingResult:
    failed_rows = {p.row for p in failures}
    ok_rows = [r for r in keys if r not in failed_rows and keys[r] in vectors]
    ok_rows.sort()
    dim = next(iter(vectors.values())).shape[0] if vectors else 0
    mat = np.stack([vectors[keys[r]] for r in ok_rows]) if ok_rows else np.zeros((0, dim), np.float32)
    ids = [catalog.ids[r] for r in ok_rows]
    failures = sorted(failures, key=lambda p: (p.row is None, p.row or 0))
    return EmbeddingResult(ids, mat.astype(np.float32, copy=False), failures, n_computed, n_cached, space)


def encode_texts_cached(model: EmbeddingModel, texts: Sequence[str], store: EmbeddingStore,
                        space: EmbeddingSpace | None = None, stats: dict | None = None) -> np.ndarray:
    """`model.encode_texts(texts)` (n, dim), each text's vector kept in `store` under the model's text key
    (`text_model_key`), so a text is embedded once per embedding space (a session's label prompts: ~5 s
    for 141 labels x 3 prompts on a CPU). `space`: the model's, when the caller just read it (reading it
    hashes the weights). Vectors are stored only when the model's space did not change while they were
    computed; a stand-in model without a space is not cached. `stats["computed"]`: how many texts were
    embedded now (0: every vector came from `store`)."""
    space = space if space is not None else getattr(model, "space", None)
    stats = stats if stats is not None else {}
    if not isinstance(space, EmbeddingSpace):
        stats["computed"] = len(texts)
        return np.asarray(model.encode_texts(list(texts)), dtype=np.float32)
    key, digests = text_model_key(space), [text_digest(t) for t in texts]
    vectors = store.get_many(key, "text", set(digests), dim=space.dim)
    todo = list(dict.fromkeys(d for d in digests if d not in vectors))
    stats["computed"] = len(todo)
    if todo:
        text_of = dict(zip(digests, texts))
        feats = np.asarray(model.encode_texts([text_of[d] for d in todo]), dtype=np.float32)  # (m, dim)
        if model.space == space:
            good = [j for j, why in enumerate(_check_vectors(feats)) if why is None]
            store.put_many(key, "text", [todo[j] for j in good], feats[good], normalised=True)
        vectors.update(zip(todo, feats))
    return np.stack([vectors[d] for d in digests]) if digests else np.zeros((0, space.dim), np.float32)


def embed_texts(
    model: EmbeddingModel,
    catalog: Catalog,
    store: EmbeddingStore | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> EmbeddingResult:
    """Text embeddings of every usable row of `catalog` (catalog order), cached like images."""
    store = store or EmbeddingStore()
    failures = [p for p in catalog.problems if p.field in ("text", "item_id") and p.row is not None]
    rows = catalog.usable_rows("text")
    keys = {int(r): text_digest(catalog.texts[r]) for r in rows}
    space = model.space
    text_key = text_model_key(space)
    cached = store.get_many(text_key, "text", set(keys.values()), dim=space.dim)
    todo_keys = sorted({k for k in keys.values() if k not in cached})
    text_of = {k: catalog.texts[r] for r, k in keys.items()}
    vectors = dict(cached)
    broken: dict[str, str] = {}  # key -> why its vector is unusable
    with tqdm(total=len(todo_keys), desc=f"embedding texts ({catalog.name})", unit="text",
              disable=not progress or not todo_keys) as bar:
        for i in range(0, len(todo_keys), batch_size):
            chunk = todo_keys[i:i + batch_size]
            feats = model.encode_texts([text_of[k] for k in chunk])  # (b, dim)
            whys = _check_vectors(feats)
            good = [j for j, why in enumerate(whys) if why is None]
            broken.update((chunk[j], why) for j, why in enumerate(whys) if why is not None)
            store.put_many(text_key, "text", [chunk[j] for j in good], feats[good], normalised=True)
            vectors.update((chunk[j], feats[j]) for j in good)
            bar.update(len(chunk))
    failures += [catalog.problem(r, "text", broken[k]) for r, k in keys.items() if k in broken]
    n_cached = sum(k in cached for k in keys.values())
    n_computed = sum(k in vectors and k not in cached for k in keys.values())
    return _assemble(catalog, keys, vectors, failures, n_computed, n_cached, space)
