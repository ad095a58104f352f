"""Saved search indexes: one folder, every part checked on load.

A saved index folder holds `index.json` (format 3) and one data file: `vectors.npy` (exact) or
`faiss.index` (FAISS). `index.json` records:

- `space`: the `EmbeddingSpace` its vectors came from (`model.space.to_dict()`: weights fingerprint,
  precision and variant, image-pipeline salt, dimension, model name);
- `image_weight`: the blend of its product vectors (1.0: images only; w < 1: w * image + (1 - w) * title);
- `dim`, `n`, `ids` (one unique id per vector), the kind and its tuned search breadth, `build_info`
  (the recall it was measured at, per kind of query);
- `content`: per id, a digest of what its vector was made from (`search.item_contents`: the image
  bytes' SHA-256, and the title when title-blended), or null when the index was built from bare
  vectors; `Searcher.build` refuses a catalog whose products differ (same ids, other images);
- `ids_sha256`: the SHA-256 of `ids` and `content` in order, so ids swapped or edited in index.json are
  caught (the data file's checksum does not cover them);
- `files`: the data file's size and SHA-256, so a truncated, replaced or garbage file is caught
  before FAISS reads it.

`load_index(folder, space=model.space)` refuses, in one `SavedIndexError` line naming the folder,
a folder that is missing, a file, holds no index.json, or is damaged in any part (bad JSON, missing
keys, wrong types, dimensions or counts that disagree, a data file that is not the one saved, NaN or
inf vectors); another space is one `SpaceMismatchError` line naming both spaces, raised before the
data file is read.

Example:
    >>> import tempfile
    >>> from fclip_workbench.search.index import build_index
    >>> from fclip_workbench.embedding.space import EmbeddingSpace
    >>> sp = EmbeddingSpace("a" * 32, "fp32", "b" * 16, 3, model="demo")
    >>> folder = save_index(build_index(np.eye(3, dtype=np.float32), ["x", "y", "z"], space=sp), tempfile.mkdtemp() + "/v1")
    >>> load_index(folder, space=sp).search(np.eye(3, dtype=np.float32)[:1], k=1)[1]
    [['x']]
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fclip_workbench.errors import InvalidArgumentError, SavedIndexError, SpaceMismatchError
from fclip_workbench.search.base import ADD_CHUNK, FAISS_METHODS, ExactIndex, VectorIndex
from fclip_workbench.search.faiss_index import FaissIndex, _faiss
from fclip_workbench.embedding.space import EmbeddingSpace, space_of

INDEX_FORMAT = 3  # 1: no space, no checksums; 2: no content digests, ids unchecked (both refused: rebuild)
META = "index.json"
DATA_FILES = {"exact": "vectors.npy", "faiss": "faiss.index"}
_FAISS_TYPES = {"flat": ("IndexFlatIP", "IndexFlat"), "ivf": ("IndexIVFFlat",), "hnsw": ("IndexHNSWFlat",),
                "ivfpq": ("IndexRefine", "IndexIVFPQFastScan")}  # the FAISS class each method saves


# ------------------------------------------------------------------ the folder
def check_save_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, in one line and before any slow work, a folder an index cannot be saved in.

    A new folder (its parents are created), an empty one, or a saved index (replaced) is fine; a file,
    a folder of other files, or an unwritable place is an `InvalidArgumentError`.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     check_save_folder(f.name)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --out ... is a file, not a folder: ...
    """
    path = Path(path).expanduser()
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise InvalidArgumentError(f"{what} {path} is a file, not a folder: give a new folder for the index "
                                       "(or a saved index to replace)")
        try:
            entries = [p.name for p in path.iterdir()]
        except OSError as e:
            raise InvalidArgumentError(f"{what} {path} cannot be read ({e.strerror or e}): give another folder") from None
        if entries and not (path / META).is_file():
            raise InvalidArgumentError(f"{what} {path} is a folder of {len(entries)} other file(s), not a saved "
                                       "index: give a new or empty folder (a saved index there is replaced)")
        base = path
    else:
        base = path.parent
        while not base.exists() and base != base.parent:
            base = base.parent
        if not base.is_dir():
            raise InvalidArgumentError(f"{what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{what} {path}: {base} is not writable")
    return path


def ids_digest(ids: list[str], content: list[str] | None) -> str:
    """SHA-256 (hex) of an index's ids and their content digests, in order.

    >>> ids_digest(["a", "b"], None) != ids_digest(["b", "a"], None)
    True
    """
    return hashlib.sha256(json.dumps([ids, content], separators=(",", ":")).encode("utf-8")).hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


