"""The session's queue: which product comes next (a part of `AnnotationSession`; see annotate.py).

Orders (`QUEUE_ORDERS`): "uncertainty" (least confident first; one product in `CAL_EVERY` is drawn at
random from the calibration items instead, see `interleave_calibration`), "diversity" (k-center over the
most uncertain) and "activelab" (re-label a doubtful label or label a new product; both in queue_orders.py),
"query" (most similar to a text query), "cluster" (one KMeans cluster, most typical first), "random"
(seeded), and "review" (given ids, in their order). Only products without a label are shown; skipped ones come back after the
rest. Each view keeps the store's last event on what it showed (the current item in `Item.event_id`,
batch pages and grids in `_shown`): a decision taken on a view is written only if that event is still
the last one, so a later view never stands in for an earlier one.

Example:
    >>> session.set_order("query", query="red dress").item_id                # doctest: +SKIP
    'p17'
    >>> session.queue(limit=3)                                               # doctest: +SKIP
    ['p17', 'p4', 'p9']
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fclip_workbench.labelling.annotate_items import ACTIVELAB, QUEUE_ORDERS, Item
from fclip_workbench.labelling.queue_orders import activelab_order, diversity_order
from fclip_workbench.labelling.suggest_state import CAL_EVERY, calibration_items
from fclip_workbench.errors import InvalidArgumentError


def interleave_calibration(order: np.ndarray, calibration: np.ndarray, labelled: np.ndarray,
                           seed: int | None) -> np.ndarray:
    """`order` (rows, most useful first) with every `CAL_EVERY`-th unlabelled product drawn at random from
    the unlabelled `calibration` rows (bool (n,), `calibration_items`); labelled rows come last.

    The labels of those products are a random sample of the catalog: the suggester fits its temperature on
    them, so the probabilities it states hold for the catalog, not only for the hard products that
    uncertainty picks (docs/results/labelling.md measures both).

    >>> cal = np.array([False, False, True, False, False, False, True, False])
    >>> interleave_calibration(np.arange(8), cal, np.zeros(8, bool), seed=0).tolist()
    [0, 1, 3, 4, 2, 5, 7, 6]
    """
    open_ = ~labelled
    main = order[open_[order] & ~calibration[order]]  # unlabelled, not set aside: in the given order
    cal = np.random.default_rng(seed).permutation(np.flatnonzero(open_ & calibration))
    total = len(main) + len(cal)
    c = min(len(cal), total // CAL_EVERY)  # calibration slots: positions CAL_EVERY-1, 2*CAL_EVERY-1, ...
    slots = np.zeros(total, dtype=bool)
    slots[np.arange(c) * CAL_EVERY + CAL_EVERY - 1] = True
    out = np.empty(total, dtype=np.int64)
    out[slots] = cal[:c]
    out[~slots] = np.concatenate([main, cal[c:]])
    return np.concatenate([out, order[labelled[order]]])


class QueueMixin:
    """Queue orders, the current item and what was shown of it (state set up in `AnnotationSession.__init__`)."""

    # ------------------------------------------------------------------ what was shown
    def _see(self, item_ids: Sequence[str]) -> dict[str, tuple[str | None, int | None]]:
        """{item_id: (label, last event id)} as the store has them now."""
        return self.store.current_events(self.field, list(item_ids))

    def _expected(self, item_ids: Sequence[str], view: str,
                  shown: Mapping[str, int | None] | None = None) -> dict[str, int | None]:
        """{item_id: the last event id that `view` showed for it} (`shown` first, when the caller holds its own
        view's events, e.g. a widget's grid); ids the view never showed are read now."""
        with self._lock:
            snapshot = {**self._shown[view], **(shown or {})}
        missing = [i for i in item_ids if i not in snapshot]
        now = self._see(missing) if missing else {}
        return {i: snapshot[i] if i in snapshot else now[i][1] for i in item_ids}

    def _record_shown(self, view: str, events: Mapping[str, int | None], replace: bool = False) -> None:
        """Record what `view` shows now (`replace`: it shows nothing else)."""
        with self._lock:
            if replace:
                self._shown[view] = dict(events)
            else:
                self._shown[view].update(events)

    # ------------------------------------------------------------------ orders
    def _calibration_rows(self) -> np.ndarray:
        """(n,) bool: the session's calibration items (`calibration_items`), hashed once, on first use."""
        if self._calibration is None:
            self._calibration = calibration_items(self.ids)
        return self._calibration

    def _make_queue(self) -> np.ndarray:
        """Rows in the order of `self.order` (labelled ones are passed over when read)."""
        n = len(self.ids)
        if self.order == "uncertainty":
            first = self._first
            if first is not None:  # until every product's suggestions land: the first rows', then the others
                rows = np.fromiter(first.rows, dtype=np.int64, count=len(first.rows))  # (m,)
                sample = np.zeros(n, dtype=bool)
                sample[rows] = True
                order = np.concatenate([rows[np.argsort(-first.view.uncertainty, kind="stable")],
                                        np.flatnonzero(~sample)])
                return interleave_calibration(order, self._calibration_rows() & sample, self._labelled, self.seed)
            return interleave_calibration(np.argsort(-self._view.uncertainty, kind="stable"),
                                          self._calibration_rows(), self._labelled, self.seed)
        if self.order == "query":
            if self._query_scores is None:
                return np.arange(n)
            return np.argsort(-self._query_scores, kind="stable")
        if self.order == "cluster":
            km = self._clusters()
            members = np.flatnonzero(km.labels_ == self.cluster)
            dist = np.linalg.norm(self.vectors[members] - km.cluster_centers_[self.cluster], axis=1)  # (m,)
            return members[np.argsort(dist, kind="stable")]
        if self.order == "diversity":
            cal = self._calibration_rows()
            return interleave_calibration(diversity_order(self.vectors, self._view.uncertainty, self._labelled | cal,
                                                          self._labelled, self.seed), cal, self._labelled, self.seed)
        if self.order == ACTIVELAB:
            return self._activelab_queue()
        if self.order == "review":
            return self._review_rows
        if self.order == "adjudication":
            return self._adjudication_rows()
        return np.random.default_rng(self.seed).permutation(n)

    def _activelab_queue(self) -> np.ndarray:
        """The "activelab" queue (queue_orders.activelab_order); sets `_relabel`, the labelled rows it shows."""
        cal, view = self._calibration_rows(), self._view
        rows, values, _ = self._fit_data()
        labels = dict(zip(rows.tolist(), values))
        order, self._relabel = activelab_order(view.proba, view.classes, labels,
                                               cal | self._overlap_rows() | self._relabelled, self._labelled,
                                               vectors=self.vectors)
        return interleave_calibration(order, cal & ~self._labelled, self._labelled & ~self._relabel, self.seed)

    def review(self, item_ids: Sequence[str]) -> Item | None:
        """Queue exactly `item_ids`, in their order (e.g. the most suspicious labels first), and show the first.

        Ids without an image embedding in this session are refused, naming a few. Labelled ones are shown
        with their label (a review is for checking labels); each is shown once, until decided or skipped.

        >>> session.review(find_label_issues(vectors, labels).position.map(lambda p: ids[p]))   # doctest: +SKIP
        """
        ids = [str(i) for i in item_ids]
        unknown = [i for i in ids if i not in self._row]
        if not ids:
            raise InvalidArgumentError("nothing to review: give at least one item id")
        if unknown:
            raise InvalidArgumentError(f"{len(unknown)} of the {len(ids)} ids to review are not in this session "
                                       f"(not in the catalog or without an image embedding), e.g. {unknown[:3]}")
        rows = np.array(list(dict.fromkeys(self._row[i] for i in ids)), dtype=np.int64)  # (m,) first occurrence
        with self._lock:
            self._review_rows = rows
            self._reviewed = np.zeros(len(self.ids), dtype=bool)  # decided in this review
            self.order = "review"
            self._queue, self._pos = rows, 0
        self._front.clear()
        self._advance()
        return self.current

    def _clusters(self):
        if self._kmeans is None:
            from sklearn.cluster import KMeans
            k = min(self.n_clusters, len(self.ids))
            self._kmeans = KMeans(n_clusters=k, n_init=1, random_state=self.seed).fit(self.vectors)
        return self._kmeans

    def clusters(self) -> list[tuple[int, int, str]]:
        """(cluster, size, most suggested label) for the cluster picker (fits KMeans on first use)."""
        km = self._clusters()
        view = self._view
        top = view.proba.argmax(axis=1) if view.proba.shape[1] else np.zeros(len(self.ids), int)
        out = []
        for c in range(km.n_clusters):
            members = km.labels_ == c
            common = np.bincount(top[members]).argmax() if members.any() else 0
            out.append((c, int(members.sum()), view.classes[common] if view.classes else ""))
        return out

    def set_order(self, order: str, query: str | None = None, cluster: int | None = None) -> Item | None:
        """Reorder the queue and show its first item: "uncertainty", "diversity", "activelab" (re-labels
        included, shown with their label), "query" (give `query`), "cluster" (give `cluster`), "random". The
        current item, not decided, goes back to the queue."""
        if order not in QUEUE_ORDERS:
            raise InvalidArgumentError(f"unknown queue order {order!r}; choose one of {', '.join(QUEUE_ORDERS)}")
        if order == "adjudication":
            self._adjudication_rows()  # refused before anything changes without the role
        if order == "query":
            self._query_scores = self.similarity(query)
            self.query = query
        if order == "cluster":
            k = min(self.n_clusters, len(self.ids))
            if not isinstance(cluster, (int, np.integer)) or not 0 <= cluster < k:
                raise InvalidArgumentError(f"cluster must be 0..{k - 1} (got {cluster!r})")
            self.cluster = int(cluster)
        with self._lock:
            self.order = order
            if order == ACTIVELAB:
                self._relabelled = np.zeros(len(self.ids), dtype=bool)  # re-labelled in this run of the order
            self._queue, self._pos = self._make_queue(), 0
        self._front.clear()
        self._advance()
        return self.current

    def similarity(self, query: str | None) -> np.ndarray:
        """Cosine similarity of every embedded product to a text query. (n,)"""
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError(f"type a text query to order by (got {query!r})")
        if self.model is None:
            raise InvalidArgumentError("ordering by a text query needs the model: give model=... to the session")
        q = np.asarray(self.model.encode_texts([query.strip()]), dtype=np.float32)[0]  # (dim,)
        return self.vectors @ q

    # ------------------------------------------------------------------ reading the queue
    def queue(self, limit: int | None = None) -> list[str]:
        """The ids still to show, in order (skipped ones last), at most `limit`."""
        with self._lock:
            order, done = self._queue, self._done()
            todo = order[~(done[order] | self._skipped[order])]
            later = order[self._skipped[order] & ~done[order]]
        rows = np.concatenate([todo, later])[:limit]
        return [self.ids[r] for r in rows]

    def queue_table(self, limit: int = 10):
        """The next `limit` products of the queue with the model's best guess: DataFrame[item_id, title,
        suggestion, probability, uncertainty].

        >>> session.queue_table(3)          # doctest: +SKIP
          item_id            title suggestion  probability  uncertainty
        0   t0042  red striped bag      shirt         0.31         0.69
        """
        import pandas as pd

        rows = [self._row[i] for i in self.queue(limit)]
        view = self._view
        best = [view.top(r, 1) for r in rows]
        return pd.DataFrame({"item_id": [self.ids[r] for r in rows],
                             "title": [self.catalog.texts[self._cat_row[r]] for r in rows],
                             "suggestion": [b[0][0] if b else "" for b in best],
                             "probability": [round(b[0][1], 3) if b else float("nan") for b in best],
                             "uncertainty": [round(float(view.uncertainty[r]), 3) for r in rows]})

    def _done(self) -> np.ndarray:
        """Rows not to show (n,): labelled ones, or in a review, the ones decided in it (labelled ones are
        what a review is for)."""
        if self.order == ACTIVELAB:  # re-label candidates are shown with their label, once
            return (self._labelled & ~self._relabel) | self._relabelled | self._team_done()
        return self._reviewed if self.order == "review" else self._labelled | self._team_done()

    def _next_row(self) -> int | None:
        while self._front:
            r = self._front.pop(0)
            if not self._done()[r]:
                return r
        with self._lock:
            rest = self._queue[self._pos:]
            free = np.flatnonzero(~(self._done()[rest] | self._skipped[rest]))
            if len(free):
                self._pos += int(free[0])
                return int(rest[free[0]])
            if self._skipped.any():  # everything else is done: the skipped ones come back
                self._skipped[:] = False
                self._pos = 0
                return self._next_row()
        return None

    def item(self, row: int) -> Item:
        """The product at `row` with its current label and last event (read from the store now: a decision
        on it is conditional on `event_id`) and its suggestions."""
        item_id = self.ids[row]
        crow = self._cat_row[row]
        table = self.catalog.table
        attrs = {c: str(table.at[crow, c]) for c in self.catalog.attributes}
        image = self.catalog.image_path(crow) if table.at[crow, "image"] else None
        view = self._view_for(row)  # one refit's probabilities: the suggester itself may be refitting in another thread
        sugg = view.top(row)
        unsure = bool(sugg) and sugg[0][1] < view.unsure_below
        value, event = self._see([item_id])[item_id]
        answers = self.answers_of(item_id) if self.order == "adjudication" else None
        return Item(item_id, row, self.catalog.texts[crow], image, attrs, value, sugg, unsure, event,
                    independent=self.independent_row(row), answers=answers)

    def _advance(self) -> Item | None:
        while True:
            row = self._next_row()
            if row is None:
                self.current = None
                return None
            item = self.item(row)
            if self._pass_over(item):  # an overlap product answered by me, or twice, since the queue was made
                continue
            if item.current is None or self.order == "review" or (self.order == ACTIVELAB and self._relabel[row]):
                self.current = item
                return item
            with self._lock:  # labelled elsewhere since the queue was made: passed over
                self._labelled[row] = True
