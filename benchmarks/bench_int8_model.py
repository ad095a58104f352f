"""Benchmark: the ViT-B/32 image tower alone (open_clip, random weights), PyTorch fp32 against ONNX Runtime
fp32 and dynamic int8 with `fclip_workbench.embedding.precision`'s settings (MatMul/Gemm weights QInt8, 7-bit range
`ort-int8-rr`, full 8-bit range `ort-int8`), batch 32, at each thread count given.

Prints the CPU and its int8 flags (VNNI, AMX) and, per path, img/s, the ratio to PyTorch fp32 (the mean of
a run before and after the others) and the worst cosine to PyTorch fp32. Needs only torch, open_clip, onnx
and onnxruntime, so it also runs on a bare GPU machine's CPU (where the reference package cannot).

Usage:
    python benchmarks/bench_int8_model.py 2 16
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Callable

import numpy as np
import torch

BATCH = 32
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def cpu_line() -> str:
    """'cpu: NAME; cores N; flags [...]' from /proc/cpuinfo."""
    info = open("/proc/cpuinfo").read()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"cpu: {name}; cores {os.cpu_count()}; int8-relevant flags {[f for f in FLAGS if f' {f}' in info]}"


def export_graphs(visual: torch.nn.Module, folder: str) -> dict[str, str]:
    """ONNX fp32 graph of the tower plus its two int8 versions: name -> path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = os.path.join(folder, "visual.onnx")
    torch.onnx.export(visual, (torch.zeros(2, 3, 224, 224),), fp32, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17, dynamo=False)
    paths = {"ort-fp32": fp32}
    for reduce_range, name in ((True, "ort-int8-rr"), (False, "ort-int8")):
        paths[name] = os.path.join(folder, f"{name}.onnx")
        quantize_dynamic(fp32, paths[name], weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         reduce_range=reduce_range)
    return paths


def rate(run: Callable[[], np.ndarray], repeats: int = 3) -> tuple[float, np.ndarray]:
    """(images per second, last output (BATCH, dim)) after one warm-up call."""
    run()
    t = time.perf_counter()
    for _ in range(repeats):
        out = run()
    return BATCH * repeats / (time.perf_counter() - t), out


def main() -> None:
    import onnxruntime as ort
    import open_clip

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("threads", nargs="*", type=int, default=[2])
    args = ap.parse_args()
    print(f"{cpu_line()}; torch {torch.__version__}; onnxruntime {ort.__version__}", flush=True)
    torch.manual_seed(0)
    visual = open_clip.create_model("ViT-B-32").eval().visual
    x = torch.randn(BATCH, 3, 224, 224)  # (32, 3, 224, 224)
    paths = export_graphs(visual, tempfile.mkdtemp())
    for threads in args.threads:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            before, ref = rate(lambda: visual(x).numpy())  # (32, 512)
        results = {}
        for name, path in paths.items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            speed, y = rate(lambda: sess.run(None, {"x": x.numpy()})[0])
            cos = (y * ref).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(ref, axis=1)
            results[name] = (speed, float(cos.min()))
        with torch.inference_mode():
            after, _ = rate(lambda: visual(x).numpy())
        base = (before + after) / 2
        cells = " ".join(f"{n}={v:.2f}img/s({v / base:.2f}x,cos{c:.4f})" for n, (v, c) in results.items())
        print(f"threads={threads} torch-fp32={base:.2f}img/s {cells}", flush=True)


if __name__ == "__main__":
    main()
