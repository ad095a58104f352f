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
- `bf16`: on a GPU, autocast to bfloat16; on a CPU with bf16 instructions (AMX-BF16 or
  AVX512-BF16), a bfloat16 copy of the model fed bfloat16 pixels (`Bf16Runner`, fingerprint
  `+bf16-native`; ViT-B/32 on an AVX512-BF16 EPYC: 1.8x fp32 at worst cosine 0.99994). Refused
  in one line on CPUs without them, where it would run slower than fp32;
- `fp16`: autocast to float16 (for GPUs; runs on a CPU too, slowly);
- `fast`: whichever of these measures fastest on this machine at worst cosine >= 0.999 (configurable),
  measured once per CPU and weights (precision_fast.py).

ONNX graphs are exported once per weights and tower into `cache_dir()/onnx`
(named by the fp32 fingerprint), then reused; the batch axis is dynamic. OpenVINO
models likewise, into `cache_dir()/openvino` (IR `.xml` + `.bin`, versioned names).
Each graph is recorded with the `EmbeddingSpace` it was exported in and checked before
use (graph_cache.py: damaged or foreign graphs are exported again, a read-only cache is
used as it is); the runners follow the weights (fine-tuned in place: new graphs), so
a fast path never serves vectors of old weights. `$FCLIP_INT8_RANGE` (7, 8, auto)
forces the int8 range that `onnx-int8` otherwise picks by CPU (`int8_full_range`).

Example:
    >>> m = load_model("fclip-mini", precision="onnx-int8")      # doctest: +SKIP
    >>> m.fingerprint.endswith("+onnx-int8")                      # doctest: +SKIP
    True
    >>> check_precision("int4")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: Unknown precision 'int4'. Valid precisions: fp32, onnx, onnx-int8, openvino, bf16, fp16, fast
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from fclip_workbench.errors import CacheError, InvalidArgumentError, MissingExtraError
from fclip_workbench.embedding.graph_cache import GraphCache
from fclip_workbench.embedding.space import EmbeddingSpace

if TYPE_CHECKING:
    from fclip_workbench.embedding.models import EmbeddingModel

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
    Precision("bf16", ("cpu", "cuda"), "bfloat16: autocast on GPUs, a bfloat16 model on CPUs with AMX-BF16/AVX512-BF16"),
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
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPU flags with bfloat16 dot products (either one runs `bf16` fast)
SPEED_FLAGS = ("avx2", "avx512f") + INT8_FULL_RANGE_FLAGS + BF16_FLAGS  # the flags that decide which path is fast
INT8_RANGE_ENV = "FCLIP_INT8_RANGE"  # "auto" (unset: the CPU decides), "7" or "8": the onnx-int8 weight range
_EXPORT_LOCK = threading.RLock()  # torch.onnx.export / tracing keep global state: one export at a time per process


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty when unknown, e.g. on macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    return {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[-1].split()}


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bfloat16 dot products (AMX-BF16 or AVX512-BF16), so `bf16` runs fast on it.

    >>> cpu_has_bf16("flags\t: fpu avx2 avx512_bf16"), cpu_has_bf16("flags\t: fpu avx2")
    (True, False)
    """
    return bool(cpu_flags(cpuinfo) & set(BF16_FLAGS))


def cpu_has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies int8 with VNNI/AMX (Linux /proc/cpuinfo flags; False when unknown).

    There `onnx-int8` uses the full 8-bit range (ViT-B/32 on a Xeon with AMX, 2 threads: 3.26-3.37x PyTorch
    fp32 at worst cosine 0.9998; the 7-bit range 2.92-3.60x at 0.9995); without it, the 7-bit range (the full
    range saturates AVX2's u8s8 products: worst cosine 0.9946 on ViT-B/32).

    >>> cpu_has_vnni("flags\t: fpu avx2 avx512_vnni"), cpu_has_vnni("flags\t: fpu avx2")
    (True, False)
    """
    return bool(cpu_flags(cpuinfo) & set(INT8_FULL_RANGE_FLAGS))


