"""`fast`: the fastest precision this CPU runs faithfully, measured here once and remembered.

CPUs differ (AVX2 laptops, AVX-512 VNNI servers, AMX Xeons with bfloat16), and so does the fastest
faithful path. `choose_fast` times every precision this machine supports (`supported_precisions`) on a
fixed batch of synthetic product-like images and a few captions, against fp32 in the same run, and
picks the fastest whose worst cosine to fp32 is at least `min_cosine` (0.999 unless given). A path must
beat fp32 by `MARGIN` to be picked, so `fast` is never slower than fp32 by measurement noise. The
choice is kept in `cache_dir()/fast/` per CPU (model name, flags, threads) and per weights, so the
measurement runs once; its reason is printed once per process ("fast -> onnx-int8: ...").

Example:
    >>> m = load_model("fclip-mini", precision="fast")                 # doctest: +SKIP
    fast -> onnx-int8: 3.9x fp32 on this CPU (AMD EPYC, avx512_vnni), worst cosine 0.9998 >= 0.999
    >>> m.precision                                                    # doctest: +SKIP
    'onnx-int8'
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fclip_workbench.embedding import precision as _precision
from fclip_workbench.embedding.precision import BF16_FLAGS, INT8_FULL_RANGE_FLAGS, PRECISIONS, SPEED_FLAGS, cpu_flags
from fclip_workbench.errors import FclipError, InvalidArgumentError

if TYPE_CHECKING:
    from fclip_workbench.embedding.models import EmbeddingModel

log = logging.getLogger(__name__)

DEFAULT_MIN_COSINE = 0.999
MIN_COSINE_ENV = "FCLIP_FAST_MIN_COSINE"  # the fidelity `fast` keeps when none is given
MARGIN = 1.10  # a path must measure this much faster than fp32 to be chosen over it
FAST_VERSION = 1  # in the remembered choices' names: bump when the measurement changes
_N_IMAGES, _REPEATS = 16, 3
_MIN_ROUND_S = 0.3  # each path runs at least this long per round, so a tiny model's timing is not noise
_CAPTIONS = ["a red summer dress", "navy blue slim jeans", "white leather sneakers", "a black handbag"]
_printed: set[str] = set()  # choices already printed in this process


@dataclass
class FastChoice:
    """What `fast` resolved to on this CPU, and the measurements behind it."""

    precision: str
    reason: str
    min_cosine: float
    measured: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {img_s, ratio, worst_cos}
    cpu: str = ""


def supported_precisions(device: str | torch.device = "cpu") -> list[tuple[str, str]]:
    """(precision, why not) for every precision on `device`: why is "" where it runs here.

    >>> dict(supported_precisions("cpu"))["fp32"]
    ''
    """
    dev = torch.device(device).type
    out = []
    for name, p in PRECISIONS.items():
        why = ""
        if dev not in p.devices:
            why = f"runs on {'/'.join(p.devices)} only"
        elif name == "bf16" and dev == "cpu" and not _precision.cpu_has_bf16():
            why = f"needs {' or '.join(BF16_FLAGS)} (this CPU lacks them)"
        elif name == "openvino" and not _has_module("openvino"):
            why = "needs the extra fclip-workbench[fast] (OpenVINO)"
        elif name in ("onnx", "onnx-int8") and not _has_module("onnxruntime"):
            why = "needs onnxruntime"
        elif name == "fp16" and dev == "cpu":
            why = "slower than fp32 on CPUs (no float16 dot products)"
        out.append((name, why))
    return out


def _has_module(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def min_cosine_from_env(default: float = DEFAULT_MIN_COSINE) -> float:
    """`$FCLIP_FAST_MIN_COSINE` as a number in (0, 1], else `default`; a bad value is one line."""
    raw = os.environ.get(MIN_COSINE_ENV, "").strip()
    if not raw:
        return default
    try:
        return check_min_cosine(float(raw))
    except ValueError:  # not a number: refused in check_min_cosine's words
        return check_min_cosine(raw)


def check_min_cosine(value: object) -> float:
    """`value` as a fidelity in (0, 1], or a one-line InvalidArgumentError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 1:
        raise InvalidArgumentError(f"the fidelity for precision 'fast' must be a worst cosine in (0, 1], "
                                   f"e.g. 0.999; got {value!r}")
    return float(value)


