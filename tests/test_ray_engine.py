"""The Ray engine: a local Ray cluster on 127.0.0.1 with two worker processes embeds a catalog to the
same matrix, failures and store keys as the local engine.

Without Ray these tests skip with the reason (`make test` on a machine without the extra); with
CI=true a missing Ray fails them instead (`.ci/run` installs `.[ray]`). The cluster is a
`ray start --head --block` child whose processes carry a marker in their environment: teardown
stops it and then every process with that marker, so nothing outlives the module.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from fclip_workbench import cli
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.embed import embed_images
from fclip_workbench.embedding.engines import check_reachable, get_engine
from fclip_workbench.errors import EngineError, MissingExtraError
from fclip_workbench.embedding.store import EmbeddingStore
from tests.conftest import stop_processes

RAY_MISSING = "Ray is not installed: pip install 'fclip-workbench[ray]' to run the Ray engine tests"
MARK = "FCLIP_RAY_TEST_CLUSTER"
READY = b"This command will now block forever"


def require_ray():
    """`ray` (with Ray Data), else skip with the reason; with CI=true a missing Ray fails instead."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:  # not installed (ModuleNotFoundError) or a broken install
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {RAY_MISSING.split(':')[0].lower()} ({e}); .ci/run must install .[ray]",
                        pytrace=False)
        pytest.skip(f"{RAY_MISSING} ({e})")
    return ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_marked(token: str) -> None:
    """Terminate (then kill) every process whose environment carries this cluster's marker."""
    import psutil

    procs = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == token:
                procs.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    stop_processes(procs, timeout_s=10)


class HeadStartError(RuntimeError):
    """`ray start --head` did not come up; the message holds the end of its log."""


def _start_head(env: dict, temp: str, port: int, cpus: int, log_path: Path,
                deadline_s: float = 240) -> subprocess.Popen | None:
    """`ray start --head --block` on 127.0.0.1; the process once the runtime is up, None when it gave up.
    The agents' ports are given, not picked by the agents: the raylet then does not wait a fixed ~15 s
    for the agent to write them, which a loaded machine misses."""
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--num-cpus", str(cpus), "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats",
           "--object-store-memory", str(200 * 2**20), "--temp-dir", temp, "--min-worker-port", "0",
           "--max-worker-port", "0"]
    for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                 "--runtime-env-agent-port"):
        cmd += [flag, str(free_port())]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + deadline_s
    while READY not in log_path.read_bytes():  # logged once every process is up
        if proc.poll() is not None:
            return None
        if time.time() > deadline:
            _end(proc)
            return None
        time.sleep(0.5)
    return proc


