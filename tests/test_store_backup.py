"""Back up and restore a label store as the team guide says: pg_dump -Fc / pg_restore into a new
PostgreSQL database, and sqlite3's online .backup; every event comes back."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from fclip_workbench.labelling.labels import LabelStore

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_tool(name: str) -> str:
    found = shutil.which(name) or (str(PG_BIN / name) if (PG_BIN / name).exists() else None)
    if found is None:
        pytest.skip(f"{name} is not installed (apt install postgresql-client)")
    return found


def fill(store: LabelStore, n: int = 300) -> list[tuple]:
    store.set_many([(f"p{i}", f"v{i % 7}") for i in range(n)], "colour", annotator="ana")
    store.set("p1", "colour", "red", annotator="bob")
    return sorted(map(tuple, store.history()[["annotator", "item_id", "field", "new_value"]].values.tolist()))


def test_a_pg_dump_restored_into_a_new_database_holds_every_event(postgres_url, tmp_path):
    dump, restore = pg_tool("pg_dump"), pg_tool("pg_restore")
    with LabelStore(postgres_url) as s:
        events = fill(s)
    url = sa.engine.make_url(postgres_url)
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run([dump, "-Fc", "-f", str(tmp_path / "labels.dump"), libpq], check=True)
    target = f"fclip_restore_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(os.environ["FCLIP_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{target}"'))
    try:
        new = url.set(database=target)
        subprocess.run([restore, "--no-owner", "-d", new.set(drivername="postgresql").render_as_string(
            hide_password=False), str(tmp_path / "labels.dump")], check=True)
        with LabelStore(new.render_as_string(hide_password=False), read_only=True) as s:
            restored = sorted(map(tuple, s.history()[["annotator", "item_id", "field", "new_value"]].values.tolist()))
            assert s.get("p1", "colour") == "red"
        assert restored == events and len(restored) == 301
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)'))
        admin.dispose()


def test_a_sqlite_backup_holds_every_event(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite") as s:
        events = fill(s)
        src, dst = sqlite3.connect(tmp_path / "labels.sqlite"), sqlite3.connect(tmp_path / "backup.sqlite")
        with dst:
            src.backup(dst)  # what `sqlite3 labels.sqlite ".backup backup.sqlite"` does, with the store open
        src.close()
        dst.close()
    with LabelStore(tmp_path / "backup.sqlite", read_only=True) as s:
        assert sorted(map(tuple, s.history()[["annotator", "item_id", "field", "new_value"]].values.tolist())) == events
