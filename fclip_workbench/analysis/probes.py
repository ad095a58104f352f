"""Linear probes on frozen embeddings: the CLIP paper's protocol (App. A.3) as a scikit-learn classifier.

`LinearProbe` is an L2-regularised multinomial logistic regression (L-BFGS). When
`C` is None its strength is swept over a log grid `Cs` (warm-started from the
strongest regularisation), the best C is picked on a stratified validation split
(`val_fraction`) and the probe is refitted on all the data with it. A probe
records the embedding space it was fitted in (`space`: weights, precision, image
pipeline, width; `space.EmbeddingSpace`) and `check_compatible(model)` refuses another
space with one `SpaceMismatchError` line naming both; vectors of another width are a
one-line `ModelMismatchError`. Saved files carry the space: a probe without one is not saved, and
`check_compatible` refuses it (nothing to check against); files of format 1 (a bare model fingerprint,
no space) or of format 2 without a space are refused with one line that says to refit. `predict`,
`predict_proba`, `decision_function` and `score` check the space of embeddings that carry theirs
(anything with `.vectors` and `.space`, e.g. an `EmbeddingResult` that records its space) with the same
`EmbeddingSpace.check`; a bare array is checked for its width and finite values only, so pass the
embeddings to have the space checked. Bad labels
(wrong length, None/NaN, strings mixed with numbers), NaN vectors and damaged files are one
`InvalidArgumentError` line (a `ValueError`).

What probes say about an embedding (cross-validated F1, few-shot curves, probe against zero-shot)
is in probe_eval.py.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (40, 8)), rng.normal(3, 1, (40, 8))]   # (80, 8)
    >>> y = ["shirt"] * 40 + ["dress"] * 40
    >>> probe = LinearProbe().fit(X, y)     # LinearProbe(space=model.space) records the space
    >>> probe.predict(X[:1]).tolist(), probe.classes_.tolist()
    (['shirt'], ['dress', 'shirt'])
"""
from __future__ import annotations

import json
import logging
import warnings
import zipfile
import zlib
from numbers import Integral, Real
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from fclip_workbench.errors import InvalidArgumentError, ModelMismatchError, SpaceMismatchError
from fclip_workbench.embedding.space import EmbeddingSpace, space_of

log = logging.getLogger(__name__)

