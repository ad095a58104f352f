"""`fclip lab` starts a real JupyterLab server that serves the learner's copies of the project's notebooks
(each once), and leaves no orphan server behind when the process we started is terminated."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals; Windows forwards them in cmd_lab")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_with(fragment: str) -> list[psutil.Process]:
    """Live processes whose command line contains `fragment` (our unique --port)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.info["cmdline"] and any(fragment in a for a in p.info["cmdline"]) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_fclip_lab_serves_the_notebooks_and_stops_with_its_pid(tmp_path):
    port, token = free_port(), "fclip-test-token"
    env = {**os.environ, "FCLIP_HOME": str(tmp_path / "home")}  # the copies go to FCLIP_HOME/lab, not data/
    port_arg = f"--port={port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fclip_workbench.cli", "lab", "--", "--no-browser", port_arg,
         "--ip=127.0.0.1", f"--IdentityProvider.token={token}"], env=env,
        stdout=open(tmp_path / "lab.log", "w"), stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.time() + 90, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("jupyter lab exited: " + (tmp_path / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        assert body is not None, "JupyterLab did not answer within 90 s"
        names = sorted(item["name"] for item in body["content"] if item["type"] == "notebook")
        assert "01_embed_and_search.ipynb" in names and "06_train_and_evaluate.ipynb" in names, names
        stems = [n.rsplit(".", 1)[0] for n in names]
        assert len(stems) == len(set(stems)), f"a notebook shows more than once in the file browser: {names}"
        assert (tmp_path / "home" / "lab" / "01_embed_and_search.ipynb").is_file(), "served from the learner's copy"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()

        # Terminate THE pid we started (what a supervisor, a closed terminal or `kill` does):
        # the server must go with it, not live on as an orphan holding the port.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.time() + 15
        while time.time() < deadline and (psutil.pid_exists(proc.pid) or processes_with(port_arg)):
            time.sleep(0.5)
        left = processes_with(port_arg)
        assert not left, f"JupyterLab left running after SIGTERM to {proc.pid}: {[p.pid for p in left]}"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for p in processes_with(port_arg):  # leftovers of a failed run: only those with our unique port
            try:
                p.kill()
                p.wait(timeout=10)
            except psutil.Error:
                pass
