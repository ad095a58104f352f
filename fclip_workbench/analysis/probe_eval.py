"""What probes say about an embedding: out-of-fold predictions, cross-validated F1, few-shot curves.

Everything here fits `LinearProbe`s (probes.py) on vectors + labels that are checked first
(`check_vectors_labels`: one `InvalidArgumentError` line for a wrong length, missing labels or
too few classes): `cross_val_f1` (out-of-fold weighted F1, the FashionCLIP paper's metric),
`out_of_fold` (each item predicted by a probe that never saw it; the audit uses it),
`few_shot_curve` (k labelled items per class, fixed test set) and `probe_vs_zero_shot` (a table
per label field).

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (40, 8)), rng.normal(3, 1, (40, 8))]   # (80, 8)
    >>> round(cross_val_f1(X, ["shirt"] * 40 + ["dress"] * 40), 2)
    1.0
"""
from __future__ import annotations

import warnings
from numbers import Integral
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split

from fclip_workbench.errors import InvalidArgumentError, ModelMismatchError

from fclip_workbench.analysis.probes import MISSING_LABELS, LinearProbe


# ------------------------------------------------------------------ helpers over embeddings + labels
def _as_matrix(vectors, what: str) -> np.ndarray:
    """A non-empty, finite, numeric (n, dim) array, or one InvalidArgumentError line."""
    try:
        X = np.asarray(vectors)
    except (TypeError, ValueError) as e:  # ragged lists
        raise InvalidArgumentError(f"{what} must be a numeric (n, dim) array: {e}") from e
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InvalidArgumentError(f"{what} must be a non-empty (n, dim) array, got shape {X.shape}")
    if X.dtype == bool or not np.issubdtype(X.dtype, np.number):
        raise InvalidArgumentError(f"{what} must be numbers, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        raise InvalidArgumentError(f"{what} must be finite numbers; {len(bad)} row(s) hold NaN/inf, first "
                                   f"{bad[:5].tolist()}; drop or re-embed them")
    return X


def _as_labels(labels, n: int, what: str) -> np.ndarray:
    """(n,) labels of one kind (all strings or all integers), none missing, or one InvalidArgumentError line."""
    if labels is None or isinstance(labels, (str, bytes)) or np.ndim(labels) != 1:
        raise InvalidArgumentError(f"labels must be a list of {n} labels, one per row of {what}; got "
                                   f"{type(labels).__name__} of shape {np.shape(labels) if labels is not None else None}")
    y = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if len(y) != n:
        raise InvalidArgumentError(f"{n} {what} but {len(y)} labels; pass one label per row of {what}")
    if y.dtype == object or y.dtype.kind == "f":
        missing = np.array([v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v))
                            or (isinstance(v, str) and not v.strip()) for v in y], dtype=bool)
        if missing.any():
            rows = np.flatnonzero(missing)
            raise InvalidArgumentError(f"{len(rows)} labels are missing (None/NaN/empty), first at rows "
                                       f"{rows[:5].tolist()}; leave those items out (probe_eval.labelled)")
    if y.dtype == object:
        kinds = {"str" if isinstance(v, str) else "int" if isinstance(v, (int, np.integer)) and not isinstance(
            v, (bool, np.bool_)) else type(v).__name__ for v in y}
        if len(kinds) > 1 or not kinds <= {"str", "int"}:
            raise InvalidArgumentError(f"labels must all be strings or all integers; got {sorted(kinds)}")
        y = y.astype(str) if kinds == {"str"} else y.astype(np.int64)
    elif y.dtype.kind not in "iuUS":
        raise InvalidArgumentError(f"labels must be strings or integers, got dtype {y.dtype}")
    return y


