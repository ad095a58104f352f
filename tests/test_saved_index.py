"""Saved indexes: the embedding space and image weight they record, and every way a folder can be damaged.

Each damaged folder must be refused in one line naming the folder (never a traceback, never served),
through the API (`load_index`) and through the CLI (`fclip search --index-dir`, before the model loads).
"""
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fclip_workbench import cli
from fclip_workbench.errors import InvalidArgumentError, SavedIndexError, SpaceMismatchError
from fclip_workbench.search.index import ExactIndex, FaissIndex, build_index, normalize
from fclip_workbench.search.saved import _file_record, check_save_folder, load_index, save_index
from fclip_workbench.embedding.space import EmbeddingSpace

DIM = 16


def space(weights: str = "a", dim: int = DIM, model: str = "demo@1") -> EmbeddingSpace:
    return EmbeddingSpace(weights * 32, "fp32", "b" * 16, dim, model=model)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return normalize(np.random.default_rng(seed).standard_normal((n, DIM)))  # (n, DIM)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A pristine saved exact index (60 vectors) and IVF index (3000), copied per test."""
    base = tmp_path_factory.mktemp("saved")
    out = {}
    for kind, n in (("exact", 60), ("ivf", 3000)):
        x = vectors(n)
        save_index(build_index(x, [f"p{j}" for j in range(n)], kind, space=space()), base / kind)
        out[kind] = base / kind
    return out


@pytest.fixture(params=["exact", "ivf"])
def folder(request, saved, tmp_path):
    dst = tmp_path / f"idx-{request.param}"
    shutil.copytree(saved[request.param], dst)
    return dst


def meta_of(f: Path) -> dict:
    return json.loads((f / "index.json").read_text())


def write_meta(f: Path, meta: dict) -> None:
    (f / "index.json").write_text(json.dumps(meta))


def data_name(f: Path) -> str:
    return "vectors.npy" if meta_of(f)["kind"] == "exact" else "faiss.index"


def reseal(f: Path) -> None:
    """Record the data file's current size and checksum, so the deeper checks are what refuses it."""
    meta = meta_of(f)
    meta["files"] = {data_name(f): _file_record(f / data_name(f))}
    write_meta(f, meta)


# ------------------------------------------------------------------ ways to damage a folder
def _edit(**changes):
    def damage(f: Path) -> None:
        meta = meta_of(f)
        for k, v in changes.items():
            if v is _DROP:
                meta.pop(k, None)
            else:
                meta[k] = v(meta) if callable(v) else v
        write_meta(f, meta)
    return damage


_DROP = object()


def _text(content: bytes):
    def damage(f: Path) -> None:
        (f / "index.json").write_bytes(content)
    return damage


def _meta_is_folder(f: Path) -> None:
    (f / "index.json").unlink()
    (f / "index.json").mkdir()


def _data_missing(f: Path) -> None:
    (f / data_name(f)).unlink()


def _data_truncated(f: Path) -> None:
    p = f / data_name(f)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _data_garbage_same_size(f: Path) -> None:
    p = f / data_name(f)
    p.write_bytes(os.urandom(p.stat().st_size))


def _data_garbage_resealed(f: Path) -> None:
    p = f / data_name(f)
    p.write_bytes(os.urandom(p.stat().st_size))
    reseal(f)


def _data_truncated_resealed(f: Path) -> None:
    _data_truncated(f)
    reseal(f)


def _data_is_folder(f: Path) -> None:
    p = f / data_name(f)
    p.unlink()
    p.mkdir()


def _nan_vectors_resealed(f: Path) -> None:
    """A consistent folder whose vectors are NaN: written by hand, checksums updated."""
    meta = meta_of(f)
    x = vectors(meta["n"])
    x[3, 2] = np.nan
    if meta["kind"] == "exact":
        with open(f / "vectors.npy", "wb") as fh:
            np.save(fh, x)
    else:
        import faiss
        idx = faiss.read_index(str(f / "faiss.index"))
        idx.reset()
        idx.add(x)  # FAISS itself takes NaN vectors
        faiss.write_index(idx, str(f / "faiss.index"))
    reseal(f)