# ------------------------------------------------------------------ save
def save_index(index: VectorIndex, path: str | os.PathLike) -> Path:
    """Write `index` into folder `path`: its data file, then index.json (each written aside, then moved in).

    The index must record its embedding space (`build_index(..., space=model.space)`).
    """
    path = check_save_folder(path, "index folder")
    space = getattr(index, "space", None)
    if not isinstance(space, EmbeddingSpace):
        raise InvalidArgumentError("an index saved to disk must record the embedding space of its vectors: "
                                   "build it with build_index(..., space=model.space)")
    if isinstance(index, ExactIndex):
        kind, params = "exact", {}

        def write(f: Path) -> None:
            with open(f, "wb") as fh:  # a handle: np.save would add ".npy" to the temporary name
                np.save(fh, index.vectors, allow_pickle=False)
    elif isinstance(index, FaissIndex):
        kind, params = "faiss", index.search_params()

        def write(f: Path) -> None:
            _faiss().write_index(index.index, str(f))
    else:
        raise InvalidArgumentError(f"cannot save an index of type {type(index).__name__}")
    path.mkdir(parents=True, exist_ok=True)
    name = DATA_FILES[kind]
    data_tmp = _write_aside(path, name, write)
    files = {name: _file_record(data_tmp)}
    ids = list(index.ids)
    recorded = getattr(index, "content", None) or {}
    content = [recorded[i] for i in ids] if ids and all(i in recorded for i in ids) else None  # all, or unknown
    meta = {"format": INDEX_FORMAT, "kind": kind, "space": space.to_dict(), "image_weight": float(index.image_weight),
            "dim": int(index.dim), "n": len(ids), **params, "build_info": index.build_info, "files": files,
            "ids": ids, "content": content, "ids_sha256": ids_digest(ids, content)}
    meta_tmp = _write_aside(path, META, lambda f: f.write_text(json.dumps(meta)))
    os.replace(data_tmp, path / name)
    os.replace(meta_tmp, path / META)  # last: a crash before this leaves a checksum mismatch, never a mix
    for other in set(DATA_FILES.values()) - {name}:  # the data file of a replaced index of the other kind
        (path / other).unlink(missing_ok=True)
    return path


def _write_aside(folder: Path, name: str, write: Callable[[Path], Any]) -> Path:
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