def cpu_name() -> str:
    """This CPU's model name (Linux /proc/cpuinfo), else the platform's name."""
    try:
        return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "") or sys.platform
    except OSError:
        return sys.platform


def cpu_key() -> str:
    """This CPU as the measurements see it: model name, the flags that matter, torch's threads."""
    flags = sorted(cpu_flags() & set(SPEED_FLAGS))
    return f"{cpu_name()}|{','.join(flags)}|threads={torch.get_num_threads()}"


def _cpu_summary() -> str:
    shown = [f for f in SPEED_FLAGS if f in cpu_flags() and f in BF16_FLAGS + INT8_FULL_RANGE_FLAGS]
    return f"{cpu_name()}, {', '.join(shown or ['no VNNI/AMX/BF16'])}"


def _memory_file(model: EmbeddingModel, min_cosine: float) -> Path:
    from fclip_workbench.paths import cache_dir
    key = hashlib.blake2b(f"{FAST_VERSION}|{cpu_key()}|{model.base_fingerprint}|{min_cosine}".encode(),
                          digest_size=10).hexdigest()
    return cache_dir() / "fast" / f"{key}.json"


def _recall(path: Path, min_cosine: float) -> FastChoice | None:
    try:
        data = json.loads(path.read_text())
        choice = FastChoice(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        log.warning("remembered 'fast' choice %s unreadable (%s); measuring again", path, e)
        return None
    runs_here = {n for n, why in supported_precisions("cpu") if not why}
    measured = choice.measured.get(choice.precision) if isinstance(choice.measured, dict) else None
    faithful = (isinstance(measured, dict) and isinstance(measured.get("worst_cos"), (int, float))
                and not isinstance(choice.min_cosine, bool) and isinstance(choice.min_cosine, (int, float))
                and float(choice.min_cosine) == min_cosine and measured["worst_cos"] >= min_cosine)
    if choice.precision not in runs_here or not faithful:
        log.warning("remembered 'fast' choice %s (%r) is not a path measured faithful on this CPU; measuring again",
                    path, choice.precision)
        return None
    return choice


def _remember(path: Path, choice: FastChoice) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(choice), indent=1))
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache: the choice holds for this process only
        log.warning("cannot remember the 'fast' choice in %s (%s); it is measured again next time", path.parent, e)


def _probe_images(size: int, n: int = _N_IMAGES) -> list:
    """`n` fixed product-like pictures (a coloured garment shape on a light background), same on every machine."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(img)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = (int(v) for v in rng.integers(0, size // 3, 2))
        x1, y1 = (int(v) for v in rng.integers(2 * size // 3, size, 2))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
        out.append(img)
    return out


def measure_precisions(model: EmbeddingModel, names: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{precision: {img_s, ratio (to fp32, same run), worst_cos (images and captions)}} on this machine.

    `names`: the precisions to try (default: every one `supported_precisions` allows here); one that
    fails to run is left out, with a warning naming why. The paths are timed in turns (each round runs
    every path once; the fastest round counts), so a change of load on a shared machine hits them alike.
    """
    device = torch.device(model.device).type
    names = names or [n for n, why in supported_precisions(device) if not why and n != "fp32"]
    base = model.with_precision("fp32")
    pixels = torch.stack([base.preprocess(im) for im in _probe_images(max(base.image_size, 64))])  # (n, 3, S, S)
    paths: dict[str, EmbeddingModel] = {"fp32": base}
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ["fp32"] + [n for n in names if n != "fp32"]:
        try:
            path = paths.get(name) or base.with_precision(name)
            path.encode_images(pixels[:2])  # warm up: exports or loads graphs, makes copies
            vectors[name] = (path.encode_images(pixels), path.encode_texts(_CAPTIONS))  # (n, dim), (c, dim)
            paths[name] = path
        except (FclipError, RuntimeError, ImportError, OSError) as e:
            log.warning("precision %s left out of 'fast': %s", name, str(e).splitlines()[0] if str(e) else e)
    best = {name: float("inf") for name in paths}  # seconds per batch, the fastest round
    for _ in range(_REPEATS):
        for name, path in paths.items():
            calls, t0 = 0, time.perf_counter()
            while calls == 0 or time.perf_counter() - t0 < _MIN_ROUND_S:  # small models: several calls a round
                path.encode_images(pixels)
                calls += 1
            best[name] = min(best[name], (time.perf_counter() - t0) / calls)
    ref_img, ref_txt = vectors["fp32"]
    out = {}
    for name in paths:
        img, txt = vectors[name]
        worst = float(min((img * ref_img).sum(1).min(), (txt * ref_txt).sum(1).min()))
        out[name] = {"img_s": len(pixels) / best[name], "ratio": best["fp32"] / best[name], "worst_cos": worst}
    return out


