"""One fitted state of a `Suggester`: labels + text weights + probe + calibration, frozen together.

A `Suggester` never changes a fitted state in place. A fit (or a background refit) builds a new
`SuggesterState` off to the side with `build_state` and swaps it in with one assignment; every
prediction reads one state, so the labels, the weight rows and the calibration it uses always
belong together (4 labels never meet 3 weight rows, whatever another thread does meanwhile).
The state records the `EmbeddingSpace` its text weights were computed in (None for weights
given as an array), taken from the model BEFORE the prompts were embedded.

Example:
    >>> st = build_state(labels=("a", "b"), text_weights=np.eye(2, 3, dtype=np.float32), space=None, text_key=(),
    ...                  X=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64))
    >>> st.predict_proba(np.array([[1.0, 0.0, 0.0]], np.float32)).round(3).tolist()
    [[1.0, 0.0]]
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.special import log_softmax, logsumexp, softmax

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.embedding.space import EmbeddingSpace
from fclip_workbench.labelling.suggest_probe import SoftmaxProbe, fit_temperature, unit_rows

log = logging.getLogger(__name__)

ZERO_SHOT_SCALE = 100.0  # CLIP's logit scale (ZeroShotClassifier's temperature): used until labels fit one
CAL_EVERY = 5  # 1 labelled item in 5 is held out to fit the temperature (`calibration_items`, else by position)
MIN_CALIBRATION = 10  # fewer labelled items than this: no scale or temperature is fitted
MIN_CALIBRATION_ITEMS = 20  # fewer labelled calibration items than this: the temperature uses the positional slice
RECALIBRATE_GROWTH = 0.1  # partial_fit refits scale and temperature once labels grew 10% since the last fit
UNCERTAINTY_KINDS = ("least-confident", "margin", "entropy")

__all__ = ["SuggesterState", "build_state", "check_vectors", "ZERO_SHOT_SCALE", "CAL_EVERY", "MIN_CALIBRATION",
           "RECALIBRATE_GROWTH", "UNCERTAINTY_KINDS"]


def check_vectors(X: object, dim: int | None) -> np.ndarray:
    """(n, dim) float32 unit rows of image embeddings; dim None: any width. Bad input: one line."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"vectors must be a 2-D array (n_items, dim) of numbers: {e}") from e
    if X.ndim != 2 or (dim is not None and X.shape[1] != dim):
        raise InvalidArgumentError(f"vectors must be a 2-D array (n_items, {dim or 'dim'}) of image embeddings "
                                   f"from the labels' model, got shape {X.shape}")
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise InvalidArgumentError(f"vectors has non-finite values in row(s) {bad[:10].tolist()}"
                                   f"{' ...' if len(bad) > 10 else ''}; re-embed those images")
    return unit_rows(X)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class SuggesterState:
    """Everything one fit produced; read-only arrays. Predict with `predict_proba` / `suggest` / `uncertainty`."""

    labels: tuple[str, ...]  # the label set, in column order
    text_weights: np.ndarray  # (L, dim) unit label vectors
    space: EmbeddingSpace | None  # where text_weights were computed (None: given as an array)
    text_key: tuple  # what the text weights depend on (labels, prompts, space): reused while it holds
    X: np.ndarray  # (n, dim) the labelled vectors
    y: np.ndarray  # (n,) their label indices
    class_counts: np.ndarray  # (L,)
    zero_shot_scale: float
    temperature: float
    calibrated_on: int  # labels when the scale and temperature were last fitted (0: never)
    probe: SoftmaxProbe | None
    calibration_probe: SoftmaxProbe | None
    unsure_below: float = 0.5
    held: np.ndarray | None = None  # (n,) bool: calibration items given (None: none); used from MIN_CALIBRATION_ITEMS on

    @property
    def classes(self) -> np.ndarray:
        return np.array(self.labels, dtype=object)

    @property
    def dim(self) -> int:
        return int(self.text_weights.shape[1])

    # ------------------------------------------------------------------ predicting
    def logits(self, X: np.ndarray, scale: float | None = None, probe: Any = "fitted") -> np.ndarray:
        """(n, L) log-scores before the temperature: zero-shot, corrected by the probe (suggest.py docstring, 1-3)."""
        scale = self.zero_shot_scale if scale is None else scale
        probe = self.probe if isinstance(probe, str) else probe
        return _logits(self.text_weights, X, scale, probe)

    def decision_function(self, X: object) -> np.ndarray:
        """(n, L) calibrated logits of image embeddings X (n, dim)."""
        X = check_vectors(X, self.dim)
        return self.logits(X) / self.temperature

    def predict_proba(self, X: object) -> np.ndarray:
        """(n, L) probabilities over `labels`, rows summing to 1."""
        return softmax(self.decision_function(X), axis=1)

    def suggest(self, X: object, top: int = 3) -> list[list[tuple[str, float]]]:
        """For each item the `top` labels (at most all) with their probabilities, best first."""
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise InvalidArgumentError(f"top must be a whole number >= 1, got {top!r}")
        p = self.predict_proba(X)  # (n, L)
        k = min(int(top), p.shape[1])
        part = np.argpartition(-p, k - 1, axis=1)[:, :k] if k < p.shape[1] else np.tile(np.arange(k), (len(p), 1))
        pk = np.take_along_axis(p, part, axis=1)  # (n, k)
        order = np.take_along_axis(part, np.argsort(-pk, axis=1, kind="stable"), axis=1)  # (n, k) best first
        return [[(self.labels[j], float(p[i, j])) for j in row] for i, row in enumerate(order.tolist())]

    def uncertainty(self, X: object, kind: str = "least-confident") -> np.ndarray:
        """(n,) how unsure each suggestion is, in [0, 1] (see `Suggester.uncertainty`)."""
        if kind not in UNCERTAINTY_KINDS:
            raise InvalidArgumentError(f"Unknown uncertainty kind {kind!r}; choose one of {list(UNCERTAINTY_KINDS)}")
        p = self.predict_proba(X)  # (n, L)
        if kind == "least-confident":
            return 1.0 - p.max(axis=1)
        if kind == "margin":
            if p.shape[1] < 2:
                return np.zeros(len(p))
            top2 = -np.partition(-p, 1, axis=1)[:, :2]  # (n, 2)
            return 1.0 - (top2[:, 0] - top2[:, 1])
        ent = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
        return ent / np.log(p.shape[1]) if p.shape[1] > 1 else np.zeros(len(p))


