"""The session's team part: overlap products answered independently, and the adjudication queue (a part of
`AnnotationSession`; see annotate.py and `fclip_workbench.labelling.store.overlap`).

When the store has an overlap share for the field (`store.set_overlap(field, 0.1, by=lead)`), a decision
on an overlap product is written as this annotator's independent answer (`store.answer`): the label stays
unset, nobody's answer is shown to the other, and the product leaves this annotator's queue. It also
leaves every queue once two answers exist. The order "adjudication" (adjudicator or lead role only)
queues the products whose two answers disagree, shows both answers, and writes the choice as the
label (`store.adjudicate`).

Example:
    >>> session.set_order("adjudication").answers      # doctest: +SKIP
    {'ana': 'Tshirts', 'bob': 'Tops'}
    >>> session.accept(1).status                        # doctest: +SKIP
    'saved: p7 articleType = Tshirts (adjudicated)'
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fclip_workbench.errors import InvalidArgumentError, RoleError
from fclip_workbench.labelling.annotate_items import Item

ADJUDICATION = "adjudication"


class TeamMixin:
    """Overlap answers and adjudication for an `AnnotationSession` (state set up in its `__init__`)."""

    def _team_store(self) -> bool:
        return hasattr(self.store, "answer") and hasattr(self.store, "overlap_share")

    def _overlap_rows(self) -> np.ndarray:
        """(n,) bool: the session's overlap products (the store's share for the field, read once)."""
        if getattr(self, "_overlap", None) is None:
            from fclip_workbench.labelling.store.overlap import overlap_mask

            share = self.store.overlap_share(self.field) if self._team_store() else 0.0
            self.overlap_share = share
            self._overlap = overlap_mask(self.ids, self.field, share)
        return self._overlap

    def _team_done(self) -> np.ndarray:
        """(n,) bool: overlap products this annotator is done with (answered, or answered twice by others);
        none in the adjudication order, which is made of products answered twice."""
        self._overlap_rows()
        return np.zeros_like(self._team_closed) if self.order == ADJUDICATION else self._team_closed

    def _pass_over(self, item: Item) -> bool:
        """True when `item` is an overlap product this annotator may not answer (any more); marks it."""
        if self.order == ADJUDICATION or not self._overlap_rows()[item.row]:
            return False
        ans = self.store.answers(self.field, [item.item_id])
        closed = len(ans) >= 2 or (self.annotator and self.annotator in set(ans["annotator"]))
        if closed:
            with self._lock:
                self._team_closed[item.row] = True
        return bool(closed)

    def independent_row(self, row: int) -> bool:
        """True when a decision on the product at `row` is an independent answer."""
        return self.order != ADJUDICATION and bool(self._overlap_rows()[row])

    def _store_write(self, item: Item, value: str, source: str, name: str,
                     expect: int | None) -> tuple[list[Any], str, bool]:
        """Write the decision on `item` the way its kind needs: (events, a note for the status line, whether
        the product has a label now)."""
        if self.order == ADJUDICATION:
            return [self.store.adjudicate(item.item_id, self.field, value, annotator=name)], "adjudicated", True
        if self.independent_row(item.row):
            events = self.store.answer(item.item_id, self.field, value, annotator=name, source=source)
            with self._lock:
                self._team_closed[item.row] = True
            if len(events) > 1:
                return events, "agreed with the other answer: now the label", True
            return events, "your independent answer; the label is set once a second annotator answers", False
        return [self.store.set(item.item_id, self.field, value, annotator=name, source=source,
                               expect_event=expect)], "", True

    def _team_reopen(self, row: int) -> None:
        """An undone answer: the product is this annotator's to answer again."""
        self._overlap_rows()
        with self._lock:
            self._team_closed[row] = False

    def _adjudication_rows(self) -> np.ndarray:
        """Rows of the products waiting for adjudication (oldest dispute first), refusing anyone without the
        role."""
        name = self._check_annotator()
        if not self._team_store() or not self.store.has_role(name, "adjudicator"):
            raise RoleError(f"{name} cannot adjudicate: a lead grants the adjudicator role "
                            "(store.grant(name, 'adjudicator', by=lead))")
        pending = self.store.pending_adjudication(self.field)
        return np.array([self._row[i] for i in pending["item_id"] if i in self._row], dtype=np.int64)

    def answers_of(self, item_id: str) -> dict[str, str]:
        """{annotator: answer} of an overlap product: what an adjudicator sees (never shown to annotators)."""
        if self.order != ADJUDICATION:
            raise InvalidArgumentError("the answers of an overlap product are shown to its adjudicator only")
        ans = self.store.answers(self.field, [item_id])
        return dict(zip(ans["annotator"], ans["value"]))

    def probabilities(self, item_ids: list[str] | None = None):
        """The suggester's current probabilities: DataFrame, one row per product (index: item id), one column
        per class (what `store.consensus` combines with the annotations)."""
        import pandas as pd

        view = self._view  # one refit's probabilities and classes, read together
        rows = np.arange(len(self.ids)) if item_ids is None else np.array([self._row[i] for i in item_ids], dtype=int)
        return pd.DataFrame(view.proba[rows], index=[self.ids[r] for r in rows], columns=list(view.classes))

    def consensus(self):
        """`store.consensus(field)` with this session's probabilities (cleanlab's CROWDLAB): the consensus label,
        quality and agreement of every labelled product that has an image embedding."""
        from fclip_workbench.labelling.agreement import annotations_of, consensus_table

        ann = annotations_of(self.store.answers(self.field), self.store.labels(self.field))
        ann = ann[ann["item_id"].isin(self._row)]
        return consensus_table(ann, self.probabilities(sorted(set(ann["item_id"]))))

    def team_progress(self) -> dict[str, int]:
        """Overlap products: how many, answered by me, waiting for adjudication."""
        overlap = self._overlap_rows()
        if not overlap.any():
            return {"overlap": 0, "answered_by_me": 0, "pending_adjudication": 0}
        ans = self.store.answers(self.field)
        return {"overlap": int(overlap.sum()),
                "answered_by_me": int((ans["annotator"] == self.annotator).sum()) if self.annotator else 0,
                "pending_adjudication": len(self.store.pending_adjudication(self.field))}


__all__ = ["TeamMixin", "ADJUDICATION"]
