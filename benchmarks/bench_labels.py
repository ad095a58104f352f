"""Benchmark: LabelStore write latency and concurrent throughput on SQLite and PostgreSQL.

For each backend: the latency of 200 single `set()` calls (each committed and durable before it
returns: median and p95), one `set_many` of 1,000 labels, and 2 processes writing 1,000 labels
each at the same time (distinct items) -- the wall time until both are done and the events
found afterwards. PostgreSQL runs when an admin URL is given (a temporary database is created
and dropped).

    python benchmarks/bench_labels.py [--dir /tmp] [--postgres postgresql://fclip:fclip@127.0.0.1:5432/postgres]
    (--postgres defaults to $FCLIP_TEST_POSTGRES_URL; --no-postgres skips it)
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_labels")

WRITER = textwrap.dedent("""
    import sys
    from fclip_workbench.labelling.labels import LabelStore
    url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = LabelStore(url, timeout=120)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        store.set(f"{who}-{i}", "colour", f"v{i % 7}", annotator=who)
    store.close()
    print("done", flush=True)
""")


@contextmanager
def temp_postgres(admin: str) -> Iterator[str]:
    """A fresh database on the server of `admin`, dropped afterwards."""
    import sqlalchemy as sa

    name = f"fclip_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


def bench(url: str, n_single: int, n_proc: int) -> dict[str, float]:
    from fclip_workbench.labelling.labels import LabelStore

    out: dict[str, float] = {}
    with LabelStore(url) as store:
        store.set("warm", "colour", "v", annotator="bench")
        lat = []
        for i in range(n_single):
            t = time.perf_counter()
            store.set(f"s{i}", "colour", f"v{i % 7}", annotator="bench")
            lat.append(time.perf_counter() - t)
        lat_ms = np.array(lat) * 1000
        out["set_median_ms"], out["set_p95_ms"] = float(np.median(lat_ms)), float(np.percentile(lat_ms, 95))
        t = time.perf_counter()
        store.set_many([(f"b{i}", f"v{i % 7}") for i in range(1000)], "colour", annotator="bench")
        out["set_many_1000_s"] = time.perf_counter() - t
        t = time.perf_counter()
        n_labels = len(store.labels("colour"))
        out["labels_read_ms"] = (time.perf_counter() - t) * 1000
        base = len(store.history())
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, who, str(n_proc)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for who in ("ana", "bo")]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        t = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            p.communicate(timeout=1200)
        out["concurrent_2x_s"] = time.perf_counter() - t
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with LabelStore(url) as store:
        out["concurrent_events"] = len(store.history()) - base
        out["labels_total"] = len(store.labels("colour"))
    out["labels_before"] = n_labels
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="folder for the SQLite file (default: a temporary folder)")
    ap.add_argument("--postgres", default=os.environ.get("FCLIP_TEST_POSTGRES_URL"), help="admin URL")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--n", type=int, default=200, help="single set() calls timed")
    ap.add_argument("--per-process", type=int, default=1000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows.append(("SQLite", bench(str(Path(tmp) / "labels.sqlite"), args.n, args.per_process)))
    if args.postgres and not args.no_postgres:
        with temp_postgres(args.postgres) as url:
            rows.append(("PostgreSQL", bench(url, args.n, args.per_process)))
    n2 = 2 * args.per_process
    print(f"| backend | set() median | set() p95 | set_many(1000) | labels() read | 2 x {args.per_process} "
          "concurrent sets | events found |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['set_median_ms']:.1f} ms | {r['set_p95_ms']:.1f} ms | {r['set_many_1000_s']:.2f} s | "
              f"{r['labels_read_ms']:.0f} ms ({r['labels_before']:.0f} labels) | {r['concurrent_2x_s']:.1f} s "
              f"({n2 / r['concurrent_2x_s']:.0f} sets/s) | {r['concurrent_events']:.0f} / {n2} |")
    print(f"(load average: {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