def calibration_items(item_ids: Sequence[str]) -> np.ndarray:
    """(n,) bool: the products set aside for calibration, about 1 in `CAL_EVERY`, decided by each id alone.

    A hash of the id, not of its position or its uncertainty: the set is the same for every annotator and
    session, and it is a random sample of the catalog. The annotator's uncertainty queue serves one of
    these in every `CAL_EVERY` products, and the suggester fits its temperature on the labelled ones, so
    the stated probabilities are calibrated on products like the whole catalog, not only on the hard
    ones the queue picks (docs/concepts/calibration.md).

    >>> calibration_items(["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"]).tolist()
    [True, False, False, False, False, True, False, False]
    """
    digests = (hashlib.blake2b(str(i).encode(), digest_size=8).digest() for i in item_ids)
    return np.fromiter((int.from_bytes(d, "little") % CAL_EVERY == 0 for d in digests), dtype=bool,
                       count=len(item_ids))


def _logits(text_weights: np.ndarray, X: np.ndarray, scale: float, probe: SoftmaxProbe | None) -> np.ndarray:
    z = scale * (X @ text_weights.T)  # (n, L)
    logp0 = log_softmax(z, axis=1)  # (n, L)
    if probe is None:
        return logp0
    seen = probe.classes_  # (S,)
    out = logp0.copy()
    out[:, seen] = (logsumexp(logp0[:, seen], axis=1, keepdims=True)  # zero-shot mass on the seen labels
                    + probe.predict_log_proba(X, offset=z[:, seen]))
    return out


