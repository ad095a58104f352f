"""Inference precisions: every path close to fp32, cached apart, reachable from load_model and the CLI."""
import importlib.util
import sys

import numpy as np
import pytest
import torch

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.cli import main
from fclip_workbench.embedding.embed import embed_images, image_model_key
from fclip_workbench.errors import InvalidArgumentError, MissingExtraError
from fclip_workbench.embedding.models import load_model
from fclip_workbench.embedding import precision
from fclip_workbench.embedding.precision import PRECISIONS, OpenVinoRunner, check_precision
from fclip_workbench.embedding.store import EmbeddingStore

FAST = [p for p in PRECISIONS if p != "fp32"]
TEXTS = ["a red dress", "blue denim jeans", "black leather shoes", "a green shirt", "white bag", "socks", "x"]


def _needs(name: str) -> None:
    """Skip a test of precision `openvino` when OpenVINO is absent: an optional extra (`fast`) that CI
    does not install (with it loaded, a later fork in the full suite crashed the test process)."""
    if name != "openvino" or importlib.util.find_spec("openvino") is not None:
        return
    pytest.skip("OpenVINO not installed (optional: pip install 'fclip-workbench[fast]')")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    """Exported ONNX graphs go to this test's folder, not the user's cache; the int8 range is the CPU's
    unless a test forces it. `bf16` runs on any CPU here (its numbers are tested everywhere; only the
    speed needs the instructions): the refusal and the detection have their own tests below."""
    monkeypatch.setenv("FCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FCLIP_INT8_RANGE", raising=False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: True)


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)  # (n, 3, 32, 32), like normalised pixels


@pytest.mark.parametrize("name", FAST)
def test_every_precision_is_close_to_fp32(tiny_model, name):
    _needs(name)
    fast = tiny_model.with_precision(name)
    ref_img, ref_txt = tiny_model.encode_images(_pixels(9)), tiny_model.encode_texts(TEXTS)  # (9, 16), (7, 16)
    img, txt = fast.encode_images(_pixels(9)), fast.encode_texts(TEXTS)
    assert img.shape == ref_img.shape and txt.shape == ref_txt.shape and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    assert np.sum(img * ref_img, axis=1).min() >= 0.99, name
    assert np.sum(txt * ref_txt, axis=1).min() >= 0.99, name
    assert fast.model is tiny_model.model and fast.precision == name  # fp32 weights shared, not copied


