"""Benchmark: peak memory (RSS) of `fclip ground` on one huge JPEG, against a 2 GB target.

A SIDE x SIDE JPEG (default 10000 x 10000, 100 M pixels: above PIL's MAX_IMAGE_PIXELS warning
level, below its refusal level) is written to a temporary folder; `fclip ground PHOTO "shoes"`
runs in a child process (default model: fclip-mini, method auto) and its peak RSS is read from
`resource.getrusage(RUSAGE_CHILDREN)` once it exits (the parent's own memory, which held the
image while writing it, is not counted).

Usage:
    python benchmarks/bench_ground_memory.py [--side 10000] [--model fclip-mini] [--method crops]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TARGET_BYTES = 2 * 1024**3


def write_photo(path: Path, side: int) -> None:
    """A smooth colour pattern (compresses well) with a red block off-centre, row band by row band."""
    img = Image.new("RGB", (side, side))
    band = max(1, side // 20)
    x = np.linspace(0, 255, side, dtype=np.float32)
    for top in range(0, side, band):
        rows = np.arange(top, min(side, top + band), dtype=np.float32)[:, None] / side * 255
        arr = np.stack([np.broadcast_to(x, (len(rows), side)), np.broadcast_to(rows, (len(rows), side)),
                        np.full((len(rows), side), 128, np.float32)], -1).astype(np.uint8)
        img.paste(Image.fromarray(arr), (0, top))
    img.paste((220, 30, 30), (side // 8, side // 8, side // 3, side // 3))
    img.save(path, quality=85)
    del img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=10000)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--method", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "huge.jpg"
        t0 = time.perf_counter()
        write_photo(photo, args.side)
        print(f"wrote {args.side} x {args.side} JPEG ({photo.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        cmd = [sys.executable, "-m", "fclip_workbench.cli", "ground", str(photo), "shoes", "--model", args.model,
               "--device", "cpu", "-o", str(Path(tmp) / "map.png"), "--save-maps", str(Path(tmp) / "maps.npy")]
        if args.method:
            cmd += ["--method", args.method]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        print(done.stdout.strip())
        if done.returncode:
            print(done.stderr.strip(), file=sys.stderr)
            sys.exit(done.returncode)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
        maps = np.load(Path(tmp) / "maps.npy", mmap_mode="r").shape
    print(f"fclip ground on {args.side} x {args.side}: {secs:.1f} s, peak RSS {peak / 1024**2:.0f} MiB = "
          f"{peak / TARGET_BYTES:.2f} x the 2 GiB target; saved maps {maps}")


if __name__ == "__main__":
    main()
