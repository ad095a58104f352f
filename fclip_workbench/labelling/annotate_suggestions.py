"""The session's suggestions and their refits (a part of `AnnotationSession`; see annotate.py).

Every `refit_every` labels the suggester is refitted on the store's labels, by default in a background
thread. A refit reads ONE state of the suggester (`Suggester.snapshot()`: labels, weights and calibration
together), computes every probability from it and swaps the result in as one `SuggestionView`: the UI
thread, which may replace `suggester.labels` meanwhile (a value added to the taxonomy), never sees 4
classes over 3 columns.

Opening a session (`_open`) fits the suggester once, computes the probabilities of only the first
products of the queue (`FIRST_ROWS`, a `FirstView`) and shows the first one; the full pass over every
product runs in the refit thread and, when it lands, refines the queue (the uncertainty order starts from
a sample: `first_rows`). Both come from ONE suggester state, so a product shown early has the suggestions
the full pass gives it; anything that needs every product's probabilities (`_view`: batches, clusters,
the queue table) waits for the full pass.

Example:
    >>> session.refit(wait=True); session.suggestions(session.current.row, top=2)   # doctest: +SKIP
    [('red', 0.91), ('blue', 0.05)]
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fclip_workbench.labelling.annotate_items import REBUILT_ON_REFIT, SuggestionView
from fclip_workbench.labelling.suggest import Suggester
from fclip_workbench.errors import InvalidArgumentError

log = logging.getLogger(__name__)


FIRST_ROWS = 256  # products whose suggestions are computed before the first is shown (the rest in the background)

Reader = Callable[[np.ndarray], SuggestionView]


def reader_of(suggester) -> Reader:
    """A function: vectors (n, dim) -> their `SuggestionView`, every call from the SAME state of `suggester`.

    A `Suggester` gives one snapshot (`snapshot()`), read once here; another estimator is read through
    `predict_proba` and `classes_`, and refused when the two disagree in size.
    """
    snapshot = getattr(suggester, "snapshot", None)
    if callable(snapshot):
        st = snapshot()
        predict, classes, unsure_below = st.predict_proba, st.labels, st.unsure_below
    else:
        predict = suggester.predict_proba
        classes = getattr(suggester, "classes_", ())
        unsure_below = getattr(suggester, "unsure_below", 0.5)
    classes = tuple(str(c) for c in classes)
    return lambda vectors: _view(predict(vectors), classes, float(unsure_below), len(vectors))


def view_of(suggester, vectors: np.ndarray) -> SuggestionView:
    """Probabilities of `vectors` (n, dim) and their classes, from one state of `suggester` (`reader_of`)."""
    return reader_of(suggester)(vectors)


def _view(proba, classes: tuple[str, ...], unsure_below: float, n: int) -> SuggestionView:
    vectors = range(n)  # only their number is checked
    proba = np.asarray(proba, dtype=np.float32)  # (n, n_classes)
    if proba.ndim != 2 or proba.shape != (len(vectors), len(classes)):
        raise InvalidArgumentError(f"the suggester gave probabilities of shape {proba.shape} for {len(vectors)} "
                                   f"products and {len(classes)} classes: refit it")
    uncertainty = 1.0 - proba.max(axis=1) if proba.shape[1] else np.ones(len(vectors), np.float32)  # (n,)
    return SuggestionView(proba, classes, uncertainty, float(unsure_below))


@dataclass(frozen=True, eq=False)
class FirstView:
    """The suggestions of the first rows shown, while the full pass (same suggester state) runs."""

    rows: dict[int, int]  # session row -> row of `view`
    view: SuggestionView  # (len(rows), n_classes)
    done: threading.Event  # set when the full pass has landed (or failed)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.view.classes

    @property
    def unsure_below(self) -> float:
        return self.view.unsure_below

    def top(self, row: int, k: int = 3) -> list[tuple[str, float]]:
        return self.view.top(self.rows[row], k)


class SuggestionsMixin:
    """Refits and suggestions of an `AnnotationSession` (state set up in its `__init__`)."""

    _full_view: SuggestionView
    _first: FirstView | None = None  # the first rows' suggestions until the opening's full pass lands
    _opening: Future | None = None  # the opening's full pass (in the refit thread)
    _opening_reader: Reader  # the suggester state the opening showed the first rows from

    @property
    def _view(self) -> SuggestionView:
        """Every product's suggestions; while the opening's full pass runs, waits for it."""
        first = self._first
        if first is not None:
            first.done.wait()
            if self._first is first:  # the pass failed: done here
                self._land(first, self._opening_reader)
        return self._full_view

    @_view.setter
    def _view(self, view: SuggestionView) -> None:
        self._full_view = view

    def _view_for(self, row: int):
        """What shows the suggestions of `row` now: the first rows' (no waiting) or every product's."""
        first = self._first
        return first if first is not None and row in first.rows else self._view

    @property
    def classes(self) -> list[str]:
        first = self._first
        return list(first.classes if first is not None else self._view.classes)

    def _fit_data(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(rows, values, labelled mask) of the store's labels for the field, among embedded items."""
        table = self.store.labels(self.field)
        rows, values = [], []
        for item_id, value in zip(table["item_id"], table["value"]):
            r = self._row.get(str(item_id))
            if r is not None and value is not None:
                rows.append(r)
                values.append(str(value))
        mask = np.zeros(len(self.ids), dtype=bool)
        mask[rows] = True
        return np.asarray(rows, dtype=int), values, mask

    def _check_model_space(self) -> None:
        """Refuse to refit once the model's embedding space moved away from the session's embeddings."""
        if self.space is not None and self.model is not None:
            now = getattr(self.model, "space", None)
            if now is not None and now != self.space:
                from fclip_workbench.errors import SpaceMismatchError
                raise SpaceMismatchError(f"the session's image embeddings are in space {self.space.describe()}, "
                                         f"but the model is now in {now.describe()}: open a new session")

    def _fit(self) -> None:
        """Fit the suggester on the store's labels (those it can learn)."""
        self._check_model_space()
        rows, values, labelled = self._fit_data()
        label_set = getattr(self.suggester, "labels", None)
        if label_set is None:
            label_set = getattr(self.suggester, "classes_", ())
        known = {str(v) for v in tuple(label_set)}  # read once: the UI thread may replace it meanwhile
        keep = [i for i, v in enumerate(values) if v in known]  # labels the suggester cannot learn are left out
        if len(keep) < len(values):
            log.info("refit: %d labels outside the suggester's label set not used", len(values) - len(keep))
        if keep:
            fit_rows = rows[keep]
            X, y = self.vectors[fit_rows], [values[i] for i in keep]
            if isinstance(self.suggester, Suggester):  # its temperature is fitted on the queue's random share
                self.suggester.fit(X, y, calibration=self._calibration_rows()[fit_rows])
            else:
                self.suggester.fit(X, y)

    def _refit(self) -> None:
        """Fit the suggester on the store's labels, recompute every probability, swap them in."""
        self._fit()
        self._swap_view(self._reader()(self.vectors))

    def _reader(self) -> Reader:
        """`reader_of` the fitted suggester (an unfitted one is fitted zero-shot first)."""
        try:
            read = reader_of(self.suggester)
            read(self.vectors[:1])  # an estimator without snapshot() says it is unfitted only when asked
            return read
        except Exception as e:  # an unfitted suggester: fit it zero-shot (no labels)
            if type(e).__name__ != "NotFittedError":
                raise
            self.suggester.fit()
            return reader_of(self.suggester)

    def _open(self) -> None:
        """Fit once, show the first product, and compute every product's suggestions in the refit thread
        (inline without `background`). The queue starts from `first_rows` and is refined when they land."""
        if not self.background:
            self._refit()
            self._queue = self._make_queue()
            return
        self._fit()
        read = self._reader()  # ONE state: the first rows and the full pass agree
        with self._lock:
            self._labelled = self._fit_data()[2]
            self.n_refits += 1
        if len(self.ids) <= FIRST_ROWS:  # a small catalog: every product's suggestions now
            self._full_view = read(self.vectors)
            self._queue = self._make_queue()
            return
        rows = self.first_rows()
        first = FirstView({int(r): i for i, r in enumerate(rows)}, read(self.vectors[rows]), threading.Event())
        self._first, self._opening_reader = first, read
        self._queue = self._make_queue()
        self._opening = self._refit_executor().submit(self._opening_job, first, read)

    def first_rows(self) -> np.ndarray:
        """The rows whose suggestions are computed before the first product is shown (`FIRST_ROWS`): the first
        unlabelled ones of the queue, or for the uncertainty order (which needs every product's
        probabilities), a seeded sample of the unlabelled ones, with the calibration items among them."""
        open_rows = np.flatnonzero(~self._labelled)
        if self.order != "uncertainty":
            queue = self._make_queue()
            return queue[~self._labelled[queue]][:FIRST_ROWS]
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.permutation(open_rows)[:FIRST_ROWS])

    def _opening_job(self, first: FirstView, read: Reader) -> None:
        try:
            self._land(first, read)
        except Exception:  # noqa: BLE001 - whoever needs every product's suggestions computes them again
            log.exception("the suggestions of every product failed; they are computed when needed")
        finally:
            first.done.set()

    def _land(self, first: FirstView, read: Reader) -> None:
        """Every product's suggestions (from the opening's state) swapped in; the queue refined from them."""
        view = read(self.vectors)
        if self._first is not first:
            return
        self._full_view, self._first = view, None
        first.done.set()  # before the lock: a reader waiting for the full pass may hold it
        with self._lock:
            if self.order == "uncertainty":
                self._queue, self._pos = self._make_queue(), 0

    def _swap_view(self, view: SuggestionView) -> None:
        with self._lock:
            self._view, self._first = view, None
            # read again now, not at the start: labels written and undone during the fit both count
            self._labelled = self._fit_data()[2]
            self.n_refits += 1
            if self.order in REBUILT_ON_REFIT and hasattr(self, "_queue"):
                self._queue, self._pos = self._make_queue(), 0

    def _refit_job(self) -> None:
        try:
            self._refit()
            self.refit_error = None
        except Exception as e:  # noqa: BLE001 - shown in the widget; the previous suggestions stay
            log.exception("refit failed")
            self.refit_error = f"suggestions not updated: {e}"
        for callback in list(self.on_refit):
            callback(self)

    def refit(self, wait: bool = True) -> None:
        """Refit now (inline when `wait` or not `background`, else in the background thread)."""
        self._since_refit = 0
        if wait or not self.background:
            self.wait_refit()
            self._refit_job()
            return
        self._refit_future = self._refit_executor().submit(self._refit_job)

    def _refit_executor(self) -> ThreadPoolExecutor:
        """The one refit thread: the opening's full pass, then each refit, in turn."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fclip-refit")
        return self._executor

    def wait_refit(self, timeout: float | None = None) -> None:
        """Block until the opening's full pass and a background refit have finished (tests, benchmarks,
        shutdown)."""
        for future in (self._opening, self._refit_future):
            if future is not None:
                future.result(timeout)

    @property
    def refitting(self) -> bool:
        return self._refit_future is not None and not self._refit_future.done()

    def _count_labels(self, n: int) -> None:
        self._since_refit += n
        if self.refit_every and self._since_refit >= self.refit_every and not self.refitting:
            self.refit(wait=False)

    def close(self) -> None:
        """Wait for a running refit and stop the refit thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def suggestions(self, row: int, top: int = 3) -> list[tuple[str, float]]:
        """The `top` most probable labels of the item at `row`, with their probabilities."""
        return self._view.top(row, top)
