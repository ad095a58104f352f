"""LabelStore: every labelling decision as an append-only event log, on SQLite or PostgreSQL.

One SQLAlchemy Core implementation, two backends:
- a path or `sqlite:///` URL: one SQLite file (WAL, `synchronous=FULL`: a decision is on disk
  when `set` returns), writers serialised with `BEGIN IMMEDIATE`;
- `postgresql://...` or `postgresql+psycopg://...` (psycopg 3): a team server, writers on the same
  item serialised with transaction-scoped advisory locks.

Tables: `label_events` (id, time, annotator, item_id, field, old_value, new_value, source,
batch_id, undoes), `label_current` (the current value of each (item, field), updated in the same
transaction as its event), `label_taxonomies` (allowed values per field, growing when an
annotator adds one) and `label_meta` (schema version). The old value is read and the event
written in one locked transaction, so several annotators in several processes never lose an
update; a lock held longer than `timeout` gives `LabelStoreBusyError`.

Example:
    >>> import tempfile, os
    >>> store = LabelStore(os.path.join(tempfile.mkdtemp(), "labels.sqlite"))
    >>> ev = store.set("p1", "colour", "red", annotator="ana")
    >>> ev.old_value, ev.new_value, store.get("p1", "colour")
    (None, 'red', 'red')
    >>> _ = store.set("p1", "colour", "blue", annotator="ana")
    >>> store.undo("ana").new_value
    'red'
    >>> store.labels("colour")[["item_id", "value"]].values.tolist()
    [['p1', 'red']]
    >>> store.close()
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import stat
import time
import uuid
from dataclasses import dataclass, field as dc_field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url

from .errors import (ConflictError, LabelImportError, LabelStoreBusyError, LabelStoreError, LabelStoreReadOnlyError,
                     LabelValueError, UndoConflictError, UnknownItemError, InvalidArgumentError)
from .taxonomy import Taxonomy

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SOURCES = ("suggestion-accepted", "corrected", "batch", "import", "undo")
DECISION_SOURCES = ("suggestion-accepted", "corrected", "batch")  # what an annotator decides (acceptance rate)
GROUP_SOURCES = ("batch", "import")  # events sharing a batch_id with these sources are undone together
EVENT_COLUMNS = ["id", "time", "annotator", "item_id", "field", "old_value", "new_value", "source", "batch_id",
                 "undoes"]
LABEL_COLUMNS = ["item_id", "value", "annotator", "time"]
SHOW_VALUES = 20  # valid values listed in a refusal, then "... and N more"
_SQLITE_BUSY_MS = 200  # SQLite's own wait per attempt; the retry loop runs up to the store's timeout
_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock_not_available
_READONLY_SQLSTATES = {"25006", "42501"}  # read-only transaction, insufficient privilege

T = TypeVar("T")


class _AnyEvent:
    """The type of `ANY_EVENT`: a write that does not depend on what was shown."""

    def __repr__(self) -> str:
        return "ANY_EVENT"


ANY_EVENT = _AnyEvent()  # `set(expect_event=ANY_EVENT)`: unconditional (the default)

metadata = sa.MetaData()
events_t = sa.Table(
    "label_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),  # UTC
    sa.Column("annotator", sa.Text, nullable=False),
    sa.Column("item_id", sa.Text, nullable=False),
    sa.Column("field", sa.Text, nullable=False),
    sa.Column("old_value", sa.Text),  # None: no label before
    sa.Column("new_value", sa.Text),  # None: label removed (an undo back to nothing)
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("batch_id", sa.Text),  # one set_many / import / widget session
    sa.Column("undoes", sa.Integer),  # for source "undo": the event it reverts
    sa.Index("ix_label_events_item", "item_id", "field"),
    sa.Index("ix_label_events_annotator", "annotator", "id"),
    sa.Index("ix_label_events_undoes", "undoes"),
)
current_t = sa.Table(
    "label_current", metadata,
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("field", sa.Text, primary_key=True),
    sa.Column("value", sa.Text),  # None: no label (kept as a row so it can be locked)
    sa.Column("annotator", sa.Text, nullable=False),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event_id", sa.Integer, nullable=False),
    sa.Index("ix_label_current_field", "field", "event_id"),
)
taxonomies_t = sa.Table(
    "label_taxonomies", metadata,
    sa.Column("field", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),  # casefolded value: one spelling per value
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # "catalog:kagl", "added by ana", ...
    sa.Column("added_by", sa.Text),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
)
meta_t = sa.Table(
    "label_meta", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class LabelEvent:
    """One decision in the log (a row of `label_events`)."""

    id: int
    time: datetime  # UTC
    annotator: str
    item_id: str
    field: str
    old_value: str | None
    new_value: str | None
    source: str
    batch_id: str | None = None
    undoes: int | None = None


@dataclass(frozen=True)
class RowProblem:
    """Why one row of an import file was not applied (`row`: 1-based data row, header excluded)."""

    row: int
    item_id: str
    field: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (item {self.item_id!r}, {self.field or '?'}={self.value!r}): {self.reason}"


@dataclass
class ImportReport:
    """What `LabelStore.import_` read, refused and applied."""

    path: Path
    rows: int  # data rows read
    applied: list[LabelEvent] = dc_field(default_factory=list)
    problems: list[RowProblem] = dc_field(default_factory=list)
    unchanged: int = 0  # good rows whose value was already the current one (no event written)
    duplicates: int = 0  # rows repeating an earlier row exactly (applied once)
    partial: bool = False

    @property
    def ok(self) -> bool:
        """True when every row was good."""
        return not self.problems

    def problem_table(self) -> pd.DataFrame:
        return pd.DataFrame([vars(p) for p in self.problems], columns=["row", "item_id", "field", "value", "reason"])

    def __str__(self) -> str:
        head = (f"{self.path.name}: {self.rows} rows, {len(self.applied)} labels applied, "
                f"{self.unchanged} unchanged, {len(self.problems)} bad rows")
        if self.problems and not self.applied and not self.partial:
            head += " (nothing applied: fix them or import with partial=True)"
        lines = [head] + [f"  {p}" for p in self.problems[:SHOW_VALUES]]
        if len(self.problems) > SHOW_VALUES:
            lines.append(f"  ... and {len(self.problems) - SHOW_VALUES} more")
        return "\n".join(lines)


@dataclass
class LabelStats:
    """Counts of the log. `acceptance_rate`: suggestion-accepted / all decisions (accepted + corrected + batch),
    undone decisions excluded; None before any decision."""

    counts: pd.DataFrame  # annotator, source, events
    decisions: int
    accepted: int
    undone: int
    labelled: int  # items with a current label
    acceptance_rate: float | None

    def __str__(self) -> str:
        rate = "n/a" if self.acceptance_rate is None else f"{self.acceptance_rate:.1%}"
        return (f"{self.labelled} labelled items, {self.decisions} decisions ({self.accepted} accepted suggestions, "
                f"acceptance {rate}), {self.undone} undone")


# ----------------------------------------------------------------------------- helpers
def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(t: object) -> datetime:
    """Times read back: SQLite gives naive datetimes (stored as UTC), PostgreSQL aware ones."""
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _raw_time(col: sa.Column) -> sa.ColumnElement:
    """Select a time column without per-row parsing in Python (SQLite: ISO text); `_times` converts in bulk."""
    return sa.type_coerce(col, sa.Text).label(col.name)


def _times(col: pd.Series) -> pd.Series:
    """A column of stored times as UTC timestamps (naive values from SQLite are UTC)."""
    return pd.to_datetime(col, utc=True) if len(col) else pd.Series([], dtype="datetime64[ns, UTC]")


def _event(row) -> LabelEvent:
    m = row._mapping
    return LabelEvent(id=int(m["id"]), time=_utc(m["time"]), annotator=m["annotator"], item_id=m["item_id"],
                      field=m["field"], old_value=m["old_value"], new_value=m["new_value"], source=m["source"],
                      batch_id=m["batch_id"], undoes=m["undoes"])


def _text(name: str, value: object, example: str) -> str:
    """A required non-empty string argument, or a one-line InvalidArgumentError."""
    if isinstance(value, (int,)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{name} {value!r} is empty or not text; give a non-empty string (e.g. {example})")
    return value.strip()


def _chunks(seq: Sequence[T], n: int = 500) -> Iterable[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _sqlstate(e: BaseException) -> str | None:
    return getattr(getattr(e, "orig", None), "sqlstate", None)


def _writable(path: Path) -> bool:
    """Writable by us; for root (who may write anything) a file or folder without write bits counts as read-only."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return False
        if os.geteuid() == 0:
            return bool(path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    except OSError:
        return False
    return os.access(path, os.W_OK)


def _refusal(field: str, value: str, tx: Taxonomy) -> str:
    return (f"{value!r} is not a {field} in the taxonomy; valid values: {tx.describe(SHOW_VALUES)} "
            "(or add it with add_to_taxonomy=True)")


# ----------------------------------------------------------------------------- the store
class LabelStore:
    """Append-only label events plus current labels, on SQLite (default) or PostgreSQL.

    Args:
        url_or_path: a file path, `sqlite:///path`, or `postgresql[+psycopg]://user:pw@host/db`;
            default `paths.default_labels_path()` (data/labels.sqlite).
        timeout: seconds a write waits for another process's lock before `LabelStoreBusyError`.
        known_ids: item ids that may be labelled (unknown ones -> `UnknownItemError`); None: any.
        catalog: a `Catalog` whose ids are the known ids (instead of `known_ids`).

    Example:
        >>> import tempfile, os
        >>> with LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"), known_ids=["a", "b"]) as s:
        ...     _ = s.set_many([("a", "red"), ("b", "blue")], "colour", annotator="bo")
        ...     s.labels("colour")["value"].tolist()
        ['red', 'blue']
    """

    def __init__(self, url_or_path: str | os.PathLike | None = None, timeout: float = 10.0,
                 known_ids: Iterable[object] | None = None, catalog=None) -> None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0 \
                or not math.isfinite(timeout):
            raise InvalidArgumentError(f"label store timeout {timeout!r} must be a positive number of seconds")
        self.timeout = float(timeout)
        ids = catalog.ids if catalog is not None else known_ids
        self.known_ids: frozenset[str] | None = (
            frozenset(str(i) for i in ids if str(i) != "") if ids is not None else None)
        self._taxonomies: dict[str, tuple[Taxonomy | None, float]] = {}  # field -> (stored taxonomy, when read)
        self._closed = False
        if url_or_path is None:
            from .paths import default_labels_path

            url_or_path = default_labels_path()
        self.backend, self.url, self.path = self._parse(url_or_path)
        self.name = str(self.path) if self.path is not None else self.url.render_as_string(hide_password=True)
        if self.backend == "sqlite":
            self._check_sqlite_path()
            self.engine = sa.create_engine(
                sa.engine.URL.create("sqlite", database=str(self.path)),
                connect_args={"timeout": _SQLITE_BUSY_MS / 1000, "check_same_thread": False})
            sa_event.listen(self.engine, "connect", _sqlite_connect)
            sa_event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = sa.create_engine(self.url, pool_pre_ping=True,
                                           connect_args={"connect_timeout": max(1, math.ceil(self.timeout))})
        self._writer = self.engine.execution_options(fclip_write=True)
        try:
            self._open()
        except BaseException:
            self.engine.dispose()
            raise

    # ---- opening -------------------------------------------------------
    @staticmethod
    def _parse(url_or_path: str | os.PathLike) -> tuple[str, sa.engine.URL | None, Path | None]:
        text = os.fspath(url_or_path)
        if "://" not in text:
            return "sqlite", None, Path(text).expanduser().resolve()
        try:
            url = make_url(text)
        except Exception as e:
            raise LabelStoreError(f"label store URL {text!r} cannot be parsed ({e}); "
                                  "use a file path, sqlite:///PATH or postgresql://USER:PW@HOST/DB") from e
        driver = url.drivername
        if driver.startswith("sqlite"):
            if not url.database or url.database == ":memory:":
                raise LabelStoreError(f"label store URL {text!r} names no file; labels must be saved in a file: "
                                      "use sqlite:///path/to/labels.sqlite")
            return "sqlite", None, Path(url.database).expanduser().resolve()
        if driver in ("postgresql", "postgres", "postgresql+psycopg"):
            return "postgresql", url.set(drivername="postgresql+psycopg"), None
        raise LabelStoreError(f"label store URL scheme {driver!r} is not supported; use a file path, "
                              "sqlite:///PATH, postgresql://... or postgresql+psycopg://...")

    def _check_sqlite_path(self) -> None:
        path = self.path
        if path.is_dir():
            raise LabelStoreError(f"label store {path} is a folder; give a file path such as {path / 'labels.sqlite'}")
        folder = path.parent
        if not folder.exists():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LabelStoreReadOnlyError(
                    f"label store {path} is read-only: your labels could not be saved; its folder {folder} "
                    f"cannot be created ({e.strerror}): choose another path") from e
        what = None
        if path.exists() and not _writable(path):
            what = "the file is read-only"
        elif not _writable(folder):
            what = f"its folder {folder} is read-only (SQLite writes a journal beside the file)"
        if what:
            raise LabelStoreReadOnlyError(
                f"label store {path} is read-only: your labels could not be saved; {what}: "
                "make it writable (chmod u+w) or open a store at another path")

    def _open(self) -> None:
        """Create the tables (first use) or check that the database is a label store of a known version."""
        def init(conn: sa.Connection) -> None:
            if self.backend == "postgresql":
                ro = conn.exec_driver_sql("SHOW transaction_read_only").scalar()
                if ro == "on":
                    raise LabelStoreReadOnlyError(
                        f"label store {self.name} is read-only: your labels could not be saved; the server "
                        "accepts no writes (a standby?): connect to the primary")
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": 0x6C61_6265_6C73})  # 'labels'
            existing = set(sa.inspect(conn).get_table_names())
            # a SQLite file of another kind (e.g. the embedding cache) is a mistake; a team's PostgreSQL
            # database may hold other tables beside the label_* ones
            if self.backend == "sqlite" and existing and "label_meta" not in existing:
                raise LabelStoreError(
                    f"label store {self.name} is a database but not a label store (it has tables "
                    f"{', '.join(sorted(existing)[:5])}); give another file or database")
            metadata.create_all(conn)
            version = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar()
            if version is None:
                conn.execute(meta_t.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])
            elif version != str(SCHEMA_VERSION):
                raise LabelStoreError(f"label store {self.name} has schema version {version}, this workbench "
                                      f"reads version {SCHEMA_VERSION}; upgrade fclip-workbench")

        self._write(init, opening=True)

    # ---- transactions --------------------------------------------------
    def _write(self, work: Callable[[sa.Connection], T], opening: bool = False) -> T:
        """Run `work(conn)` in one write transaction; retry on lock/serialisation errors up to `timeout`."""
        self._check_open()
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                with self._writer.begin() as conn:
                    if self.backend == "postgresql":
                        left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {left_ms}")
                    return work(conn)
            except sa.exc.DBAPIError as e:
                self._raise_for(e, opening)
                attempt += 1
                if time.monotonic() >= deadline:
                    raise LabelStoreBusyError(
                        f"label store {self.name} is locked by another process for more than "
                        f"{self.timeout:g} s; retry") from e
                pause = min(0.25, 0.002 * 2 ** min(attempt, 8)) * (0.5 + random.random())
                time.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    def _read(self) -> sa.Connection:
        self._check_open()
        return self.engine.connect()

    def _raise_for(self, e: sa.exc.DBAPIError, opening: bool) -> None:
        """Re-raise `e` as a one-line LabelStore error unless it is a retryable lock/serialisation error."""
        msg = _first_line(e)
        low = msg.lower()
        state = _sqlstate(e)
        if state in _RETRY_SQLSTATES or "database is locked" in low or "database is busy" in low \
                or "database table is locked" in low:
            return
        if state in _READONLY_SQLSTATES or "readonly" in low or "read-only" in low:
            raise LabelStoreReadOnlyError(f"label store {self.name} is read-only: your labels could not be saved; "
                                          f"{msg}: make it writable or open another store") from e
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            raise LabelStoreError(f"label store {self.name} is damaged or not a SQLite database ({msg}); "
                                  "move it aside and restore a backup or an export") from e
        if "disk" in low and "full" in low:
            raise LabelStoreError(f"label store {self.name}: the disk is full ({msg}); free space and retry") from e
        if isinstance(e, sa.exc.OperationalError) and (opening or "connect" in low or "connection" in low):
            raise LabelStoreError(f"label store {self.name} cannot be opened: {msg}") from e
        raise e

    def _check_open(self) -> None:
        if self._closed:
            raise LabelStoreError(f"label store {self.name} is closed; open a new LabelStore")

    def close(self) -> None:
        """Release the connections (idempotent)."""
        if not self._closed:
            self._closed = True
            self.engine.dispose()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LabelStore({self.name!r}, backend={self.backend!r})"

    # ---- locking -------------------------------------------------------
    def _lock_keys(self, conn: sa.Connection, keys: Iterable[str]) -> None:
        """PostgreSQL: transaction advisory locks on `keys`, in a fixed order (no deadlock). SQLite: already
        serialised by BEGIN IMMEDIATE."""
        if self.backend != "postgresql":
            return
        keys = sorted(set(keys))
        for chunk in _chunks(keys, 1000):
            conn.execute(sa.text(
                "SELECT count(pg_advisory_xact_lock(h)) FROM "
                "(SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(CAST(:keys AS text[])) AS k ORDER BY h) s"),
                {"keys": list(chunk)})

    @staticmethod
    def _item_key(item_id: str, field: str) -> str:
        return f"{field}\x1f{item_id}"

    # ---- validation ----------------------------------------------------
    def _check_item(self, item_id: object, known: frozenset[str] | None = None) -> str:
        item = _text("item id", item_id, "'39386'")
        known = self.known_ids if known is None else known
        if known is not None and item not in known:
            raise UnknownItemError(f"item id {item!r} is not in this store's catalog ({len(known)} known ids); "
                                   "check the id or open the store with the right catalog")
        return item

    def _check_value(self, conn: sa.Connection | None, field: str, value: object, taxonomy: Taxonomy | None,
                     add: bool) -> tuple[str | None, bool]:
        """(canonical value, whether it must be added to the stored taxonomy)."""
        if value is None:
            return None, False
        if not isinstance(value, str) or not value.strip():
            raise LabelValueError(f"label value {value!r} for {field} is empty or not text; give a non-empty string "
                                  "(or None to remove the label)")
        value = value.strip()
        tx = taxonomy if taxonomy is not None else self.taxonomy(field, conn=conn)
        if tx is None:
            return value, False
        found = tx.canonical(value)
        if found is None and taxonomy is None:
            tx = self.taxonomy(field, conn=conn, refresh=True)  # another process may have added it
            found = tx.canonical(value) if tx is not None else None
        if found is not None:
            return found, False
        if not add:
            raise LabelValueError(_refusal(field, value, tx))
        return value, True

    # ---- taxonomies ----------------------------------------------------
    def set_taxonomy(self, field: str, taxonomy: Taxonomy, annotator: str | None = None) -> Taxonomy:
        """Attach `taxonomy` to `field` (stored, seen by every process): its values are merged with those
        already stored (nothing an annotator added is dropped). Returns the stored taxonomy.

        >>> import tempfile, os
        >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
        >>> s.set_taxonomy("colour", Taxonomy("colour", ["Red", "Blue"])).values
        ['Red', 'Blue']
        """
        field = _text("field", field, "'articleType'")
        if not isinstance(taxonomy, Taxonomy):
            raise InvalidArgumentError(f"taxonomy must be a Taxonomy, not {type(taxonomy).__name__}; "
                                       "build one with Taxonomy.from_catalog / from_file / from_values")

        def work(conn: sa.Connection) -> Taxonomy:
            self._lock_keys(conn, [f"taxonomy\x1f{field}"])
            self._add_values(conn, field, taxonomy.values, taxonomy.source, annotator)
            return self.taxonomy(field, conn=conn, refresh=True)

        return self._write(work)

    def taxonomy(self, field: str, conn: sa.Connection | None = None, refresh: bool = False) -> Taxonomy | None:
        """The taxonomy stored for `field`, or None when values are free."""
        cached = self._taxonomies.get(field)
        if not refresh and cached is not None and (cached[0] is not None or time.monotonic() - cached[1] < 2.0):
            return cached[0]  # a field without taxonomy is looked up again after 2 s (another process may set one)
        query = (sa.select(taxonomies_t.c.value, taxonomies_t.c.source)
                 .where(taxonomies_t.c.field == field).order_by(taxonomies_t.c.position))
        if conn is None:
            with self._read() as c:
                rows = c.execute(query).all()
        else:
            rows = conn.execute(query).all()
        tx = Taxonomy(field, [r.value for r in rows], source=rows[0].source) if rows else None
        self._taxonomies[field] = (tx, time.monotonic())
        return tx

    def _add_values(self, conn: sa.Connection, field: str, values: Sequence[str], source: str,
                    annotator: str | None) -> None:
        have = {r.key for r in conn.execute(sa.select(taxonomies_t.c.key).where(taxonomies_t.c.field == field))}
        start = conn.execute(sa.select(sa.func.coalesce(sa.func.max(taxonomies_t.c.position), -1))
                             .where(taxonomies_t.c.field == field)).scalar() + 1
        now, rows = _now(), []
        for v in values:
            key = v.strip().casefold()
            if key in have:
                continue
            have.add(key)
            rows.append({"field": field, "key": key, "value": v, "position": start + len(rows), "source": source,
                         "added_by": annotator, "time": now})
        if rows:
            conn.execute(taxonomies_t.insert(), rows)

    # ---- writing -------------------------------------------------------
    def set(self, item_id: object, field: str, value: str | None, annotator: str, source: str = "corrected",
            taxonomy: Taxonomy | None = None, add_to_taxonomy: bool = False,
            batch_id: str | None = None, expect_event: int | None | _AnyEvent = ANY_EVENT) -> LabelEvent:
        """Record one decision and make it the current label; returns once it is committed (durable).

        `value` is checked against `taxonomy` (or the field's stored taxonomy) and stored in its canonical
        spelling; `add_to_taxonomy=True` adds an unknown value to the stored taxonomy instead of refusing it.
        `value=None` removes the label. `expect_event`: compare-and-set on what the UI showed: the id of the
        last event on (item, field) it saw (`current_events`), None for "never labelled"; when another event
        came since, nothing is written and `ConflictError` names who changed it.
        """
        expect = None if expect_event is ANY_EVENT else {item_id: expect_event}
        return self._set_rows([(item_id, value)], field, annotator, source, taxonomy, add_to_taxonomy,
                              batch_id, single=True, expect=expect)[0]

    def set_many(self, items: Sequence[tuple[object, str | None]], field: str, annotator: str,
                 source: str = "batch", taxonomy: Taxonomy | None = None, add_to_taxonomy: bool = False,
                 batch_id: str | None = None, expect_events: Mapping[object, int | None] | None = None
                 ) -> list[LabelEvent]:
        """Record many decisions on one field in ONE transaction (all or nothing), sharing a batch id.

        Every item and value is checked before anything is written. `expect_events` ({item: last event id
        shown, or None}, one per item): compare-and-set; when any item changed since, NOTHING is written and
        `ConflictError` names the first such item.
        """
        if expect_events is not None and not isinstance(expect_events, Mapping):
            raise InvalidArgumentError(f"expect_events must be a mapping item id -> event id (or None), "
                                       f"not {type(expect_events).__name__}")
        if isinstance(items, (str, bytes)) or not all(isinstance(t, (tuple, list)) and len(t) == 2 for t in items):
            raise InvalidArgumentError("set_many items must be a list of (item_id, value) pairs")
        if not items:
            return []
        return self._set_rows(list(items), field, annotator, source, taxonomy, add_to_taxonomy,
                              batch_id or uuid.uuid4().hex, single=False,
                              expect=dict(expect_events) if expect_events is not None else None)

    def _check_expect(self, expect: Mapping[object, object] | None, items: Sequence[str]) -> dict[str, int | None] | None:
        """{item: expected last event id} for every written item, or None (unconditional)."""
        if expect is None:
            return None
        out: dict[str, int | None] = {}
        for key, eid in expect.items():
            if eid is not None and (not isinstance(eid, int) or isinstance(eid, bool) or eid < 1):
                raise InvalidArgumentError(f"expected event id {eid!r} for item {key!r} is not an event id; give "
                                           "the id from current_events() (or None: never labelled)")
            out[_text("item id", key, "'39386'")] = eid
        missing = [i for i in items if i not in out]
        if missing:
            raise InvalidArgumentError(f"expect_events gives no expected event for item(s) "
                                       f"{', '.join(map(repr, missing[:5]))}; give one per item written")
        return {i: out[i] for i in items}

    def _set_rows(self, items: list, field: str, annotator: str, source: str, taxonomy: Taxonomy | None,
                  add_to_taxonomy: bool, batch_id: str | None, single: bool,
                  expect: Mapping[object, object] | None = None) -> list[LabelEvent]:
        field = _text("field", field, "'articleType'")
        annotator = _text("annotator name", annotator, "'ana'")
        if source not in SOURCES or source == "undo":
            raise InvalidArgumentError(f"label source {source!r} is unknown; use one of: "
                                       f"{', '.join(s for s in SOURCES if s != 'undo')} (undo() writes 'undo')")
        rows: dict[str, str | None] = {}
        added: list[str] = []
        for item_id, value in items:
            item = self._check_item(item_id)
            canon, add = self._check_value(None, field, value, taxonomy, add_to_taxonomy)
            if add:
                canon = taxonomy.add(canon) if taxonomy is not None else canon
                added.append(canon)
            if item in rows and rows[item] != canon:
                raise InvalidArgumentError(f"item {item!r} appears twice in set_many with different values "
                                           f"({rows[item]!r}, {canon!r}); give one value per item")
            rows[item] = canon
        pairs = list(rows.items())
        expected = self._check_expect(expect, list(rows))

        def work(conn: sa.Connection) -> list[LabelEvent]:
            if expected is not None:
                self._lock_keys(conn, [self._item_key(i, field) for i, _ in pairs])
                self._raise_if_changed(conn, field, expected)
            if added:
                self._lock_keys(conn, [f"taxonomy\x1f{field}"])
                base = self.taxonomy(field, conn=conn, refresh=True)
                if base is None and taxonomy is not None:  # per-call taxonomy: store it with the new values
                    self._add_values(conn, field, taxonomy.values, taxonomy.source, None)
                self._add_values(conn, field, added, f"added by {annotator}", annotator)
            return self._apply(conn, field, pairs, annotator, source, batch_id)

        out = self._write(work)
        if added:
            self._taxonomies.pop(field, None)
        return out

    def _current(self, conn: sa.Connection, field: str, item_ids: Sequence[str]) -> dict[str, tuple]:
        """{item_id: (value, exists)} for the current rows of `field` (read inside the locked transaction)."""
        out: dict[str, tuple] = {}
        for chunk in _chunks(list(item_ids)):
            q = sa.select(current_t.c.item_id, current_t.c.value).where(
                current_t.c.field == field, current_t.c.item_id.in_(chunk))
            out.update({r.item_id: r.value for r in conn.execute(q)})
        return out

    def current_events(self, field: str, item_ids: Iterable[object]) -> dict[str, tuple[str | None, int | None]]:
        """{item id: (current value, id of the last event on (item, field))}; (None, None) for an item never
        labelled. What a UI shows, to pass back as `expect_event(s)`.

        >>> import tempfile, os
        >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
        >>> ev = s.set("p1", "colour", "red", annotator="ana")
        >>> s.current_events("colour", ["p1", "p2"]) == {"p1": ("red", ev.id), "p2": (None, None)}
        True
        """
        field = _text("field", field, "'articleType'")
        if isinstance(item_ids, (str, bytes, int)):
            raise InvalidArgumentError(f"item_ids must be a list of item ids, not {type(item_ids).__name__} "
                                       f"{item_ids!r}")
        items = list(dict.fromkeys(_text("item id", i, "'39386'") for i in item_ids))
        with self._read() as conn:
            rows = self._current_rows(conn, field, items)
        return {i: (rows[i].value, int(rows[i].event_id)) if i in rows else (None, None) for i in items}

    def _current_rows(self, conn: sa.Connection, field: str, item_ids: Sequence[str]) -> dict[str, sa.Row]:
        out: dict[str, sa.Row] = {}
        for chunk in _chunks(list(item_ids)):
            q = sa.select(current_t.c.item_id, current_t.c.value, current_t.c.annotator, current_t.c.event_id).where(
                current_t.c.field == field, current_t.c.item_id.in_(chunk))
            out.update({r.item_id: r for r in conn.execute(q)})
        return out

    def _raise_if_changed(self, conn: sa.Connection, field: str, expected: Mapping[str, int | None]) -> None:
        """ConflictError when an item's last event on `field` is not the expected one (inside the lock)."""
        rows = self._current_rows(conn, field, list(expected))
        for item, want in expected.items():
            row = rows.get(item)
            have = int(row.event_id) if row is not None else None
            if have == want:
                continue
            if row is None:
                what = "its label history is gone (another store?)"
            elif row.value is None:
                what = f"{row.annotator} removed its label"
            else:
                what = f"{row.annotator} set it to {row.value!r}"
            raise ConflictError(f"item {item!r} ({field}): {what} after this was shown; reload and decide again")

    def _apply(self, conn: sa.Connection, field: str, pairs: Sequence[tuple[str, str | None]], annotator: str,
               source: str, batch_id: str | None, undoes: Sequence[int | None] | None = None) -> list[LabelEvent]:
        """Lock, read the old values, append the events and update `label_current` (caller's transaction)."""
        self._lock_keys(conn, [self._item_key(i, field) for i, _ in pairs])
        old = self._current(conn, field, [i for i, _ in pairs])
        now = _now()
        params = [{"time": now, "annotator": annotator, "item_id": item, "field": field, "old_value": old.get(item),
                   "new_value": value, "source": source, "batch_id": batch_id,
                   "undoes": undoes[k] if undoes else None} for k, (item, value) in enumerate(pairs)]
        if len(params) == 1:
            ids = [conn.execute(events_t.insert().returning(events_t.c.id), params[0]).scalar_one()]
        else:
            res = conn.execute(events_t.insert().returning(events_t.c.id, sort_by_parameter_order=True), params)
            ids = [r[0] for r in res]
        updates, inserts = [], []
        for p, eid in zip(params, ids):
            row = {"k_item": p["item_id"], "k_field": field, "value": p["new_value"], "annotator": annotator,
                   "time": now, "event_id": eid}
            (updates if p["item_id"] in old else inserts).append(row)
        if updates:
            conn.execute(current_t.update().where(current_t.c.item_id == sa.bindparam("k_item"),
                                                  current_t.c.field == sa.bindparam("k_field")),
                         [{k: v for k, v in r.items()} for r in updates])
        if inserts:
            conn.execute(current_t.insert(), [{"item_id": r["k_item"], "field": field, "value": r["value"],
                                               "annotator": annotator, "time": now, "event_id": r["event_id"]}
                                              for r in inserts])
        return [LabelEvent(id=eid, time=now, annotator=annotator, item_id=p["item_id"], field=field,
                           old_value=p["old_value"], new_value=p["new_value"], source=source, batch_id=batch_id,
                           undoes=p["undoes"]) for p, eid in zip(params, ids)]

    def _refuse_if_touched(self, conn: sa.Connection, annotator: str, field: str,
                           latest: Mapping[str, LabelEvent]) -> None:
        """UndoConflictError when any event after the one being undone touched its (item, field), unless it is
        `annotator`'s own undo or own undone decision: undo compares events, not values."""
        low = min(ev.id for ev in latest.values())
        later: list[sa.Row] = []
        for chunk in _chunks(list(latest)):
            later += conn.execute(sa.select(events_t.c.id, events_t.c.item_id, events_t.c.annotator,
                                            events_t.c.new_value, events_t.c.source).where(
                events_t.c.field == field, events_t.c.item_id.in_(chunk), events_t.c.id > low)
                .order_by(events_t.c.id)).all()
        later = [r for r in later if r.id > latest[r.item_id].id]
        own = [r.id for r in later if r.annotator == annotator and r.source != "undo"]
        undone: set[int] = set()
        for chunk in _chunks(own):
            undone.update(conn.execute(sa.select(events_t.c.undoes).where(events_t.c.undoes.in_(chunk))).scalars())
        for r in reversed(later):  # the most recent other decision: the one the item shows now
            if r.annotator == annotator and (r.source == "undo" or r.id in undone):
                continue
            what = "removed its label" if r.new_value is None else f"set it to {r.new_value!r}"
            raise UndoConflictError(
                f"cannot undo {annotator}'s label of item {r.item_id!r} ({field}): {r.annotator} {what} since "
                "(their decision is kept); set the value you want instead")

    def undo(self, annotator: str, field: str | None = None) -> LabelEvent | None:
        """Revert `annotator`'s own last decision not already undone (on `field`, or any field), as a new
        "undo" event restoring the old value; again reverts the decision before. A batch or an import is
        undone as a whole (the last of its undo events is returned). None when nothing is left to undo.

        Raises `UndoConflictError` when someone else changed the item since (their decision is kept).
        """
        annotator = _text("annotator name", annotator, "'ana'")
        if field is not None:
            field = _text("field", field, "'articleType'")

        def work(conn: sa.Connection) -> LabelEvent | None:
            self._lock_keys(conn, [f"undo\x1f{annotator}"])
            undone = sa.select(events_t.c.undoes).where(events_t.c.undoes.is_not(None)).scalar_subquery()
            q = sa.select(events_t).where(events_t.c.annotator == annotator, events_t.c.source != "undo",
                                          events_t.c.id.not_in(undone))
            if field is not None:
                q = q.where(events_t.c.field == field)
            last = conn.execute(q.order_by(events_t.c.id.desc()).limit(1)).first()
            if last is None:
                return None
            last = _event(last)
            group = [last]
            if last.source in GROUP_SOURCES and last.batch_id is not None:
                group = [_event(r) for r in conn.execute(
                    q.where(events_t.c.batch_id == last.batch_id).order_by(events_t.c.id))]
            by_field: dict[str, list[LabelEvent]] = {}
            for ev in group:
                by_field.setdefault(ev.field, []).append(ev)
            batch = uuid.uuid4().hex if len(group) > 1 else None
            out: list[LabelEvent] = []
            for fld, evs in by_field.items():
                latest = {ev.item_id: ev for ev in evs}  # an item set twice in one group: revert to the first old
                first: dict[str, LabelEvent] = {}
                for ev in evs:
                    first.setdefault(ev.item_id, ev)
                self._lock_keys(conn, [self._item_key(i, fld) for i in latest])
                self._refuse_if_touched(conn, annotator, fld, latest)
                extra = [ev for ev in evs if latest[ev.item_id].id != ev.id]
                if extra:  # mark the other events of the group undone too (before the undo that ends last)
                    conn.execute(events_t.insert(), [
                        {"time": _now(), "annotator": annotator, "item_id": ev.item_id, "field": fld,
                         "old_value": first[ev.item_id].old_value, "new_value": first[ev.item_id].old_value,
                         "source": "undo", "batch_id": batch, "undoes": ev.id} for ev in extra])
                pairs = [(item, first[item].old_value) for item in latest]
                out += self._apply(conn, fld, pairs, annotator, "undo", batch,
                                   undoes=[latest[item].id for item in latest])
            return out[-1] if out else None

        return self._write(work)

    # ---- reading -------------------------------------------------------
    def get(self, item_id: object, field: str) -> str | None:
        """The current label of `item_id` for `field`, or None."""
        item = _text("item id", item_id, "'39386'")
        with self._read() as conn:
            return conn.execute(sa.select(current_t.c.value).where(
                current_t.c.item_id == item, current_t.c.field == field)).scalar()

    def labels(self, field: str) -> pd.DataFrame:
        """Current labels of `field`: DataFrame[item_id, value, annotator, time], in labelling order."""
        q = (sa.select(current_t.c.item_id, current_t.c.value, current_t.c.annotator, _raw_time(current_t.c.time))
             .where(current_t.c.field == field, current_t.c.value.is_not(None)).order_by(current_t.c.event_id))
        with self._read() as conn:
            rows = conn.execute(q).all()
        df = pd.DataFrame([tuple(r) for r in rows], columns=LABEL_COLUMNS)
        df["time"] = _times(df["time"])
        return df

    def fields(self) -> list[str]:
        """Fields with at least one event."""
        with self._read() as conn:
            return [r[0] for r in conn.execute(sa.select(events_t.c.field).distinct().order_by(events_t.c.field))]

    def history(self, item_id: object | None = None, field: str | None = None) -> pd.DataFrame:
        """Every event (optionally of one item and/or field), oldest first: DataFrame[id, time, annotator,
        item_id, field, old_value, new_value, source, batch_id, undoes]."""
        q = sa.select(*[_raw_time(c) if c.name == "time" else c for c in events_t.c])
        if item_id is not None:
            q = q.where(events_t.c.item_id == _text("item id", item_id, "'39386'"))
        if field is not None:
            q = q.where(events_t.c.field == field)
        with self._read() as conn:
            rows = conn.execute(q.order_by(events_t.c.id)).all()
        df = pd.DataFrame([tuple(r) for r in rows], columns=EVENT_COLUMNS)
        df["time"] = _times(df["time"])
        df["undoes"] = df["undoes"].astype("Int64")
        for col in ("old_value", "new_value", "batch_id"):  # missing values stay None (not NaN)
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        return df

    def stats(self, field: str | None = None) -> LabelStats:
        """Counts by annotator and source; acceptance rate = suggestion-accepted / decisions (undone excluded)."""
        hist = self.history(field=field)
        undone_ids = set(hist["undoes"].dropna().astype(int))
        live = hist[~hist["id"].isin(undone_ids)]
        counts = (hist.groupby(["annotator", "source"]).size().rename("events").reset_index()
                  if len(hist) else pd.DataFrame(columns=["annotator", "source", "events"]))
        decisions = int(live["source"].isin(DECISION_SOURCES).sum())
        accepted = int((live["source"] == "suggestion-accepted").sum())
        q = sa.select(sa.func.count()).select_from(current_t).where(current_t.c.value.is_not(None))
        if field is not None:
            q = q.where(current_t.c.field == field)
        with self._read() as conn:
            labelled = int(conn.execute(q).scalar())
        return LabelStats(counts=counts, decisions=decisions, accepted=accepted, undone=len(undone_ids),
                          labelled=labelled, acceptance_rate=accepted / decisions if decisions else None)

    # ---- export / import ----------------------------------------------
    def export(self, path: str | os.PathLike, field: str | None = None, history: bool = False) -> Path:
        """Write the current labels (DataFrame[field, item_id, value, annotator, time]) or, with `history=True`,
        the whole log to `.csv` or `.parquet`, atomically (an existing file is replaced only when complete)."""
        path = Path(path)
        fmt = path.suffix.lower()
        if fmt not in (".csv", ".parquet"):
            raise InvalidArgumentError(f"export file {path} has suffix {fmt!r}; use .csv or .parquet")
        if history:
            df = self.history(field=field)
        else:
            fields = [field] if field is not None else self.fields()
            parts = [self.labels(f).assign(field=f) for f in fields]
            df = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LABEL_COLUMNS + ["field"]))
            df = df[["field"] + LABEL_COLUMNS]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            if fmt == ".csv":
                out = df.copy()
                if "time" in out and len(out):
                    out["time"] = out["time"].map(lambda t: t.isoformat())
                out.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("exported %d rows to %s", len(df), path)
        return path

    def import_(self, path: str | os.PathLike, field: str | None = None, annotator: str = "",
                taxonomy: Taxonomy | None = None, known_ids: Iterable[object] | None = None,
                partial: bool = False) -> ImportReport:
        """Import labels from `.csv`/`.parquet` with columns item_id, value (and field, unless `field` is given;
        an export of this store reads back as is). Every row is checked first (empty or malformed rows, unknown
        ids, values outside the taxonomy, conflicting repeats); with any bad row NOTHING is applied unless
        `partial=True`, which applies the good rows. What is applied is one transaction (source "import")."""
        annotator = _text("annotator name", annotator, "'ana'")
        path = Path(path)
        rows, problems = _read_label_file(path, field)
        known = frozenset(str(i) for i in known_ids) if known_ids is not None else self.known_ids
        report = ImportReport(path=path, rows=len(rows) + sum(p.reason.startswith("malformed") for p in problems),
                              problems=problems, partial=partial)
        good: dict[tuple[str, str], tuple[int, str]] = {}  # (field, item) -> (row, value)
        for rownum, item, fld, value in rows:
            bad = None
            if not fld:
                bad = "empty field"
            elif not item:
                bad = "empty item id"
            elif not value:
                bad = "empty value"
            elif field is not None and fld != field:
                bad = f"field {fld!r} is not the field being imported ({field!r})"
            elif known is not None and item not in known:
                bad = f"unknown item id {item!r} (not in the catalog)"
            else:
                tx = taxonomy if taxonomy is not None and taxonomy.field in (fld, field) else self.taxonomy(fld)
                if tx is not None:
                    canon = tx.canonical(value)
                    if canon is None:
                        bad = f"{value!r} is not in the {fld} taxonomy ({tx.describe(10)})"
                    else:
                        value = canon
            if bad is None and (fld, item) in good:
                first_row, first_value = good[(fld, item)]
                if first_value == value:
                    report.duplicates += 1
                    continue
                bad = f"item {item!r} already has value {first_value!r} in row {first_row}; give one value per item"
            if bad:
                problems.append(RowProblem(rownum, item, fld, value, bad))
            else:
                good[(fld, item)] = (rownum, value)
        problems.sort(key=lambda p: p.row)
        if problems and not partial:
            log.warning("import of %s refused: %d bad rows", path, len(problems))
            return report
        by_field: dict[str, list[tuple[str, str]]] = {}
        for (fld, item), (_, value) in good.items():
            by_field.setdefault(fld, []).append((item, value))
        batch = uuid.uuid4().hex

        def work(conn: sa.Connection) -> tuple[list[LabelEvent], int]:
            applied, unchanged = [], 0
            for fld, pairs in by_field.items():
                self._lock_keys(conn, [self._item_key(i, fld) for i, _ in pairs])
                old = self._current(conn, fld, [i for i, _ in pairs])
                todo = [(i, v) for i, v in pairs if old.get(i) != v]
                unchanged += len(pairs) - len(todo)
                if todo:
                    applied += self._apply(conn, fld, todo, annotator, "import", batch)
            return applied, unchanged

        report.applied, report.unchanged = self._write(work)
        log.info("imported %s: %d applied, %d unchanged, %d bad rows", path, len(report.applied),
                 report.unchanged, len(problems))
        return report


