"""Reading the label store: current labels, the history of events, and statistics.

Every id and field name is canonicalised as the writes do (`canon`), so " colour" reads what "colour"
wrote.

Example:
    >>> import tempfile, os
    >>> from fclip_workbench.labelling.labels import LabelStore
    >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
    >>> _ = s.set("p1", "colour ", "red", annotator="ana")
    >>> s.get(" p1", " colour"), s.labels("colour")["value"].tolist(), s.fields()
    ('red', ['red'], ['colour'])
"""
from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from fclip_workbench.labelling.store import canon
from fclip_workbench.labelling.store.parts import StoreParts
from fclip_workbench.labelling.store.records import ACCEPTED_SOURCES, DECISION_SOURCES, EVENT_COLUMNS, LABEL_COLUMNS, LabelStats
from fclip_workbench.labelling.store.schema import current_t, events_t, raw_time, times


class Reading(StoreParts):
    """`LabelStore`'s reading methods (needs `StoreConnection._read`)."""

    def get(self, item_id: object, field: str) -> str | None:
        """The current label of `item_id` for `field`, or None."""
        item, field = canon.item_id(item_id), canon.field(field)
        with self._read() as conn:
            return conn.execute(sa.select(current_t.c.value).where(
                current_t.c.item_id == item, current_t.c.field == field)).scalar()

    def labels(self, field: str) -> pd.DataFrame:
        """Current labels of `field`: DataFrame[item_id, value, annotator, time], in labelling order."""
        field = canon.field(field)
        q = (sa.select(current_t.c.item_id, current_t.c.value, current_t.c.annotator, raw_time(current_t.c.time))
             .where(current_t.c.field == field, current_t.c.value.is_not(None)).order_by(current_t.c.event_id))
        with self._read() as conn:
            rows = conn.execute(q).all()
        df = pd.DataFrame([tuple(r) for r in rows], columns=LABEL_COLUMNS)
        df["time"] = times(df["time"])
        return df

    def fields(self) -> list[str]:
        """Fields with at least one event."""
        with self._read() as conn:
            return [r[0] for r in conn.execute(sa.select(events_t.c.field).distinct().order_by(events_t.c.field))]

    def history(self, item_id: object | None = None, field: str | None = None) -> pd.DataFrame:
        """Every event (optionally of one item and/or field), oldest first: DataFrame[id, time, annotator,
        item_id, field, old_value, new_value, source, batch_id, undoes]."""
        q = sa.select(*[raw_time(c) if c.name == "time" else c for c in events_t.c])
        if item_id is not None:
            q = q.where(events_t.c.item_id == canon.item_id(item_id))
        if field is not None:
            q = q.where(events_t.c.field == canon.field(field))
        with self._read() as conn:
            rows = conn.execute(q.order_by(events_t.c.id)).all()
        df = pd.DataFrame([tuple(r) for r in rows], columns=EVENT_COLUMNS)
        df["time"] = times(df["time"])
        df["undoes"] = df["undoes"].astype("Int64")
        for col in ("old_value", "new_value", "batch_id"):  # missing values stay None (not NaN)
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        return df

    def stats(self, field: str | None = None) -> LabelStats:
        """Counts by annotator and source; acceptance rate = suggestion-accepted / decisions (undone excluded)."""
        field = canon.field(field) if field is not None else None
        hist = self.history(field=field)
        undone_ids = set(hist["undoes"].dropna().astype(int))
        live = hist[~hist["id"].isin(undone_ids)]
        counts = (hist.groupby(["annotator", "source"]).size().rename("events").reset_index()
                  if len(hist) else pd.DataFrame(columns=["annotator", "source", "events"]))
        decisions = int(live["source"].isin(DECISION_SOURCES).sum())
        accepted = int(live["source"].isin(ACCEPTED_SOURCES).sum())
        q = sa.select(sa.func.count()).select_from(current_t).where(current_t.c.value.is_not(None))
        if field is not None:
            q = q.where(current_t.c.field == field)
        with self._read() as conn:
            labelled = int(conn.execute(q).scalar_one())
        return LabelStats(counts=counts, decisions=decisions, accepted=accepted, undone=len(undone_ids),
                          labelled=labelled, acceptance_rate=accepted / decisions if decisions else None)