DEFAULT_CS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)  # log grid of inverse L2 strengths swept when C is None
FALLBACK_C = 10.0  # used when there are too few items per class to validate (e.g. 1-shot); unit vectors need weak L2
SCORINGS = ("accuracy", "f1_weighted")
MISSING_LABELS = ("", "nan", "none")  # label values that mean "no label" in catalog columns
FORMAT_VERSION = 2  # of the .npz written by `LinearProbe.save` (2: the embedding space; 1: a bare fingerprint)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic-regression probe over frozen embeddings; C swept on a validation split unless given.

    Parameters: `C` (None: sweep `Cs`), `Cs` (grid), `val_fraction` (validation share of the sweep),
    `scoring` ("accuracy" or "f1_weighted", the sweep's criterion), `max_iter` (L-BFGS iterations),
    `random_state` (the validation split), `space` (the `EmbeddingSpace` of the vectors, e.g. `model.space`;
    None: not recorded, not checked).
    Fitted: `classes_`, `n_features_in_`, `C_`, `sweep_` ({C: validation score}, empty when not swept),
    `coef_` (n_classes or 1, dim), `intercept_`, `n_iter_`.

    >>> LinearProbe(C=1.0).fit([[0.0], [1.0], [0.1], [0.9]], [0, 1, 0, 1]).predict([[0.95]]).tolist()
    [1]
    """

    def __init__(self, C: float | None = None, Cs: Sequence[float] = DEFAULT_CS, val_fraction: float = 0.2,
                 scoring: str = "accuracy", max_iter: int = 1000, random_state: int | None = 0,
                 space: EmbeddingSpace | None = None) -> None:
        self.C = C
        self.Cs = Cs
        self.val_fraction = val_fraction
        self.scoring = scoring
        self.max_iter = max_iter
        self.random_state = random_state
        self.space = space  # the embedding space of the vectors it is fitted on (None: not checked)

    # ---- checks ---------------------------------------------------------
    def _check_params(self) -> list[float]:
        def positive(v: object) -> bool:
            return isinstance(v, Real) and not isinstance(v, bool) and bool(np.isfinite(float(v))) and float(v) > 0

        if self.C is not None and not positive(self.C):
            raise InvalidArgumentError(f"C must be a positive number or None (sweep Cs), got {self.C!r}")
        cs = list(self.Cs) if not isinstance(self.Cs, (str, bytes)) and np.ndim(self.Cs) == 1 else None
        if not cs or not all(positive(c) for c in cs):
            raise InvalidArgumentError(f"Cs must be a non-empty list of positive numbers, got {self.Cs!r}")
        if not isinstance(self.val_fraction, Real) or not 0.0 < self.val_fraction < 1.0:
            raise InvalidArgumentError(f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction!r}")
        if self.scoring not in SCORINGS:
            raise InvalidArgumentError(f"Unknown scoring {self.scoring!r}; choose one of {', '.join(SCORINGS)}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, Integral) or self.max_iter < 1:
            raise InvalidArgumentError(f"max_iter must be a whole number >= 1, got {self.max_iter!r}")
        if self.space is not None and not isinstance(self.space, EmbeddingSpace):
            raise InvalidArgumentError(f"space must be an EmbeddingSpace (model.space) or None, got "
                                       f"{type(self.space).__name__} {str(self.space)[:60]!r}")
        return sorted(float(c) for c in cs)

    def _check_width(self, X: object) -> None:
        """Refuse a width mismatch before anything else reads `X` (one line, scikit-learn's wording first)."""
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] != self.n_features_in_:
            where = f" of space {self.space.describe()}" if self.space is not None else ""
            raise ModelMismatchError(
                f"X has {shape[1]} features, but LinearProbe is expecting {self.n_features_in_} features as input "
                f"(it was fitted on {self.n_features_in_}-d embeddings{where}); embed with the probe's model")

    def check_compatible(self, model_or_space: object) -> None:
        """Raise unless vectors of `model_or_space` (an EmbeddingModel or EmbeddingSpace) are what this probe expects.

        Another space: `SpaceMismatchError` naming both; another width: `ModelMismatchError`; a probe that
        records no space (`LinearProbe()` without `space=`) cannot be checked, so it is refused too
        (`SpaceMismatchError`), never passed.

        >>> a = EmbeddingSpace("a" * 32, "fp32", "c" * 16, 4, model="m@1")
        >>> LinearProbe(space=a).check_compatible(EmbeddingSpace("b" * 32, "fp32", "c" * 16, 4, model="m@2"))
        Traceback (most recent call last):
        ...
        fclip_workbench.errors.SpaceMismatchError: linear probe was made in space m@1 [aaaaaaaaaaaa fp32 4-d], not in m@2 [bbbbbbbbbbbb fp32 4-d]: rebuild it with this model, or use the model it was made with
        """
        if isinstance(model_or_space, str):
            raise InvalidArgumentError("check_compatible takes an EmbeddingModel or its .space; a bare fingerprint "
                                       "does not say the precision, image pipeline or width")
        other = space_of(model_or_space)
        if self.space is not None:
            self.space.check(other, "linear probe")
        if hasattr(self, "n_features_in_") and other.dim != self.n_features_in_:
            raise ModelMismatchError(f"{other.describe()} gives {other.dim}-d embeddings but this probe expects "
                                     f"{self.n_features_in_}-d ones; refit the probe on that model's embeddings")
        if self.space is None:
            raise SpaceMismatchError(f"this linear probe records no embedding space, so it cannot be checked against "
                                     f"{other.describe()}: fit it with LinearProbe(space=model.space)")

    # ---- fit ------------------------------------------------------------
    def _logreg(self, C: float, warm: bool = False) -> LogisticRegression:
        return LogisticRegression(C=C, solver="lbfgs", max_iter=self.max_iter, warm_start=warm)

    def _sweep(self, X: np.ndarray, y: np.ndarray, cs: list[float]) -> dict[float, float]:
        """{C: validation score}, each C warm-started from the previous (smaller) one."""
        Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=self.val_fraction, stratify=y,
                                              random_state=self.random_state)
        clf, scores = self._logreg(cs[0], warm=True), {}
        for c in cs:
            clf.set_params(C=c)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # early grid points only steer the warm start
                clf.fit(Xtr, ytr)
            pred = clf.predict(Xva)
            scores[c] = (accuracy_score(yva, pred) if self.scoring == "accuracy"
                         else f1_score(yva, pred, average="weighted", zero_division=0))
        return scores

    def fit(self, X, y) -> "LinearProbe":
        """Fit on (n, dim) embeddings and n labels (strings or ints); returns self.

        `X` may be an `EmbeddingResult` (or anything with `.vectors` and `.space`): its space is checked
        against the probe's, or recorded when the probe has none, so predictions refuse another space."""
        cs = self._check_params()
        carried = getattr(X, "space", None) if not hasattr(X, "iloc") else None
        X = _vectors_of(X, self.space)
        if self.space is None and carried is not None:
            self.space = space_of(carried)
        _check_labels(X, y)
        X, y = _one_line(lambda: validate_data(self, X, y, dtype=[np.float64, np.float32]), "LinearProbe.fit")
        if self.space is not None and X.shape[1] != self.space.dim:
            raise ModelMismatchError(f"X has {X.shape[1]} features but the probe's space {self.space.describe()} is "
                                     f"{self.space.dim}-d; fit it on vectors of that space")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The number of unique classes")  # few-shot: 1 item per class
            check_classification_targets(y)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise InvalidArgumentError(f"LinearProbe needs labels of at least 2 classes; got 1 class: "
                                       f"{classes.tolist()!r}")
        n_val = int(np.ceil(self.val_fraction * len(y)))
        can_validate = counts.min() >= 2 and n_val >= len(classes) and len(y) - n_val >= len(classes)
        self.sweep_: dict[float, float]  # {C: validation score}
        if self.C is not None:
            self.C_, self.sweep_ = float(self.C), {}
        elif len(cs) == 1 or not can_validate:
            self.C_, self.sweep_ = (cs[0] if len(cs) == 1 else FALLBACK_C), {}
            if len(cs) > 1:
                log.info("LinearProbe: too few items per class to validate (smallest class: %d); C=%g",
                         counts.min(), self.C_)
        else:
            self.sweep_ = self._sweep(X, y, cs)
            self.C_ = max(self.sweep_, key=lambda c: (self.sweep_[c], -c))  # ties: stronger regularisation
            log.info("LinearProbe: C=%g (validation %s %.3f)", self.C_, self.scoring, self.sweep_[self.C_])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", message="The number of unique classes")
            self.model_ = self._logreg(self.C_).fit(X, y)
        self.classes_ = self.model_.classes_
        self.coef_, self.intercept_ = self.model_.coef_, self.model_.intercept_  # (n_classes or 1, dim), (...)
        self.n_iter_ = int(np.max(self.model_.n_iter_))
        if self.n_iter_ >= self.max_iter:
            log.warning("LinearProbe: L-BFGS stopped at max_iter=%d before converging (C=%g); raise max_iter",
                        self.max_iter, self.C_)
        return self

    # ---- predict --------------------------------------------------------
    def _X(self, X) -> np.ndarray:
        """Checked (n, dim) vectors of `X`: a bare array, or embeddings that carry their space (`_vectors_of`)."""
        check_is_fitted(self)
        X = _vectors_of(X, self.space)
        self._check_width(X)
        return _one_line(lambda: validate_data(self, X, reset=False, dtype=[np.float64, np.float32]),
                         "LinearProbe")

    def decision_function(self, X) -> np.ndarray:
        """(n,) for two classes, else (n, n_classes) logits. `X` as in `predict`."""
        X = self._X(X)  # checks fitted first
        return self.model_.decision_function(X)

    def predict_proba(self, X) -> np.ndarray:
        """(n, n_classes) probabilities, columns in `classes_` order. `X` as in `predict`."""
        X = self._X(X)  # checks fitted first
        return self.model_.predict_proba(X)

    def predict_log_proba(self, X) -> np.ndarray:
        """(n, n_classes) log probabilities. `X` as in `predict`."""
        return np.log(np.clip(self.predict_proba(X), 1e-300, None))

    def predict(self, X) -> np.ndarray:
        """(n,) labels from `classes_`.

        `X`: the embeddings themselves (anything with `.vectors` and `.space`, e.g. an `EmbeddingResult`
        that records its space, or an array carrying `.space`): their space is checked against the
        probe's (`SpaceMismatchError` naming both). A bare (n, dim) array says nothing of its space: only
        its width (`ModelMismatchError`) and finiteness (`InvalidArgumentError`) are checked, so pass the
        embeddings to have the space checked.

        >>> a, b = (EmbeddingSpace(w * 32, "fp32", "c" * 16, 1, model=f"m@{w}") for w in "ab")
        >>> probe = LinearProbe(C=1.0, space=a).fit([[0.0], [1.0], [0.1], [0.9]], [0, 1, 0, 1])
        >>> from types import SimpleNamespace
        >>> probe.predict(SimpleNamespace(vectors=np.array([[0.95]]), space=a)).tolist()
        [1]
        >>> probe.predict(SimpleNamespace(vectors=np.array([[0.95]]), space=b))
        Traceback (most recent call last):
        ...
        fclip_workbench.errors.SpaceMismatchError: linear probe was made in space m@a [aaaaaaaaaaaa fp32 1-d], not in m@b [bbbbbbbbbbbb fp32 1-d]: rebuild it with this model, or use the model it was made with
        """
        X = self._X(X)  # checks fitted first
        return self.model_.predict(X)

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of `predict(X)` against `y` (one label per row; `X` as in `predict`, its space checked)."""
        vectors = self._X(X)
        _check_labels(vectors, y)
        return float(accuracy_score(y, self.model_.predict(vectors), sample_weight=sample_weight))

    # ---- save / load (npz + json, no pickle) ------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted probe to one `.npz` file (arrays + JSON metadata, loadable without pickle).

        The probe must record its embedding space (`LinearProbe(space=model.space)`): a file without one
        could be used with any model of the same width.
        """
        check_is_fitted(self)
        if self.space is None:
            raise InvalidArgumentError("a LinearProbe saved to disk must record the embedding space of its vectors "
                                       "(else any model of the same width passes): fit it with "
                                       "LinearProbe(space=model.space)")
        classes = self.classes_
        if classes.dtype == object and all(isinstance(c, str) for c in classes):
            classes = classes.astype(str)  # (n_classes,) unicode: no pickle needed; object dtype restored on load
        if classes.dtype.kind not in "iuUSb":
            raise InvalidArgumentError(f"Only string or integer labels can be saved; this probe's classes have "
                                       f"dtype {self.classes_.dtype} (e.g. {self.classes_[:3].tolist()!r})")
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        params = {k: v for k, v in self.get_params().items() if k != "space"}
        meta = {"format": "fclip-linear-probe", "version": FORMAT_VERSION, "params": params,
                "space": None if self.space is None else self.space.to_dict(),
                "C_": self.C_, "sweep_": [[c, s] for c, s in self.sweep_.items()], "n_iter_": self.n_iter_,
                "n_features_in_": self.n_features_in_, "classes_dtype": str(self.classes_.dtype)}
        meta["params"]["Cs"] = [float(c) for c in self.Cs]
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, coef=self.coef_, intercept=self.intercept_, classes=classes,
                 meta=np.array(json.dumps(meta)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LinearProbe":
        """A probe written by `save`; `InvalidArgumentError` for a file that is not one."""
        path = Path(path)
        if not path.is_file():
            raise InvalidArgumentError(f"No saved probe at {path}; save one with LinearProbe.save(path)")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                coef, intercept, classes = z["coef"], z["intercept"], z["classes"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # truncated, garbage
            why = " ".join(str(e).split())[:120] or type(e).__name__
            raise InvalidArgumentError(f"{path} is not a saved LinearProbe ({why}); save one with "
                                       "LinearProbe.save(path)") from None
        if not isinstance(meta, dict) or meta.get("format") != "fclip-linear-probe":
            raise InvalidArgumentError(f"{path} is not a LinearProbe file (format "
                                       f"{meta.get('format') if isinstance(meta, dict) else None!r})")
        if meta.get("version") == 1:
            raise SpaceMismatchError(f"{path} is a probe of format 1 (a bare model fingerprint, no embedding space): "
                                     f"refit it and save it again with LinearProbe(space=model.space)")
        if meta.get("version") != FORMAT_VERSION:
            raise InvalidArgumentError(f"{path} is a LinearProbe file of version {meta.get('version')!r}; this "
                                       f"fclip-workbench reads version {FORMAT_VERSION}")
        if meta.get("space") is None:
            raise SpaceMismatchError(f"{path} is a probe saved without an embedding space (any model of its width "
                                     f"would pass): refit it and save it again with LinearProbe(space=model.space)")
        try:
            space = EmbeddingSpace.from_dict(meta["space"], f"probe {path}")
            if meta.get("classes_dtype") == "object":
                classes = classes.astype(object)
            params = dict(meta["params"], Cs=tuple(meta["params"]["Cs"]), space=space)
            probe = cls(**params)
            probe._check_params()
            n_features, C, n_iter = int(meta["n_features_in_"]), float(meta["C_"]), int(meta["n_iter_"])
            sweep = {float(c): float(v) for c, v in meta["sweep_"]}
        except SpaceMismatchError:
            raise
        except (KeyError, TypeError, ValueError) as e:  # a damaged or hand-edited file
            raise InvalidArgumentError(f"{path} is a damaged LinearProbe file ({type(e).__name__}: {e}); "
                                       f"save the probe again") from e
        rows = 1 if len(classes) == 2 else len(classes)
        ordered = classes.ndim == 1 and np.array_equal(np.unique(classes), classes)  # as fit wrote them: sorted, unique
        if not ordered or len(classes) < 2 or coef.shape != (rows, n_features) or intercept.shape != (rows,) \
                or not np.isfinite(coef).all() or not np.isfinite(intercept).all() \
                or (space is not None and space.dim != n_features):
            raise InvalidArgumentError(f"{path} is a damaged LinearProbe file (coef {coef.shape}, intercept "
                                       f"{intercept.shape}, {len(classes)} classes{'' if ordered else ' out of order'}, {n_features} features, finite "
                                       f"{bool(np.isfinite(coef).all() and np.isfinite(intercept).all())}); "
                                       f"save the probe again")
        lr = probe._logreg(C)
        lr.coef_, lr.intercept_, lr.classes_ = coef, intercept, classes
        lr.n_features_in_, lr.n_iter_ = n_features, np.array([n_iter])
        probe.model_, probe.classes_, probe.coef_, probe.intercept_ = lr, classes, coef, intercept
        probe.n_features_in_, probe.C_, probe.n_iter_ = n_features, C, n_iter
        probe.sweep_ = sweep
        return probe


def _vectors_of(X: object, probe_space: EmbeddingSpace | None) -> object:
    """The vectors of `X`, its embedding space checked against `probe_space` when `X` carries one.

    `X` carries its space when it has a `.space` (an `EmbeddingSpace`, or a model that has one): an
    `EmbeddingResult`-like object (`.vectors` + `.space`) or an array with `.space`. The check is
    `EmbeddingSpace.check`, as for saved indexes and projections. A probe without a recorded space, like an
    index built from bare vectors, takes any space of its width. Arrays, lists and tables pass unchanged.

    >>> _vectors_of([[0.5]], None)
    [[0.5]]
    """
    if isinstance(X, (np.ndarray, list, tuple)) and not hasattr(X, "space"):
        return X
    if hasattr(X, "iloc") or hasattr(X, "tocsr"):  # pandas (a column named 'space' is not a space) or sparse
        return X
    space = getattr(X, "space", None)
    vectors = getattr(X, "vectors", X)
    if space is not None:
        actual = space_of(space)  # a string or other stand-in is one SpaceMismatchError line
        if probe_space is not None:
            probe_space.check(actual, "linear probe")
    return vectors


def _one_line(call, what: str):
    """`call()`, its ValueError (scikit-learn's NaN / shape messages) as one `InvalidArgumentError` line."""
    try:
        return call()
    except InvalidArgumentError:
        raise
    except ValueError as e:
        raise InvalidArgumentError(f"{what}: {' '.join(str(e).split()) or type(e).__name__}") from None


def _check_labels(X, y) -> None:
    """One `InvalidArgumentError` line for labels a probe cannot learn: None, NaN, strings mixed with numbers,
    or not one per vector. (`y` a list, array or Series; `X` anything with a length.)

    >>> _check_labels([[0.0], [1.0]], ["a", None])
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: labels must not be missing: 1 of 2 labels are None or NaN (first at position 1); drop those items or label them
    """
    if y is None:
        raise InvalidArgumentError("LinearProbe requires y to be passed, but the target y is None: give one label "
                                   "per vector")
    try:
        shape = getattr(X, "shape", None)  # sparse matrices: len() is not their row count
        n_labels, n = len(y), (int(shape[0]) if shape is not None and len(shape) else len(X))
        labels = list(np.asarray(y, dtype=object).ravel())
    except (TypeError, ValueError):
        return  # not sized or ragged: validate_data says what it is, in one line
    if n_labels != n:
        raise InvalidArgumentError(f"{n_labels} labels for {n} vectors: give one label per vector, in the same order")
    missing = [i for i, v in enumerate(labels) if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))]
    if missing:
        raise InvalidArgumentError(f"labels must not be missing: {len(missing)} of {len(labels)} labels are None or "
                                   f"NaN (first at position {missing[0]}); drop those items or label them")
    texts = [isinstance(v, str) for v in labels]
    if any(texts) and not all(texts):
        i = texts.index(False)
        raise InvalidArgumentError(f"labels mix strings with other values (position {i}: {labels[i]!r} of type "
                                   f"{type(labels[i]).__name__}): give all labels as strings or all as integers")
