"""Real services for tests: a PostgreSQL database per test, headless Chromium, servers on 127.0.0.1.

A test that needs a service it cannot find is skipped with the reason on a developer machine and
FAILS in CI (`CI=true` or `FCLIP_REQUIRE_DATA=1`), where `.ci/run` installs and starts each one.

- `postgres_url`: a fresh, empty database on the server named by `FCLIP_TEST_POSTGRES_URL`
  (an admin URL, e.g. postgresql+psycopg://fclip:fclip@127.0.0.1:5432/postgres), dropped afterwards.
- `browser`: Debian's Chromium (/usr/bin/chromium) driven by Playwright, one per session;
  `page`: a fresh context and page per test, closed afterwards.
- `serve(cmd, port, ready_path)`: start a server process in its own process group, wait until
  `http://127.0.0.1:PORT/ready_path` answers, yield the base URL, and kill the group at exit
  (also on failure). `jupyterlab`: a JupyterLab server on a temporary folder.

Example:
    >>> def test_lab_loads(jupyterlab, page):             # doctest: +SKIP
    ...     page.goto(jupyterlab.url_for("lab"))
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def service_required() -> bool:
    """True when a missing service must fail the run (CI)."""
    truthy = {"1", "true", "yes", "on"}
    return (os.environ.get("CI", "").strip().lower() in truthy
            or os.environ.get("FCLIP_REQUIRE_DATA", "").strip().lower() in truthy)


def missing_service(reason: str) -> None:
    """Skip (developer machine) or fail (CI) for a service that is not there."""
    if service_required():
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)", pytrace=False)
    pytest.skip(reason)


# ----------------------------------------------------------------------------- PostgreSQL
@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh database, dropped after the test."""
    admin = os.environ.get("FCLIP_TEST_POSTGRES_URL")
    if not admin:
        missing_service("PostgreSQL not configured: set FCLIP_TEST_POSTGRES_URL to an admin URL "
                        "(e.g. postgresql+psycopg://fclip:fclip@127.0.0.1:5432/postgres)")
    try:
        import sqlalchemy as sa
    except ImportError:
        missing_service("sqlalchemy is not installed")
    name = f"fclip_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # server down, bad credentials
        engine.dispose()
        missing_service(f"PostgreSQL at {admin} is not usable: {type(e).__name__}: {str(e).splitlines()[0]}")
    url = sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def serve(cmd: Sequence[str], port: int, ready_path: str = "", log: Path | None = None, timeout_s: float = 120,
          env: dict | None = None, cwd: str | Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start `cmd` (its own process group), wait for http://127.0.0.1:PORT/READY_PATH, yield (base URL, process).

    The whole process group is terminated (then killed) at exit, whatever happened.
    """
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                tail = Path(log).read_text()[-3000:] if log else ""
                raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}\n{tail}")
            try:
                with urllib.request.urlopen(f"{base}/{ready_path}", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # it answers: ready (the page may need a token)
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"server did not answer on {base}/{ready_path} within {timeout_s:.0f} s")
                time.sleep(0.3)
        yield base, proc
    finally:
        _kill_group(proc)
        if log:
            out.close()


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the folder JupyterLab serves
    process: subprocess.Popen

    def url_for(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.url}/{path.lstrip('/')}{sep}token={self.token}"


@pytest.fixture
def jupyterlab(tmp_path) -> Iterator[LabServer]:
    """A JupyterLab server on `tmp_path / "lab"` (copy notebooks there), stopped after the test."""
    root = tmp_path / "lab"
    root.mkdir()
    port, token = free_port(), uuid.uuid4().hex
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    with serve(cmd, port, "api", log=tmp_path / "jupyterlab.log") as (url, proc):
        yield LabServer(url, token, root, proc)


# ----------------------------------------------------------------------------- Chromium
@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium under Playwright (headless), shared by the session."""
    if not CHROMIUM.is_file() and not shutil.which("chromium"):
        missing_service("Chromium not found at /usr/bin/chromium: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_service("playwright is not installed: pip install playwright")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def page(browser):
    """A fresh browser context and page (1280x900), closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        context.close()


# ----------------------------------------------------------------------------- screenshots for the docs
DOC_SCREENSHOTS_ENV = "FCLIP_DOC_SCREENSHOTS"  # `make screenshots` sets it to docs/assets/screenshots


def doc_screenshot(page, name: str, selector: str | None = None) -> Path | None:
    """Save `name`.png of the page (or of `selector`) into $FCLIP_DOC_SCREENSHOTS when it is set, so the
    documentation's pictures are the browser tests' own views. Returns the file written, or None."""
    folder = os.environ.get(DOC_SCREENSHOTS_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    (page.locator(selector).first if selector else page).screenshot(path=str(path))
    return path


class ExternalRequests:
    """Every request a page makes to a host other than this machine, refused and recorded (the app must
    work offline: fonts, scripts and styles all served locally). `page.route` sees every request."""

    LOCAL = ("127.0.0.1", "localhost", "[::1]", "::1")

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        page.route("**/*", self._route)

    def _route(self, route) -> None:
        from urllib.parse import urlsplit

        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about") or parts.hostname in self.LOCAL:
            route.continue_()
        else:
            self.urls.append(url)
            route.abort()