# ------------------------------------------------------------------ load
class _Meta:
    """Typed reads of index.json; any bad value is one `SavedIndexError` line naming the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data: dict[str, Any] = {}

    def parse(self, text: str) -> "_Meta":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise self.damaged(f"{META} is not valid JSON ({str(e)[:80]})") from None
        if not isinstance(data, dict):
            raise self.damaged(f"{META} holds {json.dumps(data)[:20] if data is None else type(data).__name__}, "
                               "not an object")
        self.data = data
        return self

    def damaged(self, why: str) -> SavedIndexError:
        return SavedIndexError(f"saved index {self.folder} is damaged: {why}; rebuild it with "
                               f"`fclip index --out {self.folder}`")

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise self.damaged(f"{META} lacks {key!r}")
        return self.data[key]

    def whole(self, key: str, minimum: int) -> int:
        v = self.get(key)
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, Integral) or v < minimum:
            raise self.damaged(f"{key} must be a whole number >= {minimum}, got {v!r}")
        return int(v)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        v = self.get(key)
        if not isinstance(v, str) or v not in choices:
            raise self.damaged(f"{key} must be one of {', '.join(choices)}, got {v!r}")
        return v

    def unit(self, key: str) -> float:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, Real) or not 0.0 <= float(v) <= 1.0:  # NaN fails too
            raise self.damaged(f"{key} must be a number in [0, 1], got {v!r}")
        return float(v)

    def mapping(self, key: str) -> dict:
        v = self.get(key)
        if not isinstance(v, dict):
            raise self.damaged(f"{key} must be an object, got {type(v).__name__}")
        return v


def _read_meta(folder: Path) -> _Meta:
    if not folder.exists():
        raise SavedIndexError(f"no saved index at {folder}: the folder does not exist (make one with "
                              f"`fclip index --out {folder}`)")
    if not folder.is_dir():
        raise SavedIndexError(f"{folder} is a file, not a saved index folder (give the folder `fclip index --out` made)")
    meta_path = folder / META
    if not meta_path.exists():
        raise SavedIndexError(f"{folder} is not a saved index: it holds no {META} (make one with "
                              f"`fclip index --out {folder}`)")
    m = _Meta(folder)
    if not meta_path.is_file() and not meta_path.is_dir():  # a device or a pipe: never read (it may not end)
        raise m.damaged(f"{META} is not a regular file")
    try:
        text = meta_path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise m.damaged(f"{META} is a folder") from None
    except UnicodeDecodeError:
        raise m.damaged(f"{META} is not UTF-8 text") from None
    except OSError as e:
        raise SavedIndexError(f"saved index {folder}: cannot read {META} ({e.strerror or e})") from None
    meta = m.parse(text)
    if "format" not in meta.data:
        raise SavedIndexError(f"saved index {folder} was made by an older fclip-workbench (it records no embedding "
                              f"space): rebuild it with `fclip index --out {folder}`")
    fmt = meta.whole("format", 1)
    if fmt == 2:
        raise SavedIndexError(f"saved index {folder} has format 2: it records no digest of the products its vectors "
                              f"were made from, so it cannot be checked against a catalog; rebuild it with "
                              f"`fclip index --out {folder}`")
    if fmt != INDEX_FORMAT:
        raise SavedIndexError(f"saved index {folder} has format {fmt}; this fclip-workbench reads format "
                              f"{INDEX_FORMAT}: rebuild it with `fclip index --out {folder}`")
    return meta


def _check_ids(meta: _Meta, n: int) -> list[str]:
    ids = meta.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise meta.damaged("ids must be a list of strings")
    if len(ids) != n:
        raise meta.damaged(f"{len(ids)} ids for n = {n} vectors")
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise meta.damaged(f"id {dup!r} appears more than once")
    return ids


def _check_content(meta: _Meta, ids: list[str]) -> dict[str, str] | None:
    """{id: content digest} recorded for `ids` (None: built from bare vectors), sealed by `ids_sha256`."""
    content = meta.get("content")
    if content is not None and (not isinstance(content, list) or len(content) != len(ids)
                                or not all(isinstance(c, str) and c for c in content)):
        raise meta.damaged(f"content must be null or one non-empty string per id ({len(ids)})")
    sealed = meta.get("ids_sha256")
    if not isinstance(sealed, str) or sealed != ids_digest(ids, content):
        raise meta.damaged("its ids or their content digests are not the ones saved (ids_sha256 differs: "
                           "index.json was edited)")
    return None if content is None else dict(zip(ids, content))


def _check_file(meta: _Meta, name: str) -> Path:
    """The data file, the very one that was saved (size, then SHA-256), before anything parses it."""
    files = meta.mapping("files")
    rec = files.get(name)
    if not isinstance(rec, dict) or not isinstance(rec.get("bytes"), int) or not isinstance(rec.get("sha256"), str):
        raise meta.damaged(f"files must record the size and sha256 of {name}")
    f = meta.folder / name
    if not f.is_file():
        raise meta.damaged(f"{name} is missing" if not f.exists() else f"{name} is not a file")
    size = f.stat().st_size
    if size != rec["bytes"]:
        raise meta.damaged(f"{name} has {size} bytes, {rec['bytes']} were saved (truncated or replaced)")
    try:
        actual = _file_record(f)["sha256"]
    except OSError as e:
        raise SavedIndexError(f"saved index {meta.folder}: cannot read {name} ({e.strerror or e})") from None
    if actual != rec["sha256"]:
        raise meta.damaged(f"{name} is not the file that was saved (checksum differs)")
    return f


def load_index(path: str | os.PathLike, space: object = None) -> VectorIndex:
    """The index saved in folder `path`, every part checked; `space` (a model or its space) must be the index's.

    The space is checked before the data file is read, so a wrong model fails fast.
    """
    folder = Path(path).expanduser()
    meta = _read_meta(folder)
    kind = meta.choice("kind", tuple(DATA_FILES))
    try:
        recorded = EmbeddingSpace.from_dict(meta.get("space"), f"saved index {folder}")
    except SpaceMismatchError as e:
        raise SavedIndexError(f"{e}") from None
    dim, n = meta.whole("dim", 1), meta.whole("n", 0)
    if dim != recorded.dim:
        raise meta.damaged(f"dim {dim} but its embedding space is {recorded.dim}-d")
    image_weight = meta.unit("image_weight")
    build_info = meta.mapping("build_info")
    ids = _check_ids(meta, n)
    content = _check_content(meta, ids)
    if space is not None:
        recorded.check(space_of(space), f"index {str(folder)!r}")
    params = {}
    if kind == "faiss":
        params = {"method": meta.choice("method", FAISS_METHODS), "nprobe": meta.whole("nprobe", 1),
                  "k_factor": meta.whole("k_factor", 1), "ef_search": meta.whole("ef_search", 1)}
    data_file = _check_file(meta, DATA_FILES[kind])
    if kind == "exact":
        index: VectorIndex = _load_exact(meta, data_file, ids, dim)
    else:
        index = _load_faiss(meta, data_file, ids, dim, params, build_info)
    if kind == "exact":
        index.build_info = build_info
    index.space, index.image_weight, index.source, index.content = recorded, image_weight, folder, content
    return index


def _load_exact(meta: _Meta, f: Path, ids: list[str], dim: int) -> ExactIndex:
    try:
        vectors = np.load(f, allow_pickle=False, mmap_mode=None)
    except (ValueError, OSError, EOFError) as e:
        raise meta.damaged(f"{f.name} is not a NumPy array file ({str(e)[:80]})") from None
    if not isinstance(vectors, np.ndarray) or vectors.dtype.kind != "f":
        raise meta.damaged(f"{f.name} holds {getattr(vectors, 'dtype', type(vectors).__name__)}, not float vectors")
    if vectors.shape != (len(ids), dim):
        raise meta.damaged(f"{f.name} holds vectors of shape {vectors.shape}, index.json says ({len(ids)}, {dim})")
    _check_finite(meta, f.name, (vectors[s:s + ADD_CHUNK] for s in range(0, len(vectors), ADD_CHUNK)))
    return ExactIndex(vectors, ids)


def _load_faiss(meta: _Meta, f: Path, ids: list[str], dim: int, params: dict, build_info: dict) -> FaissIndex:
    faiss = _faiss()
    try:
        raw = faiss.read_index(str(f))
    except (RuntimeError, MemoryError, OSError) as e:
        raise meta.damaged(f"{f.name} is not a readable FAISS index ({_faiss_reason(e)})") from None
    index = faiss.downcast_index(raw)  # a view: `raw` owns the structure and is what the FaissIndex keeps
    method = params["method"]
    if type(index).__name__ not in _FAISS_TYPES[method]:
        raise meta.damaged(f"{f.name} holds a FAISS {type(index).__name__}, not the {method!r} index that "
                           f"{META} names")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise meta.damaged(f"{f.name} does not search by inner product")
    if index.d != dim:
        raise meta.damaged(f"{f.name} is {index.d}-d, index.json says {dim}-d")
    if index.ntotal != len(ids):
        raise meta.damaged(f"{f.name} holds {index.ntotal} vectors, index.json has {len(ids)} ids")
    if method in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        if params["nprobe"] > ivf.nlist:
            raise meta.damaged(f"nprobe {params['nprobe']} exceeds the index's {ivf.nlist} lists")
        listed = ivf.invlists.compute_ntotal()
        if listed != ivf.ntotal:  # FAISS puts a NaN vector in no list, yet counts it
            raise meta.damaged(f"{f.name}: {ivf.ntotal - listed} of its {ivf.ntotal} vectors are in no inverted "
                               "list (NaN vectors?)")
    try:
        _check_finite(meta, f.name, _faiss_float_parts(index))
    except RuntimeError as e:  # e.g. the direct map finds an id twice
        raise meta.damaged(f"{f.name} is inconsistent ({_faiss_reason(e)})") from None
    return FaissIndex._from_saved(raw, ids, params, build_info)


def _faiss_reason(e: BaseException) -> str:
    """FAISS's own reason from its long C++ message ("Error in void faiss::... at ...: Error: 'x' failed: ...")."""
    text = " ".join(str(e).split())
    m = re.search(r"\.(?:cpp|h):\d+: (?:Error: )?(.*)", text)
    return (m.group(1) if m else text or type(e).__name__)[:120]