def _inf_vectors_resealed(f: Path) -> None:
    meta = meta_of(f)
    x = vectors(meta["n"]) * np.float32(np.inf)
    if meta["kind"] == "exact":
        with open(f / "vectors.npy", "wb") as fh:
            np.save(fh, x)
    else:
        import faiss
        idx = faiss.read_index(str(f / "faiss.index"))
        ivf = faiss.extract_index_ivf(idx)
        centroids = faiss.downcast_index(ivf.quantizer)
        centroids.reset()
        centroids.add(np.full((ivf.nlist, DIM), np.inf, np.float32))  # NaN-free vectors, infinite cell centres
        faiss.write_index(idx, str(f / "faiss.index"))
    reseal(f)


def _wrong_dim_data_resealed(f: Path) -> None:
    """The data file is of another width than index.json and its space say."""
    meta = meta_of(f)
    x = normalize(np.random.default_rng(1).standard_normal((meta["n"], DIM * 2)))
    if meta["kind"] == "exact":
        with open(f / "vectors.npy", "wb") as fh:
            np.save(fh, x)
    else:
        save_index(build_index(x, meta["ids"], "ivf", space=space(dim=DIM * 2)), f)
        meta2 = meta_of(f)
        meta2["space"], meta2["dim"] = meta["space"], meta["dim"]
        write_meta(f, meta2)
    reseal(f)


def _other_structure_resealed(f: Path) -> None:
    """A FAISS file of another structure (HNSW) or an object array where NumPy vectors belong."""
    meta = meta_of(f)
    if meta["kind"] == "exact":
        with open(f / "vectors.npy", "wb") as fh:
            np.save(fh, np.array([{"a": 1}] * meta["n"], dtype=object), allow_pickle=True)
    else:
        import faiss
        h = faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT)
        h.add(vectors(meta["n"]))
        faiss.write_index(h, str(f / "faiss.index"))
    reseal(f)


def _l2_metric_resealed(f: Path) -> None:
    import faiss
    meta = meta_of(f)
    if meta["kind"] == "exact":  # exact: integer vectors instead
        with open(f / "vectors.npy", "wb") as fh:
            np.save(fh, np.ones((meta["n"], DIM), np.int64))
    else:
        q = faiss.IndexFlatL2(DIM)
        idx = faiss.IndexIVFFlat(q, DIM, 4, faiss.METRIC_L2)
        idx.train(vectors(meta["n"]))
        idx.add(vectors(meta["n"]))
        faiss.write_index(idx, str(f / "faiss.index"))
    reseal(f)


def _fewer_vectors_resealed(f: Path) -> None:
    """index.json's ids and n agree, the data file holds one vector fewer."""
    meta = meta_of(f)
    x = vectors(meta["n"] - 1)
    if meta["kind"] == "exact":
        with open(f / "vectors.npy", "wb") as fh:
            np.save(fh, x)
    else:
        import faiss
        idx = faiss.read_index(str(f / "faiss.index"))
        idx.reset()
        idx.add(x)
        faiss.write_index(idx, str(f / "faiss.index"))
    reseal(f)


def _drop_last_id(m: dict) -> list:
    return m["ids"][:-1]


