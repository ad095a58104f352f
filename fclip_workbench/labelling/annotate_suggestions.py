"""The session's suggestions and their refits (a part of `AnnotationSession`; see annotate.py).

Every `refit_every` labels the suggester is refitted on the store's labels, by default in a background
thread. A refit reads ONE state of the suggester (`Suggester.snapshot()`: labels, weights and calibration
together), computes every probability from it and swaps the result in as one `SuggestionView`: the UI
thread, which may replace `suggester.labels` meanwhile (a value added to the taxonomy), never sees 4
classes over 3 columns.

Example:
    >>> session.refit(wait=True); session.suggestions(session.current.row, top=2)   # doctest: +SKIP
    [('red', 0.91), ('blue', 0.05)]
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fclip_workbench.labelling.annotate_items import REBUILT_ON_REFIT, SuggestionView
from fclip_workbench.labelling.suggest import Suggester
from fclip_workbench.errors import InvalidArgumentError

log = logging.getLogger(__name__)


def view_of(suggester, vectors: np.ndarray) -> SuggestionView:
    """Probabilities of `vectors` (n, dim) and their classes, from one state of `suggester`.

    A `Suggester` gives one snapshot (`snapshot()`); another estimator is read through `predict_proba` and
    `classes_`, and refused when the two disagree in size.
    """
    snapshot = getattr(suggester, "snapshot", None)
    if callable(snapshot):
        st = snapshot()
        proba, classes, unsure_below = st.predict_proba(vectors), st.labels, st.unsure_below
    else:
        proba = suggester.predict_proba(vectors)
        classes = getattr(suggester, "classes_", ())
        unsure_below = getattr(suggester, "unsure_below", 0.5)
    proba = np.asarray(proba, dtype=np.float32)  # (n, n_classes)
    classes = tuple(str(c) for c in classes)
    if proba.ndim != 2 or proba.shape != (len(vectors), len(classes)):
        raise InvalidArgumentError(f"the suggester gave probabilities of shape {proba.shape} for {len(vectors)} "
                                   f"products and {len(classes)} classes: refit it")
    uncertainty = 1.0 - proba.max(axis=1) if proba.shape[1] else np.ones(len(vectors), np.float32)  # (n,)
    return SuggestionView(proba, classes, uncertainty, float(unsure_below))


class SuggestionsMixin:
    """Refits and suggestions of an `AnnotationSession` (state set up in its `__init__`)."""

    @property
    def classes(self) -> list[str]:
        return list(self._view.classes)

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

    def _refit(self) -> None:
        """Fit the suggester on the store's labels, recompute every probability, swap them in."""
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
        try:
            view = view_of(self.suggester, self.vectors)
        except Exception as e:  # an unfitted suggester: fit it zero-shot (no labels)
            if type(e).__name__ != "NotFittedError":
                raise
            self.suggester.fit()
            view = view_of(self.suggester, self.vectors)
        with self._lock:
            self._view = view
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
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fclip-refit")
        self._refit_future = self._executor.submit(self._refit_job)

    def wait_refit(self, timeout: float | None = None) -> None:
        """Block until a background refit has finished (tests, benchmarks, shutdown)."""
        if self._refit_future is not None:
            self._refit_future.result(timeout)

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
