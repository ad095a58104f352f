"""Benchmark: image-embedding throughput of each inference precision against the authors' `fashion_clip` package.

CPU (default): in one run, on the same first N (sorted) KAGL images, the
reference package (Hugging Face CLIPModel ViT-B/32, random weights it saves to
--model-dir, batch 32) and each of our precisions on those same weights (loaded
through our converter), through `embed_images` (decoding, preprocessing, model,
store writes), with a fresh store each time. One line per precision:

    precision=NAME img_s=X ratio=Y worst_cos=Z

ratio: to the reference's img/s in this run; worst_cos: lowest cosine of a
vector to our fp32 vector of the same image. The images are embedded in --rounds
slices, each by the reference and then every precision, so a change of the
shared machine's load hits all alike. ONNX export / OpenVINO conversion (once,
cached) is not timed.

--recall: also text-to-image Recall@10 on 1,000 held-out KAGL products and zero-shot
weighted F1 on articleType (`evaluate`, the protocol of `fclip eval`) for every precision,
with each model of --recall-models (default fclip-mini@1).

`fast` (in the default list) is the path `--precision fast` picks on this CPU (measured once,
precision_fast.py); its line shows that it runs no slower than fp32.

--device cuda: fp32 vs bf16 vs fp16 at batch 256 on a GPU, naming the card; needs
only an image folder (--images) and, when --model-dir has no model, builds a
random open_clip ViT-B-32 (no reference venv, no ../shared).

Set-up of the reference (separate virtual environment, see ../shared/bench):
    python -m venv /tmp/ref && /tmp/ref/bin/pip install -r ../shared/bench/ref-requirements.txt
    /tmp/ref/bin/pip install --no-deps fashion-clip==0.2.2
Usage:
    python benchmarks/bench_throughput.py [--n 512] [--recall]
    python benchmarks/bench_throughput.py --device cuda --images DIR [--n 2048]
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def run_reference(args, folder: str | Path, n: int) -> tuple[int, float] | None:
    """(images, seconds) of the authors' package on the .jpg files of `folder` (None: no venv, or it failed)."""
    if not Path(args.ref_python).exists():
        print(f"reference interpreter {args.ref_python} not found: see this file's docstring to set it up")
        return None
    env = {**os.environ, "REF_MODEL_DIR": args.model_dir}
    r = subprocess.run([args.ref_python, str(SHARED / "bench" / "ref_fashion_clip.py"), str(folder), str(n),
                        str(args.batch)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print("reference failed:", r.stderr[-1500:])
        return None
    line = r.stdout.strip().splitlines()[-1]
    print(f"  {line}", flush=True)
    m = re.search(r": (\d+) images, .*?, ([\d.]+) s, ", line)
    return int(m.group(1)), float(m.group(2))


def catalog_of(folder: str, n: int):
    """The first n .jpg files of `folder` in sorted order (what the reference script embeds)."""
    import pandas as pd

    from fclip_workbench.data.catalog import Catalog

    names = sorted(p.name for p in Path(folder).glob("*.jpg"))[:n]
    if not names:
        raise SystemExit(f"no .jpg images in {folder}")
    table = pd.DataFrame({"item_id": names, "image": names, "text": [Path(x).stem for x in names]})
    return Catalog(table, image_root=folder, name=f"bench-{len(names)}")


def time_precision(model, cat, batch: int, warm_up: bool = True) -> tuple[float, object]:
    """(img/s, EmbeddingResult) of embedding `cat` once (after a warm-up batch), into a fresh store."""
    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.embedding.store import EmbeddingStore

    with tempfile.TemporaryDirectory() as tmp:
        if warm_up:  # and ONNX session start
            embed_images(model, cat.subset(range(min(batch, len(cat)))), EmbeddingStore(Path(tmp) / "w.sqlite"),
                         batch_size=batch, progress=False)
        t = time.perf_counter()
        res = embed_images(model, cat, EmbeddingStore(Path(tmp) / "b.sqlite"), batch_size=batch, progress=False)
        dt = time.perf_counter() - t
    if res.failures:
        print(f"  {len(res.failures)} images failed, e.g. {res.failures[0]}")
    return len(res) / dt, res


def worst_cos(res, ref) -> float:
    import numpy as np

    row = ref.row_of()
    both = [i for i in res.ids if i in row]
    a = res.vectors[[res.row_of()[i] for i in both]]  # (n, dim)
    b = ref.vectors[[row[i] for i in both]]
    return float(np.min(np.sum(a * b, axis=1)))


def cpu_main(args) -> None:
    """Rounds: in each, the reference then every precision embed the same slice of the N images, so a
    change in the machine's load in the middle of the run hits all of them alike."""
    import numpy as np

    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.embedding.precision import check_precision

    for p in args.precisions:
        check_precision(p, "cpu")
    cat = catalog_of(args.images, args.n)
    slices = [s for s in np.array_split(np.arange(len(cat)), args.rounds) if len(s)]
    ref_n, ref_s, done = 0, 0.0, {p: [0, 0.0, {}] for p in args.precisions}  # images, seconds, id -> vector
    models = {}
    with tempfile.TemporaryDirectory() as links:
        for k, rows in enumerate(slices):
            folder = Path(links) / f"round{k}"  # the reference reads a folder: links to this slice's images
            folder.mkdir()
            for r in rows:
                (folder / cat.ids[r]).symlink_to(Path(args.images).resolve() / cat.ids[r])
            ref = run_reference(args, folder, len(rows))
            if ref:
                ref_n, ref_s = ref_n + ref[0], ref_s + ref[1]
            if not models:
                if not (Path(args.model_dir) / "config.json").is_file():
                    raise SystemExit(f"{args.model_dir} has no model: the reference writes the random ViT-B/32 "
                                     "there; set it up (see this file's docstring)")
                base = load_model(args.model_dir, device="cpu", progress=False)
                for p in args.precisions:
                    t = time.perf_counter()
                    models[p] = base.with_precision(p)
                    time_precision(models[p], cat.subset(range(args.batch)), args.batch)  # warm-up, ONNX export
                    print(f"  {p}: prepared in {time.perf_counter() - t:.1f} s", flush=True)
            chunk = cat.subset(rows)
            for p in args.precisions:
                speed, res = time_precision(models[p], chunk, args.batch, warm_up=False)
                done[p][0] += len(res)
                done[p][1] += len(res) / speed
                done[p][2].update(zip(res.ids, res.vectors))
            print(f"  round {k + 1}/{len(slices)}: " + ", ".join(
                f"{p} {done[p][0] / done[p][1]:.2f}" for p in args.precisions) + " img/s so far", flush=True)
    ref = ref_n / ref_s if ref_s else None
    if ref:
        print(f"reference fashion_clip: {ref_n} images in {ref_s:.1f} s, {ref:.2f} img/s")
    fp32 = done["fp32"][2]
    for p, (n, secs, vecs) in done.items():
        ratio = f"{n / secs / ref:.2f}" if ref else "nan"
        cos = min(float(np.dot(v, fp32[i])) for i, v in vecs.items() if i in fp32)
        print(f"precision={p} img_s={n / secs:.2f} ratio={ratio} worst_cos={cos:.4f}", flush=True)
    if args.recall:
        recall_check(args)


def recall_check(args) -> None:
    """Held-out text-to-image R@10 (1,000 KAGL products) and zero-shot weighted F1 (articleType) per precision
    and per model of --recall-models, as `fclip eval` scores them; deltas in points against fp32."""
    from fclip_workbench.data.datasets.kagl import load_kagl
    from fclip_workbench.analysis.evaluate import evaluate
    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.embedding.store import EmbeddingStore

    cat = load_kagl(Path(args.images).parent)
    for spec in args.recall_models:
        base = load_model(spec, device="cpu", progress=False)
        scores: dict[str, tuple[float, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for p in args.precisions:
                t = time.perf_counter()
                rep = evaluate(base.with_precision(p), cat, label_fields=["articleType"], retrieval=True,
                               n_retrieval=1000, store=EmbeddingStore(Path(tmp) / f"{p}.sqlite"), progress=False)
                zs = next(k for k in rep.table.task if k.startswith("zero-shot articleType") and "common" not in k)
                scores[p] = (rep.value("text-to-image", "R@10"), rep.value(zs, "weighted F1"))
                n = int(rep.table[rep.table.task == "text-to-image"].n.iloc[0])
                d_r, d_f = ((f"{100 * (scores[p][k] - scores['fp32'][k]):+.1f}" for k in (0, 1)) if "fp32" in scores
                            else ("nan", "nan"))
                print(f"recall precision={p} model={spec} n={n} R@10={scores[p][0]:.3f} delta_points={d_r} "
                      f"zero_shot_F1={scores[p][1]:.3f} delta_F1_points={d_f} ({time.perf_counter() - t:.0f} s)",
                      flush=True)


def cuda_main(args) -> None:
    import torch

    from fclip_workbench.embedding.models import load_model

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    if (Path(args.model_dir) / "config.json").is_file():
        base = load_model(args.model_dir, device="cuda", progress=False)
    else:  # a random ViT-B/32 of open_clip: same compute as FashionCLIP's
        torch.manual_seed(0)
        logging.getLogger().setLevel(logging.ERROR)  # "No pretrained weights loaded" is the point here
        base = load_model("ViT-B-32", device="cuda", progress=False)
    cat = catalog_of(args.images, args.n)
    results, compute = {}, {}
    for p in args.precisions:
        model = base.with_precision(p)
        results[p] = time_precision(model, cat, args.batch)
        compute[p] = model_only(model, args.batch)
    for p, (speed, res) in results.items():
        print(f"precision={p} img_s={speed:.2f} ratio_to_fp32={speed / results['fp32'][0]:.2f} "
              f"worst_cos={worst_cos(res, results['fp32'][1]):.4f} batch={args.batch} "
              f"model_only_img_s={compute[p]:.0f}", flush=True)


def model_only(model, batch: int, repeats: int = 20) -> float:
    """img/s of the model alone on one pre-made (batch, 3, S, S) GPU tensor (no decoding, no store)."""
    import torch

    x = torch.randn(batch, 3, model.image_size, model.image_size, device=model.device)
    model.encode_images(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        model.encode_images(x)  # ends in .cpu(): synchronises
    return batch * repeats / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--images", default=str(SHARED / "data" / "kagl" / "images"))
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=None, help="default 32 on cpu, 256 on cuda")
    ap.add_argument("--precisions", nargs="+", default=None,
                    help="default: fp32 onnx onnx-int8 openvino bf16 (cpu; openvino when installed, bf16 on CPUs with "
                         "AMX-BF16/AVX512-BF16), fp32 bf16 fp16 (cuda)")
    ap.add_argument("--ref-python", default="/tmp/ref/bin/python")
    ap.add_argument("--rounds", type=int, default=2,
                    help="CPU: slices of the N images, each embedded by all (more: fairer under changing load, "
                         "but the reference pays its per-call set-up once per slice)")
    ap.add_argument("--model-dir", default=os.environ.get("REF_MODEL_DIR", "/tmp/ref-fclip-b32"))
    ap.add_argument("--recall", action="store_true",
                    help="also held-out R@10 and zero-shot F1 on KAGL per precision, for --recall-models")
    ap.add_argument("--recall-models", nargs="+", default=["fclip-mini@1"],
                    help="models scored by --recall (default: fclip-mini@1, the README's R@10 column)")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    args.batch = args.batch or (256 if cuda else 32)
    if not args.precisions and not cuda:
        import importlib.util

        from fclip_workbench.embedding.precision import SPEED_FLAGS, cpu_flags, cpu_has_bf16

        flags = cpu_flags()
        print("cpu flags: " + " ".join(f for f in SPEED_FLAGS if f in flags), flush=True)
        args.precisions = ["fp32", "onnx", "onnx-int8", "openvino"] + (["bf16"] if cpu_has_bf16() else []) + ["fast"]
        if importlib.util.find_spec("openvino") is None:
            print("openvino not installed (pip install 'fclip-workbench[fast]'): precision openvino left out")
            args.precisions.remove("openvino")
    args.precisions = args.precisions or ["fp32", "bf16", "fp16"]
    if "fp32" not in args.precisions:
        args.precisions.insert(0, "fp32")
    cuda_main(args) if cuda else cpu_main(args)


if __name__ == "__main__":
    main()
