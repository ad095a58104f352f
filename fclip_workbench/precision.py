"""Inference precisions: faster ways to run the same model, each a named, cached path.

`fp32` is the exact reference (the model as trained, in PyTorch). The others
trade a little accuracy for speed, and their vectors are cached under their own
key (`EmbeddingModel.fingerprint` gains a `+NAME` suffix), so vectors of two
paths never mix in the store:

- `onnx`: the same fp32 graph run by ONNX Runtime (CPU);
- `onnx-int8`: ONNX Runtime with the weights of the image tower's MatMul/Gemm
  quantised to int8 (dynamic: activations quantised per batch); the text tower
  runs the fp32 graph (int8 MiniLM cost fclip-mini 1 point of R@10) (CPU);
- `bf16`, `fp16`: autocast to bfloat16 / float16 (for GPUs; run on a CPU too,
  slowly, unless it has bf16/fp16 instructions).

ONNX graphs are exported once per model and tower into `cache_dir()/onnx`
(named by the fp32 fingerprint), then reused; the batch axis is dynamic.

Example:
    >>> m = load_model("fclip-mini", precision="onnx-int8")      # doctest: +SKIP
    >>> m.fingerprint.endswith("+onnx-int8")                      # doctest: +SKIP
    True
    >>> check_precision("int4")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: Unknown precision 'int4'. Valid precisions: fp32, onnx, onnx-int8, bf16, fp16
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
    Precision("bf16", ("cpu", "cuda"), "autocast to bfloat16 (GPUs; slow on CPUs without bf16 instructions)"),
    Precision("fp16", ("cpu", "cuda"), "autocast to float16 (GPUs; slow on most CPUs)"),
)}
CPU_FAST = ("onnx", "onnx-int8")  # the CPU paths the throughput benchmark compares to fp32
# Measured and dropped (benchmarks/bench_throughput.py, README "Fast inference"): PyTorch dynamic int8
# (torch.ao, deprecated) was slower than onnx-int8 at the same accuracy and breaks ResNet attention pooling;
# ONNX Runtime's transformer optimiser fused no attention in open_clip's graph and gave no speed.
GPU_FAST = ("bf16", "fp16")
QUANT_VERSION = "q1"  # in the names of cached int8 graphs: bump when the quantisation settings change


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


class OnnxRunner:
    """Each tower exported to ONNX on first use (cached on disk), run by ONNX Runtime on the CPU.

    With `quantize`, the image tower's MatMul and Gemm weights are quantised to
    int8 (`onnxruntime.quantization.quantize_dynamic`); convolutions stay float32;
    per-tensor scales, 7-bit range (AVX2 without VNNI saturates 8-bit u8s8
    products: worst cosine 0.98 -> 0.9995 on ViT-B/32). The text tower stays fp32:
    int8 MiniLM (best setting, per-channel: worst cosine 0.993) cost fclip-mini
    1.0 point of held-out KAGL R@10 (benchmarks/bench_throughput.py --recall).
    """

    def __init__(self, model: EmbeddingModel, fingerprint: str, quantize: bool = False,
                 folder: Path | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise MissingExtraError("ONNX precisions need onnxruntime and onnx (pip install onnxruntime onnx)") from e
        self.emb, self.fingerprint, self.quantize = model, fingerprint, quantize
        self.folder = Path(folder) if folder is not None else onnx_dir()
        self.sessions: dict = {}

    def graph_path(self, tower: str) -> Path:
        """The cached graph of `tower`, exported (and quantised) when absent."""
        fp32 = self.folder / f"{self.fingerprint}-{tower}.onnx"
        if not fp32.is_file():
            self._export(tower, fp32)
        if not self.quantize or tower != "image":
            return fp32
        int8 = self.folder / f"{self.fingerprint}-{tower}-int8-{QUANT_VERSION}.onnx"
        if not int8.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            log.info("quantising %s to int8", fp32.name)
            tmp = int8.with_suffix(f".{os.getpid()}.tmp")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logging.getLogger().disabled, was = True, logging.getLogger().disabled  # its pre-processing advice
                try:
                    quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                                     op_types_to_quantize=["MatMul", "Gemm"], reduce_range=True)
                finally:
                    logging.getLogger().disabled = was
            os.replace(tmp, int8)
        return int8

    def _example(self, tower: str) -> torch.Tensor:
        if tower == "image":
            s = self.emb.image_size
            return torch.zeros(2, 3, s, s)  # (2, 3, S, S): any batch size runs later
        return self.emb.tokenizer(["a red dress", "shoes"]).cpu()  # (2, ctx)

    def _export(self, tower: str, path: Path) -> None:
        log.info("exporting the %s tower of %s to %s (once)", tower, self.emb.name, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        # grad mode on: under no_grad/inference_mode nn.MultiheadAttention takes a fused path ONNX cannot export
        with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")
            module = _Tower(copy.deepcopy(self.emb.model).cpu().float().eval(), tower)
            torch.onnx.export(module, (self._example(tower),), str(tmp), input_names=["x"], output_names=["feats"],
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
