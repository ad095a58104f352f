"""The label store's tables and the conversions of their rows and times (SQLAlchemy Core).

Tables: `label_events` (id, time, annotator, item_id, field, old_value, new_value, source, batch_id,
undoes), `label_current` (the current value of each (item, field) and the id of its LAST event, any
source, updated in the same transaction as the event), `label_taxonomies` (allowed values per field),
`label_roles` (who adjudicates or leads) and `label_meta` (schema version, each field's overlap share).

Version 2 added `label_roles` and the team sources (independent answers, agreed and adjudicated
decisions). Version 3 added multi-valued fields (`store/multivalue.py`: a `multi\x1f<field>` row in
`label_meta`, one add/remove event per value, the set as JSON in `label_current.value`): no new table, but
an older workbench must not write single values into a set. Older stores are upgraded in place when opened
for writing, and read as they are when opened read-only.

Example:
    >>> sorted(metadata.tables)
    ['label_current', 'label_events', 'label_meta', 'label_roles', 'label_taxonomies']
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable, Sequence, TypeVar

import pandas as pd
import sqlalchemy as sa

from fclip_workbench.labelling.store.records import LabelEvent

SCHEMA_VERSION = 3
UPGRADABLE_VERSIONS = ("1", "2")  # opened for writing, these are upgraded (tables added by create_all)
T = TypeVar("T")

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
    sa.Column("annotator", sa.Text, nullable=False),  # who wrote the last event
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event_id", sa.Integer, nullable=False),  # the last event on (item, field): compare-and-set
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
roles_t = sa.Table(
    "label_roles", metadata,
    sa.Column("annotator", sa.Text, primary_key=True),
    sa.Column("role", sa.Text, primary_key=True),  # "adjudicator" | "lead"
    sa.Column("granted_by", sa.Text),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
)
meta_t = sa.Table(
    "label_meta", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def now() -> datetime:
    return datetime.now(timezone.utc)


def utc(t: datetime | str) -> datetime:
    """Times read back: SQLite gives naive datetimes (stored as UTC), PostgreSQL aware ones."""
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def raw_time(col: sa.Column) -> sa.ColumnElement:
    """Select a time column without per-row parsing in Python (SQLite: ISO text); `times` converts in bulk."""
    return sa.type_coerce(col, sa.Text).label(col.name)


def times(col: pd.Series) -> pd.Series:
    """A column of stored times as UTC timestamps (naive values from SQLite are UTC)."""
    return pd.to_datetime(col, utc=True) if len(col) else pd.Series([], dtype="datetime64[ns, UTC]")


def to_event(row) -> LabelEvent:
    m = row._mapping
    return LabelEvent(id=int(m["id"]), time=utc(m["time"]), annotator=m["annotator"], item_id=m["item_id"],
                      field=m["field"], old_value=m["old_value"], new_value=m["new_value"], source=m["source"],
                      batch_id=m["batch_id"], undoes=m["undoes"])


def chunks(seq: Sequence[T], n: int = 500) -> Iterable[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
