"""The event log: every decision appended as an event, `label_current` updated in the same transaction.

Writes (`set`, `set_many`, `undo`, and the import's) read the old value and append the event in one
locked transaction, so several annotators in several processes never lose an update. A write the UI
derives from what it showed is conditional: `expect_event(s)` is the last event id it saw
(`current_events`); if another event came since, nothing is written and `ConflictError` names who
changed the item to what. Undo compares events, not values: it is refused once anyone else's event
touched the (item, field) after the decision being undone, even one that set the same value.

Example:
    >>> import tempfile, os
    >>> from fclip_workbench.labelling.labels import LabelStore
    >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
    >>> shown = s.current_events("colour", ["p1"])["p1"][1]   # None: never labelled
    >>> s.set("p1", "colour", "red", annotator="ana", expect_event=shown).new_value
    'red'
    >>> s.set("p1", "colour", "blue", annotator="bob", expect_event=shown)
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.ConflictError: item 'p1' (colour): ana set it to 'red' after this was shown; reload and decide again
"""
from __future__ import annotations

import uuid
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa

from fclip_workbench.errors import ConflictError, InvalidArgumentError, UndoConflictError, UnknownItemError
from fclip_workbench.labelling.taxonomy import Taxonomy
from fclip_workbench.labelling.store import canon
from fclip_workbench.labelling.store.parts import StoreParts
from fclip_workbench.labelling.store.records import ANSWER_SOURCES, ANY_EVENT, GROUP_SOURCES, LabelEvent, _AnyEvent
from fclip_workbench.labelling.store.schema import chunks, current_t, events_t, now as utc_now, to_event


