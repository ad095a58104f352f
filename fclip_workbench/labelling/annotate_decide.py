"""Decisions on the current item and their undo (a part of `AnnotationSession`; see annotate.py).

Every write is conditional on what the session showed: `accept` and `correct` pass the store's last
event on the item as it was when the item was shown (`expect_event`); when anyone else's event came
since, nothing is written, the item is shown again as it is now, and `SessionConflictError` says who
changed it. `undo` undoes this session's last decision only while its events are still the last ones
on their items (the store itself refuses once another annotator touched them).

Example:
    >>> session.accept(1).status                                            # doctest: +SKIP
    'saved: p3 colour = red'
    >>> session.correct("blue")                                             # doctest: +SKIP
    SessionConflictError: item 'p4' (colour): bob set it to 'green' after this was shown; nothing saved ...
"""
from __future__ import annotations

import logging

import numpy as np

from fclip_workbench.labelling.annotate_items import ACCEPTED, BATCH, CORRECTED, Decision, Item, SessionConflictError
from fclip_workbench.errors import (ConflictError, InvalidArgumentError, LabelStoreUnreachableError, LabelValueError,
                                    UndoConflictError)

log = logging.getLogger(__name__)

_STORE_TAIL = "; reload and decide again"


def conflict_message(e: ConflictError, now: str) -> str:
    """The store's conflict line with what the session does about it (`now`) in place of its advice."""
    text = str(e)
    return (text[:-len(_STORE_TAIL)] if text.endswith(_STORE_TAIL) else text) + f"; nothing saved: {now}"


