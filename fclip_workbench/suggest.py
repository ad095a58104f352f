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
   likelihood on a held-out slice of the labels (every `CAL_EVERY`-th labelled
   item, scored by a probe trained on the others).

Refits are warm-started from the previous coefficients, so `partial_fit` after
each new label is cheap.

Example:
    >>> s = Suggester(model, labels=["dress", "shirt", "shoe"])                  # doctest: +SKIP
    >>> s.fit(vectors[:40], annotated[:40]).suggest(vectors[40:42], top=2)     # doctest: +SKIP
    [[('dress', 0.91), ('shirt', 0.06)], [('shoe', 0.72), ('dress', 0.2)]]
    >>> s.partial_fit(vectors[42:43], ["shirt"]).unsure(vectors[43:])           # doctest: +SKIP
    array([False,  True, ...])
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, logsumexp, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .errors import InvalidArgumentError
from .models import EmbeddingModel
from .prompts import ZERO_SHOT_PROMPTS, check_prompts
from .zeroshot import check_labels, class_weights

log = logging.getLogger(__name__)

ZERO_SHOT_SCALE = 100.0  # CLIP's logit scale (ZeroShotClassifier's temperature): used until labels fit one
CAL_EVERY = 5  # every 5th labelled item (by position) is held out to fit the temperature
MIN_CALIBRATION = 10  # fewer labelled items than this: no scale or temperature is fitted
RECALIBRATE_GROWTH = 0.1  # partial_fit refits scale and temperature once labels grew 10% since the last fit
_LOG_T_BOUNDS = (-5.0, 5.0)  # search range of log(temperature)
UNCERTAINTY_KINDS = ("least-confident", "margin", "entropy")
OFFSET_INTERCEPT_PENALTY = 0.01  # L2 on a correction probe's intercepts (keeps one-label classes finite)

__all__ = ["Suggester", "SoftmaxProbe", "NotFittedError", "fit_temperature", "UNCERTAINTY_KINDS"]


