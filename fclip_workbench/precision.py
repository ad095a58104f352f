"""Inference precisions: faster ways to run the same model, each a named, cached path.

`fp32` is the exact reference (the model as trained, in PyTorch). The others
trade a little accuracy for speed, and their vectors are cached under their own
key (`EmbeddingModel.fingerprint` gains a `+NAME` suffix), so vectors of two
paths never mix in the store:

- `onnx`: the same fp32 graph run by ONNX Runtime (CPU);
- `onnx-int8`: ONNX Runtime with the weights of the image tower's MatMul/Gemm
  quantised to int8 (dynamic: activations quantised per batch); the text tower
  runs the fp32 graph (int8 MiniLM cost fclip-mini v1 1 point of R@10) (CPU);
- `openvino`: the same fp32 graph run by OpenVINO (CPU; f32 inference forced, so it
  stays exact to float noise); the optional extra `fclip-workbench[fast]`;
- `bf16`, `fp16`: autocast to bfloat16 / float16 (for GPUs; run on a CPU too,
  slowly, unless it has bf16/fp16 instructions).

ONNX graphs are exported once per model and tower into `cache_dir()/onnx`
(named by the fp32 fingerprint), then reused; the batch axis is dynamic. OpenVINO
models likewise, into `cache_dir()/openvino` (IR `.xml` + `.bin`, versioned names).

Example:
    >>> m = load_model("fclip-mini", precision="onnx-int8")      # doctest: +SKIP
    >>> m.fingerprint.endswith("+onnx-int8")                      # doctest: +SKIP
    True
    >>> check_precision("int4")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: Unknown precision 'int4'. Valid precisions: fp32, onnx, onnx-int8, openvino, bf16, fp16
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidArgumentError, MissingExtraError

if TYPE_CHECKING:
    from .models import EmbeddingModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """A named inference path."""

    name: str
    devices: tuple[str, ...]  # device types it runs on
    description: str


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", ("cpu", "cuda", "mps"), "exact reference: PyTorch, float32"),
    Precision("onnx", ("cpu",), "ONNX Runtime, float32 graph"),
    Precision("onnx-int8", ("cpu",), "ONNX Runtime, image tower with int8 MatMul/Gemm weights (dynamic)"),
    Precision("openvino", ("cpu",), "OpenVINO, float32 graph (extra: fclip-workbench[fast])"),
    Precision("bf16", ("cpu", "cuda"), "autocast to bfloat16 (GPUs; slow on CPUs without bf16 instructions)"),
    Precision("fp16", ("cpu", "cuda"), "autocast to float16 (GPUs; slow on most CPUs)"),
)}
CPU_FAST = ("onnx", "onnx-int8", "openvino")  # the CPU paths the throughput benchmark compares to fp32
# Measured and dropped (benchmarks/bench_throughput.py, README "Fast inference"): PyTorch dynamic int8
# (torch.ao, deprecated) was slower than onnx-int8 at the same accuracy and breaks ResNet attention pooling;
# ONNX Runtime's transformer optimiser fused no attention in open_clip's graph and gave no speed.
# OpenVINO int8 (NNCF static post-training quantisation, ModelType.TRANSFORMER) ran no faster than
# `openvino` fp32 on this AVX2 CPU without VNNI (ViT-B/32 image tower alone, batch 32, interleaved:
# 7.97 / 9.79 / 18.13 vs 8.0 / 10.26 / 18.03 img/s at changing load) at worst cosine 0.9986, while
# `onnx-int8` ran 1.6-1.8x `openvino` fp32; OpenVINO running onnx-int8's graph ran at half ORT's speed;
# NNCF int8 weight-only compression: no gain. torch.jit.freeze + optimize_for_inference for fp32: no gain.
GPU_FAST = ("bf16", "fp16")
QUANT_VERSION = "q1"  # in the names of cached int8 graphs: bump when the quantisation settings change
OV_VERSION = "ov1"  # in the names of cached OpenVINO models: bump when the conversion changes
INT8_FULL_RANGE_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # CPU flags whose int8 dot products do not saturate


def cpu_has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies int8 with VNNI/AMX (Linux /proc/cpuinfo flags; False when unknown).

    There `onnx-int8` uses the full 8-bit range (ViT-B/32 on a Xeon with AMX, 2 threads: 3.26-3.37x PyTorch
    fp32 at worst cosine 0.9998; the 7-bit range 2.92-3.60x at 0.9995); without it, the 7-bit range (the full
    range saturates AVX2's u8s8 products: worst cosine 0.9946 on ViT-B/32).

    >>> cpu_has_vnni("flags\t: fpu avx2 avx512_vnni"), cpu_has_vnni("flags\t: fpu avx2")
    (True, False)
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[-1].split()}
    return any(f in flags for f in INT8_FULL_RANGE_FLAGS)


def check_precision(name: str, device: str | torch.device | None = None) -> Precision:
    """The `Precision` called `name`; one-line `InvalidArgumentError` for an unknown name or device."""
    p = PRECISIONS.get(name)
    if p is None:
        raise InvalidArgumentError(f"Unknown precision {name!r}. Valid precisions: {', '.join(PRECISIONS)}")
    dev = torch.device(device).type if device is not None else None
    if dev is not None and dev not in p.devices:
        others = [q.name for q in PRECISIONS.values() if dev in q.devices]
        raise InvalidArgumentError(f"Precision {name!r} runs on {'/'.join(p.devices)}, not {dev}; "
                                   f"on {dev} use one of: {', '.join(others)}")
    return p


def onnx_dir() -> Path:
    """Where exported ONNX graphs are cached: `cache_dir()/onnx`."""
    from .paths import cache_dir
    return cache_dir() / "onnx"


def apply_precision(model: EmbeddingModel, name: str) -> EmbeddingModel:
    """A copy of `model` that embeds through precision `name` (the fp32 module is shared, not copied).

    >>> fast = apply_precision(load_model("fclip-mini"), "onnx-int8")  # doctest: +SKIP
    >>> fast.precision, fast.fingerprint.endswith("+onnx-int8")         # doctest: +SKIP
    ('onnx-int8', True)
    """
    check_precision(name, model.device)
    base = model.base_fingerprint
    if name == "fp32":
        runner = None
    elif name in ("bf16", "fp16"):
        runner = AutocastRunner(model.model, torch.device(model.device).type,
                                torch.bfloat16 if name == "bf16" else torch.float16)
    elif name == "openvino":
        runner = OpenVinoRunner(model, base)
    else:
        runner = OnnxRunner(model, base, quantize=name == "onnx-int8")
    return dataclasses.replace(model, fingerprint=base, precision=name, runner=runner)


def _unit(feats: torch.Tensor, normalize: bool) -> torch.Tensor:
    feats = feats.float()  # (n, dim)
    return F.normalize(feats, dim=-1) if normalize else feats


class AutocastRunner:
    """encode_image / encode_text under `torch.autocast(dtype)`; vectors normalised in float32."""

    def __init__(self, model: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            feats = self.model.encode_image(pixels)  # (n, dim), low precision
        return _unit(feats, normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            feats = self.model.encode_text(tokens)
        return _unit(feats, normalize)


class _Tower(torch.nn.Module):
    """One tower of a CLIP model as a module with one input (for export): unnormalised features."""

    def __init__(self, model: torch.nn.Module, tower: str) -> None:
        super().__init__()
        self.model, self.tower = model, tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tower == "image":
            return self.model.encode_image(x)  # (n, 3, S, S) -> (n, dim)
        return self.model.encode_text(x)  # (n, ctx) -> (n, dim)


def _example_input(emb: EmbeddingModel, tower: str) -> torch.Tensor:
    """A batch of 2 inputs of `tower` for export/tracing (any batch size runs later)."""
    if tower == "image":
        s = emb.image_size
        return torch.zeros(2, 3, s, s)  # (2, 3, S, S)
    return emb.tokenizer(["a red dress", "shoes"]).cpu()  # (2, ctx)


class OnnxRunner:
    """Each tower exported to ONNX on first use (cached on disk), run by ONNX Runtime on the CPU.

    With `quantize`, the image tower's MatMul and Gemm weights are quantised to
    int8 (`onnxruntime.quantization.quantize_dynamic`); convolutions stay float32;
    per-tensor scales; 7-bit range unless the CPU has VNNI/AMX (`full_range=None`:
    `cpu_has_vnni()`), since AVX2 without VNNI saturates 8-bit u8s8 products (worst
    cosine 0.98 -> 0.9995 on ViT-B/32). The two graphs are cached apart and their
    vectors too (`variant` "-full8" in the fingerprint). The text tower stays fp32:
    int8 MiniLM (best setting, per-channel: worst cosine 0.993) cost fclip-mini v1
    1.0 point of held-out KAGL R@10 (benchmarks/bench_throughput.py --recall).
    """

    def __init__(self, model: EmbeddingModel, fingerprint: str, quantize: bool = False,
                 folder: Path | None = None, full_range: bool | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise MissingExtraError("ONNX precisions need onnxruntime and onnx (pip install onnxruntime onnx)") from e
        self.emb, self.fingerprint, self.quantize = model, fingerprint, quantize
        self.full_range = bool(quantize and (cpu_has_vnni() if full_range is None else full_range))
        self.variant = "-full8" if self.full_range else ""  # in the vectors' fingerprint (models._get_fingerprint)
        self.folder = Path(folder) if folder is not None else onnx_dir()
        self.sessions: dict = {}

    def graph_path(self, tower: str) -> Path:
        """The cached graph of `tower`, exported (and quantised) when absent."""
        fp32 = self.folder / f"{self.fingerprint}-{tower}.onnx"
        if not fp32.is_file():
            self._export(tower, fp32)
        if not self.quantize or tower != "image":
            return fp32
        int8 = self.folder / f"{self.fingerprint}-{tower}-int8-{QUANT_VERSION}{self.variant}.onnx"
        if not int8.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            log.info("quantising %s to int8", fp32.name)
            tmp = int8.with_suffix(f".{os.getpid()}.tmp")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logging.getLogger().disabled, was = True, logging.getLogger().disabled  # its pre-processing advice
                try:
                    quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                                     op_types_to_quantize=["MatMul", "Gemm"], reduce_range=not self.full_range)
                finally:
                    logging.getLogger().disabled = was
            os.replace(tmp, int8)
        return int8

    def _export(self, tower: str, path: Path) -> None:
        log.info("exporting the %s tower of %s to %s (once)", tower, self.emb.name, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        # grad mode on: under no_grad/inference_mode nn.MultiheadAttention takes a fused path ONNX cannot export
        with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")
            module = _Tower(copy.deepcopy(self.emb.model).cpu().float().eval(), tower)
            torch.onnx.export(module, (_example_input(self.emb, tower),), str(tmp), input_names=["x"], output_names=["feats"],
                              dynamic_axes={"x": {0: "batch"}, "feats": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        os.replace(tmp, path)

    def session(self, tower: str):
        if tower not in self.sessions:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sessions[tower] = ort.InferenceSession(str(self.graph_path(tower)), opts,
                                                        providers=["CPUExecutionProvider"])
        return self.sessions[tower]

    def _run(self, tower: str, x: torch.Tensor, normalize: bool) -> torch.Tensor:
        sess = self.session(tower)
        arr = np.ascontiguousarray(x.detach().cpu().numpy())
        want = sess.get_inputs()[0].type  # 'tensor(float)' / 'tensor(int64)'
        arr = arr.astype(np.float32 if "float" in want else np.int64, copy=False)
        feats = sess.run(None, {sess.get_inputs()[0].name: arr})[0]  # (n, dim)
        return _unit(torch.from_numpy(feats), normalize)

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._run("image", pixels, normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._run("text", tokens, normalize)


def openvino_dir() -> Path:
    """Where converted OpenVINO models are cached: `cache_dir()/openvino`."""
    from .paths import cache_dir
    return cache_dir() / "openvino"


class OpenVinoRunner:
    """Each tower converted to OpenVINO on first use (cached on disk as IR), run by OpenVINO on the CPU.

    Compiled with a LATENCY hint (one stream using every torch thread: the embedder sends one
    batch at a time, so THROUGHPUT's extra streams sit idle) and f32 inference precision (CPUs
    with bf16/AMX would otherwise run bf16 silently). Batch axis dynamic.

    >>> r = OpenVinoRunner(load_model("fclip-mini"), "abc")     # doctest: +SKIP
    >>> r.encode_image(torch.zeros(5, 3, 224, 224)).shape        # doctest: +SKIP
    torch.Size([5, 384])
    """

    def __init__(self, model: EmbeddingModel, fingerprint: str, folder: Path | None = None) -> None:
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            raise MissingExtraError("Precision 'openvino' needs OpenVINO: pip install 'fclip-workbench[fast]' "
                                    "(or pip install openvino)") from e
        self.emb, self.fingerprint = model, fingerprint
        self.folder = Path(folder) if folder is not None else openvino_dir()
        self.compiled: dict = {}

    def model_path(self, tower: str) -> Path:
        """The cached IR (.xml, its weights in the .bin beside it) of `tower`, converted when absent."""
        xml = self.folder / f"{self.fingerprint}-{tower}-{OV_VERSION}.xml"
        if not xml.is_file():
            self._convert(tower, xml)
        return xml

    def _convert(self, tower: str, xml: Path) -> None:
        import openvino as ov

        log.info("converting the %s tower of %s to OpenVINO at %s (once)", tower, self.emb.name, xml)
        xml.parent.mkdir(parents=True, exist_ok=True)
        example = _example_input(self.emb, tower)  # (2, 3, S, S) or (2, ctx)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            module = _Tower(copy.deepcopy(self.emb.model).cpu().float().eval(), tower)
            # check_trace off: the checker fails on open_clip's renamed (mangled) classes, not on the graph
            traced = torch.jit.trace(module, (example,), check_trace=False)
            ov_model = ov.convert_model(traced, example_input=example)
        ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([-1, *example.shape[1:]])})  # any batch size
        tmp = xml.with_suffix(f".{os.getpid()}.tmp.xml")
        ov.save_model(ov_model, str(tmp), compress_to_fp16=False)  # weights stay float32
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))  # the .bin first: an .xml means both exist
        os.replace(tmp, xml)

    def compiled_model(self, tower: str):
        if tower not in self.compiled:
            import openvino as ov

            self.compiled[tower] = ov.Core().compile_model(str(self.model_path(tower)), "CPU", {
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                "INFERENCE_PRECISION_HINT": "f32"})
        return self.compiled[tower]

    def _run(self, tower: str, x: torch.Tensor, normalize: bool) -> torch.Tensor:
        cm = self.compiled_model(tower)
        arr = np.ascontiguousarray(x.detach().cpu().numpy())
        arr = arr.astype(np.float32 if tower == "image" else np.int64, copy=False)
        feats = cm(arr)[cm.outputs[0]]  # (n, dim)
        return _unit(torch.from_numpy(np.array(feats, copy=True)), normalize)

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._run("image", pixels, normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._run("text", tokens, normalize)
