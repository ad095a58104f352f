"""`own_postgres`: a throwaway PostgreSQL 15 cluster of the test's own, which the test may stop and restart.

The shared server (FCLIP_TEST_POSTGRES_URL) is never restarted: other sessions use it. This fixture runs
`initdb` in a temporary folder and `pg_ctl start` on a free port (socket in that folder, `trust` auth,
`fsync=on`), as the `postgres` user when the tests run as root (initdb refuses root), and stops it with
`pg_ctl stop -m immediate` at the end even when the test fails. Skipped with the reason when the binaries
are absent.

Example:
    >>> def test_restart(own_postgres):                       # doctest: +SKIP
    ...     own_postgres.restart()
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

PG_BIN = Path(os.environ.get("FCLIP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class OwnPostgres:
    url: str  # postgresql+psycopg://fclip@127.0.0.1:PORT/postgres (superuser fclip, trust auth)
    data: Path
    port: int
    as_user: list[str]

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args],
                              capture_output=True, text=True, timeout=120, check=check)

    def start(self) -> None:
        self.ctl("-w", "-l", str(self.data.parent / "server.log"), "-o",
                 f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=on", "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-w", "-m", mode, "stop")

    def restart(self, mode: str = "immediate") -> None:
        """`immediate`: the server dies as in a crash (no checkpoint) and recovers from its WAL on start."""
        self.stop(mode)
        self.start()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    from tests.plugins.services import free_port

    if not (PG_BIN / "initdb").is_file() or not (PG_BIN / "pg_ctl").is_file():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql-15)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="fclip-own-pg-"))
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        if shutil.which("runuser") is None:
            shutil.rmtree(root)
            pytest.skip("tests run as root and runuser is missing: initdb cannot run as root")
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("tests run as root and there is no postgres user to run initdb as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = OwnPostgres(url="", data=root / "data", port=free_port(), as_user=as_user)
    try:
        subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U", "fclip", "--auth=trust",
                        "-E", "UTF8", "--no-sync"], capture_output=True, text=True, timeout=120, check=True)
        cluster.start()
        cluster.url = f"postgresql+psycopg://fclip@127.0.0.1:{cluster.port}/postgres"
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.ctl("-w", "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