def _faiss_float_parts(index):
    """Chunks (m, d) of every float array a FAISS index searches with: vectors (decoded), centroids, codebooks."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        yield from _faiss_float_parts(index.base_index)
        yield from _faiss_float_parts(index.refine_index)
        return
    if isinstance(index, faiss.IndexIVF):
        yield from _faiss_float_parts(index.quantizer)  # the cell centroids
        if hasattr(index, "pq"):
            yield faiss.vector_to_array(index.pq.centroids)[None]  # 4-bit codes cannot be NaN; the codebooks can
            return
        index.make_direct_map()
        try:
            yield from _reconstruct(index)
        finally:
            index.set_direct_map_type(faiss.DirectMap.NoMap)
        return
    if isinstance(index, faiss.IndexHNSW):
        yield from _faiss_float_parts(index.storage)
        return
    if isinstance(index, faiss.IndexScalarQuantizer):
        yield faiss.vector_to_array(index.sq.trained)[None]
    yield from _reconstruct(index)


def _reconstruct(index):
    for s in range(0, index.ntotal, ADD_CHUNK):
        yield index.reconstruct_n(s, min(ADD_CHUNK, index.ntotal - s))


def _check_finite(meta: _Meta, name: str, chunks) -> None:
    for chunk in chunks:
        if chunk.size and not np.isfinite(chunk).all():
            raise meta.damaged(f"{name} holds NaN or inf values (never served)")


__all__ = ["INDEX_FORMAT", "check_save_folder", "ids_digest", "load_index", "save_index"]