DAMAGES = {
    "bad JSON": _text(b'{"format": 2, "kind": '),
    "empty index.json": _text(b""),
    "JSON list": _text(b"[1, 2, 3]"),
    "JSON null": _text(b"null"),
    "not UTF-8": _text(b"\xff\xfe\x00garbage"),
    "deeply nested JSON": _text(b"[" * 100_000 + b"]" * 100_000),
    "index.json is a folder": _meta_is_folder,
    "old format (no format, no space)": _edit(format=_DROP, space=_DROP),
    "format 99": _edit(format=99),
    "format a string": _edit(format="2"),
    **{f"missing {k}": _edit(**{k: _DROP}) for k in
       ("kind", "space", "dim", "n", "ids", "image_weight", "files", "build_info")},
    "unknown kind": _edit(kind="annoy"),
    "kind a number": _edit(kind=3),
    "space a string": _edit(space="fclip-mini@1"),
    "space lacks weights": _edit(space=lambda m: {k: v for k, v in m["space"].items() if k != "weights"}),
    "space weights not hex": _edit(space=lambda m: {**m["space"], "weights": "<script>"}),
    "space dim differs from dim": _edit(space=lambda m: {**m["space"], "dim": DIM + 1}),
    "dim a float": _edit(dim=16.5),
    "dim zero": _edit(dim=0),
    "dim differs from the data": _edit(dim=DIM + 1, space=lambda m: {**m["space"], "dim": DIM + 1}),
    "n negative": _edit(n=-1),
    "n a string": _edit(n="60"),
    "n true": _edit(n=True),
    "ids a string": _edit(ids="p0 p1"),
    "ids numbers": _edit(ids=lambda m: list(range(len(m["ids"])))),
    "ids one short": _edit(ids=_drop_last_id),
    "ids one short, n too": _edit(ids=_drop_last_id, n=lambda m: m["n"] - 1),
    "duplicate id": _edit(ids=lambda m: [m["ids"][0]] + m["ids"][1:-1] + [m["ids"][0]]),
    "image_weight NaN": _edit(image_weight=float("nan")),
    "image_weight 2": _edit(image_weight=2),
    "image_weight a string": _edit(image_weight="half"),
    "build_info a list": _edit(build_info=[]),
    "files empty": _edit(files={}),
    "files a list": _edit(files=[]),
    "files without sha256": _edit(files=lambda m: {k: {"bytes": v["bytes"]} for k, v in m["files"].items()}),
    "data file missing": _data_missing,
    "data file is a folder": _data_is_folder,
    "data file truncated": _data_truncated,
    "data file truncated, checksum updated": _data_truncated_resealed,
    "data file garbage of the same size": _data_garbage_same_size,
    "data file garbage, checksum updated": _data_garbage_resealed,
    "NaN vector, checksum updated": _nan_vectors_resealed,
    "inf values, checksum updated": _inf_vectors_resealed,
    "data file of another width, checksum updated": _wrong_dim_data_resealed,
    "data file of another structure, checksum updated": _other_structure_resealed,
    "L2 metric / integer vectors, checksum updated": _l2_metric_resealed,
    "one vector fewer than ids, checksum updated": _fewer_vectors_resealed,
}
FAISS_ONLY = {
    "missing method": _edit(method=_DROP),
    "unknown method": _edit(method="lsh"),
    "nprobe zero": _edit(nprobe=0),
    "nprobe a string": _edit(nprobe="8"),
    "nprobe beyond nlist": _edit(nprobe=10_000),
    "k_factor missing": _edit(k_factor=_DROP),
    "ef_search negative": _edit(ef_search=-5),
}


def _refused(f: Path) -> SavedIndexError:
    with pytest.raises(SavedIndexError) as err:
        load_index(f)
    msg = str(err.value)
    assert "\n" not in msg and str(f) in msg, msg
    return err.value


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_damaged_folder_is_one_line_through_the_api(folder, damage):
    DAMAGES[damage](folder)
    _refused(folder)


@pytest.mark.parametrize("damage", list(FAISS_ONLY), ids=list(FAISS_ONLY))
def test_damaged_faiss_settings_are_one_line(saved, tmp_path, damage):
    f = tmp_path / "ivf"
    shutil.copytree(saved["ivf"], f)
    FAISS_ONLY[damage](f)
    _refused(f)


def test_missing_folder_a_file_and_an_empty_folder(tmp_path):
    with pytest.raises(SavedIndexError, match="does not exist"):
        load_index(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SavedIndexError, match="is a file, not a saved index folder"):
        load_index(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SavedIndexError, match="holds no index.json"):
        load_index(tmp_path / "empty")


def test_every_message_says_what_to_do(folder):
    _edit(ids=_drop_last_id)(folder)
    assert "fclip index --out" in str(_refused(folder))


@pytest.fixture
def cli_args(small_catalog_dir, tmp_path):
    return ["--data", str(small_catalog_dir / "products.csv"), "--image-root", str(small_catalog_dir / "images"),
            "--cache", str(tmp_path / "cache.sqlite"), "-q"]


_CLI_CASES = ["bad JSON", "missing space", "ids one short", "dim differs from the data", "data file truncated",
              "data file garbage, checksum updated", "NaN vector, checksum updated",
              "one vector fewer than ids, checksum updated", "old format (no format, no space)", "not UTF-8"]