def pick(measured: dict[str, dict[str, float]], min_cosine: float) -> tuple[str, str]:
    """(precision, reason): the fastest faithful path of `measured`, fp32 unless one beats it by MARGIN.

    >>> pick({"fp32": {"img_s": 10, "ratio": 1, "worst_cos": 1},
    ...       "onnx-int8": {"img_s": 40, "ratio": 4, "worst_cos": 0.9998},
    ...       "bf16": {"img_s": 27, "ratio": 2.7, "worst_cos": 0.9999}}, 0.999)[0]
    'onnx-int8'
    >>> pick({"fp32": {"img_s": 10, "ratio": 1, "worst_cos": 1},
    ...       "onnx-int8": {"img_s": 40, "ratio": 4, "worst_cos": 0.99}}, 0.999)
    ('fp32', 'no faster path keeps worst cosine >= 0.999 here (onnx-int8 4.0x at 0.9900)')
    """
    faithful = {n: m for n, m in measured.items() if n != "fp32" and m["worst_cos"] >= min_cosine}
    best = max(faithful, key=lambda n: faithful[n]["ratio"], default=None)
    if best is not None and faithful[best]["ratio"] >= MARGIN:
        m = faithful[best]
        return best, f"{m['ratio']:.1f}x fp32 on this CPU, worst cosine {m['worst_cos']:.4f} >= {min_cosine:g}"
    others = ", ".join(f"{n} {m['ratio']:.1f}x at {m['worst_cos']:.4f}" for n, m in measured.items() if n != "fp32")
    if best is not None:
        return "fp32", f"no faithful path beats fp32 by {MARGIN:.2f}x here ({others})"
    return "fp32", f"no faster path keeps worst cosine >= {min_cosine:g} here ({others or 'none other runs'})"


def choose_fast(model: EmbeddingModel, min_cosine: float | None = None, remember: bool = True) -> FastChoice:
    """What `fast` means for `model` on this machine: remembered, else measured (`measure_precisions`).

    On a CUDA GPU it is `bf16` (autocast) without measuring; on other devices fp32. The choice is printed once per process.
    """
    min_cosine = min_cosine_from_env() if min_cosine is None else check_min_cosine(min_cosine)
    device = torch.device(model.device).type
    choice: FastChoice | None
    if device == "cuda":
        choice = FastChoice("bf16", "bfloat16 autocast on the GPU", min_cosine)
    elif device != "cpu":
        choice = FastChoice("fp32", f"no faster path is offered on {device}", min_cosine)
    else:
        path = _memory_file(model, min_cosine)
        choice = _recall(path, min_cosine) if remember else None
        if choice is None:
            print(f"fast: measuring the precisions of {model.name} on this CPU once (remembered in {path.parent})",
                  file=sys.stderr)
            measured = measure_precisions(model)
            name, reason = pick(measured, min_cosine)
            choice = FastChoice(name, reason, min_cosine, measured, cpu_key())
            if remember:
                _remember(path, choice)
    shown = f"fast -> {choice.precision}: {choice.reason} ({_cpu_summary()})"
    if shown not in _printed:
        _printed.add(shown)
        print(shown, file=sys.stderr)
    return choice


def apply_fast(model: EmbeddingModel, min_cosine: float | None = None) -> EmbeddingModel:
    """`model` through the precision `choose_fast` picks (its fingerprint names that precision)."""
    return model.with_precision(choose_fast(model, min_cosine).precision)
