"""Shared fixtures and the suite's guards.

Fixtures: tiny random models saved to temporary folders, small catalogs on disk.

Guards:
- hermetic folders: `FCLIP_CACHE` and `FCLIP_HOME` point to temporary folders, so tests never
  write into `~/.cache` or the repository's `data/`; public data sets are still found in
  `../shared/data` (see `fclip_workbench.paths.find_dataset`).
- `@pytest.mark.needs_data("kagl", ...)` (kagl, ccp, fashionpedia, fmnist): skips, with the reason,
  when a data set is absent; FAILS instead when `CI=true` or `FCLIP_REQUIRE_DATA=1`.
  `require_data(name)` does the same for a whole module at import time.
- no process left behind: every process a test starts inherits `FCLIP_TEST_SESSION`; one still
  alive when the session ends is killed, named (pid + command line) and fails the run.

Example:
    >>> @pytest.mark.needs_data("kagl")
    ... def test_kagl_has_titles():
    ...     assert (dataset_path("kagl") / "styles.csv").is_file()
"""
from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

pytest_plugins = ["pytester", "tests.plugins.services", "tests.plugins.pg_cluster"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hermetic folders: tests never read or fill the user's ~/.cache/fclip-workbench nor the repository's data/.
os.environ["FCLIP_CACHE"] = tempfile.mkdtemp(prefix="fclip-test-cache-")
os.environ["FCLIP_HOME"] = tempfile.mkdtemp(prefix="fclip-test-home-")
os.environ.pop("FCLIP_EMBEDDING_STORE", None)  # a team store of the shell is never the tests' default
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "layers": 2, "width": 32, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


# ----------------------------------------------------------------------------- fixtures
# Heavy imports (torch, pandas, PIL) stay inside the fixtures: inner pytest runs that load this
# file as a plugin (tests/test_processes.py) start in well under a second.

@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny open_clip CLIP saved in open_clip folder format."""
    import open_clip
    import torch

    from fclip_workbench.embedding.models import save_model_folder

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)
    folder = tmp_path_factory.mktemp("tiny-clip")
    return save_model_folder(model, TINY_CFG, {"size": 32}, folder)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from fclip_workbench.embedding.models import load_model
    return load_model(tiny_model_dir, device="cpu")


def make_image(path: Path, color=(200, 30, 30), size=(40, 48), mode="RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


@pytest.fixture
def small_catalog_dir(tmp_path) -> Path:
    """A CSV + image folder of 12 coloured products (3 colours x 4 garments)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rows = []
    colors = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 220)}
    i = 0
    for cname, rgb in colors.items():
        for garment in ("shirt", "dress", "shoe", "bag"):
            rng = np.random.default_rng(i)
            arr = (np.array(rgb) + rng.integers(-20, 20, (48, 40, 3))).clip(0, 255).astype(np.uint8)
            (tmp_path / "images").mkdir(exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "images" / f"p{i}.jpg")
            rows.append({"item_id": f"p{i}", "image": f"p{i}.jpg", "text": f"{cname} {garment}",
                         "colour": cname, "garment": garment})
            i += 1
    pd.DataFrame(rows).to_csv(tmp_path / "products.csv", index=False)
    return tmp_path


# ----------------------------------------------------------------------------- needs_data
DATASET_TITLES = {"kagl": "KAGL", "ccp": "CCP", "fashionpedia": "Fashionpedia", "fmnist": "Fashion-MNIST"}
NEEDS_DATA_HELP = ("needs_data(name, ...): needs public data set(s) kagl, ccp, fashionpedia, fmnist; "
                   "skips when absent, fails when CI=true or FCLIP_REQUIRE_DATA=1")


def data_required() -> bool:
    """True when a missing data set must fail the run (`CI=true` or `FCLIP_REQUIRE_DATA=1`)."""
    truthy = ("1", "true", "yes")
    return (os.environ.get("CI", "").strip().lower() in truthy
            or os.environ.get("FCLIP_REQUIRE_DATA", "").strip().lower() in truthy)


def missing_data_reason(name: str) -> str | None:
    """None when data set `name` is found, else one line: where it was looked for and how to get it.

    Example:
        >>> missing_data_reason("kagl")  # doctest: +SKIP
        'KAGL not found: looked in /tmp/fclip-test-home-x/kagl, ../shared/data/kagl; `fclip data fetch kagl`'
    """
    from fclip_workbench import paths

    if name not in paths.DATASET_MARKERS:
        raise pytest.UsageError(f"needs_data: unknown data set {name!r}; known: {', '.join(paths.DATASET_MARKERS)}")
    if paths.find_dataset(name) is not None:
        return None
    looked = [base / name for base in paths.dataset_search_path()]
    if name == "fmnist":
        looked += [base / "fashion-mnist" for base in paths.dataset_search_path()] + [paths.FMNIST_DEBIAN_DIR]
    todo = f"`fclip data fetch {name}`"
    if name == "fmnist":
        todo += " or `apt-get install dataset-fashion-mnist`"
    return f"{DATASET_TITLES.get(name, name)} not found: looked in {', '.join(map(str, looked))}; {todo}"


