"""Exported inference graphs on disk (ONNX, OpenVINO IR), each beside a record of the space it was made in.

A graph is a frozen copy of the weights, so it may only be used while it matches them. Every
graph file `NAME` has `NAME.json` beside it: the embedding space it was exported in
(`space.EmbeddingSpace`: weights fingerprint, precision with its variant, dim), its tower, and the
size and blake2b digest of each of its files. `GraphCache.path` returns a graph that passes every
check, or exports it again: an absent graph silently, a damaged, truncated, foreign (another model,
precision, tower or width) or unrecorded (older fclip-workbench) one after one warning line. A
graph is never served unchecked.

A cache folder that cannot be written (read-only, under a file, full) is used as it is: its valid
graphs are read without any write; a graph it lacks is exported to a temporary folder of this
process (one warning line; removed at exit, so exported again next time). Writes are atomic (a
temporary name, then `os.replace`), so processes sharing a folder never see half a graph.

Example:
    >>> import tempfile
    >>> cache = GraphCache(Path(tempfile.mkdtemp()), "ONNX")
    >>> space = EmbeddingSpace("a" * 32, "onnx", "b" * 16, 4)
    >>> def build(tmp):
    ...     tmp.write_bytes(b"graph")
    ...     return [tmp]
    >>> p = cache.path("a-image.onnx", space, "image", build)
    >>> p.name, cache.problem(p, space, "image") is None
    ('a-image.onnx', True)
    >>> p.write_bytes(b"grap")  # truncated
    4
    >>> cache.problem(p, space, "image")
    'is 4 bytes, its record says 5 (truncated or damaged)'
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

from fclip_workbench.errors import CacheError, SpaceMismatchError
from fclip_workbench.embedding.space import EmbeddingSpace

log = logging.getLogger(__name__)

RECORD_FORMAT = 1  # layout of NAME.json; another value: the graph is exported again
ABSENT = "absent"  # problem(): no graph there (not worth a warning)
_SCRATCH: dict[str, Path] = {}  # cache folder -> this process's temporary folder, when the cache cannot be written
_SCRATCH_LOCK = threading.Lock()
_WARNED: set[tuple[str, str]] = set()  # (graph, problem) already said in this process
_DIGESTS: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> blake2b: each file hashed once per process


def record_of(graph: Path) -> Path:
    """The record beside `graph`: `NAME.json`.

    >>> record_of(Path("/c/fp-image.onnx")).name
    'fp-image.onnx.json'
    """
    return graph.with_name(graph.name + ".json")


def file_digest(path: Path) -> str:
    """blake2b (16 bytes, hex) of a file's bytes; memoised per (inode, size, mtime) in this process."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


