"""Benchmark: the UMAP map and the Explorer for the whole KAGL catalog, cold and cached, and 1M points.

Stages (each timed on its own; embedding is cached by the embedding store and reported apart):
  umap_cold      UMAPProjector (PCA 50 -> UMAP, cosine, seed 0) on every embedded KAGL product, empty cache
  explorer       Explorer on those points with the catalog (titles, 9 columns, thumbnails on hover), coloured
                 by articleType, and the widget state serialised as it is sent to the browser (the render input)
  cold_total     umap_cold + explorer  (target < 90 s on the 2-core machine)
  rerun          a fresh projector on the same vectors (cache hit) + a fresh Explorer (target < 2 s)
  pca_vs_raw     UMAP with and without PCA 50 on the first N products (--compare N; 0 skips)
  million        Explorer on 1,000,000 random points + ids, selection of 10,000, state serialised

Usage:
    .venv/bin/python benchmarks/bench_map.py                    # KAGL + fclip-mini v1 (--model fclip-mini for the default)
    .venv/bin/python benchmarks/bench_map.py --limit 10000 --compare 5000 --million
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def state_bytes(widget) -> int:
    """Bytes of the widget state as ipywidgets would send it (JSON + binary buffers)."""
    from ipywidgets.widgets.widget import _remove_buffers

    state, _, buffers = _remove_buffers(widget.get_state())
    return len(json.dumps(state, default=str)) + sum(len(memoryview(b).cast("B")) for b in buffers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="kagl")
    ap.add_argument("--model", default="fclip-mini@1")  # the README's figures were measured with v1
    ap.add_argument("--limit", type=int, default=None, help="only the first N products (default: all)")
    ap.add_argument("--compare", type=int, default=0, help="PCA vs raw UMAP on the first N products (0: skip)")
    ap.add_argument("--million", action="store_true", help="also build an Explorer on 1,000,000 random points")
    ap.add_argument("--out", default="results/bench_map.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.analysis.projection import UMAPProjector
    from fclip_workbench.widgets import Explorer
    from fclip_workbench.workshop import resolve_data, resolve_model

    out: dict = {}
    catalog = resolve_data(args.data, limit=args.limit)
    model = resolve_model(args.model, catalog)
    t = time.perf_counter()
    res = embed_images(model, catalog, progress=True)
    out["embed_s"] = round(time.perf_counter() - t, 1)
    out["embed"] = res.summary()
    X = res.vectors  # (n, dim)
    out["n"], out["dim"] = X.shape
    print(f"vectors {X.shape} ({res.summary()}) in {out['embed_s']} s")

    cache = Path(tempfile.mkdtemp(prefix="bench-map-"))  # an empty projection cache: a true cold run
    t, c = time.perf_counter(), time.process_time()
    UMAPProjector(use_cache=False).fit(X[:300])  # numba compiles UMAP's kernels on first use in a process
    out["umap_warmup_300_s"] = round(time.perf_counter() - t, 1)
    out["umap_warmup_300_cpu_s"] = round(time.process_time() - c, 1)
    t, c = time.perf_counter(), time.process_time()
    xy = UMAPProjector(cache_dir=cache).fit_transform(X)
    out["umap_cold_s"] = round(time.perf_counter() - t, 1)
    out["umap_cold_cpu_s"] = round(time.process_time() - c, 1)  # CPU this process got (the machine is shared)
    t = time.perf_counter()
    ex = Explorer(xy, res.ids, catalog=catalog, vectors=X, model=model, color_by="articleType")
    out["explorer_state_mb"] = round(state_bytes(ex.map) / 1e6, 1)
    out["explorer_s"] = round(time.perf_counter() - t, 1)
    out["cold_total_s"] = round(out["umap_cold_s"] + out["explorer_s"], 1)
    print(f"UMAP warm-up (numba compile, 300 points): {out['umap_warmup_300_s']} s; "
          f"cold UMAP CPU time {out['umap_cold_cpu_s']} s")
    print(f"cold: UMAP {out['umap_cold_s']} s + Explorer {out['explorer_s']} s "
          f"(state {out['explorer_state_mb']} MB) = {out['cold_total_s']} s")

    t = time.perf_counter()
    p = UMAPProjector(cache_dir=cache)
    xy2 = p.fit_transform(X)
    ex2 = Explorer(xy2, res.ids, catalog=catalog, vectors=X, model=model, color_by="articleType")
    state_bytes(ex2.map)
    out["rerun_s"] = round(time.perf_counter() - t, 2)
    assert p.cache_hit_ and np.array_equal(xy, xy2)
    print(f"rerun (cached map + Explorer): {out['rerun_s']} s")

    if args.compare:
        sub = X[: args.compare]
        for name, pca in (("pca50", 50), ("raw", None)):
            t = time.perf_counter()
            UMAPProjector(pca_components=pca, use_cache=False).fit(sub)
            out[f"umap_{name}_{len(sub)}_s"] = round(time.perf_counter() - t, 1)
        print(f"UMAP on {len(sub)}: PCA50 {out[f'umap_pca50_{len(sub)}_s']} s, raw {out[f'umap_raw_{len(sub)}_s']} s")

    if args.million:
        n = 1_000_000
        rng = np.random.default_rng(0)
        rss0 = peak_rss_mb()
        t = time.perf_counter()
        ids = np.char.add("item", np.arange(n).astype(str)).tolist()
        big = Explorer(rng.normal(size=(n, 2)).astype(np.float32), ids)
        out["million_build_s"] = round(time.perf_counter() - t, 1)
        big.map.selection = rng.choice(n, 10_000, replace=False).astype(np.uint32)
        assert len(big.selection) == 10_000
        out["million_state_mb"] = round(state_bytes(big.map) / 1e6, 1)
        out["million_total_s"] = round(time.perf_counter() - t, 1)
        out["million_peak_rss_growth_mb"] = round(peak_rss_mb() - rss0)
        print(f"1M points: Explorer {out['million_build_s']} s, + selection + state "
              f"({out['million_state_mb']} MB) {out['million_total_s']} s, peak RSS +{out['million_peak_rss_growth_mb']} MB")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