def _end(proc: subprocess.Popen) -> None:
    """Stop `ray start --block` (it stops its Ray processes on SIGTERM), killing it if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def local_ray_head(cpus: int = 2, tries: int = 3) -> Iterator[str]:
    """A Ray head on 127.0.0.1 with `cpus` CPUs and no GPU, as 'host:port'; stopped on exit with every
    process it started (found by a marker in their environment). Without token auth (Ray's default):
    a driver reads RAY_AUTH_MODE when it imports Ray, before any head exists, and this head listens on
    127.0.0.1 only. benchmarks/bench_engines.py starts its cluster with it too."""
    token, port = uuid.uuid4().hex, free_port()
    temp = tempfile.mkdtemp(prefix="fray-", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    log_path = Path(temp) / "ray-start.log"
    # generous waits for a loaded 2-core machine
    env = {**os.environ, MARK: token, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_agent_register_timeout_ms": "300000", "RAY_raylet_start_wait_time_s": "300"}
    proc = None
    try:
        for _ in range(tries):
            proc = _start_head(env, temp, port, cpus, log_path)
            if proc is not None:
                break
            _stop_marked(token)  # what the failed start left
        if proc is None:
            raise HeadStartError(f"ray start did not come up in {tries} tries:\n"
                                 f"{log_path.read_text(errors='replace')[-3000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        if proc is not None:
            _end(proc)
        _stop_marked(token)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    """Address of a Ray head on 127.0.0.1 with 2 CPUs (two single-CPU model replicas), no GPU."""
    require_ray()
    try:
        with local_ray_head(cpus=2) as address:
            yield address
    except HeadStartError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def flawed_catalog(small_catalog_dir) -> Catalog:
    """The 12-product catalog with p3 corrupt, p5 missing and p8 truncated."""
    images = small_catalog_dir / "images"
    (images / "p3.jpg").write_bytes(b"\xff\xd8\xff broken")
    (images / "p5.jpg").unlink()
    data = (images / "p8.jpg").read_bytes()
    (images / "p8.jpg").write_bytes(data[: len(data) // 2])
    return Catalog.from_csv(small_catalog_dir / "products.csv", image_root=images)


def test_ray_engine_gives_the_local_matrix_failures_and_store_keys(ray_cluster, tiny_model, flawed_catalog,
                                                                   tmp_path):
    local = embed_images(tiny_model, flawed_catalog, EmbeddingStore(tmp_path / "local.sqlite"), batch_size=4,
                         num_workers=0, progress=False)
    assert {p.item_id for p in local.failures} == {"p3", "p5", "p8"}  # the catalog is as flawed as meant

    engine = get_engine("ray", address=ray_cluster)
    store = EmbeddingStore(tmp_path / "ray.sqlite")
    remote = embed_images(tiny_model, flawed_catalog, store, batch_size=2, progress=False, engine=engine)
    assert remote.ids == local.ids
    np.testing.assert_allclose(remote.vectors, local.vectors, atol=1e-5)
    assert remote.failures == local.failures
    assert (remote.n_computed, remote.n_cached) == (9, 0)
    # two single-CPU replicas were asked for; the work ran in Ray's worker processes, not here
    assert engine.plan == (2, {"num_cpus": 1})
    assert 1 <= len(engine.workers_used) <= 2 and os.getpid() not in engine.workers_used

    # the vectors landed under the local engine's keys: a local run on that store is all cache
    again = embed_images(tiny_model, flawed_catalog, store, batch_size=4, num_workers=0, progress=False)
    assert (again.n_computed, again.n_cached) == (0, 9)
    np.testing.assert_array_equal(again.vectors, remote.vectors)


def test_cli_embed_on_the_cluster(ray_cluster, tiny_model_dir, tiny_model, flawed_catalog, small_catalog_dir,
                                  tmp_path, capsys):
    out, cache = tmp_path / "ray.npz", tmp_path / "cli.sqlite"
    rc = cli.main(["embed", "--data", str(small_catalog_dir / "products.csv"), "--image-root",
                   str(small_catalog_dir / "images"), "--model", str(tiny_model_dir), "--device", "cpu",
                   "--cache", str(cache),
                   "--engine", "ray", "--address", ray_cluster, "--batch-size", "4", "--no-text", "-q",
                   "--out", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "images: 9 embedded (0 from cache, 9 computed), 3 failed" in text.out
    local = embed_images(tiny_model, flawed_catalog, EmbeddingStore(tmp_path / "local.sqlite"), batch_size=4,
                         num_workers=0, progress=False)
    saved = np.load(out)
    assert list(saved["ids"]) == local.ids
    np.testing.assert_allclose(saved["vectors"], local.vectors, atol=1e-5)


def test_unreachable_address_is_one_line_and_fast(tiny_model_dir, small_catalog_dir, tmp_path, capsys):
    require_ray()
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(EngineError, match=f"Cannot reach the Ray cluster at {address}: connection refused"):
        check_reachable(address)
    rc = cli.main(["embed", "--data", str(small_catalog_dir / "products.csv"), "--image-root",
                   str(small_catalog_dir / "images"), "--model", str(tiny_model_dir), "--device", "cpu",
                   "--cache", str(tmp_path / "c.sqlite"), "--engine", "ray",
                   "--address", address, "--no-text", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"fclip embed: error: Cannot reach the Ray cluster at {address}: connection refused; "
                               "start one with `ray start --head` or check the address"]
    assert time.perf_counter() - t0 < 60  # Ray itself would retry for minutes
    with pytest.raises(EngineError, match="not host:port"):
        check_reachable("no-port-here")


def test_missing_ray_names_the_extra(monkeypatch, tiny_model, small_catalog_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    with pytest.raises(MissingExtraError, match=r"pip install 'fclip-workbench\[ray\]'"):
        embed_images(tiny_model, cat, EmbeddingStore(tmp_path / "s.sqlite"), engine="ray", progress=False)