def fit_temperature(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """The T > 0 that minimises the mean NLL of softmax(logits / T) at the true classes. logits: (n, L).

    >>> z = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])   # 3 of 4 right, over-confident
    >>> round(fit_temperature(z, np.array([0, 0, 1, 1])), 2)
    3.64
    """
    rows = np.arange(len(y_idx))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y_idx].mean())

    return float(np.exp(minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded").x))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


class SoftmaxProbe:
    """Multinomial logistic regression on the labels seen, fitted with L-BFGS; warm-startable.

    The objective is scikit-learn's `LogisticRegression` one (C * summed cross-entropy
    + 0.5 * ||coef||^2, intercept not penalised), written in NumPy so a refit starts
    from the previous coefficients even when new labels appear, and runs in one BLAS
    call per step (scikit-learn's solver took ~4 s for 1,000 x 256 x 143 here).

    With `offset` (n, S) fixed logits for its classes (the zero-shot ones), the
    probe is a correction: logits = offset + X w_c + b_c; the intercepts then get a
    tiny penalty (`OFFSET_INTERCEPT_PENALTY`) so a label seen once can't run off.

    >>> p = SoftmaxProbe(C=10.0).fit(np.eye(3), np.array([0, 2, 2]))
    >>> p.classes_.tolist(), p.predict_log_proba(np.eye(3)).shape
    ([0, 2], (3, 2))
    >>> q = SoftmaxProbe(C=10.0).fit(np.eye(3), np.array([0, 2, 2]), offset=np.zeros((3, 2)))
    >>> q.predict_log_proba(np.eye(3), offset=np.zeros((3, 2))).shape
    (3, 2)
    """

    def __init__(self, C: float = 10.0, max_iter: int = 300, tol: float = 1e-4) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: np.ndarray, y: np.ndarray, init: "SoftmaxProbe | None" = None,
            offset: np.ndarray | None = None) -> "SoftmaxProbe":
        """X (n, dim), y (n,) int labels; `init`: a fitted probe whose rows start the classes it shares;
        `offset` (n, S): fixed logits of the S distinct labels in y (sorted), which the probe corrects."""
        classes, yi = np.unique(y, return_inverse=True)  # (S,), (n,)
        n, d = X.shape
        S = len(classes)
        X32 = np.asarray(X, dtype=np.float32)  # float32 matmuls: twice as fast, ample for L-BFGS at gtol 1e-4
        onehot = np.zeros((n, S), np.float32)
        onehot[np.arange(n), yi] = 1.0
        base = np.zeros((n, S), np.float32) if offset is None else np.asarray(offset, np.float32)  # (n, S)
        if base.shape != (n, S):
            raise InvalidArgumentError(f"offset must have shape (n, S) = {(n, S)}, got {base.shape}")
        b_pen = 0.0 if offset is None else OFFSET_INTERCEPT_PENALTY
        w0 = np.zeros((S, d + 1))  # (S, dim + 1): coef | intercept
        if init is not None:
            where = {c: i for i, c in enumerate(init.classes_.tolist())}
            for j, c in enumerate(classes.tolist()):
                if c in where:
                    w0[j, :d], w0[j, d] = init.coef_[where[c]], init.intercept_[where[c]]

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            W = w.reshape(S, d + 1)
            W32 = W.astype(np.float32)
            logp = log_softmax(base + X32 @ W32[:, :d].T + W32[:, d], axis=1)  # (n, S)
            g = np.exp(logp) - onehot  # (n, S)
            grad = np.empty_like(W)
            grad[:, :d] = self.C * (g.T @ X32) + W[:, :d]
            grad[:, d] = self.C * g.sum(axis=0) + b_pen * W[:, d]
            loss = (-self.C * float((logp * onehot).sum(dtype=np.float64)) + 0.5 * (W[:, :d] ** 2).sum()
                    + 0.5 * b_pen * (W[:, d] ** 2).sum())
            return loss / n, grad.ravel() / n

        with threadpool_limits(1, user_api="blas"):  # small matmuls: threads only add contention
            res = minimize(objective, w0.ravel(), jac=True, method="L-BFGS-B",
                           options={"maxiter": self.max_iter, "gtol": self.tol})
        W = res.x.reshape(S, d + 1)
        self.classes_, self.coef_, self.intercept_, self.n_iter_ = classes, W[:, :d], W[:, d], int(res.nit)
        return self

    def predict_log_proba(self, X: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """(n, S) log-probabilities over `classes_`; `offset` (n, S): the fixed logits it was fitted over."""
        z = X @ self.coef_.T.astype(X.dtype) + self.intercept_.astype(X.dtype)  # (n, S)
        return log_softmax(z if offset is None else z + offset, axis=1)


class Suggester(ClassifierMixin, BaseEstimator):
    """Zero-shot + linear-probe label suggestions with calibrated probabilities (see the module docstring).

    Parameters (stored as given; checked in `fit`):
        model: an `EmbeddingModel` whose `encode_texts` embeds the label prompts (None if `text_weights` is given).
        labels: the label set (classes_), distinct non-blank strings.
        prompts: zero-shot prompt templates with a `{label}` field, averaged per label.
        text_weights: precomputed (n_labels, dim) label vectors, rows in `labels` order; skips the text model.
        min_per_class: a label gets a probe correction only once it has this many labelled items.
        C: inverse L2 strength of the correction probe (scikit-learn's C): smaller trusts zero-shot longer.
        unsure_below: `unsure` flags items whose top probability is below this.
        calibrate: fit the zero-shot scale and the temperature on the labelled items.
        max_iter: L-BFGS iterations per probe fit.
        warm_start: start each refit from the previous coefficients.

    Fitted attributes: classes_, text_weights_ (n_labels, dim), probe_ (SoftmaxProbe or None),
    class_counts_ (n_labels,), n_labelled_, zero_shot_scale_, temperature_, X_ (n_labelled, dim), y_ (n_labelled,).
    """

    def __init__(self, model: EmbeddingModel | None = None, labels: Sequence[str] | None = None,
                 prompts: Sequence[str] = ZERO_SHOT_PROMPTS, text_weights: np.ndarray | None = None,
                 min_per_class: int = 1, C: float = 1.0, unsure_below: float = 0.5,
                 calibrate: bool = True, max_iter: int = 300, warm_start: bool = True) -> None:
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

    def __sklearn_clone__(self) -> "Suggester":
        """A clone shares the (frozen, large) model; every other parameter is copied as scikit-learn does."""
        params = self.get_params(deep=False)
        model = params.pop("model")
        return type(self)(model=model, **{k: clone(v, safe=False) for k, v in params.items()})

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        if self.labels is None:
            raise InvalidArgumentError("Suggester needs labels=[...]: the label set to suggest from")
        check_labels(self.labels)
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

    def _check_weights(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float32)
        n = len(self.labels)
        if w.ndim != 2 or w.shape[0] != n:
            raise InvalidArgumentError(f"text_weights must have shape (n_labels={n}, dim), got {w.shape}; "
                                       "one row per label, in the labels' order")
        if not np.isfinite(w).all() or (np.linalg.norm(w, axis=1) == 0).any():
            raise InvalidArgumentError("text_weights has non-finite values or all-zero rows; "
                                       "recompute them with zeroshot.class_weights(model, labels)")
        return _unit_rows(w)

    def _check_vectors(self, X: object, dim: int | None) -> np.ndarray:
        """(n, dim) float32 unit rows; dim None: any width."""
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
        return _unit_rows(X)

    def _label_indices(self, y: object, n: int) -> np.ndarray:
        """(n,) indices into `labels` of the annotated labels `y`; unknown ones are refused."""
        if isinstance(y, str):
            raise InvalidArgumentError(f"labels must be a list of strings (one per vector), not the string {y!r}")
        y = list(y)
        if len(y) != n:
            raise InvalidArgumentError(f"{n} vectors but {len(y)} labels: give one label per vector")
        pos = {label: i for i, label in enumerate(self.labels)}
        unknown = list(dict.fromkeys(v for v in y if not isinstance(v, str) or v not in pos))
        if unknown:
            n_bad = sum(not isinstance(v, str) or v not in pos for v in y)
            shown = unknown[:5] + (["..."] if len(unknown) > 5 else [])
            raise InvalidArgumentError(f"Label(s) outside the label set: {shown} ({n_bad} item(s)); valid labels "
                                       f"({len(pos)}): {', '.join(map(repr, self.labels))}")
        return np.array([pos[v] for v in y], dtype=np.int64)

    # ------------------------------------------------------------------ fitting
    def _text_key(self) -> tuple:
        model_id = None if self.model is None else (id(self.model), getattr(self.model, "fingerprint", None))
        return (tuple(self.labels), tuple(self.prompts), model_id)

    def prepare(self) -> "Suggester":
        """Embed the label prompts (or check `text_weights`); kept across refits while labels/prompts/model stay."""
        self._check_params()
        if self.text_weights is not None:
            self.text_weights_ = self._check_weights(self.text_weights)  # (L, dim)
        elif getattr(self, "_text_key_", None) != self._text_key() or not hasattr(self, "text_weights_"):
            self.text_weights_ = self._check_weights(class_weights(self.model, self.labels, self.prompts))
            self._text_key_ = self._text_key()
        self.classes_ = np.array(self.labels, dtype=object)
        return self

    def fit(self, X: np.ndarray | None = None, y: Sequence[str] | None = None) -> "Suggester":
        """Fit on labelled vectors X (n, dim) with labels y (n,) from the label set; no X/y: pure zero-shot."""
        self._check_params()
        if (X is None) != (y is None):
            raise InvalidArgumentError("Give both vectors and labels to fit, or neither (pure zero-shot)")
        if X is not None:  # checked before the text model runs
            known = self._check_weights(self.text_weights).shape[1] if self.text_weights is not None else None
            X = self._check_vectors(X, known)
            y_idx = self._label_indices(y, len(X))
        self.prepare()
        dim = self.text_weights_.shape[1]
        if X is None:
            X, y_idx = np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        else:
            X = self._check_vectors(X, dim)
        self.X_, self.y_ = X, y_idx  # (n, dim), (n,)
        self._refit()
        return self

    def partial_fit(self, X: np.ndarray, y: Sequence[str]) -> "Suggester":
        """Add labelled items (n_new, dim) and refit the probe, warm-started; the first call is `fit`.

        The zero-shot scale and the temperature are refitted once the labels grew by
        `RECALIBRATE_GROWTH` (10%) since they were last fitted; `fit` always refits them."""
        if not hasattr(self, "X_"):
            return self.fit(X, y)
        X = self._check_vectors(X, self.text_weights_.shape[1])
        y_idx = self._label_indices(y, len(X))
        self.X_ = np.concatenate([self.X_, X])
        self.y_ = np.concatenate([self.y_, y_idx])
        self._refit(incremental=True)
        return self

    def _fit_probe(self, X: np.ndarray, y: np.ndarray, scale: float,
                   previous: SoftmaxProbe | None) -> SoftmaxProbe | None:
        """The correction probe on (X, y) over the zero-shot logits; None with fewer than 2 distinct labels
        among those with at least `min_per_class` labelled items (their items alone are fitted)."""
        counts = np.bincount(y, minlength=len(self.labels))
        keep = counts[y] >= self.min_per_class  # (n,)
        if len(np.unique(y[keep])) < 2:
            return None
        X, y = X[keep], y[keep]
        init = previous if self.warm_start else None
        seen = np.unique(y)  # (S,)
        offset = scale * (X @ self.text_weights_[seen].T)  # (n, S) zero-shot logits of the seen labels
        return SoftmaxProbe(C=self.C, max_iter=self.max_iter).fit(X, y, init=init, offset=offset)

    def _logits(self, X: np.ndarray, scale: float, probe: SoftmaxProbe | None) -> np.ndarray:
        """(n, L) log-scores before the temperature: zero-shot, corrected by the probe (module docstring, 1-3)."""
        z = scale * (X @ self.text_weights_.T)  # (n, L)
        logp0 = log_softmax(z, axis=1)  # (n, L)
        if probe is None:
            return logp0
        seen = probe.classes_  # (S,)
        out = logp0.copy()
        out[:, seen] = (logsumexp(logp0[:, seen], axis=1, keepdims=True)  # zero-shot mass on the seen labels
                        + probe.predict_log_proba(X, offset=z[:, seen]))
        return out

    def _refit(self, incremental: bool = False) -> None:
        """Fit the probe on (X_, y_); the scale and temperature too, unless `incremental` and labels grew < 10%."""
        X, y = self.X_, self.y_
        L = len(self.labels)
        self.n_labelled_ = len(y)
        self.class_counts_ = np.bincount(y, minlength=L)  # (L,)
        calibrate = self.calibrate and len(y) >= MIN_CALIBRATION
        last = getattr(self, "calibrated_on_", 0) if incremental else 0
        if not calibrate:
            self.zero_shot_scale_, self.temperature_, self.calibrated_on_ = ZERO_SHOT_SCALE, 1.0, 0
        elif last < MIN_CALIBRATION or len(y) >= last * (1 + RECALIBRATE_GROWTH):
            cos = X @ self.text_weights_.T  # (n, L)
            self.zero_shot_scale_ = ZERO_SHOT_SCALE / fit_temperature(ZERO_SHOT_SCALE * cos, y)
            held = np.arange(len(y)) % CAL_EVERY == CAL_EVERY - 1  # (n,) calibration slice
            probe = self._fit_probe(X[~held], y[~held], self.zero_shot_scale_,
                                    getattr(self, "calibration_probe_", None))
            self.calibration_probe_ = probe
            logits = self._logits(X[held], self.zero_shot_scale_, probe)  # (n_held, L)
            self.temperature_ = fit_temperature(logits, y[held])
            self.calibrated_on_ = len(y)
        self.probe_ = self._fit_probe(X, y, self.zero_shot_scale_, getattr(self, "probe_", None))
        log.debug("Suggester refit: %d labels over %d labels seen, scale %.1f, T %.2f", len(y),
                  int((self.class_counts_ > 0).sum()), self.zero_shot_scale_, self.temperature_)

    # ------------------------------------------------------------------ predicting
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, L) calibrated logits: softmax of them is `predict_proba`."""
        check_is_fitted(self, "text_weights_")
        X = self._check_vectors(X, self.text_weights_.shape[1])
        probe = self.probe_ if hasattr(self, "probe_") else None
        scale = getattr(self, "zero_shot_scale_", ZERO_SHOT_SCALE)
        return self._logits(X, scale, probe) / getattr(self, "temperature_", 1.0)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, L) probabilities over `classes_`, rows summing to 1."""
        return softmax(self.decision_function(X), axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(n,) the most probable label of each item."""
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    def suggest(self, X: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]]:
        """For each item the `top` labels (at most all) with their probabilities, best first."""
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise InvalidArgumentError(f"top must be a whole number >= 1, got {top!r}")
        p = self.predict_proba(X)  # (n, L)
        k = min(int(top), p.shape[1])
        part = np.argpartition(-p, k - 1, axis=1)[:, :k] if k < p.shape[1] else np.tile(np.arange(k), (len(p), 1))
        pk = np.take_along_axis(p, part, axis=1)  # (n, k)
        order = np.take_along_axis(part, np.argsort(-pk, axis=1, kind="stable"), axis=1)  # (n, k) best first
        labels = self.classes_
        return [[(labels[j], float(p[i, j])) for j in row] for i, row in enumerate(order.tolist())]

    def uncertainty(self, X: np.ndarray, kind: str = "least-confident") -> np.ndarray:
        """(n,) how unsure each suggestion is, higher first to label: 1 - max prob ('least-confident'),
        1 - (p1 - p2) ('margin'), or the normalised entropy ('entropy'), all in [0, 1]."""
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

    def unsure(self, X: np.ndarray) -> np.ndarray:
        """(n,) bool: True where the top probability is below `unsure_below`."""
        return self.predict_proba(X).max(axis=1) < self.unsure_below
