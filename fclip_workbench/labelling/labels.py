"""LabelStore: every labelling decision as an append-only event log, on SQLite or PostgreSQL.

One SQLAlchemy Core implementation, two backends (`labelstore.connection`): a path or `sqlite:///` URL
(one SQLite file, durable when `set` returns) or `postgresql[+psycopg]://...` (a team server). The store is
put together from one module per responsibility, so each rule lives in one place:

- `labelstore.canon`: the one canonical form of ids, fields, values and names, on every write and read;
- `labelstore.taxonomies`: stored allowed values per field, and the value check;
- `labelstore.eventlog`: the event log, compare-and-set writes (`expect_event(s)`), undo by events;
- `labelstore.reading`: current labels, history, stats;
- `labelstore.multivalue`: multi-valued fields: a set per item, one add/remove event per value;
- `labelstore.overlap`: team labelling: overlap products answered independently, adjudication, roles;
- `labelstore.transfer`: formula-safe export and import of CSV/Parquet label files.

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

import os
from typing import Iterable

from fclip_workbench.labelling.store import canon
from fclip_workbench.labelling.store.connection import StoreConnection
from fclip_workbench.labelling.store.eventlog import EventLog
from fclip_workbench.labelling.store.multivalue import MultiValues
from fclip_workbench.labelling.store.overlap import TeamLabels
from fclip_workbench.labelling.store.reading import Reading
from fclip_workbench.labelling.store.records import (ANY_EVENT, DECISION_SOURCES, EVENT_COLUMNS, GROUP_SOURCES, LABEL_COLUMNS,
                                 SHOW_VALUES, SOURCES, ImportReport, LabelEvent, LabelStats, RowProblem)
from fclip_workbench.labelling.store.schema import SCHEMA_VERSION, current_t, events_t, meta_t, metadata, roles_t, taxonomies_t
from fclip_workbench.labelling.store.taxonomies import TaxonomyStorage
from fclip_workbench.labelling.store.transfer import Transfer
from fclip_workbench.labelling.taxonomy import Taxonomy
from fclip_workbench.labelling.textrules import MAX_CHARS, check_annotator_name

__all__ = ["LabelStore", "LabelEvent", "ImportReport", "LabelStats", "RowProblem", "ANY_EVENT",
           "check_annotator_name", "MAX_CHARS", "SOURCES", "DECISION_SOURCES", "GROUP_SOURCES", "EVENT_COLUMNS",
           "LABEL_COLUMNS", "SHOW_VALUES", "SCHEMA_VERSION", "metadata", "events_t", "current_t", "taxonomies_t",
           "meta_t", "roles_t"]


class LabelStore(Transfer, Reading, MultiValues, EventLog, TeamLabels, TaxonomyStorage, StoreConnection):
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
                 known_ids: Iterable[object] | None = None, catalog=None, read_only: bool = False) -> None:
        ids = catalog.ids if catalog is not None else known_ids
        self.known_ids: frozenset[str] | None = (
            frozenset(k for k in map(canon.known_id, ids) if k) if ids is not None else None)
        self._taxonomies: dict[str, tuple[Taxonomy | None, float]] = {}  # field -> (stored taxonomy, when read)
        self._multi_cache: frozenset[str] | None = None
        StoreConnection.__init__(self, url_or_path, timeout, read_only)

    def __enter__(self) -> "LabelStore":
        return self