# ----------------------------------------------------------------------------- SQLite connection setup
def _sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (BEGIN IMMEDIATE for writes)
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("fclip_write") else "BEGIN")


# ----------------------------------------------------------------------------- import files
def _read_label_file(path: Path, field: str | None) -> tuple[list[tuple[int, str, str, str]], list[RowProblem]]:
    """Rows (row number, item_id, field, value) and malformed-row problems of a CSV/Parquet label file."""
    if not path.is_file():
        raise LabelImportError(f"label file {path} does not exist; give a .csv or .parquet file")
    fmt = path.suffix.lower()
    problems: list[RowProblem] = []
    if fmt == ".csv":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise LabelImportError(f"label file {path} cannot be read as UTF-8 text ({e}); save it as UTF-8 CSV") from e
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            table = list(reader)
        except csv.Error as e:
            raise LabelImportError(f"label file {path} is not valid CSV ({e})") from e
        if not table:
            raise LabelImportError(f"label file {path} is empty; it needs a header row with item_id and value")
        header = [h.strip() for h in table[0]]
        records = []
        for n, row in enumerate(table[1:], start=1):
            if not any(c.strip() for c in row):
                problems.append(RowProblem(n, "", field or "", "", "malformed row: empty line"))
                continue
            if len(row) != len(header):
                problems.append(RowProblem(n, row[0].strip() if row else "", field or "", "",
                                           f"malformed row: {len(row)} fields, the header has {len(header)}"))
                continue
            records.append((n, dict(zip(header, row))))
    elif fmt == ".parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as e:
            raise LabelImportError(f"label file {path} is not a readable Parquet file ({_first_line(e)})") from e
        header = [str(c) for c in df.columns]
        records = [(n, dict(zip(header, vals))) for n, vals in enumerate(df.itertuples(index=False), start=1)]
    else:
        raise LabelImportError(f"label file {path} has suffix {fmt!r}; use .csv or .parquet")
    need = ["item_id", "value"] + ([] if field is not None else ["field"])
    missing = [c for c in need if c not in header]
    if missing:
        hint = "" if field is not None or "field" not in missing else " (or pass field=...)"
        raise LabelImportError(f"label file {path} lacks column(s) {', '.join(missing)}{hint}; "
                               f"it has: {', '.join(header)}")
    out = []
    for n, rec in records:
        cells = {}
        bad = None
        for col in ("item_id", "value", "field"):
            v = rec.get(col, field)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                v = ""
            elif isinstance(v, float) and v.is_integer():
                v = str(int(v))
            elif not isinstance(v, (str, int)) or isinstance(v, bool):
                bad = f"malformed row: {col} is a {type(v).__name__}, not text"
                v = str(v)
            cells[col] = str(v).strip()
        if field is not None and not cells["field"]:
            cells["field"] = field
        if bad:
            problems.append(RowProblem(n, cells["item_id"], cells["field"], cells["value"], bad))
        else:
            out.append((n, cells["item_id"], cells["field"], cells["value"]))
    return out, problems
