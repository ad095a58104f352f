"""Benchmark: the Ray engine against the local engine on the same KAGL images (wall time, overhead).

Embeds the first N images of KAGL with the local engine, then with the Ray engine twice on one
Ray cluster (a new `ray start --head` on 127.0.0.1 with --cpus CPUs, started as the tests start theirs,
or the cluster at --address), each into a fresh,
temporary store, and prints the wall times, the cluster's start, and the largest difference from
the local vectors. The second Ray run shows the per-run cost (actor start + model shipping) without
the cluster's start; on a 2-core machine Ray is not expected to be faster, only to agree.

    python benchmarks/bench_engines.py [--data ../shared/data/kagl] [--model fclip-mini] [--n 2000]
                                       [--cpus 2] [--address HOST:PORT]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "kagl"))
    ap.add_argument("--model", default="fclip-mini@1")  # the README's figures were measured with v1
    ap.add_argument("--n", type=int, default=2000, help="first N catalog rows")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (one replica each)")
    ap.add_argument("--address", default=None, help="use this Ray cluster instead of starting a local one")
    args = ap.parse_args()

    import ray

    sys.path.insert(0, str(ROOT))
    from tests.test_ray_engine import local_ray_head

    from fclip_workbench.data.datasets import open_catalog
    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.embedding.engines import get_engine
    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.embedding.store import EmbeddingStore

    cat = open_catalog(args.data)
    cat = cat.subset(range(min(args.n, len(cat))))
    model = load_model(args.model, device="cpu")
    print(f"catalog {cat.name}: {len(cat)} rows; model {model.name} {model.fingerprint[:12]}; "
          f"{os.cpu_count()} CPUs; ray {ray.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        local = embed_images(model, cat, EmbeddingStore(Path(tmp) / "local.sqlite"), batch_size=args.batch_size,
                             progress=False)
        t_local = time.perf_counter() - t
        print(f"engine=local      wall_s={t_local:7.2f}  img_s={local.n_computed / t_local:6.1f}  ({local.summary()})")

        t = time.perf_counter()
        with contextlib.ExitStack() as stack:
            address = args.address or stack.enter_context(local_ray_head(cpus=args.cpus))
            t_start = time.perf_counter() - t
            t = time.perf_counter()
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            t_connect = time.perf_counter() - t
            stack.callback(ray.shutdown)
            print(f"ray cluster       start_s={t_start:6.2f}  connect_s={t_connect:5.2f}  "
                  f"resources={ray.cluster_resources()}")
            for run in (1, 2):
                engine = get_engine("ray", address=None)  # the session started above
                t = time.perf_counter()
                res = embed_images(model, cat, EmbeddingStore(Path(tmp) / f"ray{run}.sqlite"),
                                   batch_size=args.batch_size, progress=False, engine=engine)
                t_ray = time.perf_counter() - t
                same = res.ids == local.ids and [str(p) for p in res.failures] == [str(p) for p in local.failures]
                diff = float(np.abs(res.vectors - local.vectors).max()) if same else float("nan")
                print(f"engine=ray run={run} wall_s={t_ray:7.2f}  img_s={res.n_computed / t_ray:6.1f}  "
                      f"ratio_to_local={t_ray / t_local:5.2f}x  replicas={engine.plan[0]} "
                      f"workers_used={len(engine.workers_used)}  same_ids_and_failures={same}  max_abs_diff={diff:.2e}")


if __name__ == "__main__":
    main()