class GraphCache:
    """Graphs of one kind ("ONNX", "OpenVINO") in one cache folder; see the module docstring."""

    def __init__(self, folder: Path, kind: str) -> None:
        self.folder, self.kind = Path(folder), kind
        self._lock = threading.RLock()

    @property
    def scratch(self) -> Path | None:
        """This process's temporary folder for graphs the cache folder could not take (None: not needed)."""
        return _SCRATCH.get(str(self.folder))

    def problem(self, graph: Path, space: EmbeddingSpace, tower: str) -> str | None:
        """Why `graph` may not be used for `space`'s `tower` (None: it may; `ABSENT`: there is none)."""
        record = record_of(graph)
        if not graph.exists() and not graph.is_symlink():
            return ABSENT
        if not graph.is_file():
            return "is not a file"
        try:
            data = json.loads(record.read_text())
        except FileNotFoundError:
            return "has no record of the space it was exported in (made by an older fclip-workbench?)"
        except (OSError, ValueError) as e:  # unreadable, a folder, not UTF-8, not JSON
            return f"has a record that cannot be read ({type(e).__name__})"
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT or data.get("kind") != self.kind:
            return f"has a record that is not a {self.kind} graph record of this version"
        try:
            made = EmbeddingSpace.from_dict(data.get("space"), where=record.name)
        except SpaceMismatchError as e:
            return f"has a damaged record ({e})"
        if (made.weights, made.precision, made.dim, data.get("tower")) != (space.weights, space.precision,
                                                                           space.dim, tower):
            return (f"was exported in space {made.describe()} ({data.get('tower')} tower), not in "
                    f"{space.describe()} ({tower} tower)")
        files = data.get("files")
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) for f in files):
            return "has a record without its list of files"
        for entry in files:
            name = entry.get("file")
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                return "has a record naming a file outside its folder"
            path = graph.parent / name
            try:
                size = path.stat().st_size
                if size != entry.get("bytes"):
                    return (f"{'' if path == graph else name + ' '}is {size} bytes, its record says "
                            f"{entry.get('bytes')} (truncated or damaged)")
                if file_digest(path) != entry.get("blake2b"):
                    return f"{'' if path == graph else name + ' '}differs from the graph exported there (damaged)"
            except OSError as e:
                return f"lacks {name} ({_reason(e)})"
        return None

    def path(self, name: str, space: EmbeddingSpace, tower: str, build: Callable[[Path], list[Path]]) -> Path:
        """A checked graph `name` for `space`'s `tower`: the cache's, this process's temporary one, or a new one.

        `build(tmp)` exports to the path `tmp` (in the same folder) and returns the files it wrote, the
        graph `tmp` last (e.g. OpenVINO's `.bin` first, then its `.xml`); each keeps its name without
        the temporary prefix.
        """
        with self._lock:
            for folder in (self.folder, self.scratch):
                if folder is None:
                    continue
                graph = folder / name
                why = self.problem(graph, space, tower)
                if why is None:
                    return graph
                if why != ABSENT and (str(graph), why) not in _WARNED:  # said once per process
                    _WARNED.add((str(graph), why))
                    log.warning("%s graph %s %s: exporting it again", self.kind, graph, why)
            return self._export(name, space, tower, build)

    def _export(self, name: str, space: EmbeddingSpace, tower: str, build: Callable[[Path], list[Path]]) -> Path:
        folder = self._writable_folder()
        try:
            return self._write(folder, name, space, tower, build)
        except OSError as e:
            if folder != self.folder:
                raise CacheError(f"cannot export the {self.kind} graph {name} to {folder}: {_reason(e)}") from e
            folder = self._use_scratch(f"cannot take {name} ({_reason(e)})")
        try:
            return self._write(folder, name, space, tower, build)
        except OSError as e:
            raise CacheError(f"cannot export the {self.kind} graph {name} to {folder}: {_reason(e)}") from e

    def _writable_folder(self) -> Path:
        """The cache folder if a file can be created in it (tried, not guessed: root, ACLs), else the scratch one."""
        if self.scratch is not None:
            return self.scratch
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.folder, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            return self.folder
        except OSError as e:
            return self._use_scratch(f"cannot be written ({_reason(e)})")

    def _use_scratch(self, why: str) -> Path:
        with _SCRATCH_LOCK:
            key = str(self.folder)
            if key not in _SCRATCH:
                try:
                    scratch = Path(tempfile.mkdtemp(prefix=f"fclip-{self.kind.lower()}-"))
                except OSError as e:
                    raise CacheError(f"the {self.kind} cache folder {self.folder} {why}, nor can a temporary folder "
                                     f"({_reason(e)}): set FCLIP_CACHE to a writable folder") from e
                atexit.register(shutil.rmtree, scratch, True)
                _SCRATCH[key] = scratch
                log.warning("%s cache folder %s %s: exporting to %s for this process only (removed at exit)",
                            self.kind, self.folder, why, scratch)
            return _SCRATCH[key]

    def _write(self, folder: Path, name: str, space: EmbeddingSpace, tower: str,
               build: Callable[[Path], list[Path]]) -> Path:
        tag = f".tmp-{os.getpid()}-{threading.get_ident()}-"
        try:
            written = build(folder / (tag + name))
            files = [(f, folder / f.name[len(tag):]) for f in written]
            record = {"format": RECORD_FORMAT, "kind": self.kind, "tower": tower, "space": space.to_dict(),
                      "files": [{"file": final.name, "bytes": tmp.stat().st_size, "blake2b": file_digest(tmp)}
                                for tmp, final in files]}
            rec_tmp = folder / (tag + name + ".json")
            rec_tmp.write_text(json.dumps(record, indent=1))
            # the record first: a reader meanwhile sees no graph (and exports it too) or a mismatch, never a match
            os.replace(rec_tmp, record_of(folder / name))
            for tmp, final in files:
                os.replace(tmp, final)
        finally:
            for left in folder.glob(tag + "*") if folder.is_dir() else ():
                left.unlink(missing_ok=True)
        return folder / name