def dataset_path(name: str) -> Path:
    """Folder of data set `name`, or where it would be in ../shared/data: safe at import time
    (e.g. to build parameters); the test that uses it must carry `needs_data(name)`."""
    from fclip_workbench.paths import find_dataset

    return find_dataset(name) or SHARED_DATA / name


def require_data(name: str) -> Path:
    """Folder of data set `name`, for module level: absent -> skip the module with the reason
    (fail its collection when CI=true or FCLIP_REQUIRE_DATA=1).

    Example:
        >>> KAGL = require_data("kagl")  # doctest: +SKIP
    """
    reason = missing_data_reason(name)
    if reason is not None:
        if data_required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    return dataset_path(name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", NEEDS_DATA_HELP)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Resolve `needs_data` before any fixture runs."""
    for mark in item.iter_markers("needs_data"):
        if not mark.args:
            raise pytest.UsageError(f"{item.nodeid}: needs_data needs a data set name; {NEEDS_DATA_HELP}")
        for name in mark.args:
            reason = missing_data_reason(name)
            if reason is None:
                continue
            if data_required():
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)


# ----------------------------------------------------------------------------- no process left behind
SESSION_ENV = "FCLIP_TEST_SESSION"
# Helpers that Python starts for this process and that end with it: not leftovers while their parent is us.
_HELPER_MODULES = ("multiprocessing.resource_tracker", "multiprocessing.forkserver",
                   "loky.backend.resource_tracker")
_SESSION_KEY = pytest.StashKey[tuple[str, "str | None"]]()
_LEFTOVERS_KEY = pytest.StashKey[list[str]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Mark this session in the environment; nested sessions append their own id (`outer:inner`)."""
    sid, outer = uuid.uuid4().hex, os.environ.get(SESSION_ENV)
    session.config.stash[_SESSION_KEY] = (sid, outer)
    os.environ[SESSION_ENV] = f"{outer}:{sid}" if outer else sid


def session_processes(sid: str) -> list:
    """Live processes (not this one) whose environment carries session id `sid`, wherever they are
    in the process tree (orphans reparented to init included)."""
    import psutil

    me, found = os.getpid(), []
    # fresh Process objects: process_iter's cache may hold an earlier process whose pid was reused
    # since (pid_max is 32768 here; a full run wraps it), and that object answers NoSuchProcess
    getattr(psutil.process_iter, "cache_clear", lambda: None)()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if sid not in proc.environ().get(SESSION_ENV, "").split(":"):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.ppid() == me and any(m in " ".join(proc.cmdline()) for m in _HELPER_MODULES):
                continue
            found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def kill_leftovers(sid: str, grace_s: float = 2.0) -> list[str]:
    """Kill the processes of session `sid` still alive after `grace_s`; return 'pid N: cmdline' for each."""
    import psutil

    procs = session_processes(sid)
    if not procs:
        return []
    _, procs = psutil.wait_procs(procs, timeout=grace_s)  # some may be on their way out
    lines = []
    for proc in procs:
        try:
            lines.append(f"pid {proc.pid}: {' '.join(proc.cmdline()) or proc.name()}")
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
    stop_processes(procs, terminate=False)
    return lines


def stop_processes(procs: list, timeout_s: float = 5.0, terminate: bool = True) -> None:
    """SIGTERM `procs` (psutil.Process), wait `timeout_s`, SIGKILL the ones still alive and reap them."""
    import psutil

    if terminate:
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)


@pytest.hookimpl(trylast=True)  # after the runner has torn down session fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    sid, outer = session.config.stash.get(_SESSION_KEY, (None, None))
    if sid is None:
        return
    leftovers = kill_leftovers(sid)
    if outer is None:
        os.environ.pop(SESSION_ENV, None)
    else:
        os.environ[SESSION_ENV] = outer
    if not leftovers:
        return
    session.config.stash[_LEFTOVERS_KEY] = leftovers
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if session.config.pluginmanager.get_plugin("terminalreporter") is None:
        sys.stderr.write("processes left behind by the tests (killed):\n" + "\n".join(leftovers) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    leftovers = config.stash.get(_LEFTOVERS_KEY, [])
    if leftovers:
        terminalreporter.section("FAILED: processes left behind by the tests", sep="=", red=True)
        for line in leftovers:
            terminalreporter.write_line(line)
        terminalreporter.write_line("They were killed. A test must stop what it starts (terminate + wait in a "
                                    "finally or a fixture's teardown).")
