"""Hand the terminal over to a server (JupyterLab, Voila) without ever leaving it orphaned.

On POSIX the server replaces this process (`os.execve`: same pid, so Ctrl-C, SIGTERM
and a closed terminal reach it directly). Elsewhere it runs as a child whose
SIGINT/SIGTERM are passed on, and which is stopped when this process returns.

Example:
    >>> become([sys.executable, "-m", "jupyterlab"])      # doctest: +SKIP
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Mapping, Sequence


def become(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Replace this process with `cmd` (POSIX), else run it as a child with signals forwarded; its exit status."""
    env = dict(os.environ if env is None else env)
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(cmd[0], list(cmd), env)
    return run_forwarding_signals(cmd, env)


def run_forwarding_signals(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `cmd` as a child, passing SIGTERM on (SIGINT reaches it through the console); never leaves it running."""
    proc = subprocess.Popen(list(cmd), env=None if env is None else dict(env))

    def forward(signum, _frame) -> None:
        if signum == signal.SIGTERM:
            proc.terminate()

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
