"""Multi-valued fields: a field whose label is a SET of values per item (Fashionpedia attributes: a dress
with both a pattern and a neckline style).

A field is declared multi-valued once (`set_multi`, or `set_taxonomy` with a `Taxonomy(multi=True)`),
before its first label. Each event then adds or removes ONE value: `old_value=None, new_value=v` adds v,
`old_value=v, new_value=None` removes it (`source` says how it was decided, as for a single value).
`label_current.value` holds the set as a sorted JSON list (None when empty). Every write reads the set
inside the locked transaction and changes only the values it names, so two annotators adding and removing
different values never overwrite each other; adding a value already there (or removing one that is not)
writes nothing. Undo reverts one's own add or remove, refused only when someone else touched THAT value
since.

Example:
    >>> import tempfile, os
    >>> from fclip_workbench.labelling.labels import LabelStore
    >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
    >>> s.set_multi("attribute")
    >>> _ = s.add_value("p1", "attribute", "floral", annotator="ana")
    >>> _ = s.add_value("p1", "attribute", "v-neck", annotator="bo")
    >>> _ = s.remove_value("p1", "attribute", "floral", annotator="ana")
    >>> sorted(s.get_values("p1", "attribute"))
    ['v-neck']
    >>> _ = s.undo("ana"); sorted(s.get_values("p1", "attribute"))
    ['floral', 'v-neck']
"""
from __future__ import annotations

import json
import uuid
from typing import Iterable, Mapping, Sequence

import pandas as pd
import sqlalchemy as sa

from fclip_workbench.errors import InvalidArgumentError, LabelStoreError, UndoConflictError
from fclip_workbench.labelling.store import canon
from fclip_workbench.labelling.store.parts import StoreParts
from fclip_workbench.labelling.store.records import LabelEvent
from fclip_workbench.labelling.store.schema import chunks, current_t, events_t, meta_t, now as utc_now, raw_time, times

MULTI_KEY = "multi\x1f"  # label_meta key prefix: "multi\x1f<field>" = "1" for a multi-valued field
VALUES_COLUMNS = ["item_id", "values", "annotator", "time"]


def encode_values(values: Iterable[str]) -> str | None:
    """The stored form of a set: a sorted JSON list, None when empty.

    >>> encode_values({"b", "a"}), encode_values([])
    ('["a", "b"]', None)
    """
    vals = sorted(set(values))
    return json.dumps(vals, ensure_ascii=False) if vals else None


def decode_values(stored: str | None) -> frozenset[str]:
    """The set a stored `label_current.value` of a multi-valued field holds.

    >>> sorted(decode_values('["a", "b"]')), decode_values(None)
    (['a', 'b'], frozenset())
    """
    return frozenset(json.loads(stored)) if stored else frozenset()


