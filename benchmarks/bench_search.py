"""Benchmark: search a million products: build, single-query latency at a stated recall, memory, incremental add.

The catalog: the real KAGL image embeddings of fclip-mini found in the workbench's embedding store
(read from the store only, never computed here; 256-d, lifted to 512-d by a fixed random map with
orthonormal columns, which keeps every cosine exactly), topped up to --n with clustered synthetic
unit vectors: n/100 random centre directions, 100 products each on average, isotropic noise of norm
--spread (0.5: cosine ~0.9 to the centre, as product photos of one kind; spread 1.0 spreads points
nearly uniformly over the 512-d sphere, where any IVF needs to scan most cells: see the README). Held-out queries
(KAGL products and synthetic vectors kept out of the index) get exact top-10 ground truth from
FAISS flat search. Text queries: the KAGL titles' text vectors of the same model (from the store,
lifted by the same map); half of them are given to the build to tune for, the others are held out.
Then:
  build      build_index(kind=--kind): k-means on a sample, add, nprobe tuned so that Recall@10 >= 0.95
             for image queries (500 held-out rows of the catalog) and for text queries (500 titles)
                                                                        (target < 300 s on this machine)
  latency    median single-query (k=10) latency over --latency-queries   (target < 5 ms)
  recall     Recall@10 of the index against exact search on the held-out queries, image -> image and
             text -> image, each reported                                (target >= 0.95 for both)
  memory     index.memory_bytes() and this process's peak RSS
  add        index.add of --add new vectors, no rebuild                   (target < 10 s)

Usage:
    nice -n 10 .venv/bin/python benchmarks/bench_search.py                      # 1,000,000 x 512
    .venv/bin/python benchmarks/bench_search.py --n 100000 --no-kagl --out /tmp/s.json   # quick check
    .venv/bin/python benchmarks/bench_search.py --n 200000 --model fclip-mini --out /tmp/s.json  # with titles
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import time
from pathlib import Path

import numpy as np

TARGETS = {"build_s": 300.0, "median_ms": 5.0, "recall_at_10": 0.95, "recall_at_10_text": 0.95, "add_s": 10.0}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def kagl_vectors(model_spec: str = "fclip-mini@1") -> tuple[np.ndarray | None, np.ndarray | None]:
    """KAGL image vectors (n, 256) and distinct title vectors (m, 256) of `model_spec` already in the
    workbench store; None for what is absent."""
    from fclip_workbench.embedding.embed import image_model_key
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.workshop import resolve_data, resolve_model

    try:
        catalog = resolve_data("kagl")
        model = resolve_model(model_spec, catalog)
    except Exception as e:  # no KAGL copy or no model: synthetic vectors only
        print(f"KAGL vectors unavailable ({e}); synthetic vectors only")
        return None, None
    from fclip_workbench.embedding.embed import text_model_key
    from fclip_workbench.embedding.images import text_digest

    store = EmbeddingStore(readonly=True)
    rows = catalog.usable_rows("image")
    digests = [d for d in store.file_digests([catalog.image_path(int(r)) for r in rows]) if d is not None]
    got = store.get_many(image_model_key(model), "image", digests)
    title_keys = {text_digest(catalog.texts[int(r)]) for r in catalog.usable_rows("text")}
    titles = store.get_many(text_model_key(model), "text", title_keys)
    print(f"KAGL: {len(got)} of {len(rows)} product vectors and {len(titles)} of {len(title_keys)} distinct titles "
          f"found in {store.path} ({model.name})")
    images = np.stack([got[d] for d in dict.fromkeys(digests) if d in got]) if got else None
    return images, (np.stack([titles[k] for k in sorted(titles)]) if titles else None)


def lift(x: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """(n, d) -> (n, dim) by a fixed random map with orthonormal columns: cosines are kept exactly."""
    if x.shape[1] == dim:
        return x.astype(np.float32)
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, x.shape[1])))  # (dim, d)
    return (x @ basis.T).astype(np.float32)


def clustered_into(out: np.ndarray, centres: int, spread: float, seed: int) -> None:
    """Fill `out` (n, d) with unit vectors around `centres` random directions (noise norm ~`spread`), in chunks."""
    rng = np.random.default_rng(seed)
    n, d = out.shape
    c = rng.standard_normal((centres, d), dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)  # (centres, d)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = c[rng.integers(0, centres, m)] + rng.standard_normal((m, d), dtype=np.float32) * (spread / np.sqrt(d))
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--kind", default="auto", help="build_index kind (auto: ivf at this size)")
    ap.add_argument("--centres", type=int, default=None, help="synthetic cluster centres (default n / 100)")
    ap.add_argument("--spread", type=float, default=0.5, help="synthetic noise norm relative to the centre")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries (half KAGL when present)")
    ap.add_argument("--latency-queries", type=int, default=500)
    ap.add_argument("--add", type=int, default=10_000, help="vectors added after the build")
    ap.add_argument("--no-kagl", action="store_true", help="synthetic vectors only (no text queries)")
    ap.add_argument("--model", default="fclip-mini@1", help="whose KAGL vectors to read from the store")
    ap.add_argument("--out", default="results/bench_search.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import faiss

    from fclip_workbench.search.index import build_index, recall_at_k

    args.centres = args.centres or max(1, args.n // 100)
    out: dict = {"n": args.n, "centres": args.centres, "spread": args.spread, "dim": args.dim, "targets": TARGETS, "faiss": faiss.__version__,
                 "omp_threads": faiss.omp_get_max_threads()}
    kagl, titles = (None, None) if args.no_kagl else kagl_vectors(args.model)
    n_kq = 0
    data = np.empty((args.n, args.dim), np.float32)  # (n, dim): the catalog
    if kagl is not None:
        kagl = lift(kagl[np.random.default_rng(1).permutation(len(kagl))], args.dim)
        n_kq = min(args.queries // 2, len(kagl) // 10)
        kq, kagl = kagl[:n_kq], kagl[n_kq:]  # held-out KAGL queries, the rest is indexed
        data[:len(kagl)] = kagl
        out["kagl_indexed"], out["kagl_queries"] = len(kagl), n_kq
        out["kagl_lift"] = "256-d fclip-mini vectors x fixed random 512x256 orthonormal map (cosines kept)"
    n_real = 0 if kagl is None else len(kagl)
    t = time.perf_counter()
    synth = np.empty((args.n - n_real + args.queries - n_kq + args.add, args.dim), np.float32)
    clustered_into(synth, args.centres, args.spread, seed=0)
    sq = synth[:args.queries - n_kq].copy()  # copies: a view would keep all of `synth` alive
    sa = synth[args.queries - n_kq:args.queries - n_kq + args.add].copy()
    data[n_real:] = synth[args.queries - n_kq + args.add:]
    del synth
    queries = np.concatenate([kq, sq]) if n_kq else sq  # (queries, dim)
    tq = tune_text = None
    if titles is not None and kagl is not None:  # text queries: half tune the index, half are held out
        titles = lift(titles[np.random.default_rng(2).permutation(len(titles))], args.dim)
        n_tq = min(args.queries, len(titles) // 2)
        tq, tune_text = titles[:n_tq], titles[n_tq:]
        out["text_queries"], out["text_tune_pool"] = n_tq, len(tune_text)
    out["synthetic_indexed"] = args.n - n_real
    print(f"catalog {data.shape}: {n_real} KAGL + {args.n - n_real} synthetic ({args.centres} centres); "
          f"{len(queries)} held-out queries ({n_kq} KAGL), spread {args.spread}; data {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    _, truth = faiss.knn(queries, data, 10, faiss.METRIC_INNER_PRODUCT)  # (queries, 10) exact
    text_truth = None if tq is None else faiss.knn(tq, data, 10, faiss.METRIC_INNER_PRODUCT)[1]
    out["ground_truth_s"] = round(time.perf_counter() - t, 1)
    ids = [f"p{j}" for j in range(args.n)]
    rss0 = peak_rss_mb()

    t, c = time.perf_counter(), time.process_time()
    index = build_index(data, ids, args.kind, text_queries=tune_text)
    out["build_s"] = round(time.perf_counter() - t, 1)
    out["build_cpu_s"] = round(time.process_time() - c, 1)  # all threads; the machine is shared, wall time varies
    out["kind"] = f"{index.kind}/{getattr(index, 'method', '')}"
    out["build_info"] = index.build_info
    print(f"build {out['kind']}: {out['build_s']} s wall, {out['build_cpu_s']} s CPU (target < {TARGETS['build_s']:.0f} s); "
          f"load average {os.getloadavg()[0]:.1f}; {index.build_info}")
    del data

    _, got = index.search(queries, k=10)
    exact = [[ids[j] for j in row] for row in truth]
    out["recall_at_10"] = round(recall_at_k(got, exact), 4)
    if n_kq:
        out["recall_at_10_kagl"] = round(recall_at_k(got[:n_kq], exact[:n_kq]), 4)
        out["recall_at_10_synthetic"] = round(recall_at_k(got[n_kq:], exact[n_kq:]), 4)
    out["recall_at_10_text"] = None
    if tq is not None:
        _, got_t = index.search(tq, k=10)
        out["recall_at_10_text"] = round(recall_at_k(got_t, [[ids[j] for j in row] for row in text_truth]), 4)
    out["stated_recall"] = {k: index.build_info.get(k) for k in ("recall_at_10_image", "recall_at_10_text")}
    for threads in (faiss.omp_get_max_threads(), 1):  # default OpenMP threads, then one thread
        faiss.omp_set_num_threads(threads)
        lat, cpu = [], []
        for q in queries[:args.latency_queries]:
            t, c = time.perf_counter(), time.process_time()
            index.search(q[None], k=10)
            lat.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        tag = "" if threads != 1 else "_1thread"
        out[f"median_ms{tag}"] = round(float(np.median(lat)) * 1e3, 3)
        out[f"p95_ms{tag}"] = round(float(np.percentile(lat, 95)) * 1e3, 3)
        out[f"median_cpu_ms{tag}"] = round(float(np.median(cpu)) * 1e3, 3)
    faiss.omp_set_num_threads(out["omp_threads"])
    out["load_avg_1min"] = round(os.getloadavg()[0], 1)  # the 2-core machine is shared
    out["memory_mb"] = round(index.memory_bytes() / 2**20, 1)
    out["peak_rss_mb"] = round(peak_rss_mb())
    out["peak_rss_growth_build_mb"] = round(peak_rss_mb() - rss0)
    print(f"Recall@10 image -> image {out['recall_at_10']} on {len(queries)} held-out queries "
          f"(target >= {TARGETS['recall_at_10']})"
          + (f" [KAGL {out['recall_at_10_kagl']}, synthetic {out['recall_at_10_synthetic']}]" if n_kq else ""))
    print(f"Recall@10 text -> image {out['recall_at_10_text']} on "
          + (f"{len(tq)} held-out KAGL titles (target >= {TARGETS['recall_at_10_text']})" if tq is not None
             else "n/a (no KAGL title vectors in the store)")
          + f"; the index states image {out['stated_recall']['recall_at_10_image']}, "
            f"text {out['stated_recall']['recall_at_10_text']}")
    print(f"single-query latency k=10: median {out['median_ms']} ms, p95 {out['p95_ms']} ms "
          f"(target median < {TARGETS['median_ms']} ms); "
          f"one OpenMP thread: median {out['median_ms_1thread']} ms; load average {out['load_avg_1min']}")
    print(f"memory: index {out['memory_mb']} MiB; process peak RSS {out['peak_rss_mb']} MiB")

    new_ids = [f"new{j}" for j in range(len(sa))]
    t, c = time.perf_counter(), time.process_time()
    index.add(sa, new_ids)
    out["add_s"] = round(time.perf_counter() - t, 2)
    out["add_cpu_s"] = round(time.process_time() - c, 2)
    _, top = index.search(sa[:200], k=1)
    out["added_found_top1"] = float(np.mean([r[0] == i for r, i in zip(top, new_ids)]))
    print(f"add {len(sa)} vectors: {out['add_s']} s wall, {out['add_cpu_s']} s CPU (target < {TARGETS['add_s']:.0f} s); "
          f"{out['added_found_top1']:.0%} of 200 added vectors are their own top-1; index now {len(index)}")

    out["met"] = {"build": out["build_s"] < TARGETS["build_s"], "latency": out["median_ms"] < TARGETS["median_ms"],
                  "recall": out["recall_at_10"] >= TARGETS["recall_at_10"],
                  "recall_text": None if tq is None else out["recall_at_10_text"] >= TARGETS["recall_at_10_text"],
                  "add": out["add_s"] < TARGETS["add_s"]}
    print("targets met:", out["met"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