def _fit_probe(text_weights: np.ndarray, X: np.ndarray, y: np.ndarray, scale: float, previous: SoftmaxProbe | None,
               *, n_labels: int, min_per_class: int, C: float, max_iter: int) -> SoftmaxProbe | None:
    """The correction probe on (X, y) over the zero-shot logits; None with fewer than 2 distinct labels
    among those with at least `min_per_class` labelled items (their items alone are fitted)."""
    counts = np.bincount(y, minlength=n_labels)
    keep = counts[y] >= min_per_class  # (n,)
    if len(np.unique(y[keep])) < 2:
        return None
    X, y = X[keep], y[keep]
    seen = np.unique(y)  # (S,)
    offset = scale * (X @ text_weights[seen].T)  # (n, S) zero-shot logits of the seen labels
    return SoftmaxProbe(C=C, max_iter=max_iter).fit(X, y, init=previous, offset=offset)


def build_state(*, labels: tuple[str, ...], text_weights: np.ndarray, space: EmbeddingSpace | None, text_key: tuple,
                X: np.ndarray, y: np.ndarray, C: float = 1.0, max_iter: int = 300, min_per_class: int = 1,
                calibrate: bool = True, unsure_below: float = 0.5, previous: SuggesterState | None = None,
                incremental: bool = False, held: np.ndarray | None = None) -> SuggesterState:
    """A new state fitted on (X (n, dim), y (n,) indices into `labels`); `previous` warm-starts the probes
    (when its labels are a prefix of `labels`); `incremental` keeps its scale and temperature until the
    labels grew by `RECALIBRATE_GROWTH`. `held` (n,) bool marks the items the temperature is fitted on
    (`calibration_items`); None: every `CAL_EVERY`-th by position. When it marks fewer than
    `MIN_CALIBRATION_ITEMS`, the positional slice is used (in the annotator's queue, whose every 5th
    product is a calibration item, the two are the same items). Nothing is shared with `previous` that
    either could change."""
    L = len(labels)
    if text_weights.shape[0] != L:  # a guard: the caller took labels and weights from one snapshot
        raise InvalidArgumentError(f"{L} labels but {text_weights.shape[0]} text weight rows")
    if previous is not None and tuple(previous.labels) != tuple(labels[:len(previous.labels)]):
        previous = None  # other label indices: start cold
    fit: dict[str, Any] = dict(n_labels=L, min_per_class=min_per_class, C=C, max_iter=max_iter)
    class_counts = np.bincount(y, minlength=L)  # (L,)
    scale, temperature, calibrated_on = ZERO_SHOT_SCALE, 1.0, 0
    cal_probe = None
    last = previous.calibrated_on if (incremental and previous is not None) else 0
    if calibrate and len(y) >= MIN_CALIBRATION:
        if previous is not None and last >= MIN_CALIBRATION and len(y) < last * (1 + RECALIBRATE_GROWTH):
            scale, temperature, calibrated_on = previous.zero_shot_scale, previous.temperature, last
            cal_probe = previous.calibration_probe
        else:
            cos = X @ text_weights.T  # (n, L)
            scale = ZERO_SHOT_SCALE / fit_temperature(ZERO_SHOT_SCALE * cos, y)
            cal = held if held is not None and held.sum() >= MIN_CALIBRATION_ITEMS and (~held).any() \
                else np.arange(len(y)) % CAL_EVERY == CAL_EVERY - 1  # (n,) calibration slice
            cal_probe = _fit_probe(text_weights, X[~cal], y[~cal], scale,
                                   previous.calibration_probe if previous is not None else None, **fit)
            temperature = fit_temperature(_logits(text_weights, X[cal], scale, cal_probe), y[cal])
            calibrated_on = len(y)
    probe = _fit_probe(text_weights, X, y, scale, previous.probe if previous is not None else None, **fit)
    log.debug("Suggester fit: %d labels over %d labels seen, scale %.1f, T %.2f", len(y),
              int((class_counts > 0).sum()), scale, temperature)
    return SuggesterState(labels=tuple(labels), text_weights=_frozen(text_weights), space=space, text_key=text_key,
                          X=_frozen(X), y=_frozen(y), class_counts=_frozen(class_counts), zero_shot_scale=float(scale),
                          temperature=float(temperature), calibrated_on=int(calibrated_on), probe=probe,
                          calibration_probe=cal_probe, unsure_below=float(unsure_below),
                          held=None if held is None else _frozen(held))
