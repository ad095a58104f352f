"""Benchmark: a page load of `fclip label` to the first product in headless Chromium, kernel memory per
page, and how fast a closed page's kernel goes.

For pool sizes 0 (every page starts a kernel: the old behaviour) and `--pool-size` (preheated kernels),
it starts `fclip label`, waits until the pool is preheated, then opens `--pages` pages one after
another as annotators p0, p1, ... (each keeps its page open: every page takes its own kernel) and
times page.goto -> first product shown; it checks each page shows its own annotator's name (the
identity is applied after preheating). It then reads each page kernel's RSS / USS / PSS (psutil),
closes the pages without `beforeunload` (as a killed browser tab: only culling can end the kernel)
and times until each kernel process is gone.

    nice -n 10 python benchmarks/bench_page_load.py --data teaching --field colour --model auto
    nice -n 10 python benchmarks/bench_page_load.py --data /work/shared/data/kagl --field articleType \\
        --model fclip-mini@1 --cache /tmp/embeddings.sqlite      # a copy of data/cache/embeddings.sqlite
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_harness import MB, label_app, memory_mb, open_page  # noqa: E402


def shared_sizes_mb(data: str, field: str, model: str, cache: str | None) -> tuple[float, float, int]:
    """(model parameters MB, image vectors MB, products): what every kernel holds for the whole catalog."""
    from fclip_workbench.apps import LabelAppConfig
    from fclip_workbench.apps.serving import preload_label_app

    res = preload_label_app(LabelAppConfig(data=data, field=field, model=model, cache=cache,
                                                store=str(Path(tempfile.mkdtemp()) / "labels.sqlite")))
    if isinstance(res, Exception):
        raise res
    torch_model = getattr(res.model, "model", None)
    params = sum(p.numel() * p.element_size() for p in torch_model.parameters()) if torch_model is not None else 0
    vectors = res.embeddings.vectors
    return params / MB, vectors.nbytes / MB, len(res.catalog)


def run(args, pool: int, chromium) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-page-load-"))
    with label_app(args.data, args.field, args.model, str(tmp / "labels.sqlite"), tmp / "voila.log",
                   cache=args.cache, pool_size=pool) as app:
        t_ready = app.wait_quiet(pool, timeout_s=600) if pool else 0.0
        contexts, times, names_ok = [], [], True
        for i in range(args.pages):
            ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
            contexts.append(ctx)
            page = ctx.new_page()
            times.append(open_page(page, app.url, f"p{i}"))
            names_ok &= page.locator(".fclip-annotator-name input").input_value() == f"p{i}"
            if pool and i < args.pages - 1:
                app.wait_quiet(pool + i + 1, timeout_s=600)  # the pool refilled: the next page is warm too
        time.sleep(3)
        mems = {k.pid: memory_mb(k) for k in app.kernels()}
        t_close = time.perf_counter()
        for ctx in contexts:
            for p in ctx.pages:
                p.close(run_before_unload=False)  # as a killed tab: no shutdown request, only culling
            ctx.close()
        culled_s = None
        while time.perf_counter() - t_close < args.cull_wait:
            if len(app.kernels()) <= pool:
                culled_s = time.perf_counter() - t_close
                break
            time.sleep(0.5)
        live = {k.pid for k in app.kernels()}
        served = [m for pid, m in mems.items() if pid not in live]  # the pages' kernels: the ones culled
        return {"pool": pool, "ready_s": t_ready, "loads": times, "names_ok": names_ok,
                "mems": served or list(mems.values()), "culled_s": culled_s, "n_culled": len(served),
                "pool_left": len(live)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="teaching")
    ap.add_argument("--field", default="colour")
    ap.add_argument("--model", default="auto")
    ap.add_argument("--cache", default=None, help="embedding store (the app may write to it: pass a copy)")
    ap.add_argument("--pool-size", type=int, default=2)
    ap.add_argument("--pages", type=int, default=3)
    ap.add_argument("--cull-wait", type=float, default=120, help="seconds to wait for closed pages' kernels")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--skip-cold", action="store_true", help="only the preheated pool")
    args = ap.parse_args()
    params_mb, vectors_mb, n = shared_sizes_mb(args.data, args.field, args.model, args.cache)
    print(f"catalog {args.data}: {n} products; model parameters {params_mb:.1f} MB, image vectors {vectors_mb:.1f} MB")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=args.chromium, headless=True)
        try:
            for pool in ([] if args.skip_cold else [0]) + [args.pool_size]:
                r = run(args, pool, chromium)
                loads = ", ".join(f"{t:.1f}" for t in r["loads"])
                uss = [m["uss"] for m in r["mems"]]
                rss = [m["rss"] for m in r["mems"]]
                beyond = [u - params_mb - vectors_mb for u in uss]
                print(f"pool_size={pool}: pool preheated in {r['ready_s']:.1f} s; page loads to first product: "
                      f"{loads} s (median {statistics.median(r['loads']):.1f} s); own annotator shown: {r['names_ok']}")
                print(f"  kernels: RSS median {statistics.median(rss):.0f} MB, USS median {statistics.median(uss):.0f} MB"
                      f" (max {max(uss):.0f}); USS beyond model+vectors median {statistics.median(beyond):.0f} MB")
                culled = "not within the wait" if r["culled_s"] is None else f"{r['culled_s']:.1f} s"
                print(f"  {r['n_culled']} closed pages' kernels (no beforeunload) gone after {culled}; "
                      f"{r['pool_left']} kernels left (the pool)")
                print(f"first_product_s_pool{pool}={statistics.median(r['loads']):.2f} "
                      f"kernel_uss_mb={statistics.median(uss):.0f} culled_s={r['culled_s']}")
        finally:
            chromium.close()


if __name__ == "__main__":
    main()
