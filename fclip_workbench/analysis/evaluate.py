"""Evaluate a model with the FashionCLIP paper's protocol, without scoring it on its own training data.

- retrieval, text to image: each scored product's title queries the images of
  `n_retrieval` scored products; Recall@1/5/10, HITS@5 and MRR;
- zero-shot classification: each label field's values become prompt-ensembled
  classes; weighted F1 over the scored products. With `label_names` (field ->
  label -> names) a field is scored a second time with its labels prompted by
  those names (task "... common names"), e.g. Fashion-MNIST's "trouser" as "trousers".

Which products are scored (`EvalSplit`): by default the held-out side of the
model's own recorded split (`splits.read_split_record(model.source)`: rule,
seed, fraction), so a trained model is scored on the products it did not see;
models without a record (hub, pretrained) get the title-group rule, seed 0,
fraction 0.05. Asking for another split, or for every product
(`heldout=False`), is refused with a `LeakageError` when any product to score
was in the model's training set. The report records the split used.

Example:
    >>> report = evaluate(load_model("fclip-mini"), load_kagl(root), ["articleType"])   # doctest: +SKIP
    >>> print(report.to_markdown())                                                   # doctest: +SKIP
    >>> plan = plan_eval(catalog)                     # doctest: +SKIP
    >>> evaluate(model, catalog, **plan.kwargs())     # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.data.datasets.kind import catalog_kind
from fclip_workbench.embedding.embed import embed_images, embed_texts
from fclip_workbench.errors import CheckpointError, FclipError, LeakageError
from fclip_workbench.analysis.metrics import retrieval_metrics, weighted_f1
from fclip_workbench.embedding.models import EmbeddingModel
from fclip_workbench.data.splits import DEFAULT_RULE, RULES, TITLE_RULE, SplitRecord, is_validation, read_split_record
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.labelling.textrules import csv_escape
from fclip_workbench.analysis.zeroshot import ZeroShotClassifier, check_names

log = logging.getLogger(__name__)

ALL_PRODUCTS = "all"  # EvalSplit.rule when every product is scored
DEFAULT_SEED = 0  # split seed for models without a record
DEFAULT_VAL_FRACTION = 0.05  # held-out share for models without a record
_MISSING_LABELS = ("", "nan", "none")  # label values that mean "no label"


# ------------------------------------------------------------------ which products are scored
@dataclass(frozen=True)
class EvalSplit:
    """The products an evaluation scores: the held-out side of (rule, seed, val_fraction), or all of them.

    >>> EvalSplit("title-group-v1", 0, 0.05).describe()
    'held-out products (title-group-v1, seed 0, fraction 0.05)'
    """

    rule: str  # splits.ID_RULE / splits.TITLE_RULE, or ALL_PRODUCTS
    seed: int | None  # None when every product is scored
    val_fraction: float | None  # None when every product is scored

    @property
    def heldout(self) -> bool:
        return self.rule != ALL_PRODUCTS

    def describe(self) -> str:
        if not self.heldout:
            return "all products"
        return f"held-out products ({self.rule}, seed {self.seed}, fraction {self.val_fraction:g})"

    def seed_fraction(self) -> tuple[int, float]:
        """(seed, val_fraction) of a held-out split."""
        if self.seed is None or self.val_fraction is None:
            raise FclipError(f"split {self.rule!r} needs a seed and a val_fraction, got {self.seed!r}, "
                             f"{self.val_fraction!r}")
        return self.seed, self.val_fraction

    def rows(self, catalog: Catalog) -> np.ndarray:
        """(n_scored,) row indices of `catalog` to score; rows the catalog flags as duplicate/empty ids are left out."""
        bad_id = {p.row for p in catalog.problems if p.field == "item_id" and p.row is not None}
        keep = np.array([i not in bad_id for i in range(len(catalog))], dtype=bool)
        if self.heldout:
            keep &= split_mask(catalog, self.rule, *self.seed_fraction())
        return np.flatnonzero(keep)


def split_mask(catalog: Catalog, rule: str, seed: int, val_fraction: float) -> np.ndarray:
    """(n,) bool: True for `catalog` rows held out by (rule, seed, val_fraction); titles are the catalog texts."""
    titles = catalog.texts if rule == TITLE_RULE else None
    return is_validation(catalog.ids, val_fraction, seed, titles=titles, rule=rule)


def model_split(model: EmbeddingModel) -> tuple[SplitRecord, set[str] | None] | None:
    """The split `model` was trained with and its training ids (when recorded), or None (no record)."""
    if model.source is None:
        return None
    try:
        return read_split_record(model.source)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"Cannot read the training split of model {model.name!r} in {model.source}: {e}; "
                              "fix or remove its training.json / train_ids.txt") from e


def choose_split(record: SplitRecord | None, heldout: bool = True, rule: str | None = None,
                 seed: int | None = None, val_fraction: float | None = None) -> EvalSplit:
    """The split to score: the caller's values where given, else the record's, else the defaults.

    >>> choose_split(None, seed=3)
    EvalSplit(rule='title-group-v1', seed=3, val_fraction=0.05)
    """
    if not heldout:
        return EvalSplit(ALL_PRODUCTS, None, None)
    if rule is not None and rule not in RULES:
        raise FclipError(f"Unknown split rule {rule!r}; known rules: {', '.join(RULES)}")
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise FclipError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if record is not None:
        base = (record.rule, int(record.seed), float(record.val_fraction))
    else:
        base = (DEFAULT_RULE, DEFAULT_SEED, DEFAULT_VAL_FRACTION)
    return EvalSplit(rule if rule is not None else base[0], int(seed) if seed is not None else base[1],
                     float(val_fraction) if val_fraction is not None else base[2])


def same_split(split: EvalSplit, record: SplitRecord) -> bool:
    """True when `split` holds out exactly what `record` held out from training."""
    return (split.heldout and split.rule == record.rule and split.seed == int(record.seed)
            and split.val_fraction is not None and math.isclose(split.val_fraction, float(record.val_fraction)))


def trained_ids_in(catalog: Catalog, record: SplitRecord, train_ids: set[str] | None) -> set[str] | None:
    """Ids of `catalog` that the model trained on; None when that cannot be known.

    From train_ids.txt when recorded; otherwise the recorded split is recomputed on
    `catalog` when its name is the catalog the model was trained on.
    """
    if train_ids is not None:
        return train_ids.intersection(catalog.ids)
    if record.catalog and record.catalog == catalog.name:
        held = split_mask(catalog, record.rule, int(record.seed), float(record.val_fraction))
        return {i for i, h in zip(catalog.ids, held) if not h}
    return None


def check_no_leakage(model: EmbeddingModel, catalog: Catalog, rows: np.ndarray, split: EvalSplit,
                     found: tuple[SplitRecord, set[str] | None] | None) -> None:
    """Raise `LeakageError` when any product at `rows` (to be scored) was in `model`'s training set."""
    if found is None:
        return
    record, train_ids = found
    trained = trained_ids_in(catalog, record, train_ids)
    if trained is None:
        log.info("%s: cannot tell which products of %r it trained on (record names catalog %r, no train ids)",
                 model.name, catalog.name, record.catalog)
        return
    scored = list(dict.fromkeys(catalog.ids[int(r)] for r in rows))
    overlap = sum(i in trained for i in scored)
    if overlap:
        s, f = record.seed, f"{float(record.val_fraction):g}"
        advice = (f"evaluate on other data (the default split already holds out seed {s} / fraction {f})"
                  if same_split(split, record)
                  else f"evaluate with seed {s} / fraction {f} / rule {record.rule} (the default), or on other data")
        raise LeakageError(f"{overlap} of the {len(scored)} products to score were in the training set of model "
                           f"{model.name!r} (trained on catalog {record.catalog!r} with split rule {record.rule}, "
                           f"seed {s}, fraction {f}); {advice}")


