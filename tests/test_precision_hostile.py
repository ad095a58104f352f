"""Exported graphs under hostile conditions: weights changed in place, damaged or foreign graphs in the
cache, read-only or impossible cache folders, processes sharing one cache. A fast path never serves
vectors of other weights; every problem is rebuilt or one line, never a traceback.

Read-only folders are made read-only twice: `chmod` and a guard that refuses every write under them the
way the OS would (PermissionError). Root (CI runs as root) ignores `chmod`, so without the guard those
tests would test nothing there; the guard also counts write attempts, so "used as it is" is checked.
A cache folder under a file is refused by the OS even to root: that case needs no guard.
"""
from __future__ import annotations

import builtins
import errno
import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import fclip_workbench.embedding.graph_cache as graph_cache
import fclip_workbench.embedding.precision as precision
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.embed import embed_images
from fclip_workbench.errors import CacheError
from fclip_workbench.embedding.graph_cache import ABSENT, record_of
from fclip_workbench.embedding.models import load_model, save_model_folder
from fclip_workbench.embedding.precision import OnnxRunner, OpenVinoRunner
from fclip_workbench.embedding.space import EmbeddingSpace
from fclip_workbench.embedding.store import EmbeddingStore

from .conftest import TINY_CFG

TEXTS = ["a red dress", "blue denim jeans", "black leather shoes", "a green shirt", "white bag", "socks"]


def _needs(name: str) -> None:
    if name == "openvino" and importlib.util.find_spec("openvino") is None:
        pytest.skip("OpenVINO not installed (optional: pip install 'fclip-workbench[fast]')")


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """Each test its own cache, the 7-bit int8 range (any CPU), no temporary graph folder of another test."""
    monkeypatch.setenv("FCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FCLIP_INT8_RANGE", "7")
    monkeypatch.setattr(graph_cache, "_SCRATCH", {})
    monkeypatch.setattr(graph_cache, "_WARNED", set())
    yield
    for folder in graph_cache._SCRATCH.values():
        shutil.rmtree(folder, ignore_errors=True)


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)  # (n, 3, 32, 32)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)  # unit rows: (n,)


def _save(tmp_path_factory, seed: int, **cfg) -> Path:
    import open_clip

    torch.manual_seed(seed)
    full = {**TINY_CFG, **cfg}
    return save_model_folder(open_clip.CLIP(**full), full, {"size": 32}, tmp_path_factory.mktemp(f"tiny-{seed}"))


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    return _save(tmp_path_factory, 1)


@pytest.fixture(scope="module")
def narrow_model_dir(tmp_path_factory) -> Path:
    return _save(tmp_path_factory, 2, embed_dim=8)  # 8-d vectors


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ----------------------------------------------------------------------------- 1. weights changed in place
@pytest.mark.parametrize("name", ["onnx", "onnx-int8", "openvino"])
def test_fast_paths_follow_weights_changed_in_place(tiny_model_dir, name):
    _needs(name)
    model = load_model(tiny_model_dir, device="cpu")  # its own copy: the session model stays untouched
    fast = model.with_precision(name)
    old_fp, px = fast.fingerprint, _pixels(9)
    old_img, old_txt = fast.encode_images(px), fast.encode_texts(TEXTS)  # (9, 16), (6, 16): graphs exported
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))  # a fine-tuning step, in place
    img, txt = fast.encode_images(px), fast.encode_texts(TEXTS)
    ref_img, ref_txt = model.encode_images(px), model.encode_texts(TEXTS)  # fp32 of the new weights
    assert _cos(img, ref_img).min() >= 0.99 and _cos(txt, ref_txt).min() >= 0.99
    assert _cos(img, old_img).min() < 0.9 and np.abs(img - old_img).max() > 0.1  # not the old vectors
    assert _cos(txt, old_txt).min() < 0.9
    suffix = old_fp.split("+", 1)[1]
    assert fast.fingerprint != old_fp and fast.fingerprint == f"{model.fingerprint}+{suffix}"
    folder = fast.runner.folder
    graphs = sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".xml"))
    assert {g.split("-")[0] for g in graphs} == {old_fp.split("+")[0], model.fingerprint}  # both weights' graphs
    rec = json.loads(record_of(fast.runner.graphs.folder / next(g for g in graphs if g.startswith(
        model.fingerprint) and "-image" in g and (name != "onnx-int8" or "int8" in g))).read_text())
    assert rec["space"]["weights"] == model.fingerprint and rec["space"]["dim"] == 16