def check_vectors_labels(vectors, labels, what: str = "vectors", min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float array and (n,) label array, checked: same length, finite, at least `min_classes` classes.

    Checked before any slow work; each problem is one `InvalidArgumentError` line.

    >>> check_vectors_labels(np.zeros((2, 3)), ["a"])
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: 2 vectors but 1 labels; pass one label per row of vectors
    """
    X = _as_matrix(vectors, what)
    y = _as_labels(labels, len(X), what)
    classes = np.unique(y)
    if len(classes) < min_classes:
        raise InvalidArgumentError(f"Need labels of at least {min_classes} classes, got {len(classes)}: "
                                   f"{classes[:5].tolist()!r}")
    return X, y


def _check_cv(cv: object, y: np.ndarray) -> int:
    if isinstance(cv, bool) or not isinstance(cv, Integral) or int(cv) < 2:
        raise InvalidArgumentError(f"cv must be a whole number >= 2, got {cv!r}")
    if int(cv) > len(y):
        raise InvalidArgumentError(f"cv={cv} folds but only {len(y)} items; use cv <= {len(y)}")
    return int(cv)


def out_of_fold(vectors, labels, cv: int = 5, probe: LinearProbe | None = None, method: str = "predict_proba",
                random_state: int = 0) -> np.ndarray:
    """Out-of-sample predictions (`method` of `probe`) for every item, from `cv` stratified folds.

    The probe's C is chosen once on all items (when `probe.C` is None), then kept for every fold.
    """
    X, y = check_vectors_labels(vectors, labels)
    cv = _check_cv(cv, y)
    probe = LinearProbe() if probe is None else probe
    if probe.C is None:
        probe = LinearProbe(**{**probe.get_params(), "C": LinearProbe(**probe.get_params()).fit(X, y).C_})
    folds = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")  # rare classes: fine out of fold
        warnings.filterwarnings("ignore", message="Number of classes in training fold")  # their column gets p = 0
        return cross_val_predict(probe, X, y, cv=folds, method=method)


def cross_val_f1(vectors, labels, cv: int = 5, probe: LinearProbe | None = None, random_state: int = 0) -> float:
    """Weighted F1 of out-of-fold probe predictions (the FashionCLIP paper's metric).

    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (30, 4)), rng.normal(4, 1, (30, 4))]
    >>> round(cross_val_f1(X, [0] * 30 + [1] * 30, cv=3), 2)
    1.0
    """
    _, y = check_vectors_labels(vectors, labels)
    pred = out_of_fold(vectors, labels, cv, probe, method="predict", random_state=random_state)
    return float(f1_score(y, pred, average="weighted", zero_division=0))


def _sample_k_per_class(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices: k items of each class (all of a class with fewer), sorted."""
    rows = [rng.choice(np.flatnonzero(y == c), size=min(k, int((y == c).sum())), replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(rows))


def few_shot_curve(vectors, labels, ks: Sequence[int] = (1, 5, 10, 50), seeds: Sequence[int] = (0, 1, 2),
                   test_vectors=None, test_labels=None, test_size: float = 0.2,
                   probe: LinearProbe | None = None) -> pd.DataFrame:
    """Probe scores with k labelled items per class, for each k and seed, on one fixed test set.

    The test set is `test_vectors`/`test_labels`, else a stratified `test_size` share of
    the data (split with seed 0, the same for every k). Training items are drawn from the
    rest: k per class (all of a class that has fewer). Columns: k, seed, n_train,
    weighted_f1, accuracy, C.

    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (50, 4)), rng.normal(3, 1, (50, 4))]
    >>> few_shot_curve(X, [0] * 50 + [1] * 50, ks=(1, 5), seeds=(0,)).k.tolist()
    [1, 5]
    """
    X, y = check_vectors_labels(vectors, labels)
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, Integral) or k < 1 for k in ks):
        raise InvalidArgumentError(f"ks must be whole numbers >= 1, got {ks!r}")
    if not list(seeds):
        raise InvalidArgumentError("seeds must list at least one seed, got an empty list")
    if test_vectors is None:
        if not 0.0 < test_size < 1.0:
            raise InvalidArgumentError(f"test_size must be between 0 and 1 (exclusive), got {test_size!r}")
        _, counts = np.unique(y, return_counts=True)
        X, Xte, y, yte = train_test_split(X, y, test_size=test_size, random_state=0,
                                          stratify=y if counts.min() >= 2 else None)
    else:
        Xte, yte = check_vectors_labels(test_vectors, test_labels, "test_vectors", min_classes=1)
        if Xte.shape[1] != X.shape[1]:
            raise ModelMismatchError(f"test_vectors have {Xte.shape[1]} features but vectors have {X.shape[1]}; "
                                     "embed both with the same model")
    base = LinearProbe() if probe is None else probe
    records = []
    for k in ks:
        for seed in seeds:
            rows = _sample_k_per_class(y, int(k), np.random.default_rng(seed))
            p = LinearProbe(**{**base.get_params(), "random_state": seed}).fit(X[rows], y[rows])
            pred = p.predict(Xte)
            records.append({"k": int(k), "seed": seed, "n_train": len(rows),
                            "weighted_f1": float(f1_score(yte, pred, average="weighted", zero_division=0)),
                            "accuracy": float(accuracy_score(yte, pred)), "C": p.C_})
    return pd.DataFrame.from_records(records)


def labelled(values: Sequence[object] | np.ndarray) -> np.ndarray:
    """(n,) bool: True where a catalog label value is present (not empty / nan / none)."""
    return np.array([str(v).strip().lower() not in MISSING_LABELS for v in values], dtype=bool)