def recorded_heldout(model: EmbeddingModel, catalog: Catalog) -> tuple[EvalSplit, np.ndarray, set[str]]:
    """`model`'s recorded split, the rows of `catalog` it holds out, and the ids it trained on.

    For protocols that need both sides (labelling pools from the training products, scores on the rest).
    FclipError when the model recorded no training ids; LeakageError when a held-out product is among them.

    >>> split, rows, train_ids = recorded_heldout(load_model("fclip-mini"), kagl)   # doctest: +SKIP
    """
    found = model_split(model)
    if found is None or found[1] is None:
        raise FclipError(f"{model.name} has no recorded training ids: this protocol needs them")
    split = choose_split(found[0])
    rows = split.rows(catalog)  # (n_heldout,)
    check_no_leakage(model, catalog, rows, split, found)
    return split, rows, found[1]


# ------------------------------------------------------------------ what `fclip eval` scores
DEFAULT_FIELD_ORDER = ("articleType", "subCategory", "baseColour", "garment", "colour", "pattern")


def default_fields(catalog: Catalog) -> list[str]:
    """Label fields scored by default: FMNIST's `label`, else KAGL's and the teaching catalog's known fields.

    >>> default_fields(load_kagl(root))                       # doctest: +SKIP
    ['articleType', 'subCategory', 'baseColour']
    """
    attrs = catalog.attributes
    if "label" in attrs:
        return ["label"]
    return [f for f in DEFAULT_FIELD_ORDER if f in attrs]


