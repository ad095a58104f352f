"""Decisions kept while the label store is unreachable (a team server restarting, the network down), saved
once it is back.

When a decision's write fails with `LabelStoreUnreachableError`, nothing is lost: the decision is kept in
the session (oldest first), the session moves on to the next product when it can read it, and the status line says
"not saved yet: ... the label store is unreachable". Before every next decision (or on `save_unsaved()`),
the kept decisions are written in order with the event id the annotator saw (compare-and-set): one that
someone else changed meanwhile is not written over, but listed in `unsaved_conflicts` and logged.

Example:
    >>> session.accept(1).status                      # doctest: +SKIP
    'not saved yet: p3 colour = red (the label store is unreachable: kept in this session, 1 waiting; ...)'
    >>> session.save_unsaved()                        # doctest: +SKIP
    0
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fclip_workbench.errors import ConflictError, LabelStoreUnreachableError
from fclip_workbench.labelling.annotate_items import Decision, Item

log = logging.getLogger(__name__)


@dataclass
class Kept:
    """A decision the store did not take yet."""

    item: Item
    value: str
    source: str
    annotator: str
    expect: int | None  # the last event the annotator saw on the product (compare-and-set when saved)


class UnsavedMixin:
    """Keeps decisions the label store could not take, and saves them once it is back (see the module)."""

    @property
    def _kept(self) -> list[Kept]:
        return self.__dict__.setdefault("_kept_decisions", [])

    @property
    def unsaved(self) -> int:
        """How many decisions of this session wait for the label store."""
        return len(self._kept)

    @property
    def unsaved_conflicts(self) -> list[str]:
        """Kept decisions not written because someone else changed the product meanwhile (one line each)."""
        return self.__dict__.setdefault("_kept_conflicts", [])

    def _keep_unsaved(self, item: Item, value: str, source: str, name: str, expect: int | None,
                      error: LabelStoreUnreachableError) -> Decision:
        """The store is unreachable: keep the decision, move on, say so."""
        self._kept.append(Kept(item, value, source, name, expect))
        with self._lock:
            self._reviewed[item.row] = True  # not shown again in this session; labelled once saved
        log.warning("%s", error)
        moved = "saved as soon as it is back"
        try:
            self._advance()  # the next product's current label is read from the store
        except LabelStoreUnreachableError:
            moved = "saved as soon as it is back; the next product shows once the store answers"
        return Decision([item.item_id], self.field, value, source, [], kept=True,
                        note=f"the label store is unreachable: kept in this session, {self.unsaved} waiting; {moved}")

    def _decide_kept_item(self, item: Item, value: str, source: str) -> Decision | None:
        """A decision on a product still shown because the store did not answer: it replaces the kept one, which
        is saved now with the others if the store answers (then the session moves on); None for other products."""
        kept = next((k for k in self._kept if k.item.row == item.row), None)
        if kept is None:
            return None
        kept.value, kept.source = value, source
        if self.save_unsaved():
            return Decision([item.item_id], self.field, value, source, [], kept=True,
                            note=f"the label store is still unreachable: kept in this session, {self.unsaved} "
                                 "waiting; saved as soon as it is back")
        saved = self.__dict__.get("_saved_rows", {}).get(item.row)
        self._advance()
        return saved or Decision([item.item_id], self.field, value, source, [], note="saved once the store was back")

    def save_unsaved(self) -> int:
        """Write the kept decisions, oldest first; returns how many still wait (the store still unreachable)."""
        while self._kept:
            k = self._kept[0]
            try:
                events, _note, labelled = self._store_write(k.item, k.value, k.source, k.annotator, k.expect)
            except LabelStoreUnreachableError:
                return len(self._kept)
            except ConflictError as e:
                self._kept.pop(0)
                self.unsaved_conflicts.append(f"{k.item.item_id} {self.field} = {k.value} not saved: {e}")
                log.warning("%s", self.unsaved_conflicts[-1])
                continue
            self._kept.pop(0)
            self.__dict__.setdefault("_saved_rows", {})[k.item.row] = self._saved_later(k, events, labelled)
        return 0

    def _saved_later(self, k: Kept, events: list[Any], labelled: bool) -> Decision:
        """The bookkeeping a direct write does (`DecisionsMixin._write`), without moving the queue."""
        decision = Decision([k.item.item_id], self.field, k.value, k.source, events, note="saved once the store was back")
        with self._lock:
            self._labelled[k.item.row] = labelled
            self._relabelled[k.item.row] |= k.item.current is not None
        self._decisions.append(decision)
        self.counts[k.source] += 1
        self._count_labels(1)
        return decision
