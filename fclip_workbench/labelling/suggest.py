"""Label suggestions for annotators: zero-shot prompts, plus a linear probe on what annotators decided, calibrated.

`Suggester` is a scikit-learn-style classifier over frozen, L2-normalised image
embeddings. Its classes are a fixed label set (a taxonomy); the labels given to
`fit` may cover only some of them, or none (pure zero-shot).

How a probability is made, for an image x and label c:

1. zero-shot: cosine of x with the label's prompt-ensembled text vector
   (`zeroshot.class_weights`), times a logit scale (CLIP's 100 without labels;
   fitted on the labelled items when there are at least `MIN_CALIBRATION`):
   z_c(x) = scale * cos(x, t_c), the zero-shot logits;
2. probe as a correction of zero-shot, among the labels seen so far S (at
   least `min_per_class` labelled items each): q(c|x) = softmax over S of
   z_c(x) + w_c . x + b_c, with w, b fitted by L2-regularised multinomial
   logistic regression (`SoftmaxProbe` with the zero-shot logits as a fixed
   offset). The L2 penalty is a prior centred on zero-shot: a label with few
   labelled items stays close to its zero-shot score, one with many follows
   what annotators decided, so the blend by labels per class is the fit itself;
3. spread over all labels: p1(c|x) = p0(S|x) q(c|x) for c in S, where p0(S|x)
   is the zero-shot mass on the seen labels; unseen labels keep p0(c|x), so
   labelling only some classes never pulls images of the others into them.
   On KAGL articleType (1,000 random labels, 3 draws) this gains +6.4 top-1
   points over zero-shot, where blending a separate probe by n_c / (n_c + 5)
   gained +4.3 (benchmarks/bench_suggest.py);
4. calibrate: softmax(logit / T), T fitted by minimising the negative log
   likelihood on a held-out slice of the labels, scored by a probe trained on the
   others: the labelled `calibration_items` (a random 1 in `CAL_EVERY` of the
   catalog, by id, which the annotator's queue serves in every `CAL_EVERY`
   products) when `fit(..., calibration=...)` is given them, else every
   `CAL_EVERY`-th labelled item.

Refits are warm-started from the previous coefficients, so `partial_fit` after
each new label is cheap.

Thread safety: a fit builds a new frozen `SuggesterState` (labels + text weights +
probe + calibration, `suggest_state.py`) off to the side and swaps it in with one
assignment under a lock; every prediction reads one state (`snapshot()`). Replacing
`labels` while a background refit runs therefore never mixes two label sets: the
running fit finishes with the labels it started from, the next one uses the new ones.

Text weights record the model's `EmbeddingSpace`, read BEFORE the prompts are embedded;
a fit recomputes them when the model's space changed (weights fine-tuned in place, another
precision), and predicting with a model whose space moved since the fit is refused
(`SpaceMismatchError` naming both spaces), never answered with stale weights.

Example:
    >>> s = Suggester(model, labels=["dress", "shirt", "shoe"])                  # doctest: +SKIP
    >>> s.fit(vectors[:40], annotated[:40]).suggest(vectors[40:42], top=2)     # doctest: +SKIP
    [[('dress', 0.91), ('shirt', 0.06)], [('shoe', 0.72), ('dress', 0.2)]]
    >>> s.partial_fit(vectors[42:43], ["shirt"]).unsure(vectors[43:])           # doctest: +SKIP
    array([False,  True, ...])
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError

from fclip_workbench.errors import InvalidArgumentError, SpaceMismatchError
from fclip_workbench.embedding.models import EmbeddingModel
from fclip_workbench.data.prompts import ZERO_SHOT_PROMPTS, check_prompts
from fclip_workbench.embedding.space import EmbeddingSpace
from fclip_workbench.labelling.suggest_probe import OFFSET_INTERCEPT_PENALTY, SoftmaxProbe, fit_temperature, unit_rows
from fclip_workbench.labelling.suggest_state import (CAL_EVERY, MIN_CALIBRATION, RECALIBRATE_GROWTH, UNCERTAINTY_KINDS,
                                                     ZERO_SHOT_SCALE, SuggesterState, build_state, calibration_items,
                                                     check_vectors)
from fclip_workbench.analysis.zeroshot import check_labels, class_weights

log = logging.getLogger(__name__)

TEXT_WEIGHT_TRIES = 3  # the model's space moved while its prompts were embedded: embed again, at most this often

__all__ = ["Suggester", "SuggesterState", "SoftmaxProbe", "NotFittedError", "fit_temperature", "calibration_items",
           "UNCERTAINTY_KINDS", "ZERO_SHOT_SCALE", "CAL_EVERY", "MIN_CALIBRATION", "RECALIBRATE_GROWTH", "OFFSET_INTERCEPT_PENALTY"]

_LOCKS_GUARD = threading.Lock()


def _model_space(model) -> EmbeddingSpace | None:
    """The model's `EmbeddingSpace` now, or None for a stand-in model without one."""
    space = getattr(model, "space", None)
    return space if isinstance(space, EmbeddingSpace) else None