@dataclass(frozen=True)
class EvalPlan:
    """What to score on a catalog: label fields, held-out or all products, retrieval or not."""

    fields: tuple[str, ...]
    heldout: bool  # False: score every product (a test set of its own, or --all-items)
    retrieval: bool  # False where titles are class names (Fashion-MNIST), or when asked
    notes: tuple[str, ...] = field(default=())  # why, one line each
    label_names: dict = field(default_factory=dict)  # field -> label -> names: also scored with those names

    def kwargs(self) -> dict:
        """Keyword arguments for `evaluate`."""
        return {"label_fields": list(self.fields), "heldout": self.heldout, "retrieval": self.retrieval,
                "label_names": self.label_names or None}


def plan_eval(catalog: Catalog, fields: Sequence[str] | None = None, all_items: bool = False,
              retrieval: bool = True) -> EvalPlan:
    """The choices `fclip eval` makes for `catalog` (`fields=None`: `default_fields`).

    Fashion-MNIST (its rows, by `datasets.catalog_kind`, whatever the catalog's name) is a
    test set of its own: every product is scored,
    and its titles are its class names, so retrieval is off; its `label` is scored
    twice, as written and under `FMNIST_COMMON_NAMES`.

    >>> plan_eval(catalog).kwargs()                           # doctest: +SKIP
    {'label_fields': ['garment', 'colour', 'pattern'], 'heldout': True, 'retrieval': True, 'label_names': None}
    """
    fields = list(default_fields(catalog) if fields is None else fields)
    notes = []
    heldout = not all_items
    fmnist = catalog_kind(catalog) == "fmnist"  # by its rows, not its name
    if heldout and fmnist:
        heldout = False
        notes.append(f"{catalog.name} is a test set: every product is scored")
    if retrieval and "label" in fields:
        retrieval = False
        notes.append("titles are class names (field 'label'): no retrieval")
    names = {}
    if fmnist and "label" in fields:
        from fclip_workbench.data.datasets.fmnist import FMNIST_COMMON_NAMES
        present = set(str(v).strip() for v in catalog.table["label"])
        common = {k: v for k, v in FMNIST_COMMON_NAMES.items() if k in present}
        if common:
            names["label"] = common
            notes.append("label is also scored under common names (datasets.fmnist.FMNIST_COMMON_NAMES)")
    return EvalPlan(tuple(fields), heldout, retrieval, tuple(notes), names)


