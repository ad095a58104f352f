"""Benchmark: embedding a catalog cold, then again from the cache (the second run must cost < 5%).

Runs `embed_images` twice on the same catalog with a fresh, temporary embedding
store and prints both times and their ratio; then times the whole `fclip embed`
command twice (process start, imports, catalog validation and model load included).

    python benchmarks/bench_embed_cache.py [--data ../shared/data/kagl] [--model fclip-mini] [--limit N]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "kagl"))
    ap.add_argument("--model", default="fclip-mini@1")  # the README's figures were measured with v1
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-cli", action="store_true", help="only the in-process figures")
    args = ap.parse_args()

    from fclip_workbench.data.datasets import open_catalog
    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.embedding.store import EmbeddingStore

    t = time.perf_counter()
    cat = open_catalog(args.data)
    if args.limit:
        cat = cat.subset(range(min(args.limit, len(cat))))
    t_cat = time.perf_counter() - t
    model = load_model(args.model)
    print(f"catalog {cat.name}: {len(cat)} rows, {len(cat.problems)} problems (validated in {t_cat:.1f} s); "
          f"model {model.name} {model.fingerprint[:12]} on {model.device}")
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddingStore(Path(tmp) / "bench.sqlite")
        t = time.perf_counter()
        first = embed_images(model, cat, store, num_workers=args.workers, progress=False)
        t1 = time.perf_counter() - t
        t = time.perf_counter()
        second = embed_images(model, cat, store, num_workers=args.workers, progress=False)
        t2 = time.perf_counter() - t
        assert second.n_computed == 0 and (second.vectors == first.vectors).all()
        print(f"embed_images cold : {t1:8.2f} s  ({first.n_computed / t1:.0f} img/s, {first.summary()})")
        print(f"embed_images cache: {t2:8.2f} s  ({second.summary()})")
        print(f"ratio cached/cold : {t2 / t1:.2%}  (target < 5%)")
        if not args.skip_cli:
            cmd = [sys.executable, "-m", "fclip_workbench.cli", "embed", "--data", args.data, "--model", args.model,
                   "--cache", str(Path(tmp) / "cli.sqlite"), "-q", "--no-text", "--show-problems", "3"]
            if args.limit:
                cmd += ["--limit", str(args.limit)]
            times = []
            for _ in range(2):
                t = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                times.append(time.perf_counter() - t)
            print("fclip embed output (second run):\n  " + "\n  ".join(out.strip().splitlines()))
            print(f"fclip embed, whole command: cold {times[0]:.1f} s, cached {times[1]:.1f} s, "
                  f"ratio {times[1] / times[0]:.1%} (includes interpreter start, imports, validation, model load)")


if __name__ == "__main__":
    main()
