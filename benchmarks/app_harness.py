"""Start `fclip label` as a user does, find its kernels, measure them: shared by bench_page_load,
bench_app_load and their tests.

Example:
    >>> with label_app("teaching", "colour", "auto", "/tmp/l.sqlite", log=Path("/tmp/v.log")) as app:  # doctest: +SKIP
    ...     print(app.url, [k.pid for k in app.kernels()])
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    """A running `fclip label` server (this process group) and every kernel it started."""

    url: str
    proc: subprocess.Popen
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def kernels(self) -> list[psutil.Process]:
        """The live ipykernel processes of this server (remembered, so they are stopped at exit)."""
        out = []
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "ipykernel" in " ".join(p.cmdline()):
                        self.seen.setdefault(p.pid, p)
                        out.append(p)
        return out

    def wait_quiet(self, n: int, timeout_s: float = 300, still_s: float = 2.0) -> float:
        """Wait until `n` kernels exist and together used < 2 % CPU for `still_s` (the pool is preheated);
        returns the seconds waited."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            ks = self.kernels()
            if len(ks) >= n:
                before = cpu_s(ks)
                time.sleep(still_s)
                if cpu_s(ks) - before < 0.02 * still_s * len(ks) + 0.05:
                    return time.perf_counter() - t0
            else:
                time.sleep(0.5)
        raise RuntimeError(f"{n} quiet kernels not seen within {timeout_s:.0f} s")


def cpu_s(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def memory_mb(proc: psutil.Process) -> dict[str, float]:
    """rss, uss (private: what this process alone holds) and pss of one process, in MB."""
    m = proc.memory_full_info()
    return {"rss": m.rss / MB, "uss": m.uss / MB, "pss": getattr(m, "pss", m.uss) / MB}


def label_cmd(data: str, field_: str, model: str, store: str, port: int, cache: str | None = None,
              pool_size: int = 2) -> list[str]:
    cmd = [sys.executable, "-m", "fclip_workbench.cli", "label", "--data", data, "--field", field_, "--model", model,
           "--store", store, "--port", str(port), "-q", "--pool-size", str(pool_size)]
    return cmd + (["--cache", cache] if cache else [])


@contextlib.contextmanager
def label_app(data: str, field_: str, model: str, store: str, log: Path, cache: str | None = None,
              pool_size: int = 2, timeout_s: float = 600) -> Iterator[App]:
    """`fclip label` in its own process group with this checkout on PYTHONPATH; at exit the server
    and every kernel it started are stopped, whatever happened."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        proc = subprocess.Popen(label_cmd(data, field_, model, store, port, cache, pool_size), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        app = App(f"http://127.0.0.1:{port}", proc)
        try:
            deadline = time.time() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"fclip label exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{app.url}/fclip-ready-probe", timeout=5):
                        break
                except urllib.error.HTTPError:
                    break  # it answers (404): ready
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError(f"fclip label did not answer within {timeout_s:.0f} s") from None
                    time.sleep(0.3)
            yield app
        finally:
            app.kernels()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            alive = [p for p in app.seen.values() if p.is_running()]
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(alive, timeout=10)


def open_page(page, url: str, annotator: str, timeout_ms: float = 300_000) -> float:
    """Open the app as `annotator`; seconds from goto until the first product is shown (its id non-empty)."""
    t0 = time.perf_counter()
    page.goto(f"{url}/?annotator={annotator}", timeout=timeout_ms)
    page.wait_for_function("() => { const e = document.querySelector('.fclip-annotator-item');"
                           " return e && e.innerText.trim().length > 0; }", timeout=timeout_ms)
    return time.perf_counter() - t0


def wait_gone(procs: Sequence[psutil.Process], timeout_s: float) -> float | None:
    """Seconds until every process in `procs` has exited, or None when some still run after `timeout_s`."""
    t0 = time.perf_counter()
    _, alive = psutil.wait_procs(list(procs), timeout=timeout_s)
    return None if alive else time.perf_counter() - t0