class EventLog(StoreParts):
    """`LabelStore`'s writing methods (needs `StoreConnection` and `TaxonomyStorage`)."""

    def _check_item(self, item_id: object, known: frozenset[str] | None = None) -> str:
        item = canon.item_id(item_id)
        known = self.known_ids if known is None else known
        if known is not None and item not in known:
            raise UnknownItemError(f"item id {item!r} is not in this store's catalog ({len(known)} known ids); "
                                   "check the id or open the store with the right catalog")
        return item

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
            item = canon.item_id(key)
            if item in out and out[item] != eid:
                raise InvalidArgumentError(f"expect_events names item {item!r} twice with different event ids "
                                           f"({out[item]!r}, {eid!r}); give one per item")
            out[item] = eid
        missing = [i for i in items if i not in out]
        if missing:
            raise InvalidArgumentError(f"expect_events gives no expected event for item(s) "
                                       f"{', '.join(map(repr, missing[:5]))}; give one per item written")
        return {i: out[i] for i in items}

    def _set_rows(self, items: list, field: str, annotator: str, source: str, taxonomy: Taxonomy | None,
                  add_to_taxonomy: bool, batch_id: str | None, single: bool,
                  expect: Mapping[object, object] | None = None) -> list[LabelEvent]:
        field = canon.field(field)
        annotator = canon.annotator(annotator)
        batch_id = canon.batch_id(batch_id)
        source = canon.source(source, " (undo() writes 'undo')")
        if field in self.multi_fields():
            raise InvalidArgumentError(f"field {field!r} is multi-valued: add or remove values with add_value / "
                                       "remove_value / set_values (a set per item), not set")
        rows: dict[str, str | None] = {}
        added: list[str] = []
        for item_id, value in items:
            item = self._check_item(item_id)
            good, add = self._check_value(None, field, value, taxonomy, add_to_taxonomy)
            if add and good is not None:  # add: a new value (never None, which removes the label)
                good = taxonomy.add(good) if taxonomy is not None else good
                added.append(good)
            if item in rows and rows[item] != good:
                raise InvalidArgumentError(f"item {item!r} appears twice in set_many with different values "
                                           f"({rows[item]!r}, {good!r}); give one value per item")
            rows[item] = good
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
        for chunk in chunks(list(item_ids)):
            q = sa.select(current_t.c.item_id, current_t.c.value).where(
                current_t.c.field == field, current_t.c.item_id.in_(chunk))
            out.update({r.item_id: r.value for r in conn.execute(q)})
        return out

    def current_events(self, field: str, item_ids: Iterable[object]) -> dict[str, tuple[str | None, int | None]]:
        """{item id: (current value, id of the last event on (item, field))}; (None, None) for an item never
        labelled. What a UI shows, to pass back as `expect_event(s)`.

        >>> import tempfile, os
        >>> from fclip_workbench.labelling.labels import LabelStore
        >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
        >>> ev = s.set("p1", "colour", "red", annotator="ana")
        >>> s.current_events("colour", ["p1", "p2"]) == {"p1": ("red", ev.id), "p2": (None, None)}
        True
        """
        field = canon.field(field)
        if isinstance(item_ids, (str, bytes, int)):
            raise InvalidArgumentError(f"item_ids must be a list of item ids, not {type(item_ids).__name__} "
                                       f"{item_ids!r}")
        items = list(dict.fromkeys(canon.item_id(i) for i in item_ids))
        with self._read() as conn:
            rows = self._current_rows(conn, field, items)
        return {i: (rows[i].value, int(rows[i].event_id)) if i in rows else (None, None) for i in items}

    def _current_rows(self, conn: sa.Connection, field: str, item_ids: Sequence[str]) -> dict[str, sa.Row]:
        out: dict[str, sa.Row] = {}
        for chunk in chunks(list(item_ids)):
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
        now = utc_now()
        params: list[dict[str, Any]] = [{"time": now, "annotator": annotator, "item_id": item, "field": field, "old_value": old.get(item),
                   "new_value": value, "source": source, "batch_id": batch_id,
                   "undoes": undoes[k] if undoes else None} for k, (item, value) in enumerate(pairs)]
        if len(params) == 1:
            ids = [conn.execute(events_t.insert().returning(events_t.c.id), params[0]).scalar_one()]
        else:
            res = conn.execute(events_t.insert().returning(events_t.c.id, sort_by_parameter_order=True), params)
            ids = [r[0] for r in res]
        updates: list[dict[str, Any]] = []
        inserts: list[dict[str, Any]] = []
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
        for chunk in chunks(list(latest)):
            later += conn.execute(sa.select(events_t.c.id, events_t.c.item_id, events_t.c.annotator,
                                            events_t.c.new_value, events_t.c.source).where(
                events_t.c.field == field, events_t.c.item_id.in_(chunk), events_t.c.id > low)
                .order_by(events_t.c.id)).all()
        later = [r for r in later if r.id > latest[r.item_id].id]
        own = [r.id for r in later if r.annotator == annotator and r.source != "undo"]
        undone: set[int] = set()
        for chunk in chunks(own):
            undone.update(conn.execute(sa.select(events_t.c.undoes).where(events_t.c.undoes.in_(chunk))).scalars())
        for r in reversed(later):  # the most recent other decision: the one the item shows now
            if r.annotator == annotator and (r.source == "undo" or r.id in undone):
                continue
            what = "removed its label" if r.new_value is None else f"set it to {r.new_value!r}"
            if r.source == "undo":
                what = f"undid their decision ({'no label' if r.new_value is None else repr(r.new_value)} restored)"
            raise UndoConflictError(
                f"cannot undo {annotator}'s label of item {r.item_id!r} ({field}): {r.annotator} {what} since "
                "(their decision is kept); set the value you want instead")

    def last_event_id(self) -> int:
        """Id of the newest event in the log (0 when empty): what a session saw when it opened.

        >>> import tempfile, os
        >>> from fclip_workbench.labelling.labels import LabelStore
        >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
        >>> s.last_event_id(), s.set("p1", "colour", "red", annotator="ana").id == s.last_event_id()
        (0, True)
        """
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events_t.c.id), 0))).scalar_one())

    def undo(self, annotator: str, field: str | None = None, event_id: int | None = None,
             up_to: int | None = None) -> LabelEvent | None:
        """Revert `annotator`'s own last decision not already undone (on `field`, or any field), as a new
        "undo" event restoring the old value; again reverts the decision before. A batch or an import is
        undone as a whole (the last of its undo events is returned). None when nothing is left to undo.

        `event_id`: undo exactly the decision holding that event (a session undoing its own decision, never
        one made by the same annotator in another tab); None when it is not theirs or is undone already.
        `up_to`: only decisions with event ids up to it (what a session saw when it opened).
        Raises `UndoConflictError` when someone else changed the item since (their decision is kept).
        """
        annotator = canon.annotator(annotator)
        if field is not None:
            field = canon.field(field)
        for name, v in (("event_id", event_id), ("up_to", up_to)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise InvalidArgumentError(f"{name} must be an event id (an integer), not {v!r}")

        def work(conn: sa.Connection) -> LabelEvent | None:
            self._lock_keys(conn, [f"undo\x1f{annotator}"])
            undone = sa.select(events_t.c.undoes).where(events_t.c.undoes.is_not(None)).scalar_subquery()
            # an "agreed" label is withdrawn with the answer that made it (`TeamLabels._undo_answer`)
            q = sa.select(events_t).where(events_t.c.annotator == annotator,
                                          events_t.c.source.not_in(("undo", "agreed")), events_t.c.id.not_in(undone))
            if field is not None:
                q = q.where(events_t.c.field == field)
            pick = q
            if event_id is not None:
                pick = pick.where(events_t.c.id == event_id)
            if up_to is not None:
                pick = pick.where(events_t.c.id <= up_to)
            row = conn.execute(pick.order_by(events_t.c.id.desc()).limit(1)).first()
            if row is None:
                return None
            last = to_event(row)
            if last.source in ANSWER_SOURCES:  # an independent answer: withdrawn, the label never was set by it
                return self._undo_answer(conn, annotator, last)
            group = [last]
            # a batch, an import, or one save of a multi-valued item's chips (its add/remove events) as a whole
            if last.batch_id is not None and (last.source in GROUP_SOURCES or self.is_multi(last.field, conn)):
                group = [to_event(r) for r in conn.execute(
                    q.where(events_t.c.batch_id == last.batch_id).order_by(events_t.c.id))]
            by_field: dict[str, list[LabelEvent]] = {}
            for ev in group:
                by_field.setdefault(ev.field, []).append(ev)
            batch = uuid.uuid4().hex if len(group) > 1 else None
            out: list[LabelEvent] = []
            for fld, evs in by_field.items():
                if self.is_multi(fld, conn):  # one add/remove per value (`multivalue`)
                    out += self._undo_values(conn, annotator, fld, evs, batch)
                    continue
                latest = {ev.item_id: ev for ev in evs}  # an item set twice in one group: revert to the first old
                first: dict[str, LabelEvent] = {}
                for ev in evs:
                    first.setdefault(ev.item_id, ev)
                self._lock_keys(conn, [self._item_key(i, fld) for i in latest])
                self._refuse_if_touched(conn, annotator, fld, latest)
                extra = [ev for ev in evs if latest[ev.item_id].id != ev.id]
                if extra:  # mark the other events of the group undone too (before the undo that ends last)
                    conn.execute(events_t.insert(), [
                        {"time": utc_now(), "annotator": annotator, "item_id": ev.item_id, "field": fld,
                         "old_value": first[ev.item_id].old_value, "new_value": first[ev.item_id].old_value,
                         "source": "undo", "batch_id": batch, "undoes": ev.id} for ev in extra])
                pairs = [(item, first[item].old_value) for item in latest]
                out += self._apply(conn, fld, pairs, annotator, "undo", batch,
                                   undoes=[latest[item].id for item in latest])
            return out[-1] if out else None

        return self._write(work)