class MultiValues(StoreParts):
    """`LabelStore`'s multi-valued fields (needs the connection, taxonomies and the event log's helpers)."""

    # ------------------------------------------------------------------ declaring
    def set_multi(self, field: str, multi: bool = True) -> None:
        """Declare `field` multi-valued (a set of values per item); refused once it has single-valued labels.

        `multi=False` undeclares it while it has no labels yet."""
        field = canon.field(field)
        key = MULTI_KEY + field

        def work(conn: sa.Connection) -> None:
            self._lock_keys(conn, [key])
            was = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == key)).scalar() is not None
            if was == bool(multi):
                return
            n = conn.execute(sa.select(sa.func.count()).select_from(events_t)
                             .where(events_t.c.field == field)).scalar_one()
            if n:
                kind = "multi-valued" if bool(multi) else "single-valued"
                raise LabelStoreError(f"field {field!r} already has {n} label event(s); it cannot become {kind} "
                                      "now: label the sets in a new field (e.g. {field}_set)")
            conn.execute(meta_t.delete().where(meta_t.c.key == key))
            if multi:
                conn.execute(meta_t.insert(), [{"key": key, "value": "1"}])

        self._write(work)
        self._multi_cache = None

    def multi_fields(self) -> frozenset[str]:
        """The fields declared multi-valued (cached per store object; declarations are rare)."""
        cached = getattr(self, "_multi_cache", None)
        if cached is None:
            with self._read() as conn:
                keys = conn.execute(sa.select(meta_t.c.key).where(meta_t.c.key.like(MULTI_KEY + "%"))).scalars()
                cached = frozenset(k[len(MULTI_KEY):] for k in keys)
            self._multi_cache = cached
        return cached

    def is_multi(self, field: str, conn: sa.Connection | None = None) -> bool:
        """True when `field` is declared multi-valued (read inside `conn` when given: fresh, not cached)."""
        field = canon.field(field)
        if conn is None:
            return field in self.multi_fields()
        return conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == MULTI_KEY + field)).scalar() is not None

    def _require_multi(self, field: str) -> str:
        field = canon.field(field)
        if field not in self.multi_fields():
            self._multi_cache = None  # another process may have declared it
            if field not in self.multi_fields():
                raise InvalidArgumentError(f"field {field!r} is single-valued; use set(...), or declare it "
                                           "multi-valued first with store.set_multi(field)")
        return field

    # ------------------------------------------------------------------ reading
    def get_values(self, item_id: object, field: str) -> frozenset[str]:
        """The current set of values of `item_id` for the multi-valued `field` (empty when none)."""
        item, field = canon.item_id(item_id), self._require_multi(field)
        with self._read() as conn:
            return decode_values(conn.execute(sa.select(current_t.c.value).where(
                current_t.c.item_id == item, current_t.c.field == field)).scalar())

    def value_sets(self, field: str) -> pd.DataFrame:
        """Current sets of the multi-valued `field`: DataFrame[item_id, values (sorted tuple), annotator, time],
        items with at least one value, in labelling order."""
        field = self._require_multi(field)
        q = (sa.select(current_t.c.item_id, current_t.c.value, current_t.c.annotator, raw_time(current_t.c.time))
             .where(current_t.c.field == field, current_t.c.value.is_not(None)).order_by(current_t.c.event_id))
        with self._read() as conn:
            rows = conn.execute(q).all()
        df = pd.DataFrame([(r[0], tuple(sorted(decode_values(r[1]))), r[2], r[3]) for r in rows],
                          columns=VALUES_COLUMNS)
        df["time"] = times(df["time"])
        return df

    # ------------------------------------------------------------------ writing
    def add_value(self, item_id: object, field: str, value: str, annotator: str, source: str = "corrected",
                  batch_id: str | None = None) -> LabelEvent | None:
        """Add one value to the item's set; None when it was there already (nothing written)."""
        out = self.change_values([(item_id, [value], [])], field, annotator, source, batch_id)
        return out[0] if out else None

    def remove_value(self, item_id: object, field: str, value: str, annotator: str, source: str = "corrected",
                     batch_id: str | None = None) -> LabelEvent | None:
        """Remove one value from the item's set; None when it was not there (nothing written)."""
        out = self.change_values([(item_id, [], [value])], field, annotator, source, batch_id)
        return out[0] if out else None

    def set_values(self, item_id: object, field: str, values: Iterable[str], annotator: str,
                   source: str = "corrected", shown: Iterable[str] | None = None,
                   batch_id: str | None = None) -> list[LabelEvent]:
        """Make the item's set `values`: what a chip editor saves. With `shown` (the set the UI showed), only
        the values toggled since then are written, so another annotator's changes to OTHER values stay;
        without it the set becomes exactly `values`."""
        field = self._require_multi(field)
        want = set(values)
        if shown is None:
            have = set(self.get_values(item_id, field))
            return self.change_values([(item_id, want - have, have - want)], field, annotator, source, batch_id)
        seen = set(shown)
        return self.change_values([(item_id, want - seen, seen - want)], field, annotator, source, batch_id)

    def change_values(self, changes: Sequence[tuple[object, Iterable[str], Iterable[str]]], field: str,
                      annotator: str, source: str = "batch", batch_id: str | None = None) -> list[LabelEvent]:
        """Add and remove values of many items in ONE transaction: `changes` = [(item, add, remove), ...].

        Every item and value is checked (taxonomy included) before anything is written; a value both added
        and removed for one item is refused. Values already in (adds) or out (removes) write nothing. The
        events of one call share a batch id (given, or a new one when there are several): undone together."""
        field = self._require_multi(field)
        annotator = canon.annotator(annotator)
        batch_id = canon.batch_id(batch_id)
        source = canon.source(source)
        if isinstance(changes, (str, bytes)) or not isinstance(changes, Sequence):
            raise InvalidArgumentError("changes must be a list of (item id, values to add, values to remove)")
        plan: dict[str, tuple[set[str], set[str]]] = {}
        for change in changes:
            if not isinstance(change, (tuple, list)) or len(change) != 3:
                raise InvalidArgumentError(f"each change must be (item id, add, remove), not {change!r}")
            item = self._check_item(change[0])
            add, remove = plan.setdefault(item, (set(), set()))
            for vals, into in ((change[1], add), (change[2], remove)):
                if isinstance(vals, (str, bytes)):
                    raise InvalidArgumentError(f"values to add or remove of item {item!r} must be a list, "
                                               f"not the text {vals!r}")
                for v in vals:
                    good, _ = self._check_value(None, field, v, None, False)
                    into.add(str(good))
            both = add & remove
            if both:
                raise InvalidArgumentError(f"item {item!r} ({field}): {sorted(both)[0]!r} is both added and "
                                           "removed; give each value once")
        if not any(a or r for a, r in plan.values()):
            return []

        if batch_id is None and sum(len(a) + len(r) for a, r in plan.values()) > 1:
            batch_id = uuid.uuid4().hex  # one save: undone as a whole
        batch = batch_id

        def work(conn: sa.Connection) -> list[LabelEvent]:
            ops = [(item, v, True) for item, (add, _) in plan.items() for v in sorted(add)]
            ops += [(item, v, False) for item, (_, rem) in plan.items() for v in sorted(rem)]
            return self._apply_values(conn, field, ops, annotator, source, batch)

        return self._write(work)

    def _apply_values(self, conn: sa.Connection, field: str, ops: Sequence[tuple[str, str, bool]], annotator: str,
                      source: str, batch_id: str | None,
                      undoes: Mapping[tuple[str, str], int] | None = None) -> list[LabelEvent]:
        """Lock, read the sets, append one event per value that changes and update `label_current`
        (caller's transaction). `ops`: (item, value, add?)."""
        items = list(dict.fromkeys(i for i, _, _ in ops))
        self._lock_keys(conn, [self._item_key(i, field) for i in items])
        rows = self._current_rows(conn, field, items)
        sets = {i: set(decode_values(rows[i].value)) if i in rows else set() for i in items}
        now = utc_now()
        params: list[dict] = []
        for item, value, add in ops:
            if (value in sets[item]) == add:
                continue  # already in (add) or out (remove): nothing changes
            (sets[item].add if add else sets[item].discard)(value)
            params.append({"time": now, "annotator": annotator, "item_id": item, "field": field,
                           "old_value": None if add else value, "new_value": value if add else None,
                           "source": source, "batch_id": batch_id,
                           "undoes": undoes.get((item, value)) if undoes else None})
        if not params:
            return []
        res = conn.execute(events_t.insert().returning(events_t.c.id, sort_by_parameter_order=True), params)
        ids = [r[0] for r in res]
        last: dict[str, int] = {}
        for p, eid in zip(params, ids):
            last[p["item_id"]] = eid
        for item, eid in last.items():
            vals = {"value": encode_values(sets[item]), "annotator": annotator, "time": now, "event_id": eid}
            if item in rows:
                conn.execute(current_t.update().where(current_t.c.item_id == item, current_t.c.field == field), vals)
            else:
                conn.execute(current_t.insert(), [{"item_id": item, "field": field, **vals}])
        return [LabelEvent(id=eid, time=now, annotator=annotator, item_id=p["item_id"], field=field,
                           old_value=p["old_value"], new_value=p["new_value"], source=source, batch_id=batch_id,
                           undoes=p["undoes"]) for p, eid in zip(params, ids)]

    def _undo_values(self, conn: sa.Connection, annotator: str, field: str, evs: Sequence[LabelEvent],
                     batch_id: str | None) -> list[LabelEvent]:
        """Revert `annotator`'s add/remove events `evs` of a multi-valued field (inside `undo`'s transaction).
        Refused when anyone else's event touched one of those values of the item since."""
        low = min(ev.id for ev in evs)
        mine = {(ev.item_id, ev.new_value if ev.new_value is not None else ev.old_value): ev for ev in evs}
        later: list[sa.Row] = []
        for chunk in chunks(list({ev.item_id for ev in evs})):
            later += conn.execute(sa.select(events_t).where(
                events_t.c.field == field, events_t.c.item_id.in_(chunk), events_t.c.id > low)
                .order_by(events_t.c.id)).all()
        for r in reversed(later):
            value = r.new_value if r.new_value is not None else r.old_value
            ev = mine.get((r.item_id, value))
            if ev is None or r.id <= ev.id or r.annotator == annotator:
                continue
            did = "added" if r.new_value is not None else "removed"
            raise UndoConflictError(f"cannot undo {annotator}'s change of item {r.item_id!r} ({field}): "
                                    f"{r.annotator} {did} {value!r} since (their decision is kept); set the "
                                    "values you want instead")
        ops = [(ev.item_id, ev.new_value if ev.new_value is not None else str(ev.old_value), ev.new_value is None)
               for ev in evs]
        undoes = {(ev.item_id, ev.new_value if ev.new_value is not None else str(ev.old_value)): ev.id for ev in evs}
        out = self._apply_values(conn, field, ops, annotator, "undo", batch_id, undoes=undoes)
        done = {e.undoes for e in out}
        skipped = [ev for ev in evs if ev.id not in done]  # already reverted by this annotator: mark them undone
        if skipped:
            conn.execute(events_t.insert(), [
                {"time": utc_now(), "annotator": annotator, "item_id": ev.item_id, "field": field,
                 "old_value": ev.new_value, "new_value": ev.new_value, "source": "undo", "batch_id": batch_id,
                 "undoes": ev.id} for ev in skipped])
        return out