def test_onnx_after_load_state_dict_and_cached_embedding(tiny_model_dir, other_model_dir, small_catalog_dir,
                                                        tmp_path):
    """`load_state_dict` (copy_ into the same tensors) and a store: the second run's vectors are the new
    weights', stored under the new key; the first run's stay under the old one."""
    model = load_model(tiny_model_dir, device="cpu")
    fast = model.with_precision("onnx")
    cat = Catalog.from_folder(small_catalog_dir / "images")
    store = EmbeddingStore(tmp_path / "s.sqlite")
    first = embed_images(fast, cat, store, batch_size=4, num_workers=0, progress=False)
    model.model.load_state_dict(load_model(other_model_dir, device="cpu").model.state_dict())
    second = embed_images(fast, cat, store, batch_size=4, num_workers=0, progress=False)
    ref = embed_images(model, cat, EmbeddingStore(tmp_path / "r.sqlite"), batch_size=4, num_workers=0, progress=False)
    assert (first.n_computed, second.n_computed, second.n_cached) == (12, 12, 0)
    np.testing.assert_allclose(second.vectors, ref.vectors, atol=1e-4)
    assert _cos(second.vectors, first.vectors).min() < 0.9


# ----------------------------------------------------------------------------- 2. damaged or foreign graphs
def _export(model, name: str, folder: Path):
    fast = model.with_precision(name)
    fast.encode_images(_pixels(2)), fast.encode_texts(TEXTS[:1])
    return fast


