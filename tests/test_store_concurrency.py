"""Two real processes write one embedding store at once (SQLite file, PostgreSQL): no lock error, nothing lost.

The store's design (see store.py): WAL mode (readers never block the writer), every write one
`BEGIN IMMEDIATE` transaction with SQLite's busy timeout, retried with backoff while the file is busy,
for up to `timeout` seconds; creating the file and its tables is retried the same way.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fclip_workbench.embedding.store import EmbeddingStore

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from fclip_workbench.embedding.store import EmbeddingStore

    path, tag, go, batches = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    (go.parent / f"ready-{tag}").touch()
    while not go.exists():  # both processes open the fresh file at the same moment
        time.sleep(0.001)
    store = EmbeddingStore(path)
    for b in range(batches):
        keys = [f"{tag}-{b}-{j}" for j in range(20)] + [f"shared-{b % 10}"]  # the other writes shared-* too
        v = rng.standard_normal((len(keys), 32)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        assert store.put_many("m", "image", keys, v, normalised=True) == len(keys)
        got = store.get_many("m", "image", keys)  # read back while the other process writes
        assert len(got) == len(keys), (b, len(got))
    print("done", store.count())
""")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_processes_write_one_store_at_once(tmp_path, backend, request):
    """Both write `shared-*` keys (in different orders within a batch on PostgreSQL: no deadlock)."""
    path = tmp_path / "shared.sqlite" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    go, batches = tmp_path / "go", 300
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    procs = []
    try:
        for tag in ("a", "b"):
            procs.append(subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(go), str(batches)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                          start_new_session=True))
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready-{t}").exists() for t in "ab"):  # both imported and waiting
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
            time.sleep(0.01)
        go.touch()
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "locked" not in err.lower() and "deadlock" not in err.lower(), err[-2000:]
        assert out.startswith("done")
    store = EmbeddingStore(path, readonly=True)
    assert store.count("m", "image") == 2 * batches * 20 + 10  # every row of both writers, shared keys once
    keys = [f"{t}-{b}-{j}" for t in "ab" for b in range(batches) for j in range(20)]
    got = store.get_many("m", "image", keys)
    assert len(got) == len(keys) and all(np.isclose(np.linalg.norm(v), 1, atol=1e-3) for v in got.values())