def test_cache_keys_differ_per_precision_and_fp32_keys_stay(tiny_model, tiny_model_dir, small_catalog_dir, tmp_path):
    names = ["fp32", "onnx", "onnx-int8", "bf16"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    models = {p: tiny_model.with_precision(p) for p in names}
    keys = {p: image_model_key(m) for p, m in models.items()}
    assert len(set(keys.values())) == len(keys)
    assert models["fp32"].fingerprint == tiny_model.fingerprint == load_model(tiny_model_dir, device="cpu").fingerprint
    assert "+" not in tiny_model.fingerprint and models["onnx"].fingerprint == tiny_model.fingerprint + "+onnx"
    assert models["onnx-int8"].with_precision("onnx").fingerprint == models["onnx"].fingerprint  # from the fp32 base

    cat = Catalog.from_folder(small_catalog_dir / "images")
    store = EmbeddingStore(tmp_path / "s.sqlite")
    first = embed_images(models["fp32"], cat, store, batch_size=4, num_workers=0, progress=False)
    other = embed_images(models["onnx"], cat, store, batch_size=4, num_workers=0, progress=False)
    again = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    assert (first.n_computed, other.n_computed, other.n_cached, again.n_cached) == (12, 12, 0, 12)
    np.testing.assert_array_equal(again.vectors, first.vectors)  # fp32 vectors untouched by the onnx run


def test_unknown_precision_is_one_line_before_loading():
    with pytest.raises(InvalidArgumentError, match=r"Unknown precision 'int4'\. Valid precisions: fp32, onnx"):
        load_model("/no/such/model", precision="int4")  # the name is checked first: no UnknownModelError
    with pytest.raises(InvalidArgumentError, match="'onnx' runs on cpu, not cuda; on cuda use one of: fp32"):
        check_precision("onnx", "cuda")


@pytest.mark.parametrize("name", ["onnx", "onnx-int8", "openvino"])
def test_exported_graphs_run_batch_sizes_other_than_the_export_batch(tiny_model, name):
    _needs(name)
    fast = tiny_model.with_precision(name)
    for n in (1, 5, 33):  # exported with a batch of 2
        ref = tiny_model.encode_images(_pixels(n, seed=n))
        out = fast.encode_images(_pixels(n, seed=n))
        assert out.shape == (n, 16) and np.sum(out * ref, axis=1).min() >= 0.99, (name, n)
    assert fast.encode_texts(TEXTS[:1]).shape == (1, 16)
    assert fast.encode_texts(TEXTS).shape == (len(TEXTS), 16)


def test_openvino_model_is_cached_on_disk_and_reused(tiny_model, tmp_path):
    _needs("openvino")
    first = OpenVinoRunner(tiny_model, folder=tmp_path)
    xml = first.model_path("image")
    fp = tiny_model.fingerprint
    assert xml.name == f"{fp}-image-ov1.xml" and xml.with_suffix(".bin").is_file()
    stamp = xml.stat().st_mtime_ns
    again = OpenVinoRunner(tiny_model, folder=tmp_path)  # a new process would do the same
    out = again.encode_image(_pixels(3)).numpy()  # (3, 16)
    assert xml.stat().st_mtime_ns == stamp and sorted(p.name for p in tmp_path.iterdir()) == [
        f"{fp}-image-ov1.bin", f"{fp}-image-ov1.xml", f"{fp}-image-ov1.xml.json"]  # reused, no temporary files left
    np.testing.assert_allclose(out, tiny_model.encode_images(_pixels(3)), atol=1e-4)  # exact to float noise


def test_openvino_missing_is_one_line_naming_the_extra(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'fclip-workbench\[fast\]'"):
        tiny_model.with_precision("openvino")


@pytest.mark.parametrize("env, vnni, suffix", [
    ("7", True, "+onnx-int8"),  # forced 7-bit range, even on a VNNI/AMX CPU
    ("8", False, "+onnx-int8-full8"),  # forced full range, even on an AVX2 CPU
    ("auto", True, "+onnx-int8-full8"),  # the CPU decides: VNNI/AMX
    (None, False, "+onnx-int8"),  # unset: the CPU decides, AVX2
])
def test_cli_embed_precision(tiny_model_dir, small_catalog_dir, tmp_path, capsys, monkeypatch, env, vnni, suffix):
    """The int8 range (and so the fingerprint suffix) is forced here: the test holds on any CPU."""
    import fclip_workbench.embedding.precision as precision

    really = precision.cpu_has_vnni()
    monkeypatch.setattr(precision, "cpu_has_vnni", lambda cpuinfo=None: vnni)
    if env is not None:
        monkeypatch.setenv("FCLIP_INT8_RANGE", env)
    common = ["--data", str(small_catalog_dir / "products.csv"), "--image-root", str(small_catalog_dir / "images"),
              "--model", str(tiny_model_dir), "--cache", str(tmp_path / "c.sqlite"), "--device", "cpu", "-q"]
    assert main(["embed", *common, "--out", str(tmp_path / "a.npz")]) == 0
    assert main(["embed", *common, "--precision", "onnx-int8", "--out", str(tmp_path / "b.npz")]) == 0
    out = capsys.readouterr().out
    for what in ("images", "texts"):  # each precision has its own cache entries
        assert out.count(f"{what}: 12 embedded (0 from cache, 12 computed), 0 failed") == 2, out
    assert f"{suffix}; store" in out, out
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    import json

    from fclip_workbench.embedding.space import EmbeddingSpace
    spaces = [EmbeddingSpace.from_dict(json.loads(str(f["space"]))) for f in (a, b)]
    assert spaces[0].precision == "fp32" and spaces[1].precision.startswith("onnx-int8")  # told apart
    least = 0.95 if suffix.endswith("full8") and not really else 0.99  # the full range saturates AVX2 (see below)
    assert list(a["ids"]) == list(b["ids"]) and np.sum(a["vectors"] * b["vectors"], axis=1).min() >= least
    assert main(["embed", *common, "--precision", "fp8"]) == 2
    err = capsys.readouterr().err
    assert "Unknown precision 'fp8'. Valid precisions: fp32" in err and "Traceback" not in err


def test_cli_bad_int8_range_is_one_line(tiny_model_dir, small_catalog_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FCLIP_INT8_RANGE", "6")
    assert main(["embed", "--data", str(small_catalog_dir / "products.csv"), "--image-root",
                 str(small_catalog_dir / "images"), "--model", str(tiny_model_dir), "--cache",
                 str(tmp_path / "c.sqlite"), "--device", "cpu", "-q", "--precision", "onnx-int8"]) == 2
    err = capsys.readouterr().err
    assert "FCLIP_INT8_RANGE='6': use 7" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("env, flags, full", [
    (None, "avx2 avx512_vnni", True), (None, "avx2 avx_vnni", True), (None, "avx2 amx_int8", True),
    (None, "avx2 avx512f", False), ("auto", "avx2 amx_int8", True), ("auto", "avx2", False),
    ("7", "avx2 amx_int8", False), ("8", "avx2", True), (" 8 ", "", True),
])
def test_int8_range_choice_from_cpu_flags_and_env(monkeypatch, env, flags, full):
    from fclip_workbench.embedding.precision import int8_full_range

    if env is None:
        monkeypatch.delenv("FCLIP_INT8_RANGE", raising=False)
    else:
        monkeypatch.setenv("FCLIP_INT8_RANGE", env)
    assert int8_full_range(f"processor\t: 0\nflags\t\t: fpu sse {flags}\n") is full


def test_bad_int8_range_is_one_line_before_any_export(tiny_model, monkeypatch, tmp_path):
    from fclip_workbench.embedding.precision import OnnxRunner

    monkeypatch.setenv("FCLIP_INT8_RANGE", "full")
    with pytest.raises(InvalidArgumentError, match=r"FCLIP_INT8_RANGE='full': use 7 .*, 8 .* or auto"):
        OnnxRunner(tiny_model, quantize=True, folder=tmp_path)
    assert OnnxRunner(tiny_model, quantize=False, folder=tmp_path).variant == ""  # fp32 graphs need no range
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("vnni", [False, True])
def test_int8_range_follows_the_cpu_and_is_cached_apart(tiny_model, monkeypatch, vnni):
    """On CPUs with VNNI/AMX onnx-int8 quantises to the full 8-bit range (faster and closer there), elsewhere to
    7 bits; each graph has its own file and its vectors their own fingerprint, so two machines sharing a cache
    never mix them."""
    import fclip_workbench.embedding.precision as precision

    really = precision.cpu_has_vnni()
    monkeypatch.setattr(precision, "cpu_has_vnni", lambda cpuinfo=None: vnni)
    fast = tiny_model.with_precision("onnx-int8")
    img = fast.encode_images(_pixels(9))
    # the full range on a CPU without VNNI saturates u8s8 products: the reason it is not used there
    least = 0.99 if really or not vnni else 0.95
    assert np.sum(img * tiny_model.encode_images(_pixels(9)), axis=1).min() >= least
    graph = fast.runner.graph_path("image")
    assert graph.name.endswith("-full8.onnx") == vnni and fast.runner.full_range == vnni
    assert fast.fingerprint == tiny_model.fingerprint + ("+onnx-int8-full8" if vnni else "+onnx-int8")
    assert fast.with_precision("onnx").fingerprint == tiny_model.fingerprint + "+onnx"


def test_cpu_flags_are_read_from_cpuinfo():
    from fclip_workbench.embedding.precision import cpu_has_vnni

    assert cpu_has_vnni("processor\t: 0\nflags\t\t: fpu sse avx2 amx_int8\n")
    assert not cpu_has_vnni("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert not cpu_has_vnni("")


# ---------------------------------------------------------------- bf16 on CPUs
def test_bf16_on_a_cpu_is_a_bfloat16_model_with_its_own_fingerprint(tiny_model):
    fast = tiny_model.with_precision("bf16")
    assert isinstance(fast.runner, precision.Bf16Runner) and fast.fingerprint.endswith("+bf16-native")
    assert fast.space != tiny_model.space and fast.space.precision == "bf16-native"
    img = fast.encode_images(_pixels(5))  # (5, 16)
    assert img.dtype == np.float32 and np.allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    assert next(fast.runner._module().parameters()).dtype == torch.bfloat16
    assert next(tiny_model.model.parameters()).dtype == torch.float32  # the fp32 model is not touched


def test_bf16_follows_weights_changed_in_place(tiny_model_dir):
    m = load_model(tiny_model_dir, device="cpu")
    fast = m.with_precision("bf16")
    before = fast.encode_images(_pixels(4))
    with torch.no_grad():
        for prm in m.model.visual.parameters():
            prm.mul_(-1.0)  # fine-tuned in place
    after, truth = fast.encode_images(_pixels(4)), m.encode_images(_pixels(4))
    assert np.sum(after * truth, axis=1).min() >= 0.99  # the new weights' vectors, not the old copy's
    assert np.sum(after * before, axis=1).min() < 0.99


def test_bf16_is_refused_on_a_cpu_without_bf16_instructions(monkeypatch, tiny_model):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: False)
    with pytest.raises(InvalidArgumentError, match=r"needs bfloat16 instructions \(amx_bf16 or avx512_bf16.*"
                                                   r"Use onnx-int8"):
        load_model("/no/such/model", device="cpu", precision="bf16")  # before loading anything
    with pytest.raises(InvalidArgumentError, match="needs bfloat16 instructions"):
        tiny_model.with_precision("bf16")
    check_precision("bf16", "cuda")  # GPUs autocast: not refused by the CPU's flags


def test_bf16_detection_reads_the_cpu_flags(monkeypatch):
    monkeypatch.undo()
    assert precision.cpu_has_bf16("flags\t: fpu avx2 amx_bf16 amx_int8")
    assert precision.cpu_has_bf16("flags\t: fpu avx2 avx512_bf16")
    assert not precision.cpu_has_bf16("flags\t: fpu avx2 avx512_vnni")
    assert not precision.cpu_has_bf16("")
    here = precision.cpu_has_bf16()  # this machine: bf16 runs exactly when its flags say so
    if here:
        check_precision("bf16", "cpu")
    else:
        with pytest.raises(InvalidArgumentError, match="needs bfloat16 instructions"):
            check_precision("bf16", "cpu")
