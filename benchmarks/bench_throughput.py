"""Benchmark: image-embedding throughput against the authors' `fashion_clip` package, in one run.

Both embed the same first N KAGL images with the same FashionCLIP architecture
(Hugging Face CLIPModel, ViT-B/32, random weights saved by the reference script,
loaded here through our converter), batch 32, on this machine's CPU.

Set-up of the reference (separate virtual environment, see ../shared/bench):
    python -m venv /tmp/ref && /tmp/ref/bin/pip install -r ../shared/bench/ref-requirements.txt
    /tmp/ref/bin/pip install --no-deps fashion-clip==0.2.2
Usage:
    python benchmarks/bench_throughput.py [--n 256] [--ref-python /tmp/ref/bin/python]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(SHARED / "data" / "kagl" / "images"))
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ref-python", default="/tmp/ref/bin/python")
    ap.add_argument("--model-dir", default="/tmp/ref-fclip-b32")
    args = ap.parse_args()

    env = {**os.environ, "REF_MODEL_DIR": args.model_dir}
    ref_line = None
    if Path(args.ref_python).exists():
        r = subprocess.run([args.ref_python, str(SHARED / "bench" / "ref_fashion_clip.py"), args.images, str(args.n),
                            str(args.batch)], capture_output=True, text=True, env=env)
        ref_line = r.stdout.strip().splitlines()[-1] if r.returncode == 0 else None
        if ref_line is None:
            print("reference failed:", r.stderr[-1500:])
    else:
        print(f"reference interpreter {args.ref_python} not found: see this file's docstring to set it up")
    if not (Path(args.model_dir) / "config.json").is_file():
        raise SystemExit(f"{args.model_dir} has no model: run the reference once (it writes the random ViT-B/32 there)")

    from fclip_workbench.catalog import Catalog
    from fclip_workbench.embed import embed_images
    from fclip_workbench.models import load_model
    from fclip_workbench.store import EmbeddingStore

    model = load_model(args.model_dir, device="cpu")
    cat = Catalog.from_folder(args.images)
    cat = cat.subset(range(min(args.n, len(cat))))
    with tempfile.TemporaryDirectory() as tmp:
        warm = cat.subset(range(args.batch))
        embed_images(model, warm, EmbeddingStore(Path(tmp) / "warm.sqlite"), batch_size=args.batch, progress=False)
        t = time.perf_counter()
        res = embed_images(model, cat, EmbeddingStore(Path(tmp) / "b.sqlite"), batch_size=args.batch, progress=False)
        dt = time.perf_counter() - t
    ours = len(res) / dt
    print(f"fclip-workbench: {len(res)} images, shape {res.vectors.shape}, {dt:.2f} s, {ours:.2f} img/s")
    if ref_line:
        print(ref_line)
        ref = float(re.search(r"([\d.]+) img/s", ref_line).group(1))
        print(f"speed-up over the reference: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()
