"""Batches: one value for many products in one `set_many` (a part of `AnnotationSession`; see annotate.py).

Two kinds:
- the model batch: `batch_candidates` (a page of the unlabelled products the model most confidently
  puts in one label, or most similar to a query) + `confirm_batch`;
- the selection batch: `selection_batch` (given products, e.g. a map selection, with their labels) +
  `apply_batch` (products labelled otherwise are changed only when the annotator says so).

A confirmed model batch states its error: `Decision.batch_error` (a `batch_error.BatchError`) is the number of
its labels the suggester expects wrong, from its calibrated probability of the value for each product, with
an exact 90 % interval; `expected_error` gives the same for a page's ticked products before confirming.

Both are compare-and-set on what the page showed: every product's last event when the page was drawn
goes to the store as `expect_events`; when any changed since (another annotator), NOTHING is written and
`SessionConflictError` names who changed what.

Example:
    >>> page = session.batch_candidates(label="red", n=24)                        # doctest: +SKIP
    >>> session.confirm_batch([c.item_id for c in page], "red").report              # doctest: +SKIP
    'saved: 24 labels · expected wrong: 1.3 of 24 (90 % interval 0–3)'
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fclip_workbench.labelling.annotate_decide import conflict_message
from fclip_workbench.labelling.annotate_items import BATCH, DEFAULT_BATCH_SIZE, Candidate, Decision, SessionConflictError
from fclip_workbench.labelling.batch_error import DEFAULT_LEVEL, BatchError, batch_error
from fclip_workbench.errors import ConflictError, InvalidArgumentError, LabelValueError


class BatchMixin:
    """Model and selection batches (state set up in `AnnotationSession.__init__`)."""

    def _image(self, row: int):
        crow = self._cat_row[row]
        return self.catalog.image_path(crow) if self.catalog.table.at[crow, "image"] else None

    def _write_batch(self, ids: list[str], value: str, name: str, view: str, expect: dict[str, int | None]) -> list:
        """`set_many` of `value` for `ids`, conditional on `expect` (the events `view` showed for them)."""
        try:
            events = self.store.set_many([(i, value) for i in ids], self.field, annotator=name, source=BATCH,
                                         expect_events=expect)
        except ConflictError as e:
            now = self._see(ids)  # shown as they are now: the next page or grid is drawn from this
            moved = [i for i in ids if now[i][1] != expect[i]]
            with self._lock:
                for i in moved:
                    self._labelled[self._row[i]] = now[i][0] is not None
            named = ", ".join(moved[:5]) + (" ..." if len(moved) > 5 else "")
            raise SessionConflictError(conflict_message(
                e, f"{len(moved) or 1} of the {len(ids)} products changed since the page was drawn ({named}): "
                   "reload the page and confirm again")) from e
        events = list(events or [])
        self._record_shown(view, {ev.item_id: ev.id for ev in events if hasattr(ev, "item_id")})
        return events

    def _record_batch(self, decision: Decision, rows: list[int]) -> None:
        with self._lock:
            self._labelled[rows] = True
            self._reviewed[rows] = True
        if decision.item_ids:
            self._decisions.append(decision)
            self.counts[BATCH] += len(decision.item_ids)
            self._count_labels(len(decision.item_ids))
        if self.current is not None and self._done()[self.current.row]:
            self._advance()

    # ------------------------------------------------------------------ the model batch
    def expected_error(self, item_ids: Sequence[str | Candidate], value: str | None, view=None,
                       level: float = DEFAULT_LEVEL) -> BatchError | None:
        """How many of `item_ids` the suggester expects NOT to be `value`: its calibrated probability of
        `value` for each, under the current suggestions (or `view`), as a `BatchError` (mean and exact
        `level` interval). None when there are no products or the suggester gives `value` no probability
        (a value added to the taxonomy since its last refit)."""
        view = self._view if view is None else view
        ids, _ = _ids_and_events(item_ids, None)
        ids = list(dict.fromkeys(i for i in ids if i in self._row))
        if not ids or value is None or value not in view.classes:
            return None
        rows = [self._row[i] for i in ids]
        p = np.clip(view.proba[rows, view.classes.index(value)].astype(np.float64), 0.0, 1.0)  # (n,)
        return batch_error(p, level=level)

    def batch_candidates(self, label: str | None = None, query: str | None = None,
                         n: int = DEFAULT_BATCH_SIZE) -> list[Candidate]:
        """The `n` unlabelled products the suggester most confidently puts in `label` (or, with
        `query`, most similar to it), leaving out those unticked on an earlier page. Their labels and
        last events are read now: `confirm_batch` writes only if none changed since."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidArgumentError(f"batch size must be an integer >= 1 (got {n!r})")
        if (label is None) == (query is None):
            raise InvalidArgumentError("give either a label or a text query for the batch")
        if label is not None:
            view = self._view
            if label not in view.classes:
                raise LabelValueError(f"{label!r} is not a label the suggester knows; "
                                      f"known: {', '.join(view.classes[:30])}")
            scores = view.proba[:, view.classes.index(label)].copy()  # (n_items,)
            key = f"label:{label}"
        else:
            scores = self.similarity(query)
            key = f"query:{query.strip()}"
        out: list[Candidate] = []
        while len(out) < n:
            with self._lock:  # overlap products are answered one by one, independently: never in a batch
                hidden = self._labelled | self._overlap_rows()
            hidden[list(self._rejected.get(key, ()))] = True
            hidden[[c.row for c in out]] = True
            s = np.where(hidden, -np.inf, scores)
            k = min(int(n) - len(out), int((~hidden).sum()))
            if k == 0:
                break
            best = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
            best = best[np.argsort(-s[best], kind="stable")]
            now = self._see([self.ids[r] for r in best])
            for r in best:
                value, event = now[self.ids[r]]
                if value is not None:  # labelled by someone else since the session read the store
                    with self._lock:
                        self._labelled[r] = True
                    continue
                crow = self._cat_row[r]
                out.append(Candidate(self.ids[r], int(r), self.catalog.texts[crow], self._image(int(r)),
                                     float(scores[r]), current=None, event_id=event))
        self._last_page = (key, [c.row for c in out])
        self._record_shown("page", {c.item_id: c.event_id for c in out}, replace=True)
        return out

    def confirm_batch(self, item_ids: Sequence[str | Candidate], value: str,
                      shown: Mapping[str, int | None] | None = None) -> Decision:
        """Save `value` for `item_ids` in ONE `set_many` (source batch), only if none of them changed since
        its page was drawn: the page's `Candidate`s (or `shown`, {item_id: event id}) say what it showed,
        plain ids are checked against the last page. The products of the last page that are not in
        `item_ids` are not offered again for this label. A product labelled otherwise is refused here:
        relabel it with `apply_batch`. `decision.batch_error` states how many of the saved labels the
        suggester expects wrong (`expected_error`, under the suggestions shown before this write)."""
        value = self.check_value(value)
        name = self._check_annotator()
        view = self._view  # the suggestions the batch was confirmed under (this batch's own refit comes after)
        item_ids, shown = _ids_and_events(item_ids, shown)
        unknown = [i for i in item_ids if i not in self._row]
        if unknown:
            raise InvalidArgumentError(f"unknown item ids in the batch: {unknown[:10]}")
        ids = list(dict.fromkeys(item_ids))
        expect: dict[str, int | None] = {}
        if ids:
            expect = self._expected(ids, "page", shown)
            now = self.store.current_events(self.field, ids)
            taken = [i for i in ids if now[i][0] is not None and now[i][1] == expect[i] and now[i][0] != value]
            if taken:
                raise LabelValueError(f"{len(taken)} of the {len(ids)} products already have another {self.field}: "
                                      f"{', '.join(f'{i} ({now[i][0]})' for i in taken[:5])}; nothing saved: the "
                                      "model batch labels unlabelled products only (change labels in a selection batch)")
        events = self._write_batch(ids, value, name, "page", expect) if ids else []
        rows = [self._row[i] for i in ids]
        key, page = getattr(self, "_last_page", (None, []))
        if key is not None:
            self._rejected.setdefault(key, set()).update(r for r in page if r not in set(rows))
        decision = Decision(ids, self.field, value, BATCH, events, batch_error=self.expected_error(ids, value, view))
        self._record_batch(decision, rows)
        return decision

    # ------------------------------------------------------------------ the selection batch (a map selection)
    def check_ids(self, item_ids: Sequence[str], what: str = "label") -> list[str]:
        """`item_ids` as strings, first occurrences kept; ids not in this session are refused, naming a few."""
        if isinstance(item_ids, str):
            item_ids = [item_ids]
        ids = list(dict.fromkeys(str(i) for i in item_ids))
        if not ids:
            raise InvalidArgumentError(f"nothing to {what}: give at least one item id")
        unknown = [i for i in ids if i not in self._row]
        if unknown:
            raise InvalidArgumentError(f"{len(unknown)} of the {len(ids)} ids to {what} are not in this session "
                                       f"(not in the catalog or without an image embedding), e.g. {unknown[:3]}")
        return ids

    def current_labels(self, item_ids: Sequence[str]) -> dict[str, str | None]:
        """{item_id: the store's current label for the field, or None}, read now."""
        return {i: value for i, (value, _) in self.store.current_events(self.field, [str(i) for i in item_ids]).items()}

    def selection_batch(self, item_ids: Sequence[str]) -> list[Candidate]:
        """The given products (e.g. a selection on the map), in their order, each with its current label
        and the model's top suggestion: what the batch grid shows before one value is applied to them.
        Their last events are recorded: `apply_batch` writes only if none changed since.

        >>> [(c.item_id, c.current, c.suggestion) for c in session.selection_batch(["p1", "p7"])]  # doctest: +SKIP
        [('p1', None, ('red', 0.91)), ('p7', 'blue', ('green', 0.55))]
        """
        ids = self.check_ids(item_ids, "show in a batch")
        now = self._see(ids)
        self._record_shown("grid", {i: now[i][1] for i in ids})
        view = self._view
        out = []
        for item_id in ids:
            r = self._row[item_id]
            best = view.top(r, 1)
            out.append(Candidate(item_id, r, self.catalog.texts[self._cat_row[r]], self._image(r),
                                 best[0][1] if best else float("nan"), current=now[item_id][0],
                                 suggestion=best[0] if best else None, event_id=now[item_id][1]))
        return out

    def apply_batch(self, item_ids: Sequence[str | Candidate], value: str, replace: Sequence[str] | bool = (),
                    expected: dict[str, str | None] | None = None,
                    shown: Mapping[str, int | None] | None = None) -> Decision:
        """Save `value` for every product of `item_ids` in ONE `set_many` (source batch, undone as a whole).

        Existing labels are never lost silently: a product that already has `value` is left as it is
        (`decision.unchanged`); one labelled otherwise is changed only if listed in `replace` (or
        `replace=True`), else `LabelValueError` names them and nothing is written. The write is conditional
        on the events the grid showed: give the grid's `Candidate`s (or `shown`, {item_id: event id}); plain
        ids are checked against the events `selection_batch` last showed for them. A label changed since
        (another annotator) refuses the batch, writing nothing; `expected` ({item_id: label the annotator
        saw}) is checked as well.

        >>> session.apply_batch(["p1", "p7"], "red", replace=["p7"]).status   # doctest: +SKIP
        'saved: 2 labels (1 changed from another label)'
        """
        value = self.check_value(value)
        name = self._check_annotator()
        item_ids, shown = _ids_and_events(item_ids, shown)
        ids = self.check_ids(item_ids, "label in a batch")
        expect = self._expected(ids, "grid", shown)
        now = self.store.current_events(self.field, ids)
        current = {i: now[i][0] for i in ids}
        if expected is not None:
            moved = [i for i in ids if i in expected and current[i] != expected[i]]
            if moved:
                self._see(ids)
                listed = ", ".join(f"{i} ({expected[i] or 'unlabelled'} -> {current[i] or 'unlabelled'})"
                                   for i in moved[:5])
                raise SessionConflictError(f"{len(moved)} labels changed since the grid was shown: {listed}; "
                                           "nothing saved: check the refreshed grid and apply again")
        allowed = set(ids) if replace is True else {str(i) for i in (replace or ())}
        conflicts = [i for i in ids if current[i] is not None and current[i] != value]
        refused = [i for i in conflicts if i not in allowed]
        if refused:
            named = ", ".join(f"{i} ({current[i]})" for i in refused[:5])
            raise LabelValueError(f"{len(refused)} of the {len(ids)} products already have another {self.field}: "
                                  f"{named}{' ...' if len(refused) > 5 else ''}; nothing saved: exclude them or "
                                  f"confirm changing their label to {value!r}")
        unchanged = [i for i in ids if current[i] == value and now[i][1] == expect[i]]
        write = [i for i in ids if i not in set(unchanged)]
        events = self._write_batch(write, value, name, "grid", {i: expect[i] for i in write}) if write else []
        decision = Decision(write, self.field, value, BATCH, events,
                            replaced={i: current[i] for i in conflicts}, unchanged=unchanged)
        self._record_batch(decision, [self._row[i] for i in ids])
        return decision


def _ids_and_events(items: Sequence[str | Candidate] | str, shown: Mapping[str, int | None] | None
                    ) -> tuple[list[str], dict[str, int | None] | None]:
    """Plain ids and the events their view showed: `Candidate`s carry theirs, `shown` adds to them.

    >>> _ids_and_events([Candidate("p1", 0, "t", None, 0.9, event_id=7), "p2"], None)
    (['p1', 'p2'], {'p1': 7})
    """
    if isinstance(items, str):
        items = [items]
    ids, events = [], {}
    for it in items:
        if isinstance(it, Candidate):
            ids.append(it.item_id)
            events[it.item_id] = it.event_id
        else:
            ids.append(str(it))
    if shown is not None:
        if not isinstance(shown, Mapping):
            raise InvalidArgumentError(f"shown must be a mapping item id -> event id, not {type(shown).__name__}")
        events.update({str(k): v for k, v in shown.items()})
    return ids, (events or None)


__all__ = ["BatchMixin"]