def _state_attr(name: str, doc: str):
    def get(self: "Suggester"):
        st = self.__dict__.get("_state")
        if st is None:
            raise AttributeError(f"{name} (the Suggester is not fitted: call fit first)")
        return getattr(st, doc)
    return property(get, doc=f"Fitted: the current state's {doc} (read-only; a fit swaps in a new state).")


class Suggester(ClassifierMixin, BaseEstimator):
    """Zero-shot + linear-probe label suggestions with calibrated probabilities (see the module docstring).

    Parameters (stored as given; checked in `fit`):
        model: an `EmbeddingModel` whose `encode_texts` embeds the label prompts (None if `text_weights` is given).
        labels: the label set (classes_), distinct non-blank strings; replace it (never mutate it) to add labels.
        prompts: zero-shot prompt templates with a `{label}` field, averaged per label.
        text_weights: precomputed (n_labels, dim) label vectors, rows in `labels` order; skips the text model.
        min_per_class: a label gets a probe correction only once it has this many labelled items.
        C: inverse L2 strength of the correction probe (scikit-learn's C): smaller trusts zero-shot longer.
        unsure_below: `unsure` flags items whose top probability is below this.
        calibrate: fit the zero-shot scale and the temperature on the labelled items.
        max_iter: L-BFGS iterations per probe fit.
        warm_start: start each refit from the previous coefficients.
        text_cache: an embedding store file (`EmbeddingStore`) keeping the label prompts' vectors per model
            space, so a fit (a session's opening) embeds only prompts it never saw; None: embed them each fit.

    Fitted attributes (read-only views of one `SuggesterState`, see `snapshot()`): classes_, text_weights_
    (n_labels, dim), space_ (EmbeddingSpace or None), probe_ (SoftmaxProbe or None), class_counts_ (n_labels,),
    n_labelled_, zero_shot_scale_, temperature_, calibrated_on_, X_ (n_labelled, dim), y_ (n_labelled,).

    >>> s = Suggester(labels=["a", "b"], text_weights=np.eye(2, 4, dtype=np.float32)).fit()
    >>> s.snapshot().labels, s.predict(np.eye(1, 4, dtype=np.float32)).tolist()
    (('a', 'b'), ['a'])
    """

    def __init__(self, model: EmbeddingModel | None = None, labels: Sequence[str] | None = None,
                 prompts: Sequence[str] = ZERO_SHOT_PROMPTS, text_weights: np.ndarray | None = None,
                 min_per_class: int = 1, C: float = 1.0, unsure_below: float = 0.5,
                 calibrate: bool = True, max_iter: int = 300, warm_start: bool = True,
                 text_cache: str | Path | None = None) -> None:
        self.model = model
        self.labels = labels
        self.prompts = prompts
        self.text_weights = text_weights
        self.min_per_class = min_per_class
        self.C = C
        self.unsure_below = unsure_below
        self.calibrate = calibrate
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.text_cache = text_cache

    def __sklearn_clone__(self) -> "Suggester":
        """A clone shares the (frozen, large) model; every other parameter is copied as scikit-learn does."""
        params = self.get_params(deep=False)
        model = params.pop("model")
        return type(self)(model=model, **{k: clone(v, safe=False) for k, v in params.items()})

    def __sklearn_is_fitted__(self) -> bool:
        return self.__dict__.get("_state") is not None

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_fit_lock", None)  # a lock does not pickle; a new one is made on use
        return state

    # ------------------------------------------------------------------ the state
    classes_ = _state_attr("classes_", "classes")
    text_weights_ = _state_attr("text_weights_", "text_weights")
    space_ = _state_attr("space_", "space")
    probe_ = _state_attr("probe_", "probe")
    calibration_probe_ = _state_attr("calibration_probe_", "calibration_probe")
    class_counts_ = _state_attr("class_counts_", "class_counts")
    zero_shot_scale_ = _state_attr("zero_shot_scale_", "zero_shot_scale")
    temperature_ = _state_attr("temperature_", "temperature")
    calibrated_on_ = _state_attr("calibrated_on_", "calibrated_on")
    X_ = _state_attr("X_", "X")
    y_ = _state_attr("y_", "y")

    @property
    def n_labelled_(self) -> int:
        return len(self.y_)

    def _lock(self) -> threading.Lock:
        """The lock that serialises fits (builds and swaps); predictions never take it."""
        lock = self.__dict__.get("_fit_lock")
        if lock is None:
            with _LOCKS_GUARD:
                lock = self.__dict__.setdefault("_fit_lock", threading.RLock())
        return lock

    def _swap(self, state: SuggesterState) -> None:
        self.__dict__["_state"] = state  # one assignment: readers see the old state or the new, never a mix

    def snapshot(self) -> SuggesterState:
        """The current fitted state (labels, text weights, probe, calibration): one consistent read.

        Refused when the model's embedding space changed since the text weights were computed.
        """
        st = self.__dict__.get("_state")
        if st is None:
            raise NotFittedError("This Suggester is not fitted yet: call fit() (no arguments: zero-shot) first")
        if st.space is not None and self.model is not None:
            now = _model_space(self.model)
            if now is not None and now != st.space:
                raise SpaceMismatchError(f"the suggester's label text vectors were made in space {st.space.describe()}, "
                                         f"not in the model's {now.describe()} (the model changed since the fit): "
                                         "fit again to recompute them")
        return st

    # ------------------------------------------------------------------ checks
    def _check_params(self, labels: Sequence[str] | None) -> tuple[str, ...]:
        """The labels as one tuple (read once per fit), every other parameter checked."""
        if labels is None:
            raise InvalidArgumentError("Suggester needs labels=[...]: the label set to suggest from")
        check_labels(labels)
        check_prompts(self.prompts)
        n = self.min_per_class
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidArgumentError(f"min_per_class must be a whole number >= 1, got {n!r}")
        v = self.C
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v) or v <= 0:
            raise InvalidArgumentError(f"C must be a number > 0, got {v!r}")
        u = self.unsure_below
        if isinstance(u, bool) or not isinstance(u, (int, float, np.number)) or not 0.0 <= u <= 1.0:
            raise InvalidArgumentError(f"unsure_below must be a probability in [0, 1], got {u!r}")
        m = self.max_iter
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise InvalidArgumentError(f"max_iter must be a whole number >= 1, got {m!r}")
        if self.model is None and self.text_weights is None:
            raise InvalidArgumentError("Suggester needs a model (to embed the label prompts) or "
                                       "text_weights=(n_labels, dim) array; got neither")
        return tuple(labels)

    @staticmethod
    def _check_weights(w: np.ndarray, n: int) -> np.ndarray:
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 2 or w.shape[0] != n:
            raise InvalidArgumentError(f"text_weights must have shape (n_labels={n}, dim), got {w.shape}; "
                                       "one row per label, in the labels' order")
        if not np.isfinite(w).all() or (np.linalg.norm(w, axis=1) == 0).any():
            raise InvalidArgumentError("text_weights has non-finite values or all-zero rows; "
                                       "recompute them with zeroshot.class_weights(model, labels)")
        return unit_rows(w)

    @staticmethod
    def _label_indices(labels: tuple[str, ...], y: Sequence[str], n: int) -> np.ndarray:
        """(n,) indices into `labels` of the annotated labels `y`; unknown ones are refused."""
        if isinstance(y, str):
            raise InvalidArgumentError(f"labels must be a list of strings (one per vector), not the string {y!r}")
        y = list(y)
        if len(y) != n:
            raise InvalidArgumentError(f"{n} vectors but {len(y)} labels: give one label per vector")
        pos = {label: i for i, label in enumerate(labels)}
        unknown = list(dict.fromkeys(v for v in y if not isinstance(v, str) or v not in pos))
        if unknown:
            n_bad = sum(not isinstance(v, str) or v not in pos for v in y)
            shown = unknown[:5] + (["..."] if len(unknown) > 5 else [])
            raise InvalidArgumentError(f"Label(s) outside the label set: {shown} ({n_bad} item(s)); valid labels "
                                       f"({len(pos)}): {', '.join(map(repr, labels))}")
        return np.array([pos[v] for v in y], dtype=np.int64)

    # ------------------------------------------------------------------ text weights
    def _text(self, labels: tuple[str, ...]) -> tuple[np.ndarray, EmbeddingSpace | None, tuple]:
        """(weights (L, dim), the space they were computed in, their key): the current state's while its key
        holds, else embedded now. The space is read BEFORE embedding and checked after it."""
        prompts = tuple(self.prompts)
        if self.text_weights is not None:
            weights = self._check_weights(self.text_weights, len(labels))
            return weights, None, (labels, "given", hashlib.blake2b(weights.tobytes(), digest_size=16).hexdigest())
        model = self.model
        if model is None:  # _check_params refuses a Suggester with neither
            raise InvalidArgumentError("Suggester needs a model (to embed the label prompts) or text_weights")
        current = self.__dict__.get("_state")
        for _ in range(TEXT_WEIGHT_TRIES):
            space = _model_space(model)  # recorded first: weights changing during the embedding are caught below
            ident = space.key if space is not None else (id(model), getattr(model, "fingerprint", None))
            key = (labels, prompts, ident)
            if current is not None and current.text_key == key:
                return np.asarray(current.text_weights), current.space, key
            stats: dict = {}
            weights = self._check_weights(self._class_weights(model, labels, prompts, space, stats), len(labels))
            if stats.get("computed") == 0 or _model_space(model) == space:  # all cached under `space`: no check
                if space is not None and weights.shape[1] != space.dim:
                    raise SpaceMismatchError(f"the label text vectors are {weights.shape[1]}-d, but the model's space "
                                             f"{space.describe()} is {space.dim}-d")
                return weights, space, key
            log.info("the model's weights changed while the label prompts were embedded: embedding them again")
        raise SpaceMismatchError(f"the model's embedding space kept changing while the label prompts were embedded "
                                 f"({TEXT_WEIGHT_TRIES} tries): fit the suggester once the model is not being trained")

    def _class_weights(self, model, labels: tuple[str, ...], prompts: tuple[str, ...], space: EmbeddingSpace | None,
                       stats: dict) -> np.ndarray:
        """The label vectors (`class_weights`), the prompts' vectors read from `text_cache` when it has them
        (`stats["computed"]`: how many were embedded now)."""
        if self.text_cache is None or space is None:
            return class_weights(model, list(labels), list(prompts))
        from fclip_workbench.embedding.store import EmbeddingStore

        with EmbeddingStore(self.text_cache) as store:
            return class_weights(model, list(labels), list(prompts), store=store, space=space, stats=stats)

    def prepare(self) -> "Suggester":
        """Embed the label prompts (or check `text_weights`) and swap in a zero-shot state if none fits them.

        The weights are reused across refits while labels, prompts and the model's space stay."""
        with self._lock():
            labels = self._check_params(self.labels)
            weights, space, key = self._text(labels)
            current = self.__dict__.get("_state")
            if current is None or current.text_key != key:
                dim = weights.shape[1]
                self._swap(self._build(labels, weights, space, key, np.zeros((0, dim), np.float32),
                                       np.zeros(0, np.int64), previous=None))
        return self

    def _build(self, labels, weights, space, key, X, y, previous, incremental: bool = False,
               held: np.ndarray | None = None) -> SuggesterState:
        return build_state(labels=labels, text_weights=weights, space=space, text_key=key, X=X, y=y, C=self.C,
                           max_iter=self.max_iter, min_per_class=self.min_per_class, calibrate=self.calibrate,
                           unsure_below=self.unsure_below,
                           previous=previous if self.warm_start else None, incremental=incremental, held=held)

    @staticmethod
    def _check_calibration(calibration: object, n: int) -> np.ndarray | None:
        """(n,) bool mask of the calibration items, or None; anything else is one line."""
        if calibration is None:
            return None
        mask = np.asarray(calibration)
        if mask.dtype != bool or mask.shape != (n,):
            raise InvalidArgumentError(f"calibration must be {n} booleans (one per labelled item, e.g. "
                                       f"calibration_items(ids)), got {mask.dtype} of shape {mask.shape}")
        return mask

    # ------------------------------------------------------------------ fitting
    def fit(self, X: np.ndarray | None = None, y: Sequence[str] | None = None,
            calibration: np.ndarray | None = None) -> "Suggester":
        """Fit on labelled vectors X (n, dim) with labels y (n,) from the label set; no X/y: pure zero-shot.

        `calibration` (n,) bool marks the items the temperature is fitted on: `calibration_items(ids)`,
        the random sample the annotator's queue serves (default: every `CAL_EVERY`-th item by position).

        The new state is built off to the side and swapped in at the end (readers never wait)."""
        with self._lock():
            labels = self._check_params(self.labels)  # read once: a label set replaced meanwhile waits for the next fit
            if (X is None) != (y is None):
                raise InvalidArgumentError("Give both vectors and labels to fit, or neither (pure zero-shot)")
            if X is not None and y is not None:  # checked before the text model runs
                known = self._check_weights(self.text_weights, len(labels)).shape[1] \
                    if self.text_weights is not None else None
                X = check_vectors(X, known)
                y_idx = self._label_indices(labels, y, len(X))
                calibration = self._check_calibration(calibration, len(X))
            weights, space, key = self._text(labels)
            dim = weights.shape[1]
            if X is None:
                X, y_idx = np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
            else:
                X = check_vectors(X, dim)
            self._swap(self._build(labels, weights, space, key, X, y_idx, previous=self.__dict__.get("_state"),
                                   held=calibration))
        return self

    def partial_fit(self, X: np.ndarray, y: Sequence[str], calibration: np.ndarray | None = None) -> "Suggester":
        """Add labelled items (n_new, dim) and refit the probe, warm-started; the first call is `fit`.

        The zero-shot scale and the temperature are refitted once the labels grew by
        `RECALIBRATE_GROWTH` (10%) since they were last fitted; `fit` always refits them. When the label
        set or the model's space changed since the last fit, this is a full `fit` on all the labels.
        `calibration` as in `fit`, for the new items (kept only while every fit so far gave one)."""
        with self._lock():
            current = self.__dict__.get("_state")
            if current is None:
                return self.fit(X, y, calibration)
            labels = self._check_params(self.labels)
            X = check_vectors(X, current.dim)
            y_idx = self._label_indices(labels, y, len(X))
            calibration = self._check_calibration(calibration, len(X))
            held = None if calibration is None or (current.held is None and len(current.y)) \
                else np.concatenate([current.held if current.held is not None else np.zeros(0, bool), calibration])
            weights, space, key = self._text(labels)
            if key != current.text_key:  # other labels or another space: everything is refitted, not recalibrated
                old_y = [current.labels[i] for i in current.y]
                X_all = check_vectors(np.concatenate([current.X, X]), weights.shape[1])
                y_all = np.concatenate([self._label_indices(labels, old_y, len(old_y)), y_idx])
                self._swap(self._build(labels, weights, space, key, X_all, y_all, previous=current, held=held))
                return self
            self._swap(self._build(labels, weights, space, key, np.concatenate([current.X, X]),
                                   np.concatenate([current.y, y_idx]), previous=current, incremental=True, held=held))
        return self

    # ------------------------------------------------------------------ predicting (one state per call)
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, L) calibrated logits: softmax of them is `predict_proba`."""
        return self.snapshot().decision_function(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, L) probabilities over `classes_`, rows summing to 1."""
        return self.snapshot().predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n,) the most probable label of each item."""
        st = self.snapshot()
        return st.classes[st.decision_function(X).argmax(axis=1)]

    def suggest(self, X: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]]:
        """For each item the `top` labels (at most all) with their probabilities, best first."""
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise InvalidArgumentError(f"top must be a whole number >= 1, got {top!r}")
        return self.snapshot().suggest(X, top)

    def uncertainty(self, X: np.ndarray, kind: str = "least-confident") -> np.ndarray:
        """(n,) how unsure each suggestion is, higher first to label: 1 - max prob ('least-confident'),
        1 - (p1 - p2) ('margin'), or the normalised entropy ('entropy'), all in [0, 1]."""
        if kind not in UNCERTAINTY_KINDS:
            raise InvalidArgumentError(f"Unknown uncertainty kind {kind!r}; choose one of {list(UNCERTAINTY_KINDS)}")
        return self.snapshot().uncertainty(X, kind)

    def unsure(self, X: np.ndarray) -> np.ndarray:
        """(n,) bool: True where the top probability is below `unsure_below`."""
        u = self.unsure_below
        return self.snapshot().predict_proba(X).max(axis=1) < u