def int8_full_range(cpuinfo: str | None = None) -> bool:
    """Whether `onnx-int8` quantises to the full 8-bit range (True) or to 7 bits (False).

    `$FCLIP_INT8_RANGE` decides when set to "8" or "7" (e.g. machines sharing a cache that should share
    vectors too); unset or "auto", the CPU does (`cpu_has_vnni`). Another value is one line.

    >>> int8_full_range("flags\t: avx2 amx_int8") == (os.environ.get(INT8_RANGE_ENV, "auto") in ("auto", "8"))
    True
    """
    value = os.environ.get(INT8_RANGE_ENV, "").strip().lower()
    if value in ("", "auto"):
        return cpu_has_vnni(cpuinfo)
    if value in ("7", "8"):
        return value == "8"
    raise InvalidArgumentError(f"{INT8_RANGE_ENV}={value!r}: use 7 (7-bit int8 range), 8 (full 8-bit range) "
                               f"or auto (8 on CPUs with VNNI/AMX)")


FAST = Precision("fast", ("cpu", "cuda", "mps"),
                 "the fastest path measured faithful on this machine (precision_fast.py)")


def check_precision(name: str, device: str | torch.device | None = None) -> Precision:
    """The `Precision` called `name`; one-line `InvalidArgumentError` for an unknown name or device."""
    if name == FAST.name:
        return FAST
    p = PRECISIONS.get(name)
    if p is None:
        raise InvalidArgumentError(f"Unknown precision {name!r}. Valid precisions: {', '.join(PRECISIONS)}, "
                                   f"{FAST.name}")
    dev = torch.device(device).type if device is not None else None
    if dev is not None and dev not in p.devices:
        others = [q.name for q in PRECISIONS.values() if dev in q.devices]
        raise InvalidArgumentError(f"Precision {name!r} runs on {'/'.join(p.devices)}, not {dev}; "
                                   f"on {dev} use one of: {', '.join(others)}")
    if name == "bf16" and dev == "cpu" and not cpu_has_bf16():
        raise InvalidArgumentError(
            f"Precision 'bf16' on a CPU needs bfloat16 instructions ({' or '.join(BF16_FLAGS)} in /proc/cpuinfo), "
            f"which this CPU lacks: there it runs slower than fp32. Use onnx-int8 (the fastest here, worst cosine "
            f"about 0.99) or fp32 (exact)")
    return p


def onnx_dir() -> Path:
    """Where exported ONNX graphs are cached: `cache_dir()/onnx`."""
    from fclip_workbench.paths import cache_dir
    return cache_dir() / "onnx"


def apply_precision(model: EmbeddingModel, name: str) -> EmbeddingModel:
    """A copy of `model` that embeds through precision `name` (the fp32 module is shared, not copied).

    >>> fast = apply_precision(load_model("fclip-mini"), "onnx-int8")  # doctest: +SKIP
    >>> fast.precision, fast.fingerprint.endswith("+onnx-int8")         # doctest: +SKIP
    ('onnx-int8', True)
    """
    check_precision(name, model.device)
    base = model.base_fingerprint
    runner: AutocastRunner | Bf16Runner | OpenVinoRunner | OnnxRunner | None
    if name == "fp32":
        runner = None
    elif name == "bf16" and torch.device(model.device).type == "cpu":
        runner = Bf16Runner(model)
    elif name in ("bf16", "fp16"):
        runner = AutocastRunner(model.model, torch.device(model.device).type,
                                torch.bfloat16 if name == "bf16" else torch.float16)
    elif name == "openvino":
        runner = OpenVinoRunner(model)
    else:
        runner = OnnxRunner(model, quantize=name == "onnx-int8")
    return dataclasses.replace(model, fingerprint=base, precision=name, runner=runner)


def _unit(feats: torch.Tensor, normalize: bool) -> torch.Tensor:
    feats = feats.float()  # (n, dim)
    return F.normalize(feats, dim=-1) if normalize else feats