class DecisionsMixin:
    """accept / correct / skip / undo, the value and name rules (state set up in `AnnotationSession.__init__`)."""

    def _check_annotator(self) -> str:
        name = self.annotator.strip() if isinstance(self.annotator, str) else ""
        if not name:
            raise InvalidArgumentError("type your name in the annotator box before labelling")
        from fclip_workbench.labelling.labels import check_annotator_name  # the one rule for names (store, session, widget, app)

        return check_annotator_name(self.annotator)

    def check_value(self, value: object) -> str:
        """`value` in the taxonomy's spelling (case-insensitive match); else `LabelValueError` listing the
        valid values (without a taxonomy: the suggester's classes)."""
        text = value.strip() if isinstance(value, str) else ""
        if not text:
            raise LabelValueError(f"type a label for {self.field} (got {value!r})")
        classes = self.classes
        if self.taxonomy is not None:
            canonical = self.taxonomy.canonical(text)
            valid = self.taxonomy.values
        else:
            canonical = next((c for c in classes if c.casefold() == text.casefold()), None)
            valid = classes
        if canonical is None and self.taxonomy is not None and self._sync_taxonomy():
            canonical, valid = self.taxonomy.canonical(text), self.taxonomy.values  # added by someone else
        if canonical is not None:
            return canonical
        shown = ", ".join(valid[:30]) + (f" ... and {len(valid) - 30} more" if len(valid) > 30 else "")
        raise LabelValueError(f"{text!r} is not a valid {self.field}; valid values: {shown}; "
                              f"or add it to the taxonomy")

    def add_to_taxonomy(self, value: str) -> str:
        """Add `value` to the field's taxonomy (an explicit choice of the annotator); return its spelling."""
        text = value.strip() if isinstance(value, str) else ""
        if not text:
            raise InvalidArgumentError(f"cannot add an empty value to the {self.field} taxonomy (got {value!r})")
        if self.taxonomy is None:
            raise InvalidArgumentError("this session has no taxonomy to add to: give taxonomy=...")
        self._sync_taxonomy()  # another annotator may have added it already, in their spelling
        value = self.taxonomy.add(text)
        if hasattr(self.store, "set_taxonomy"):  # durable, and seen by the other annotators
            self.store.set_taxonomy(self.field, type(self.taxonomy)(self.field, [value], source="typed"),
                                    annotator=self.annotator.strip() or None)
            self._sync_taxonomy()
            value = self.taxonomy.canonical(value) or value  # the store's spelling
        self._add_label(value)
        return value

    def _add_label(self, value: str) -> None:
        labels = getattr(self.suggester, "labels", None)
        if isinstance(labels, (list, tuple)) and value not in labels:
            # a new list, never a change in place: a running refit keeps the labels it started with
            self.suggester.labels = [*labels, value]  # suggested from the next refit on

    def _sync_taxonomy(self) -> bool:
        """Take in the values other annotators added to the store's taxonomy since; True when any was new."""
        read = getattr(self.store, "taxonomy", None)
        if self.taxonomy is None or read is None:
            return False
        try:
            stored = read(self.field, refresh=True)
        except TypeError:  # a store without refresh
            stored = read(self.field)
        new = [v for v in (stored.values if stored is not None else []) if v not in self.taxonomy]
        for v in new:
            self._add_label(self.taxonomy.add(v))
        return bool(new)

    # ------------------------------------------------------------------ the current item
    def _write(self, value: str, source: str) -> Decision:
        item = self.current
        if item is None:
            raise InvalidArgumentError("nothing left to label in this queue: change the queue order")
        name = self._check_annotator()
        expect = item.event_id  # what the pane showed, whatever other views showed since
        decided = self._decide_kept_item(item, value, source)  # still shown: the store did not answer (annotate_unsaved)
        if decided is not None:
            return decided
        self.save_unsaved()  # decisions kept while the store was unreachable go first
        try:
            events, note, labelled = self._store_write(item, value, source, name, expect)
        except LabelStoreUnreachableError as e:
            return self._keep_unsaved(item, value, source, name, expect, e)
        except ConflictError as e:
            self.current = self.item(item.row)  # shown as it is now, with the event it shows
            now = self.current.current
            raise SessionConflictError(conflict_message(
                e, f"it shows {now!r} now: decide again or skip" if now is not None
                else "it shows no label now: decide again or skip")) from e
        # durable: only now does the session move on
        decision = Decision([item.item_id], self.field, value, source, events, note=note)
        with self._lock:  # a background refit swaps this mask's contents under the same lock
            self._labelled[item.row] = labelled
            self._reviewed[item.row] = True
            self._relabelled[item.row] |= item.current is not None  # "activelab" re-labels it once per run
        self._decisions.append(decision)
        self.counts[source] += 1
        self._count_labels(1)
        self._advance()
        return decision

    def accept(self, k: int = 1) -> Decision:
        """Save the current item's k-th suggestion (1-based) as its label (source suggestion-accepted)."""
        if self.current is None:
            raise InvalidArgumentError("nothing left to label in this queue: change the queue order")
        options = self.current.suggestions
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(options):
            raise InvalidArgumentError(f"suggestion number must be 1..{len(options)} (got {k!r})")
        return self._write(options[k - 1][0], ACCEPTED)

    def correct(self, value: str) -> Decision:
        """Save a typed label for the current item (source corrected); refused outside the taxonomy."""
        value = self.check_value(value)
        return self._write(value, CORRECTED)

    def skip(self) -> Item | None:
        """Leave the current item for later (it comes back after the rest); show the next."""
        if self.current is None:
            return None
        self._skipped[self.current.row] = True
        self.counts["skipped"] += 1
        return self._advance()

    # ------------------------------------------------------------------ undo
    def _last_undoable(self) -> Decision | None:
        """This session's last decision not undone yet."""
        undone = {getattr(ev, "undoes", None) for d in self._decisions if d.source == "undo" for ev in d.events}
        for d in reversed(self._decisions):
            if d.source != "undo" and d.events and not {getattr(ev, "id", None) for ev in d.events} & undone:
                return d
        return None

    def _refuse_if_changed(self, name: str, decision: Decision) -> None:
        """UndoConflictError when an event after `decision` touched one of its items (anyone, this name in
        another session included): events are compared, not values."""
        mine = {ev.item_id: ev.id for ev in decision.events if getattr(ev, "item_id", None) is not None}
        now = self.store.current_events(self.field, list(mine))
        moved = [i for i in mine if now[i][1] != mine[i]]
        touched = {}  # item -> the latest event since that is not this annotator's own undo or undone decision
        for item in moved:
            hist = self.store.history(item_id=item, field=self.field)
            later = hist[hist["id"] > mine[item]]
            undone = {int(u) for u in hist["undoes"].dropna()}
            others = later[~((later["annotator"] == name) & ((later["source"] == "undo") | later["id"].isin(undone)))]
            if len(others):
                touched[item] = others.iloc[-1]
        moved = [i for i in moved if i in touched]
        if not moved:
            return
        last = touched[moved[0]]
        what = "removed its label" if last["new_value"] is None else f"set it to {last['new_value']!r}"
        if last["source"] == "undo":
            restored = "no label" if last["new_value"] is None else repr(last["new_value"])
            what = f"undid their decision ({restored} restored)"
        who = last["annotator"] if last["annotator"] != name else f"{name} (in another session)"
        more = f" (and {len(moved) - 1} more of its products)" if len(moved) > 1 else ""
        raise UndoConflictError(f"cannot undo {name}'s label of item {moved[0]!r} ({self.field}): {who} {what} "
                                f"since{more} (their decision is kept); set the value you want instead")

    def undo(self) -> Decision | None:
        """Undo this annotator's last decision in the store; its item is shown again. None if nothing to undo.

        Refused (`UndoConflictError`, nothing written) once anyone else's event touched its item(s) since.
        It never reaches a decision the same annotator made in another session (another tab) after this one
        opened: this session undoes its own decisions, then the ones from before it opened."""
        name = self._check_annotator()
        mine = self._last_undoable()
        if mine is not None:
            self._refuse_if_changed(name, mine)
            # an "agreed" label is withdrawn with the answer that made it: undo names the answer
            own = [int(ev.id) for ev in mine.events
                   if getattr(ev, "id", None) is not None and getattr(ev, "source", None) != "agreed"]
            event = self.store.undo(name, field=self.field, event_id=max(own) if own else None)
        else:
            event = self.store.undo(name, field=self.field, up_to=self._opened_at)
        if event is None:
            return None
        item_id = getattr(event, "item_id", None)
        value = getattr(event, "new_value", getattr(event, "value", None))
        undone = [item_id] if item_id else []
        is_batch = getattr(event, "batch_id", None) is not None
        if mine is not None and getattr(event, "undoes", None) in {getattr(ev, "id", None) for ev in mine.events}:
            undone = list(mine.item_ids) if mine.source == BATCH else undone
        if is_batch and len(undone) <= 1:  # a batch from before this session: name all of its products
            hist = self.store.history(field=self.field)
            undone = [str(i) for i in hist.loc[hist["batch_id"] == event.batch_id, "item_id"]] or undone
        decision = Decision(undone, self.field, value, "undo", [event])
        self.counts["undo"] += 1
        now = self._see([i for i in undone if i in self._row])
        with self._lock:
            for i, (label, _) in now.items():
                self._labelled[self._row[i]] = label is not None
        if item_id in self._row:
            r = self._row[item_id]
            self._skipped[r] = self._reviewed[r] = self._relabelled[r] = False
            self._team_reopen(r)
            if self.current is not None:
                self._front.insert(0, self.current.row)
            self._front.insert(0, r)
            self._advance()
        self._decisions.append(decision)
        return decision


__all__ = ["DecisionsMixin", "conflict_message", "ACCEPTED", "CORRECTED"]