def _damage(kind: str, graph: Path, tiny_model, other_model_dir, narrow_model_dir, tmp_path) -> None:
    """Damage the cached image graph `graph` (the fp32 ONNX one) in way `kind`."""
    size = graph.stat().st_size
    if kind == "truncated":
        graph.write_bytes(graph.read_bytes()[: size // 2])
    elif kind == "zero-bytes":
        graph.write_bytes(b"")
    elif kind == "random-bytes":
        graph.write_bytes(np.random.default_rng(0).bytes(size))
    elif kind == "no-record":  # exported by an older fclip-workbench
        record_of(graph).unlink()
    elif kind == "record-not-json":
        record_of(graph).write_text("{not json")
    elif kind == "record-other-dim":
        rec = json.loads(record_of(graph).read_text())
        rec["space"]["dim"] = 8
        record_of(graph).write_text(json.dumps(rec))
    elif kind == "graph-is-a-folder":
        graph.unlink()
        (graph / "x").mkdir(parents=True)
    elif kind == "record-is-a-folder":
        record_of(graph).unlink()
        record_of(graph).mkdir()
    elif kind.startswith("other-"):
        spec = {"other-model": other_model_dir, "other-dims": narrow_model_dir}.get(kind.split("+")[0])
        src_model = load_model(spec, device="cpu") if spec else tiny_model
        prec = "onnx-int8" if kind.startswith("other-precision") else "onnx"
        src = _export(src_model, prec, tmp_path).runner.graph_path("image")
        shutil.copyfile(src, graph)
        if kind.endswith("+record"):
            shutil.copyfile(record_of(src), record_of(graph))
    else:
        raise AssertionError(kind)


DAMAGE = ["truncated", "zero-bytes", "random-bytes", "no-record", "record-not-json", "record-other-dim",
          "record-is-a-folder", "graph-is-a-folder", "other-model", "other-model+record", "other-dims",
          "other-dims+record", "other-precision", "other-precision+record"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_or_foreign_graph_is_exported_again(tiny_model, other_model_dir, narrow_model_dir, tmp_path,
                                                   caplog, kind):
    graph = _export(tiny_model, "onnx", tmp_path).runner.graph_path("image")
    _damage(kind, graph, tiny_model, other_model_dir, narrow_model_dir, tmp_path)
    if kind.startswith("other-"):  # the damage matters: that graph gives other vectors (or another width)
        import onnxruntime as ort
        feats = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(
            None, {"x": _pixels(4).numpy()})[0]
        unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        ref = tiny_model.encode_images(_pixels(4))  # (4, 16)
        assert unit.shape != ref.shape or not np.allclose(unit, ref, atol=1e-3)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fast = tiny_model.with_precision("onnx")
        out = fast.encode_images(_pixels(5))  # (5, 16)
    np.testing.assert_allclose(out, tiny_model.encode_images(_pixels(5)), atol=1e-4)
    said = _warnings(caplog)
    assert len(said) >= 1 and str(graph) in said[0] and "exporting it again" in said[0], said
    assert all("\n" not in s for s in said)
    space = EmbeddingSpace(tiny_model.fingerprint, "onnx", "0" * 16, 16)
    used = fast.runner.graph_path("image")
    assert fast.runner.graphs.problem(used, space, "image") is None
    if kind in ("graph-is-a-folder", "record-is-a-folder"):  # cannot be replaced: this process's temporary folder
        assert used.parent == fast.runner.graphs.scratch and "cannot take" in said[-1], said
    else:  # repaired in place: the next process uses it without a word
        assert used == graph
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = tiny_model.with_precision("onnx").encode_images(_pixels(5))
        assert _warnings(caplog) == [] and np.array_equal(again, out)
    assert not [p for p in graph.parent.iterdir() if ".tmp-" in p.name or ".probe-" in p.name]


def test_int8_graph_of_the_other_range_is_not_used(tiny_model, tmp_path, monkeypatch, caplog):
    """The 7-bit graph copied (with its record) onto the full-range name: the record says so, it is re-made."""
    seven = _export(tiny_model, "onnx-int8", tmp_path).runner.graph_path("image")
    monkeypatch.setenv("FCLIP_INT8_RANGE", "8")
    full = tiny_model.with_precision("onnx-int8")
    target = seven.with_name(seven.name.replace(".onnx", "-full8.onnx"))
    shutil.copyfile(seven, target)
    shutil.copyfile(record_of(seven), record_of(target))
    with caplog.at_level(logging.WARNING):
        assert full.runner.graph_path("image") == target
    assert any("onnx-int8 16-d" in s and "onnx-int8-full8" in s for s in _warnings(caplog)), _warnings(caplog)
    assert json.loads(record_of(target).read_text())["space"]["precision"] == "onnx-int8-full8"


def test_record_holds_the_embedding_space(tiny_model):
    fast = _export(tiny_model, "onnx-int8", Path())
    for tower, graph, prec in [("image", fast.runner.graph_path("image"), "onnx-int8"),
                               ("text", fast.runner.graph_path("text"), "onnx")]:
        rec = json.loads(record_of(graph).read_text())
        space = EmbeddingSpace.from_dict(rec["space"])
        assert (space.weights, space.precision, space.dim, rec["tower"]) == (tiny_model.fingerprint, prec, 16, tower)
        assert rec["files"] == [{"file": graph.name, "bytes": graph.stat().st_size,
                                 "blake2b": graph_cache.file_digest(graph)}]


# ----------------------------------------------------------------------------- 3. read-only and impossible folders
class WriteGuard:
    """Refuses, as a read-only file system would, every write under `root`; counts the attempts."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.attempts = os.path.abspath(root), []
        real_open, real_os_open = builtins.open, os.open

        def guarded_open(file, mode="r", *a, **k):
            if "r" not in mode or "+" in mode:
                self.check("open", file)
            return real_open(file, mode, *a, **k)

        def guarded_os_open(path, flags, *a, **k):
            if flags & self.WRITE_FLAGS:
                self.check("os.open", path)
            return real_os_open(path, flags, *a, **k)

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)
        for fname in ("mkdir", "unlink", "remove", "rmdir"):
            real = getattr(os, fname)
            monkeypatch.setattr(os, fname, self._wrap(fname, real, 1))
        for fname in ("replace", "rename"):
            monkeypatch.setattr(os, fname, self._wrap(fname, getattr(os, fname), 2))

    def _wrap(self, fname, real, n_paths):
        def guarded(*args, **kwargs):
            for path in args[:n_paths]:
                self.check(fname, path)
            return real(*args, **kwargs)
        return guarded

    def check(self, what, path) -> None:
        if isinstance(path, int):
            return
        full = os.path.abspath(os.fsdecode(os.fspath(path)))
        if full == self.root or full.startswith(self.root + os.sep):
            self.attempts.append((what, full))
            raise PermissionError(errno.EACCES, "Permission denied", full)


@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): chmod a-w (files 0o444, folders 0o555) and the write guard; undone after the test."""
    made = []

    def apply(folder: Path) -> WriteGuard:
        folder.mkdir(parents=True, exist_ok=True)
        for p in [folder, *folder.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        made.append(folder)
        return WriteGuard(folder, monkeypatch)

    yield apply
    monkeypatch.undo()
    for folder in made:
        for p in [folder, *folder.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _no_export(monkeypatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("exported although a valid graph was there")
    monkeypatch.setattr(OnnxRunner, "_export", refuse)
    monkeypatch.setattr(OnnxRunner, "_quantise", refuse)


def test_read_only_cache_with_valid_graphs_is_used_as_it_is(tiny_model, read_only, monkeypatch, caplog):
    ref = _export(tiny_model, "onnx-int8", Path()).encode_images(_pixels(6))  # (6, 16)
    folder = precision.onnx_dir()
    before = _snapshot(folder)
    guard = read_only(folder)
    _no_export(monkeypatch)
    with caplog.at_level(logging.WARNING):
        fast = tiny_model.with_precision("onnx-int8")
        img, txt = fast.encode_images(_pixels(6)), fast.encode_texts(TEXTS)
    np.testing.assert_array_equal(img, ref)
    assert _cos(txt, tiny_model.encode_texts(TEXTS)).min() >= 0.99
    assert guard.attempts == [] and _warnings(caplog) == [] and _snapshot(folder) == before  # not a write tried


def test_read_only_cache_without_graphs_exports_to_a_temporary_folder(tiny_model, read_only, monkeypatch, caplog):
    folder = precision.onnx_dir()
    guard = read_only(folder)  # empty and read-only
    with caplog.at_level(logging.WARNING):
        fast = tiny_model.with_precision("onnx-int8")
        img, txt = fast.encode_images(_pixels(6)), fast.encode_texts(TEXTS)
    assert _cos(img, tiny_model.encode_images(_pixels(6))).min() >= 0.99
    np.testing.assert_allclose(txt, tiny_model.encode_texts(TEXTS), atol=1e-4)
    said = _warnings(caplog)
    scratch = fast.runner.graphs.scratch
    assert guard.attempts and len(said) == 1, said  # the refusal really happened, and was said once
    assert f"ONNX cache folder {folder} cannot be written (Permission denied): exporting to {scratch}" in said[0]
    assert list(folder.iterdir()) == [] and len(list(scratch.glob("*.onnx"))) == 3
    caplog.clear()
    _no_export(monkeypatch)  # a second model object in this process reuses the temporary graphs, silently
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(tiny_model.with_precision("onnx-int8").encode_images(_pixels(6)), img)
    assert _warnings(caplog) == []


@pytest.mark.parametrize("how", ["under-a-file", "is-a-file"])
def test_cache_folder_that_cannot_exist_even_for_root(tiny_model, tmp_path, monkeypatch, caplog, how):
    """No chmod, no guard: the OS refuses these to root too."""
    (tmp_path / "f").write_text("a file")
    if how == "under-a-file":
        monkeypatch.setenv("FCLIP_CACHE", str(tmp_path / "f" / "cache"))
    else:
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "onnx").write_text("a file where the graphs go")
        monkeypatch.setenv("FCLIP_CACHE", str(tmp_path / "c"))
    with caplog.at_level(logging.WARNING):
        out = tiny_model.with_precision("onnx").encode_images(_pixels(4))
    np.testing.assert_allclose(out, tiny_model.encode_images(_pixels(4)), atol=1e-4)
    said = _warnings(caplog)
    reason = "Not a directory" if how == "under-a-file" else "File exists"
    assert len(said) == 1 and f"cannot be written ({reason})" in said[0], said


def test_no_writable_folder_at_all_is_one_line(tiny_model, tmp_path, monkeypatch):
    (tmp_path / "f").write_text("a file")
    monkeypatch.setenv("FCLIP_CACHE", str(tmp_path / "f" / "cache"))

    def no_tmp(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", "/tmp")
    monkeypatch.setattr(graph_cache.tempfile, "mkdtemp", no_tmp)
    with pytest.raises(CacheError, match=r"cannot be written \(Not a directory\), nor can a temporary folder "
                                         r"\(Permission denied\): set FCLIP_CACHE to a writable folder"):
        tiny_model.with_precision("onnx").encode_images(_pixels(2))


def test_cli_embed_with_an_impossible_graph_cache_works_and_says_so(tiny_model_dir, small_catalog_dir, tmp_path):
    """The real command in its own process (its logging goes to stderr): exit 0, one warning line."""
    (tmp_path / "f").write_text("a file")
    env = {**os.environ, "FCLIP_CACHE": str(tmp_path / "f" / "cache")}
    run = subprocess.run([sys.executable, "-m", "fclip_workbench.cli", "embed", "--data",
                          str(small_catalog_dir / "products.csv"), "--image-root", str(small_catalog_dir / "images"),
                          "--model", str(tiny_model_dir), "--cache", str(tmp_path / "c.sqlite"), "--device", "cpu",
                          "-q", "--precision", "onnx", "--out", str(tmp_path / "o.npz")],
                         env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert len(lines) == 1 and "ONNX cache folder" in lines[0], lines
    assert "cannot be written (Not a directory)" in lines[0], lines
    assert np.load(tmp_path / "o.npz")["vectors"].shape == (12, 16)


# ----------------------------------------------------------------------------- 4. sharing a cache
SCRIPT = """
import sys, numpy as np, torch
from fclip_workbench.embedding.models import load_model
m = load_model(sys.argv[1], device="cpu")
px = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(3))
fast = m.with_precision("onnx-int8")
img, txt = fast.encode_images(px), fast.encode_texts(["a red dress", "shoes"])
print(min(np.sum(img * m.encode_images(px), 1).min(), np.sum(txt * m.encode_texts(["a red dress", "shoes"]), 1).min()))
"""


def test_processes_sharing_one_cache_export_at_once(tiny_model_dir, other_model_dir, tmp_path):
    """Three processes start together on an empty cache: two of one model (both export the same graphs),
    one of another. Each gets its own model's vectors; the cache ends complete, valid, without leftovers."""
    env = {**os.environ, "FCLIP_CACHE": str(tmp_path / "cache"), "FCLIP_INT8_RANGE": "7", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(d)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for d in (tiny_model_dir, tiny_model_dir, other_model_dir)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err
        assert float(out.split()[-1]) >= 0.99, out
    folder = tmp_path / "cache" / "onnx"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 * 3 * 2 and not [n for n in names if ".tmp-" in n or ".probe-" in n], names
    cache = graph_cache.GraphCache(folder, "ONNX")
    for d in (tiny_model_dir, other_model_dir):
        m = load_model(d, device="cpu")
        for graph, prec, tower in [(f"{m.fingerprint}-image.onnx", "onnx", "image"),
                                   (f"{m.fingerprint}-text.onnx", "onnx", "text"),
                                   (f"{m.fingerprint}-image-int8-q1.onnx", "onnx-int8", "image")]:
            assert cache.problem(folder / graph, EmbeddingSpace(m.fingerprint, prec, "0" * 16, 16), tower) is None


def test_threads_sharing_one_cache(tiny_model, tiny_model_dir, other_model_dir):
    models = [tiny_model, load_model(other_model_dir, device="cpu"), load_model(tiny_model_dir, device="cpu")]
    results, errors = {}, []

    def work(i, m):
        try:
            results[i] = (m.with_precision("onnx").encode_images(_pixels(5)), m.encode_images(_pixels(5)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i, m)) for i, m in enumerate(models)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert not errors and len(results) == 3
    for fast, ref in results.values():
        np.testing.assert_allclose(fast, ref, atol=1e-4)
    assert not np.allclose(results[0][0], results[1][0], atol=1e-2)  # two models, two graphs


def test_absent_graph_is_not_a_problem_worth_a_warning(tmp_path):
    cache = graph_cache.GraphCache(tmp_path, "ONNX")
    assert cache.problem(tmp_path / "x.onnx", EmbeddingSpace("a" * 32, "onnx", "b" * 16, 4), "image") == ABSENT


@pytest.mark.parametrize("name", ["openvino"])
def test_openvino_damaged_bin_is_converted_again(tiny_model, tmp_path, caplog, name):
    _needs(name)
    runner = OpenVinoRunner(tiny_model, folder=tmp_path)
    xml = runner.model_path("image")
    xml.with_suffix(".bin").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        out = OpenVinoRunner(tiny_model, folder=tmp_path).encode_image(_pixels(3)).numpy()
    np.testing.assert_allclose(out, tiny_model.encode_images(_pixels(3)), atol=1e-4)
    assert any(".bin is 0 bytes" in s for s in _warnings(caplog)), _warnings(caplog)
