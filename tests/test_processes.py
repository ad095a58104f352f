"""The suite's guards (tests/conftest.py) on inner pytest runs: `needs_data` and no process left behind.

Inner runs load tests/conftest.py as a plugin (`-p tests.conftest`), in this process
(`pytester.runpytest`) or in a fresh one (`runpytest_subprocess`).

Example:
    >>> # .venv/bin/python -m pytest -q tests/test_processes.py
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from fclip_workbench import paths

REPO = Path(__file__).resolve().parents[1]
PLUGIN = ("-p", "tests.conftest", "-p", "no:cacheprovider")


def stop_sleep(pid_file: Path) -> None:
    """Kill the `sleep` whose pid an inner test wrote, if it is still alive (and still a sleep)."""
    if not pid_file.is_file():
        return
    try:
        proc = psutil.Process(int(pid_file.read_text()))
        if proc.name() == "sleep" and proc.status() != psutil.STATUS_ZOMBIE:
            proc.kill()
            proc.wait(timeout=10)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired, ValueError):
        pass


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """Every public data set absent: the search path is one empty folder; CI flags cleared."""
    empty = tmp_path / "empty-data"
    empty.mkdir()
    monkeypatch.setattr(paths, "dataset_search_path", lambda: [empty])
    monkeypatch.setattr(paths, "FMNIST_DEBIAN_DIR", empty / "debian-fmnist")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("FCLIP_REQUIRE_DATA", raising=False)
    return empty


NEEDS_KAGL = """
import pytest

@pytest.mark.needs_data("kagl")
def test_uses_kagl():
    pass
"""


# ----------------------------------------------------------------------------- needs_data

def test_needs_data_skips_with_reason(pytester, no_data):
    pytester.makepyfile(NEEDS_KAGL)
    result = pytester.runpytest(*PLUGIN, "-rs")
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"SKIPPED*KAGL not found: looked in {no_data / 'kagl'}; `fclip data fetch kagl`"])


@pytest.mark.parametrize("flag", [("CI", "true"), ("FCLIP_REQUIRE_DATA", "1")])
def test_needs_data_fails_in_ci(pytester, no_data, monkeypatch, flag):
    monkeypatch.setenv(*flag)
    pytester.makepyfile(NEEDS_KAGL)
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(errors=1)  # pytest.fail in setup: reported as an error, the run fails
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*KAGL not found: looked in {no_data / 'kagl'}; `fclip data fetch kagl`*"])


def test_needs_data_runs_when_present(pytester, no_data, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (no_data / "kagl").mkdir()
    (no_data / "kagl" / "styles.csv").write_text("id\n")
    pytester.makepyfile(NEEDS_KAGL)
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)


def test_needs_data_fmnist_names_the_debian_package(pytester, no_data):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.needs_data("fmnist")
        def test_fmnist():
            pass
    """)
    result = pytester.runpytest(*PLUGIN, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*Fashion-MNIST not found: looked in *debian-fmnist*apt-get install dataset-fashion-mnist*"])


def test_needs_data_unknown_name_is_an_error(pytester, no_data):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.needs_data("kagle")
        def test_typo():
            pass
    """)
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown data set 'kagle'; known: kagl, ccp, fashionpedia, fmnist*"])


def test_require_data_module_level(pytester, no_data, monkeypatch):
    pytester.makepyfile("""
        from tests.conftest import require_data

        KAGL = require_data("kagl")

        def test_uses_kagl():
            assert KAGL.is_dir()
    """)
    skipped = pytester.runpytest(*PLUGIN, "-rs")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*KAGL not found: looked in*"])
    monkeypatch.setenv("CI", "true")
    failed = pytester.runpytest(*PLUGIN)
    failed.assert_outcomes(errors=1)
    assert failed.ret != pytest.ExitCode.OK
    failed.stdout.fnmatch_lines(["*KAGL not found: looked in*"])


# ----------------------------------------------------------------------------- no process left behind

LEAKS_DETACHED = """
import subprocess
from pathlib import Path

def test_starts_a_sleep_and_forgets_it():
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    Path({pid_file!r}).write_text(str(proc.pid))
"""

LEAKS_ORPHAN = """
import subprocess
from pathlib import Path

def test_leaves_an_orphan():
    # like `fclip lab` under subprocess.call: the shell exits, its child is reparented to init
    out = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True)
    Path({pid_file!r}).write_text(out.stdout.strip())
"""

CLEAN = """
import subprocess
from pathlib import Path

def test_stops_what_it_starts():
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    Path({pid_file!r}).write_text(str(proc.pid))
    proc.terminate()
    proc.wait(timeout=10)
"""


def test_leftover_process_fails_the_run(pytester, tmp_path, monkeypatch):
    # inner pytest in its own process, as a real run is: the outer run's state (its threads, signal
    # handlers, psutil's cache) stays out of it
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pid_file = tmp_path / "sleep.pid"
    pytester.makepyfile(LEAKS_DETACHED.format(pid_file=str(pid_file)))
    try:
        result = pytester.runpytest_subprocess(*PLUGIN, timeout=120)
        pid = int(pid_file.read_text())
        result.assert_outcomes(passed=1)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["*FAILED: processes left behind by the tests*", f"pid {pid}: sleep 60"])
        assert not alive(pid), "the checker must kill what it reports"
    finally:
        stop_sleep(pid_file)


def test_orphan_reparented_to_init_is_caught(pytester, tmp_path, monkeypatch):
    # inner pytest in its own process: when it ends, nothing of it remains but the orphan
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pid_file = tmp_path / "orphan.pid"
    pytester.makepyfile(LEAKS_ORPHAN.format(pid_file=str(pid_file)))
    try:
        result = pytester.runpytest_subprocess(*PLUGIN, timeout=120)
        pid = int(pid_file.read_text())
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines([f"pid {pid}: sleep 60"])
        assert not alive(pid)
    finally:
        stop_sleep(pid_file)


def test_clean_run_passes_and_spares_the_outer_session(pytester, tmp_path):
    # a process of this (outer) session, alive during the inner run, is not the inner run's business
    outer = subprocess.Popen(["sleep", "60"])
    pid_file = tmp_path / "clean.pid"
    pytester.makepyfile(CLEAN.format(pid_file=str(pid_file)))
    try:
        result = pytester.runpytest(*PLUGIN)
        result.assert_outcomes(passed=1)
        assert result.ret == pytest.ExitCode.OK
        assert "left behind" not in result.stdout.str()
        assert outer.poll() is None
    finally:
        outer.kill()
        outer.wait(timeout=10)
        stop_sleep(pid_file)


def test_session_marker_is_inherited(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ['FCLIP_TEST_SESSION'])"],
                         capture_output=True, text=True, timeout=60)
    assert re.fullmatch(r"[0-9a-f]{32}(:[0-9a-f]{32})*", out.stdout.strip())
    assert out.stdout.strip() == os.environ["FCLIP_TEST_SESSION"]


# ----------------------------------------------------------------------------- the suite's settings

def test_skip_reasons_and_failures_are_listed(pytestconfig):
    chars = pytestconfig.option.reportchars
    assert {"f", "E", "s"} <= set(chars), f"-r{chars}: addopts must list failures, errors and skips"


def test_tests_never_write_into_the_repository(tmp_path):
    for folder in (paths.data_home(), paths.cache_dir(), paths.default_labels_path().parent):
        assert REPO not in folder.resolve().parents and folder.resolve() != REPO