def probe_vs_zero_shot(model, train_vectors, train_labels: Mapping[str, Sequence], test_vectors,
                       test_labels: Mapping[str, Sequence], probe: LinearProbe | None = None,
                       classes: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Weighted F1 of zero-shot and of a linear probe, one row per label field, on the same test items.

    `train_labels` / `test_labels` map a field to one label per row of the vectors;
    missing labels ("", nan) are left out of that field and counted in `n_unlabelled`.
    Zero-shot classes are `classes[field]` when given (e.g. every value in the whole
    catalog), else every label value of the field in train and test; the probe
    is fitted on the training rows. Columns: field, n_classes, n_train, n_test,
    n_unlabelled, zero_shot_f1, probe_f1, probe_C.
    """
    from fclip_workbench.analysis.zeroshot import ZeroShotClassifier

    fields = list(train_labels)
    if not fields or set(fields) != set(test_labels):
        raise InvalidArgumentError(f"train_labels and test_labels must name the same non-empty fields; got "
                                   f"{fields!r} and {list(test_labels)!r}")
    train_vectors, test_vectors = np.asarray(train_vectors), np.asarray(test_vectors)
    if getattr(model, "dim", train_vectors.shape[-1]) != train_vectors.shape[-1]:
        raise ModelMismatchError(f"Model {model.name!r} gives {model.dim}-d embeddings but the vectors are "
                                 f"{train_vectors.shape[-1]}-d; embed them with this model")
    base = LinearProbe() if probe is None else probe
    space = getattr(model, "space", None)  # (an EmbeddingModel's; None for stand-ins without one)
    if base.space is not None and space is not None:
        base.check_compatible(space)
    records = []
    for fld in fields:
        ytr = np.array([str(v).strip() for v in train_labels[fld]], dtype=object)
        yte = np.array([str(v).strip() for v in test_labels[fld]], dtype=object)
        mtr, mte = labelled(ytr), labelled(yte)
        Xtr, ytr_ = check_vectors_labels(train_vectors[mtr], ytr[mtr].astype(str), f"{fld} training vectors")
        Xte, yte_ = check_vectors_labels(test_vectors[mte], yte[mte].astype(str), f"{fld} test vectors", 1)
        given = None if classes is None else classes.get(fld)
        names = sorted(set(ytr_) | set(yte_)) if given is None else [str(c).strip() for c in given]
        unknown = sorted(set(yte_) - set(names))
        if unknown:
            raise InvalidArgumentError(f"Test labels of field {fld!r} missing from its zero-shot classes: "
                                       f"{unknown[:5]!r}; add them to classes[{fld!r}]")
        zs = ZeroShotClassifier(model, names).predict(Xte)
        p = LinearProbe(**{**base.get_params(), "space": space if space is not None else base.space}).fit(Xtr, ytr_)
        records.append({"field": fld, "n_classes": len(names), "n_train": len(ytr_), "n_test": len(yte_),
                        "n_unlabelled": int((~mtr).sum() + (~mte).sum()),
                        "zero_shot_f1": float(f1_score(yte_, zs, average="weighted", zero_division=0)),
                        "probe_f1": float(f1_score(yte_, p.predict(Xte), average="weighted", zero_division=0)),
                        "probe_C": p.C_})
    return pd.DataFrame.from_records(records)


def heldout_rows(model, catalog, ids: Sequence[str]) -> np.ndarray:
    """(n,) bool over `ids` (items of `catalog`): True for products held out from `model`'s training.

    Uses the model's recorded split (`evaluate.model_split`), else the default
    title-group split, so probe test items are never ones the model trained on.
    """
    from fclip_workbench.analysis.evaluate import choose_split, model_split, split_mask

    found = model_split(model)
    split = choose_split(found[0] if found else None)
    held = split_mask(catalog, split.rule, *split.seed_fraction())  # (len(catalog),)
    held_of = dict(zip(catalog.ids, held))
    missing = [i for i in ids if i not in held_of]
    if missing:
        raise InvalidArgumentError(f"{len(missing)} ids are not items of catalog {catalog.name!r} "
                                   f"(e.g. {missing[:3]!r}); pass ids of the embedded catalog")
    return np.array([bool(held_of[i]) for i in ids], dtype=bool)


def catalog_labels(catalog, ids: Sequence[str], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """{field: (n,) labels (stripped strings, "" where missing)} for the items `ids` of `catalog`, in that order.

    >>> catalog_labels(catalog, result.ids, ["articleType"])["articleType"][:2]    # doctest: +SKIP
    array(['Shirts', 'Jeans'], dtype=object)
    """
    unknown = [f for f in fields if f not in catalog.attributes]
    if unknown:
        raise InvalidArgumentError(f"Unknown label field(s) {unknown} in catalog {catalog.name!r}; valid fields: "
                                   f"{', '.join(catalog.attributes) or '(none)'}")
    row = {i: r for r, i in enumerate(catalog.ids)}
    missing = [i for i in ids if i not in row]
    if missing:
        raise InvalidArgumentError(f"{len(missing)} ids are not items of catalog {catalog.name!r} "
                                   f"(e.g. {missing[:3]!r}); pass ids of the embedded catalog")
    rows = [row[i] for i in ids]
    out = {}
    for fld in fields:
        values = np.array([str(v).strip() for v in catalog.table[fld].iloc[rows]], dtype=object)
        values[~labelled(values)] = ""
        out[fld] = values
    return out