class AutocastRunner:
    """encode_image / encode_text under `torch.autocast(dtype)`; vectors normalised in float32."""

    def __init__(self, model: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
        self.model: Any = model  # a CLIP module: encode_image/encode_text, untyped on nn.Module
        self.device_type, self.dtype = device_type, dtype

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            feats = self.model.encode_image(pixels)  # (n, dim), low precision
        return _unit(feats, normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            feats = self.model.encode_text(tokens)
        return _unit(feats, normalize)


class Bf16Runner:
    """encode_image / encode_text through a bfloat16 copy of the model (CPUs with AMX-BF16/AVX512-BF16).

    Weights and pixels are bfloat16 (token ids stay integers); vectors come back float32, L2-normalised.
    Autocast is slower on CPUs (0.75x fp32 on AMX): the whole model is converted instead. The copy
    follows the weights: when `model.base_fingerprint` changed (fine-tuning in place), it is made again
    before the next batch, so vectors of old weights are never served under the new fingerprint.
    """

    variant = "-native"  # fingerprint "+bf16-native": not the GPU's autocast vectors

    def __init__(self, emb: EmbeddingModel) -> None:
        self.emb = emb
        self._lock = threading.Lock()
        self._copy: Any = None  # the bfloat16 CLIP module
        self._made_for: str | None = None  # base fingerprint the copy was made from

    def _module(self) -> Any:
        fp = self.emb.base_fingerprint
        with self._lock:
            if self._copy is None or self._made_for != fp:
                self._copy = copy.deepcopy(self.emb.model).to(torch.bfloat16).eval()
                self._made_for = fp
            return self._copy

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return _unit(self._module().encode_image(pixels.to(torch.bfloat16)), normalize)  # (n, dim)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return _unit(self._module().encode_text(tokens), normalize)  # (n, dim)


class _Tower(torch.nn.Module):
    """One tower of a CLIP model as a module with one input (for export): unnormalised features."""

    def __init__(self, model: torch.nn.Module, tower: str) -> None:
        super().__init__()
        self.model: Any = model  # a CLIP module: encode_image/encode_text, untyped on nn.Module
        self.tower = tower

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


def _dim(emb: EmbeddingModel) -> int:
    """Width of `emb`'s vectors, from its config or else from the fp32 module itself (not a runner)."""
    dim = emb.model_cfg.get("embed_dim") if isinstance(emb.model_cfg, dict) else None
    if not dim:
        clip: Any = emb.model  # encode_text: untyped on nn.Module
        with torch.inference_mode():
            dim = clip.encode_text(emb.tokenizer(["x"]).to(emb.device)).shape[-1]
    return int(dim)


class _ExportedRunner:
    """What ONNX and OpenVINO runners share: graphs follow the weights, and are checked before use.

    Before every batch the runner reads `model.base_fingerprint` (cheap while the weights are
    unchanged: a walk over the parameters' version counters and storage pointers, models.py); when
    it changed (fine-tuning in place, `load_state_dict`), the loaded graphs are dropped and those of
    the new weights are found or exported, so vectors of old weights are never served under the new
    fingerprint. Every graph is recorded with its `EmbeddingSpace` (graph_cache.py).
    """

    kind = ""

    def __init__(self, model: EmbeddingModel, folder: Path) -> None:
        self.emb = model
        self.graphs = GraphCache(folder, self.kind)
        self.folder = self.graphs.folder
        self.fingerprint = model.base_fingerprint  # of the weights the loaded graphs were made from
        self.loaded: dict = {}  # tower -> ONNX Runtime session / OpenVINO compiled model
        self._lock = threading.RLock()

    def _follow_weights(self) -> str:
        now = self.emb.base_fingerprint
        if now != self.fingerprint:
            log.info("weights of %s changed (%s -> %s): its %s graphs are replaced", self.emb.name,
                     self.fingerprint[:12], now[:12], self.kind)
            self.fingerprint, self.loaded = now, {}
        return now

    def _space(self, precision: str) -> EmbeddingSpace:
        from fclip_workbench.embedding.images import image_pipeline_salt  # recorded, not compared: a graph starts from pixels
        return EmbeddingSpace(weights=self.fingerprint, precision=precision,
                              image_pipeline=image_pipeline_salt(self.emb),
                              dim=_dim(self.emb), model=self.emb.name)

    def _loaded(self, tower: str):
        with self._lock:
            self._follow_weights()
            if tower not in self.loaded:
                self.loaded[tower] = self._load(tower)
            return self.loaded[tower]

    def _load(self, tower: str):
        raise NotImplementedError

    def _run(self, tower: str, x: torch.Tensor, normalize: bool) -> torch.Tensor:
        raise NotImplementedError

    def _module(self, tower: str) -> torch.nn.Module:
        """A float32 CPU copy of `tower` as it is now (exports must not touch the live model)."""
        return _Tower(copy.deepcopy(self.emb.model).cpu().float().eval(), tower)

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._run("image", pixels, normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self._run("text", tokens, normalize)


class OnnxRunner(_ExportedRunner):
    """Each tower exported to ONNX on first use (cached on disk), run by ONNX Runtime on the CPU.

    With `quantize`, the image tower's MatMul and Gemm weights are quantised to
    int8 (`onnxruntime.quantization.quantize_dynamic`); convolutions stay float32;
    per-tensor scales; 7-bit range unless the CPU has VNNI/AMX (`full_range=None`:
    `int8_full_range()`), since AVX2 without VNNI saturates 8-bit u8s8 products (worst
    cosine 0.98 -> 0.9995 on ViT-B/32). The two graphs are cached apart and their
    vectors too (`variant` "-full8" in the fingerprint). The text tower stays fp32:
    int8 MiniLM (best setting, per-channel: worst cosine 0.993) cost fclip-mini v1
    1.0 point of held-out KAGL R@10 (benchmarks/bench_throughput.py --recall).

    >>> r = OnnxRunner(load_model("fclip-mini"), quantize=True, full_range=False)  # doctest: +SKIP
    >>> r.graph_path("image").name.endswith("-image-int8-q1.onnx")                  # doctest: +SKIP
    True
    """

    kind = "ONNX"

    def __init__(self, model: EmbeddingModel, quantize: bool = False, folder: Path | None = None,
                 full_range: bool | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise MissingExtraError("ONNX precisions need onnxruntime and onnx (pip install onnxruntime onnx)") from e
        self.quantize = quantize
        self.full_range = bool(quantize and (int8_full_range() if full_range is None else full_range))
        self.variant = "-full8" if self.full_range else ""  # in the vectors' fingerprint (models._get_fingerprint)
        super().__init__(model, Path(folder) if folder is not None else onnx_dir())

    @property
    def sessions(self) -> dict:
        return self.loaded

    def graph_path(self, tower: str) -> Path:
        """The checked graph of `tower` for the weights as they are now; exported (and quantised) when absent."""
        with self._lock:
            fp = self._follow_weights()
            fp32 = self.graphs.path(f"{fp}-{tower}.onnx", self._space("onnx"), tower,
                                    lambda tmp: self._export(tower, tmp))
            if not self.quantize or tower != "image":
                return fp32
            return self.graphs.path(f"{fp}-{tower}-int8-{QUANT_VERSION}{self.variant}.onnx",
                                    self._space(f"onnx-int8{self.variant}"), tower,
                                    lambda tmp: self._quantise(fp32, tmp))

    def _export(self, tower: str, tmp: Path) -> list[Path]:
        log.info("exporting the %s tower of %s to %s (once)", tower, self.emb.name, tmp.parent)
        # grad mode on: under no_grad/inference_mode nn.MultiheadAttention takes a fused path ONNX cannot export
        with _EXPORT_LOCK, warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(self._module(tower), (_example_input(self.emb, tower),), str(tmp), input_names=["x"],
                              output_names=["feats"], dynamic_axes={"x": {0: "batch"}, "feats": {0: "batch"}},
                              opset_version=17, dynamo=False)
        return [tmp]

    def _quantise(self, fp32: Path, tmp: Path) -> list[Path]:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        log.info("quantising %s to int8", fp32.name)
        with _EXPORT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger().disabled, was = True, logging.getLogger().disabled  # its pre-processing advice
            try:
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm"], reduce_range=not self.full_range)
            finally:
                logging.getLogger().disabled = was
        return [tmp]

    def session(self, tower: str):
        return self._loaded(tower)

    def _load(self, tower: str):
        import onnxruntime as ort

        path = self.graph_path(tower)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT's own exception types; the graph passed its checks, so rare
            raise CacheError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0] if str(e) else e!r}; "
                             f"delete it to export it again") from e

    def _run(self, tower: str, x: torch.Tensor, normalize: bool) -> torch.Tensor:
        sess = self.session(tower)
        arr = np.ascontiguousarray(x.detach().cpu().numpy())
        want = sess.get_inputs()[0].type  # 'tensor(float)' / 'tensor(int64)'
        arr = arr.astype(np.float32 if "float" in want else np.int64, copy=False)
        feats = sess.run(None, {sess.get_inputs()[0].name: arr})[0]  # (n, dim)
        return _unit(torch.from_numpy(feats), normalize)


def openvino_dir() -> Path:
    """Where converted OpenVINO models are cached: `cache_dir()/openvino`."""
    from fclip_workbench.paths import cache_dir
    return cache_dir() / "openvino"


class OpenVinoRunner(_ExportedRunner):
    """Each tower converted to OpenVINO on first use (cached on disk as IR), run by OpenVINO on the CPU.

    Compiled with a LATENCY hint (one stream using every torch thread: the embedder sends one
    batch at a time, so THROUGHPUT's extra streams sit idle) and f32 inference precision (CPUs
    with bf16/AMX would otherwise run bf16 silently). Batch axis dynamic.

    >>> r = OpenVinoRunner(load_model("fclip-mini"))             # doctest: +SKIP
    >>> r.encode_image(torch.zeros(5, 3, 224, 224)).shape        # doctest: +SKIP
    torch.Size([5, 384])
    """

    kind = "OpenVINO"
    variant = ""

    def __init__(self, model: EmbeddingModel, folder: Path | None = None) -> None:
        try:
            import openvino  # noqa: F401
        except ImportError as e:
            raise MissingExtraError("Precision 'openvino' needs OpenVINO: pip install 'fclip-workbench[fast]' "
                                    "(or pip install openvino)") from e
        super().__init__(model, Path(folder) if folder is not None else openvino_dir())

    @property
    def compiled(self) -> dict:
        return self.loaded

    def model_path(self, tower: str) -> Path:
        """The checked IR (.xml, its weights in the .bin beside it) of `tower` for the weights as they are now."""
        with self._lock:
            fp = self._follow_weights()
            return self.graphs.path(f"{fp}-{tower}-{OV_VERSION}.xml", self._space("openvino"), tower,
                                    lambda tmp: self._convert(tower, tmp))

    def _convert(self, tower: str, tmp: Path) -> list[Path]:
        import openvino as ov

        log.info("converting the %s tower of %s to OpenVINO in %s (once)", tower, self.emb.name, tmp.parent)
        example = _example_input(self.emb, tower)  # (2, 3, S, S) or (2, ctx)
        with _EXPORT_LOCK, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # check_trace off: the checker fails on open_clip's renamed (mangled) classes, not on the graph
            traced = torch.jit.trace(self._module(tower), (example,), check_trace=False)
            ov_model = ov.convert_model(traced, example_input=example)
            ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([-1, *example.shape[1:]])})  # any batch size
            ov.save_model(ov_model, str(tmp), compress_to_fp16=False)  # weights stay float32
        return [tmp.with_suffix(".bin"), tmp]  # the .bin first: an .xml means both exist

    def compiled_model(self, tower: str):
        return self._loaded(tower)

    def _load(self, tower: str):
        import openvino as ov

        path = self.model_path(tower)
        try:
            return ov.Core().compile_model(str(path), "CPU", {
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                "INFERENCE_PRECISION_HINT": "f32"})
        except Exception as e:  # noqa: BLE001 - OpenVINO's own exception types; the IR passed its checks
            raise CacheError(f"OpenVINO cannot load {path}: {str(e).splitlines()[0] if str(e) else e!r}; "
                             f"delete it to convert it again") from e

    def _run(self, tower: str, x: torch.Tensor, normalize: bool) -> torch.Tensor:
        cm = self.compiled_model(tower)
        arr = np.ascontiguousarray(x.detach().cpu().numpy())
        arr = arr.astype(np.float32 if tower == "image" else np.int64, copy=False)
        feats = cm(arr)[cm.outputs[0]]  # (n, dim)
        return _unit(torch.from_numpy(np.array(feats, copy=True)), normalize)
