"""`fclip lab` starts a real JupyterLab server that serves the project's notebooks."""
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fclip_lab_serves_the_notebooks(tmp_path):
    port, token = free_port(), "fclip-test-token"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fclip_workbench.cli", "lab", "--", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", f"--IdentityProvider.token={token}"],
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
        names = {item["name"] for item in body["content"]}
        assert "01_embed_and_search.ipynb" in names and "06_train_and_evaluate.ipynb" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