@pytest.mark.parametrize("damage", _CLI_CASES)
def test_damaged_folder_is_one_line_through_the_cli_before_the_model_loads(folder, cli_args, capsys, damage):
    DAMAGES[damage](folder)
    rc = cli.main(["search", "red shirt", *cli_args, "--model", "no-such-model", "--index-dir", str(folder)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("fclip search: error: ") and err.count("\n") == 1, err
    assert str(folder) in err and "no-such-model" not in err  # refused before the model was looked at


def test_cli_folder_that_is_a_file_or_missing(cli_args, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not an index")
    for target, says in ((tmp_path / "a-file", "is a file"), (tmp_path / "missing", "does not exist"),
                         (tmp_path, "holds no index.json")):
        rc = cli.main(["search", "red shirt", *cli_args, "--model", "no-such-model", "--index-dir", str(target)])
        err = capsys.readouterr().err
        assert rc == 2 and says in err and err.count("\n") == 1, err


def test_cli_process_prints_no_traceback(folder, small_catalog_dir, tmp_path):
    """The real process, once: garbage FAISS/NumPy bytes never reach a parser that could crash."""
    _data_garbage_resealed(folder)
    r = subprocess.run([sys.executable, "-m", "fclip_workbench.cli", "search", "red shirt", "--data",
                        str(small_catalog_dir / "products.csv"), "--image-root", str(small_catalog_dir / "images"),
                        "--cache", str(tmp_path / "c.sqlite"), "-q", "--index-dir", str(folder)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "damaged" in r.stderr


# ------------------------------------------------------------------ NaN / inf never indexed
@pytest.mark.parametrize("kind", ["exact", "faiss", "ivf", "hnsw"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_are_refused_at_build(kind, bad):
    x = vectors(3000)
    x[17, 3] = bad
    with pytest.raises(InvalidArgumentError, match="'p17'.*NaN or inf"):
        build_index(x, [f"p{j}" for j in range(3000)], kind, space=space())


def test_non_finite_queries_are_refused():
    idx = ExactIndex(vectors(10), [str(j) for j in range(10)], space=space())
    with pytest.raises(InvalidArgumentError, match="NaN or inf"):
        idx.search(np.full((1, DIM), np.nan, np.float32))


# ------------------------------------------------------------------ the recorded space and weight
def test_a_saved_index_records_space_weight_and_checks_the_space_before_reading_vectors(tmp_path):
    a, b = space("a", model="fclip-mini@1"), space("c", model="fclip-mini@2")
    folder = save_index(build_index(vectors(50), [f"p{j}" for j in range(50)], space=a, image_weight=0.25), tmp_path / "v1")
    meta = meta_of(folder)
    assert meta["space"] == a.to_dict() and meta["image_weight"] == 0.25 and meta["format"] == 3
    again = load_index(folder, space=a)
    assert again.space == a and again.image_weight == 0.25
    (folder / "vectors.npy").write_bytes(b"")  # the space is checked first: the data file is never read
    with pytest.raises(SpaceMismatchError) as err:
        load_index(folder, space=b)
    assert "fclip-mini@1" in str(err.value) and "fclip-mini@2" in str(err.value)


@pytest.mark.parametrize("other", [space("c"), space("a", dim=DIM + 1),
                                   EmbeddingSpace("a" * 32, "onnx-int8", "b" * 16, DIM),
                                   EmbeddingSpace("a" * 32, "fp32", "e" * 16, DIM)])
def test_queries_of_another_space_are_refused(other):
    """Another weights fingerprint, width, precision or image pipeline: each a different space."""
    for idx in (ExactIndex(vectors(3000), [str(j) for j in range(3000)], space=space()),
                build_index(vectors(3000), [str(j) for j in range(3000)], "ivf", space=space())):
        with pytest.raises(SpaceMismatchError, match="not in"):
            idx.search(vectors(1), k=3, space=other)
        assert idx.search(vectors(1), k=3, space=space())[1]


def test_saving_needs_a_space(tmp_path):
    with pytest.raises(InvalidArgumentError, match="space=model.space"):
        save_index(ExactIndex(vectors(5), list("abcde")), tmp_path / "x")
    with pytest.raises(SpaceMismatchError, match="dimension 16"):
        ExactIndex(vectors(5), list("abcde"), space=space(dim=8))


def test_replacing_a_saved_index_of_another_kind(tmp_path):
    x, ids = vectors(3000), [f"p{j}" for j in range(3000)]
    save_index(build_index(x[:10], ids[:10], space=space()), tmp_path / "v")
    save_index(build_index(x, ids, "ivf", space=space()), tmp_path / "v")
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["faiss.index", "index.json"]
    assert isinstance(load_index(tmp_path / "v"), FaissIndex) and len(load_index(tmp_path / "v")) == 3000


# ------------------------------------------------------------------ --out / save folder checks
def test_save_folder_refusals(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for bad, says in ((tmp_path / "file", "is a file, not a folder"),
                      (tmp_path / "other", "folder of 1 other file"),
                      (tmp_path / "file" / "sub", "is a file, not a folder")):
        with pytest.raises(InvalidArgumentError, match=says):
            check_save_folder(bad)
        with pytest.raises(InvalidArgumentError, match=says):
            save_index(ExactIndex(vectors(3), list("abc"), space=space()), bad)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert check_save_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    assert check_save_folder(tmp_path / "empty") == tmp_path / "empty"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_save_folder_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InvalidArgumentError, match="not writable"):
            check_save_folder(ro / "idx")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("out", ["file", "other", "file/sub"])
def test_cli_index_out_refused_before_slow_work(cli_args, tmp_path, capsys, out):
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("keep")
    rc = cli.main(["index", *cli_args, "--model", "no-such-model", "--out", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("fclip index: error: --out ") and "no-such-model" not in err, err
    assert not (tmp_path / "cache.sqlite").exists()  # nothing embedded, no store even opened
    assert (tmp_path / "other" / "keep.txt").read_text() == "keep"


# ------------------------------------------------------------------ through the Searcher and the CLI
def _perturbed(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.model.parameters()).add_(0.5)
    return other


def test_searcher_refuses_an_index_of_another_space_before_embedding(tiny_model, small_catalog_dir, tmp_path):
    from fclip_workbench.data.catalog import Catalog
    from fclip_workbench.search.searcher import Searcher
    from fclip_workbench.embedding.store import EmbeddingStore

    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    s = Searcher.build(tiny_model, cat, EmbeddingStore(tmp_path / "a.sqlite"), progress=False)
    folder = save_index(s.index, tmp_path / "v1")
    other = _perturbed(tiny_model)
    assert other.space != tiny_model.space
    store = EmbeddingStore(tmp_path / "b.sqlite")
    with pytest.raises(SpaceMismatchError, match="not in"):
        Searcher.build(other, cat, store, index=load_index(folder), progress=False)
    assert store.count() == 0  # refused before any embedding
    with pytest.raises(SpaceMismatchError, match="records no embedding space"):
        Searcher.build(tiny_model, cat, store, index=ExactIndex(s.images.vectors, s.images.ids), progress=False)


def test_searcher_keeps_its_space_and_refuses_queries_after_the_weights_change(tiny_model, small_catalog_dir, tmp_path):
    from fclip_workbench.data.catalog import Catalog
    from fclip_workbench.search.searcher import Searcher
    from fclip_workbench.embedding.store import EmbeddingStore

    model = copy.deepcopy(tiny_model)
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    s = Searcher.build(model, cat, EmbeddingStore(tmp_path / "a.sqlite"), progress=False)
    assert s.space == model.space == s.index.space
    assert len(s.by_text("red shirt", k=3)) == 3
    with torch.no_grad():  # fine-tuned in place: the index holds the old space's vectors
        next(model.model.parameters()).mul_(1.5)
    for query in (lambda: s.by_text("red shirt"), lambda: s.by_image(small_catalog_dir / "images" / "p0.jpg")):
        with pytest.raises(SpaceMismatchError, match="this searcher was made in space"):
            query()


def test_searcher_uses_the_saved_image_weight_and_refuses_another(tiny_model, small_catalog_dir, tmp_path):
    from fclip_workbench.data.catalog import Catalog
    from fclip_workbench.search.searcher import Searcher
    from fclip_workbench.embedding.store import EmbeddingStore

    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    store = EmbeddingStore(tmp_path / "a.sqlite")
    blended = Searcher.build(tiny_model, cat, store, image_weight=0.3, progress=False)
    folder = save_index(blended.index, tmp_path / "w03")
    again = Searcher.build(tiny_model, cat, store, index=load_index(folder), progress=False)
    assert again.image_weight == 0.3
    assert again.by_text("red shirt", k=12).item_id.tolist() == blended.by_text("red shirt", k=12).item_id.tolist()
    Searcher.build(tiny_model, cat, store, index=load_index(folder), image_weight=0.3, progress=False)
    with pytest.raises(InvalidArgumentError, match="image_weight 1 differs from the 0.3"):
        Searcher.build(tiny_model, cat, store, index=load_index(folder), image_weight=1.0, progress=False)


def test_cli_index_then_search_with_another_model_or_weight(tiny_model_dir, small_catalog_dir, tmp_path, capsys):
    """The issue's case: an index of one model searched with another is one line, exit 2, not results."""
    from fclip_workbench.embedding.models import load_model

    other_dir = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other_dir)
    weights = next(p for p in other_dir.iterdir() if p.suffix in (".bin", ".pt", ".safetensors"))
    state = torch.load(weights, map_location="cpu") if weights.suffix != ".safetensors" else None
    if state is None:
        from safetensors.torch import load_file, save_file
        state = load_file(weights)
        first = next(iter(state))
        state[first] = state[first] + 0.5
        save_file(state, weights)
    else:
        first = next(iter(state))
        state[first] = state[first] + 0.5
        torch.save(state, weights)
    assert load_model(other_dir, device="cpu").space != load_model(tiny_model_dir, device="cpu").space

    common = ["--data", str(small_catalog_dir / "products.csv"), "--image-root", str(small_catalog_dir / "images"),
              "--cache", str(tmp_path / "c.sqlite"), "--device", "cpu", "-q"]
    v1 = tmp_path / "v1"
    assert cli.main(["index", *common, "--model", str(tiny_model_dir), "--image-weight", "0.5", "--out", str(v1)]) == 0
    out = capsys.readouterr().out
    assert "image weight 0.5" in out and "space " in out and "Recall@10 1.0" in out
    rc = cli.main(["search", "navy blue jeans", *common, "--model", str(other_dir), "--index-dir", str(v1)])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == "" and cap.err.count("\n") == 1, cap
    assert cap.err.startswith("fclip search: error: index ") and "was made in space" in cap.err
    rc = cli.main(["search", "navy blue jeans", *common, "--model", str(tiny_model_dir), "--index-dir", str(v1),
                   "--image-weight", "0.8"])
    cap = capsys.readouterr()
    assert rc == 2 and "image_weight 0.8 differs from the 0.5" in cap.err and cap.out == ""
    rc = cli.main(["search", "navy blue jeans", *common, "--model", str(tiny_model_dir), "--index-dir", str(v1), "-k", "3"])
    assert rc == 0 and len(capsys.readouterr().out.strip().splitlines()) == 4  # header + 3 results
    rc = cli.main(["search", "navy blue jeans", *common, "--model", str(tiny_model_dir), "--index-dir", str(v1),
                   "--index", "ivf"])
    assert rc == 2 and "not both" in capsys.readouterr().err


def test_a_saved_index_must_hold_exactly_the_catalogs_products(tiny_model, small_catalog_dir, tmp_path):
    import pandas as pd

    from fclip_workbench.data.catalog import Catalog
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.errors import InvalidArgumentError
    from fclip_workbench.search.searcher import Searcher

    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    store = EmbeddingStore(tmp_path / "a.sqlite")
    folder = save_index(Searcher.build(tiny_model, cat, store, progress=False).index, tmp_path / "v1")
    table = pd.read_csv(small_catalog_dir / "products.csv")
    grown = pd.concat([table, table.iloc[[0]].assign(item_id="p12", text="extra red shirt")])
    grown.to_csv(tmp_path / "grown.csv", index=False)
    bigger = Catalog.from_csv(tmp_path / "grown.csv", image_root=small_catalog_dir / "images")
    with pytest.raises(InvalidArgumentError, match=r"lacks 1 product\(s\) of catalog 'grown' .*first 'p12'"):
        Searcher.build(tiny_model, bigger, store, index=load_index(folder), progress=False)
    smaller = cat.subset(range(4))
    with pytest.raises(InvalidArgumentError, match=r"holds 8 ids that are not products of catalog"):
        Searcher.build(tiny_model, smaller, store, index=load_index(folder), progress=False)
    assert len(Searcher.build(tiny_model, cat, store, index=load_index(folder), progress=False)) == 12
