"""Team labelling in the store: overlap items answered independently, adjudication, and roles.

A lead turns overlap on for a field (`set_overlap(field, share=0.10)`): that share of the products,
chosen by a hash of (field, item id) so every process agrees, goes to two annotators independently.
Each writes an *answer* (`answer`: an event with source "answer-accepted" / "answer-corrected") that
does NOT set the label, so nobody sees it as "current". When the second answer agrees with the first,
the store records the label in the same transaction (source "agreed"); when it disagrees, the item waits
in `pending_adjudication(field)` until a person with the adjudicator (or lead) role settles it
(`adjudicate`, source "adjudicated"). Every answer stays in the log, for agreement and consensus
(`fclip_workbench.labelling.agreement`).

Example:
    >>> import tempfile, os
    >>> from fclip_workbench.labelling.labels import LabelStore
    >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
    >>> s.grant("lea", "lead", by="lea")                 # the first role needs no lead
    >>> s.set_overlap("colour", 1.0, by="lea")           # every product: answered twice
    1.0
    >>> [e.source for e in s.answer("p1", "colour", "red", annotator="ana")], s.get("p1", "colour")
    (['answer-corrected'], None)
    >>> [e.source for e in s.answer("p1", "colour", "blue", annotator="bob")]
    ['answer-corrected']
    >>> s.pending_adjudication("colour")[["item_id", "answers"]].values.tolist()
    [['p1', {'ana': 'red', 'bob': 'blue'}]]
    >>> s.adjudicate("p1", "colour", "blue", annotator="lea").source, s.get("p1", "colour")
    ('adjudicated', 'blue')
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fclip_workbench.errors import ConflictError, InvalidArgumentError, RoleError, UndoConflictError
from fclip_workbench.labelling.store import canon
from fclip_workbench.labelling.store.parts import StoreParts
from fclip_workbench.labelling.store.records import ANSWER_SOURCES, LabelEvent
from fclip_workbench.labelling.store.schema import (chunks, events_t, meta_t, now as utc_now, raw_time, roles_t,
                                                    times)
from fclip_workbench.labelling.taxonomy import Taxonomy

DEFAULT_OVERLAP = 0.10  # the share of products answered twice once a lead turns overlap on
ROLES = ("adjudicator", "lead")  # a lead may also adjudicate, grant roles and set the overlap
ANSWER_COLUMNS = ["item_id", "annotator", "value", "time", "event_id"]
_ANSWER_OF = {"suggestion-accepted": "answer-accepted", "corrected": "answer-corrected",
              "answer-accepted": "answer-accepted", "answer-corrected": "answer-corrected"}


def overlap_mask(item_ids: Sequence[str], field: str, share: float) -> np.ndarray:
    """(n,) bool: the products of `field` answered twice at `share`, by a hash of (field, id): the same in
    every process, and growing the share only adds products.

    >>> overlap_mask(["a", "b", "c"], "colour", 0.0).tolist(), bool(overlap_mask(["a", "b", "c"], "colour", 1.0).all())
    ([False, False, False], True)
    """
    if share <= 0:
        return np.zeros(len(item_ids), dtype=bool)
    cut = int(share * 2**64) if share < 1 else 2**64
    return np.fromiter((int.from_bytes(hashlib.blake2b(f"overlap\x1f{field}\x1f{i}".encode(), digest_size=8)
                                       .digest(), "big") < cut for i in item_ids), dtype=bool, count=len(item_ids))


def _check_share(share: object) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share) \
            or not 0 <= share <= 1:
        raise InvalidArgumentError(f"overlap share must be a number from 0 to 1 (0.1: one product in ten is "
                                   f"answered twice), not {share!r}")
    return float(share)


class TeamLabels(StoreParts):
    """`LabelStore`'s team methods: overlap, independent answers, adjudication, roles."""

    # ------------------------------------------------------------------ roles
    def roles(self) -> pd.DataFrame:
        """Every role granted: DataFrame[annotator, role, granted_by, time]."""
        cols = ["annotator", "role", "granted_by", "time"]
        if getattr(self, "schema_version", None) == "1":  # an old store opened read-only: no roles table
            return pd.DataFrame(columns=cols)
        with self._read() as conn:
            rows = conn.execute(sa.select(roles_t.c.annotator, roles_t.c.role, roles_t.c.granted_by,
                                          raw_time(roles_t.c.time)).order_by(roles_t.c.time)).all()
        df = pd.DataFrame([tuple(r) for r in rows], columns=cols)
        df["time"] = times(df["time"])
        return df

    def has_role(self, annotator: str, role: str) -> bool:
        """True when `annotator` holds `role` ("adjudicator" or "lead"; a lead holds both)."""
        name, role = canon.annotator(annotator), self._check_role(role)
        roles = self.roles()
        held = set(roles.loc[roles["annotator"] == name, "role"])
        return role in held or "lead" in held

    @staticmethod
    def _check_role(role: object) -> str:
        if role not in ROLES:
            raise InvalidArgumentError(f"unknown role {role!r}; roles: {', '.join(ROLES)} (everyone may annotate)")
        return str(role)

    def _require_lead(self, conn: sa.Connection, by: str, what: str) -> None:
        leads = set(conn.execute(sa.select(roles_t.c.annotator).where(roles_t.c.role == "lead")).scalars())
        if leads and by not in leads:
            raise RoleError(f"{by} cannot {what}: only a lead can ({', '.join(sorted(leads))})")

    def grant(self, annotator: str, role: str, by: str) -> None:
        """Give `annotator` a role. Once the store has a lead, only a lead may grant (the first role, in a new
        team, is granted by whoever sets it up)."""
        name, role, by = canon.annotator(annotator), self._check_role(role), canon.annotator(by)

        def work(conn: sa.Connection) -> None:
            self._lock_keys(conn, ["roles"])
            self._require_lead(conn, by, f"make {name} {role}")
            have = conn.execute(sa.select(roles_t.c.role).where(roles_t.c.annotator == name,
                                                                roles_t.c.role == role)).first()
            if have is None:
                conn.execute(roles_t.insert(), [{"annotator": name, "role": role, "granted_by": by, "time": utc_now()}])

        self._write(work)

    def revoke(self, annotator: str, role: str, by: str) -> None:
        """Take a role back (a lead only); the last lead cannot be removed."""
        name, role, by = canon.annotator(annotator), self._check_role(role), canon.annotator(by)

        def work(conn: sa.Connection) -> None:
            self._lock_keys(conn, ["roles"])
            self._require_lead(conn, by, f"take {role} from {name}")
            leads = set(conn.execute(sa.select(roles_t.c.annotator).where(roles_t.c.role == "lead")).scalars())
            if role == "lead" and leads == {name}:
                raise RoleError(f"{name} is the team's only lead: make someone else lead first")
            conn.execute(roles_t.delete().where(roles_t.c.annotator == name, roles_t.c.role == role))

        self._write(work)

    # ------------------------------------------------------------------ overlap
    def set_overlap(self, field: str, share: float = DEFAULT_OVERLAP, by: str | None = None) -> float:
        """Answer `share` of `field`'s products twice, independently (0 turns overlap off); a lead's decision
        once the store has one. Returns the share."""
        field, share = canon.field(field), _check_share(share)
        who = canon.annotator(by) if by is not None else None

        def work(conn: sa.Connection) -> float:
            self._lock_keys(conn, [f"overlap\x1f{field}"])
            leads = conn.execute(sa.select(sa.func.count()).select_from(roles_t).where(roles_t.c.role == "lead"))
            if who is None and leads.scalar_one():
                raise RoleError(f"this team has a lead: give by=... (a lead's name) to set {field}'s overlap")
            if who is not None:
                self._require_lead(conn, who, f"set {field}'s overlap")
            if share and self.is_multi(field, conn):
                raise InvalidArgumentError(f"field {field!r} is multi-valued: overlap answers and adjudication "
                                           "take one value per product, so it cannot be overlapped yet")
            key = f"overlap\x1f{field}"
            conn.execute(meta_t.delete().where(meta_t.c.key == key))
            conn.execute(meta_t.insert(), [{"key": key, "value": repr(share)}])
            return share

        return self._write(work)

    def overlap_share(self, field: str) -> float:
        """The share of `field`'s products answered twice (0.0: overlap off, the default)."""
        field = canon.field(field)
        with self._read() as conn:
            v = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == f"overlap\x1f{field}")).scalar()
        return float(v) if v is not None else 0.0

    def overlap_items(self, field: str, item_ids: Iterable[object]) -> list[str]:
        """The ones of `item_ids` that are overlap products of `field` (answered twice)."""
        ids = [canon.item_id(i) for i in item_ids]
        mask = overlap_mask(ids, canon.field(field), self.overlap_share(field))
        return [i for i, m in zip(ids, mask) if m]

    # ------------------------------------------------------------------ answers
    def _live_answers(self, conn: sa.Connection, field: str, item_ids: Sequence[str] | None = None) -> list[sa.Row]:
        undone = sa.select(events_t.c.undoes).where(events_t.c.undoes.is_not(None))
        base = sa.select(events_t.c.id, events_t.c.item_id, events_t.c.annotator, events_t.c.new_value,
                         raw_time(events_t.c.time)).where(
            events_t.c.field == field, events_t.c.source.in_(ANSWER_SOURCES), events_t.c.id.not_in(undone))
        if item_ids is None:
            return list(conn.execute(base.order_by(events_t.c.id)))
        out: list[sa.Row] = []
        for chunk in chunks(list(item_ids)):
            out += conn.execute(base.where(events_t.c.item_id.in_(chunk)).order_by(events_t.c.id)).all()
        return out

    def answers(self, field: str, item_ids: Iterable[object] | None = None) -> pd.DataFrame:
        """Every independent answer not withdrawn (undone): DataFrame[item_id, annotator, value, time, event_id],
        oldest first."""
        field = canon.field(field)
        ids = None if item_ids is None else [canon.item_id(i) for i in item_ids]
        with self._read() as conn:
            rows = self._live_answers(conn, field, ids)
        df = pd.DataFrame([(r.item_id, r.annotator, r.new_value, r.time, int(r.id)) for r in rows],
                          columns=ANSWER_COLUMNS)
        df["time"] = times(df["time"])
        return df

    def answer(self, item_id: object, field: str, value: str, annotator: str, source: str = "answer-corrected",
               taxonomy: Taxonomy | None = None) -> list[LabelEvent]:
        """Record `annotator`'s independent answer on an overlap product; the label stays unset. With the
        second answer the item is settled when both agree (an "agreed" event sets the label, returned too) or
        waits for adjudication. Refused (`ConflictError`) once the item has a label or two answers, or when
        this annotator answered it already.

        `source`: "suggestion-accepted"/"answer-accepted" or "corrected"/"answer-corrected"."""
        field, annotator = canon.field(field), canon.annotator(annotator)
        if source not in _ANSWER_OF:
            raise InvalidArgumentError(f"answer source {source!r} is unknown; use one of {', '.join(_ANSWER_OF)}")
        if value is None:
            raise InvalidArgumentError("an answer needs a value (undo withdraws an answer)")
        item = self._check_item(item_id)
        good, _ = self._check_value(None, field, value, taxonomy, False)

        def work(conn: sa.Connection) -> list[LabelEvent]:
            self._lock_keys(conn, [self._item_key(item, field)])
            row = self._current_rows(conn, field, [item]).get(item)
            if row is not None and row.value is not None:
                raise ConflictError(f"item {item!r} ({field}) has the label {row.value!r} ({row.annotator}) since "
                                    "it was shown: it needs no answer now; go on to the next product")
            live = self._live_answers(conn, field, [item])
            mine = [r for r in live if r.annotator == annotator]
            if mine:
                raise ConflictError(f"{annotator} answered item {item!r} ({field}) already ({mine[0].new_value!r}); "
                                    "undo that answer to give another")
            if len(live) >= 2:
                raise ConflictError(f"item {item!r} ({field}) has two independent answers already; it waits for "
                                    "an adjudicator")
            now = utc_now()
            eid = conn.execute(events_t.insert().returning(events_t.c.id), {
                "time": now, "annotator": annotator, "item_id": item, "field": field, "old_value": None,
                "new_value": good, "source": _ANSWER_OF[source], "batch_id": None, "undoes": None}).scalar_one()
            out = [LabelEvent(id=eid, time=now, annotator=annotator, item_id=item, field=field, old_value=None,
                              new_value=good, source=_ANSWER_OF[source])]
            if live and live[0].new_value == good:  # the second answer agrees: that is the label
                out += self._apply(conn, field, [(item, good)], annotator, "agreed", None)
            return out

        return self._write(work)

    def pending_adjudication(self, field: str) -> pd.DataFrame:
        """Overlap products whose two answers disagree and that nobody settled yet:
        DataFrame[item_id, answers ({annotator: value}), first_answer_time], oldest first."""
        field = canon.field(field)
        ans = self.answers(field)
        cols = ["item_id", "answers", "first_answer_time"]
        if not len(ans):
            return pd.DataFrame(columns=cols)
        groups = ans.groupby("item_id", sort=False)
        two = [i for i, g in groups if len(g) >= 2 and g["value"].nunique() > 1]
        labelled = {i for i, (v, _) in self._current_values(field, two).items() if v is not None}
        waiting = set(two) - labelled
        rows = [(i, dict(zip(g["annotator"], g["value"])), g["time"].min()) for i, g in groups if i in waiting]
        return pd.DataFrame(rows, columns=cols)

    def _current_values(self, field: str, item_ids: Sequence[str]) -> dict[str, tuple[str | None, int | None]]:
        with self._read() as conn:
            rows = self._current_rows(conn, field, item_ids)
        return {i: (rows[i].value, int(rows[i].event_id)) if i in rows else (None, None) for i in item_ids}

    def adjudicate(self, item_id: object, field: str, value: str, annotator: str,
                   taxonomy: Taxonomy | None = None) -> LabelEvent:
        """Settle an overlap product whose answers disagree: `value` (one of the answers, or another valid
        value) becomes its label (source "adjudicated"). Needs the adjudicator or lead role, and someone who
        did not answer the item."""
        field, annotator = canon.field(field), canon.annotator(annotator)
        item = self._check_item(item_id)
        if not self.has_role(annotator, "adjudicator"):
            raise RoleError(f"{annotator} cannot adjudicate: ask a lead to grant the adjudicator role "
                            "(store.grant(name, 'adjudicator', by=lead))")
        good, _ = self._check_value(None, field, value, taxonomy, False)

        def work(conn: sa.Connection) -> LabelEvent:
            self._lock_keys(conn, [self._item_key(item, field)])
            row = self._current_rows(conn, field, [item]).get(item)
            if row is not None and row.value is not None:
                raise ConflictError(f"item {item!r} ({field}) is settled already: {row.annotator} set it to "
                                    f"{row.value!r}; reload the adjudication queue")
            live = self._live_answers(conn, field, [item])
            if len(live) < 2:
                raise InvalidArgumentError(f"item {item!r} ({field}) has {len(live)} independent answer(s): "
                                           "adjudication settles products whose two answers disagree")
            if annotator in {r.annotator for r in live}:
                raise RoleError(f"{annotator} answered item {item!r} ({field}): another adjudicator settles it")
            return self._apply(conn, field, [(item, good)], annotator, "adjudicated", None)[0]

        return self._write(work)

    # ------------------------------------------------------------------ reliability
    def agreement(self, field: str):
        """Cohen's kappa per pair of annotators, Krippendorff's alpha and each annotator's accuracy against the
        settled labels, on `field`'s overlap products: an `agreement.Agreement` (print it for a summary)."""
        from fclip_workbench.labelling.agreement import agreement_of

        field = canon.field(field)
        return agreement_of(field, self.answers(field), self.labels(field))

    def consensus(self, field: str, pred_probs: pd.DataFrame | None = None) -> pd.DataFrame:
        """The consensus label of every labelled product of `field`, a quality score per product and the
        annotators' agreement (`agreement.consensus_table`): CROWDLAB with `pred_probs` (the suggester's
        probabilities, DataFrame indexed by item id, one column per class), else the majority vote."""
        from fclip_workbench.labelling.agreement import annotations_of, consensus_table

        field = canon.field(field)
        return consensus_table(annotations_of(self.answers(field), self.labels(field)), pred_probs)

    def _undo_answer(self, conn: sa.Connection, annotator: str, answer: LabelEvent) -> LabelEvent:
        """Withdraw an answer (caller's locked transaction); with it the "agreed" label it made, if nobody
        else's event touched the item since."""
        item, field = answer.item_id, answer.field
        self._lock_keys(conn, [self._item_key(item, field)])
        later = conn.execute(sa.select(events_t).where(events_t.c.field == field, events_t.c.item_id == item,
                                                       events_t.c.id > answer.id).order_by(events_t.c.id)).all()
        agreed = [r for r in later if r.source == "agreed" and r.annotator == annotator]
        others = [r for r in later if not (r.annotator == annotator and r.source in ("agreed", "undo"))]
        if others:
            r = others[0]  # the first event since: usually the second answer
            what = (f"answered it too ({r.new_value!r})" if r.source in ANSWER_SOURCES
                    else f"set it to {r.new_value!r}" if r.new_value is not None else "removed its label")
            raise UndoConflictError(f"cannot withdraw {annotator}'s answer on item {item!r} ({field}): "
                                    f"{r.annotator} {what} since (kept); tell the adjudicator instead")
        if agreed:
            self._apply(conn, field, [(item, agreed[0].old_value)], annotator, "undo", None, undoes=[agreed[0].id])
        now = utc_now()
        eid = conn.execute(events_t.insert().returning(events_t.c.id), {
            "time": now, "annotator": annotator, "item_id": item, "field": field, "old_value": answer.new_value,
            "new_value": None, "source": "undo", "batch_id": None, "undoes": answer.id}).scalar_one()
        return LabelEvent(id=eid, time=now, annotator=annotator, item_id=item, field=field,
                          old_value=answer.new_value, new_value=None, source="undo", undoes=answer.id)


__all__ = ["TeamLabels", "overlap_mask", "DEFAULT_OVERLAP", "ROLES", "ANSWER_COLUMNS"]