# ------------------------------------------------------------------ the report
def _md_cell(value: object) -> str:
    """One Markdown table cell: no newlines, `|` escaped."""
    text = " ".join(str(value).splitlines())
    return text.replace("\\", "\\\\").replace("|", "\\|")  # backslashes first, so `\|` stays escaped


@dataclass
class EvalReport:
    # columns: model, fingerprint, data, split_rule, split_seed, val_fraction, task, n, metric, value
    table: pd.DataFrame
    split: EvalSplit | None = None  # the products scored

    def to_markdown(self) -> str:
        t = self.table.copy()
        t["value"] = t["value"].map(lambda v: f"{v:.3f}")
        for col in ("split_seed", "val_fraction"):
            if col in t.columns:
                t[col] = t[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}")
        header = ("| " + " | ".join(_md_cell(c) for c in t.columns) + " |\n|" + "---|" * len(t.columns) + "\n")
        return header + "\n".join("| " + " | ".join(_md_cell(v) for v in row) + " |"
                                  for row in t.itertuples(index=False))

    def value(self, task: str, metric: str) -> float:
        hit = self.table[(self.table.task == task) & (self.table.metric == metric)]
        if hit.empty:
            raise KeyError(f"No {metric} for {task}; have {sorted(set(zip(self.table.task, self.table.metric)))}")
        return float(hit.value.iloc[0])

    def save(self, out: str | Path) -> tuple[Path, Path]:
        """Write eval.csv (formula-like strings quoted) and eval.md into `out`."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        safe = self.table.copy()
        for col in safe.columns:
            if not pd.api.types.is_numeric_dtype(safe[col]):  # object or str dtype
                safe[col] = safe[col].map(csv_escape)
        safe.to_csv(out / "eval.csv", index=False)
        (out / "eval.md").write_text(self.to_markdown() + "\n")
        return out / "eval.csv", out / "eval.md"


# ------------------------------------------------------------------ evaluate
def _labels(values: Sequence[object]) -> list[str]:
    return [str(v).strip() for v in values]


def evaluate(model: EmbeddingModel, catalog: Catalog, label_fields: Sequence[str] = (),
             retrieval: bool = True, n_retrieval: int = 1000, heldout: bool = True, val_fraction: float | None = None,
             seed: int | None = None, store: EmbeddingStore | None = None, progress: bool = True,
             rule: str | None = None, label_names: Mapping[str, Mapping[str, Sequence[str]]] | None = None
             ) -> EvalReport:
    """Score `model` on `catalog`; see the module docstring for the protocol and the split.

    `rule`, `seed`, `val_fraction` default to the model's recorded split (else
    title-group-v1, 0, 0.05). Raises `LeakageError` before embedding anything when
    a product to score was in the model's training set.
    """
    label_fields = list(label_fields)
    if label_names is not None and not isinstance(label_names, Mapping):
        raise FclipError("label_names must map a label field to {label: names}, e.g. "
                         f"{{'label': {{'trouser': ['trousers']}}}}; got {label_names!r}")
    label_names = dict(label_names or {})
    empty = [f for f, v in label_names.items() if not isinstance(v, Mapping) or not v]
    if empty:
        raise FclipError(f"label_names of field(s) {empty} must be a non-empty mapping {{label: names}}; "
                         f"got {[label_names[f] for f in empty]!r}")
    valid = catalog.attributes
    unknown = [f for f in label_fields if f not in valid]
    if unknown:
        raise FclipError(f"Unknown label field(s) {unknown} in catalog {catalog.name!r}; "
                         f"valid fields: {', '.join(valid) if valid else '(none: the catalog has no label columns)'}")
    unnamed = [f for f in label_names if f not in label_fields]
    if unnamed:
        raise FclipError(f"label_names describes field(s) {unnamed} that are not scored; scored: {label_fields}")
    if retrieval and n_retrieval < 2:
        raise FclipError(f"n_retrieval must be at least 2, got {n_retrieval}")
    found = model_split(model)
    split = choose_split(found[0] if found else None, heldout, rule, seed, val_fraction)
    rows = split.rows(catalog)
    n_scored = len(set(catalog.ids[int(r)] for r in rows))
    if n_scored < 2:
        what = "held-out products" if split.heldout else "products"
        hint = "use --all-items (heldout=False) or a larger catalog" if split.heldout else "use a larger catalog"
        raise FclipError(f"Only {n_scored} {what} in catalog {catalog.name!r} with {split.describe()}; {hint}")
    check_no_leakage(model, catalog, rows, split, found)

    sub = catalog.subset(rows, name=f"{catalog.name}-{'heldout' if split.heldout else 'all'}")
    label_of: dict[str, dict[str, str]] = {}  # field -> item id -> label (first row of an id wins)
    classes_of: dict[str, list[str]] = {}
    for fld in label_fields:
        classes = sorted({v for v in _labels(catalog.table[fld]) if v.lower() not in _MISSING_LABELS})
        of: dict[str, str] = {}
        for item_id, v in zip(sub.ids, _labels(sub.table[fld])):
            of.setdefault(item_id, v)
        n_labelled = sum(v in set(classes) for v in of.values())
        if not classes or n_labelled == 0:
            raise FclipError(f"Label field {fld!r} has no labelled products among the {n_scored} to score "
                             f"({split.describe()}); pick another field or more products")
        label_of[fld], classes_of[fld] = of, classes
        if fld in label_names:  # labels it does not name are prompted as themselves; a name for no label is an error
            label_names[fld] = check_names(classes, label_names[fld])  # normalised: iterators read once

    store = store or EmbeddingStore()
    images = embed_images(model, sub, store, progress=progress)
    img_row = images.row_of()
    data = f"{catalog.name} ({'held-out' if split.heldout else 'all'} products)"
    records: list[dict[str, Any]] = []

    def add(task: str, n: int, metrics: dict) -> None:
        records.extend({"model": model.name, "fingerprint": model.fingerprint[:12], "data": data,
                        "split_rule": split.rule, "split_seed": split.seed, "val_fraction": split.val_fraction,
                        "task": task, "n": n, "metric": k, "value": v} for k, v in metrics.items())

    if retrieval:
        texts = embed_texts(model, sub, store, progress=progress)
        txt_row = texts.row_of()
        both = list(dict.fromkeys(i for i in sub.ids if i in img_row and i in txt_row))[:n_retrieval]
        if len(both) < 2:
            raise FclipError(f"Retrieval needs at least 2 products with image and text; {sub.name} has {len(both)}")
        q = texts.vectors[[txt_row[i] for i in both]]  # (n, dim)
        g = images.vectors[[img_row[i] for i in both]]  # (n, dim)
        m = retrieval_metrics(q @ g.T, ks=(1, 5, 10))
        add("text-to-image", len(both), {k: m[k] for k in ("R@1", "R@5", "R@10", "HITS@5", "MRR")})

    for fld in label_fields:
        classes, of = classes_of[fld], label_of[fld]
        known = set(classes)
        ids = [i for i in images.ids if of.get(i, "") in known]  # unique: the catalog flags repeated ids
        if not ids:
            raise FclipError(f"No labelled product of field {fld!r} could be embedded ({images.summary()})")
        vectors = images.vectors[[img_row[i] for i in ids]]  # (n, dim)
        truth = [of[i] for i in ids]
        for names, suffix in ((None, ""), *(((label_names[fld], ", common names"),) if fld in label_names else ())):
            pred = ZeroShotClassifier(model, classes, names=names).predict(vectors)  # (n,) labels
            add(f"zero-shot {fld} ({len(classes)} classes{suffix})", len(ids),
                {"weighted F1": weighted_f1(truth, pred), "accuracy": float(np.mean(np.array(truth) == np.array(pred)))})
    return EvalReport(pd.DataFrame.from_records(records), split)
