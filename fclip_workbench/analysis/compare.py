"""Compare two models on the same held-out products: what changed, for which products, and is it real.

`compare(A, B, catalog)` scores both models on one set of products: the held-out side of A's recorded
split (else B's, else the default title-group split), minus every product either model trained on (the
count refused is reported). It gives

- zero-shot weighted F1 per label field and F1 per class, each with B - A and a paired bootstrap 95 %
  interval over products (`compare_stats`);
- text→image retrieval (R@1, R@10, MRR) over the same products, with intervals;
- slices: per value of gender / baseColour / usage, per query length (words in the title), and packshot
  against street photo (CCP crops), when CCP is given;
- the predictions and retrievals that flipped (right under one model, wrong under the other);
- Fashion-MNIST forgetting (names as written and common names), when a Fashion-MNIST catalog is given;
- cross-domain retrieval (CCP crops → KAGL packshots, precision@10 by label, `crossdomain.py`).

Each model is scored in its own embedding space (its own text tower for prompts and queries); nothing
mixes vectors of A and B, so A and B may differ in width. The same model twice is refused.
`CompareReport.findings()` lists the significant differences, largest first.

Example:
    >>> report = compare(load_model("fclip-mini@1"), load_model("fclip-mini@2"), load_kagl(root))  # doctest: +SKIP
    >>> report.findings()[0]                                                                     # doctest: +SKIP
    'zero-shot subCategory weighted F1: 0.772 → 0.844 (+0.072, 95% CI +0.05 to +0.09)'
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fclip_workbench.analysis.compare_stats import (DEFAULT_BOOT, PairedCI, encode, mean_ci, paired_bootstrap,
                                                    per_class_bootstrap)
from fclip_workbench.analysis.evaluate import (_MISSING_LABELS, EvalSplit, choose_split, default_fields, model_split,
                                               plan_eval, trained_ids_in)
from fclip_workbench.analysis.metrics import ranks_of_relevant
from fclip_workbench.analysis.zeroshot import ZeroShotClassifier
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.embed import EmbeddingResult, embed_images, embed_texts
from fclip_workbench.embedding.models import EmbeddingModel
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.errors import FclipError

log = logging.getLogger(__name__)

SLICE_FIELDS = ("gender", "baseColour", "usage")  # catalog columns sliced by, where present
MIN_SLICE = 30  # smallest slice reported (products)
MAX_SLICE_VALUES = 8  # most frequent values per slice column
SLICE_BOOT = 300  # bootstrap resamples per slice (cheaper than the headline figures)
QUERY_LENGTHS = ((1, 3), (4, 5), (6, 7), (8, 99))  # words in the title
N_FLIPS = 12  # flipped products / queries listed each way


@dataclass
class FieldResult:
    """Zero-shot results of one label field for A and B on the same products."""

    field: str
    ids: list[str]  # (n,) products scored
    truth: list[str]
    pred_a: list[str]
    pred_b: list[str]
    f1: PairedCI  # weighted F1
    per_class: pd.DataFrame  # class, n, A, B, delta, lo, hi


@dataclass
class CompareReport:
    """Everything `compare` measured; `compare_report.write_report` draws it."""

    models: tuple[str, str]
    fingerprints: tuple[str, str]
    data: str
    split: EvalSplit
    n_split: int  # products on the held-out side of the split
    n_refused: int  # of those, trained on by A or B (not scored)
    n_trained: int  # products of the catalog either model trained on
    fields: dict[str, FieldResult]
    retrieval: dict[str, PairedCI] = field(default_factory=dict)
    queries: pd.DataFrame | None = None  # item_id, text, rank_a, rank_b, top_a, top_b
    slices: pd.DataFrame | None = None  # slice, value, metric, n, A, B, delta, lo, hi
    fmnist: dict[str, PairedCI] = field(default_factory=dict)
    crossdomain: pd.DataFrame | None = None  # ccp_label, n, A, B, delta
    crossdomain_ci: PairedCI | None = None
    crops: pd.DataFrame | None = None  # item_id, ccp_label, image, p_a, p_b, top_a, top_b
    images: dict[str, str] = field(default_factory=dict)  # item id -> image path (thumbnails)
    crop_images: dict = field(default_factory=dict)  # item id -> PIL image of a crop whose file was temporary
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_scored(self) -> int:
        return self.n_split - self.n_refused

    def summary(self) -> pd.DataFrame:
        """One row per headline figure: section, metric, n, A, B, delta, lo, hi, significant."""
        rows = [("zero-shot", f"{f} weighted F1", r.f1) for f, r in self.fields.items()]
        rows += [("retrieval", f"text→image {k}", ci) for k, ci in self.retrieval.items()]
        rows += [("Fashion-MNIST", k, ci) for k, ci in self.fmnist.items()]
        if self.crossdomain_ci is not None:
            rows.append(("cross-domain", "CCP crop → KAGL P@10", self.crossdomain_ci))
        return pd.DataFrame([{"section": s, "metric": m, "n": ci.n, "A": ci.a, "B": ci.b, "delta": ci.delta,
                              "lo": ci.lo, "hi": ci.hi, "significant": ci.significant} for s, m, ci in rows])

    def findings(self) -> list[str]:
        """The significant differences (interval excludes 0), largest |B - A| first, one line each."""
        t = self.summary()
        t = t[t.significant].reindex(t[t.significant].delta.abs().sort_values(ascending=False).index)
        return [f"{r.section}: {r.metric}: {r.A:.3f} → {r.B:.3f} ({r.delta:+.3f}, 95% CI {r.lo:+.3f} to {r.hi:+.3f}, "
                f"n={r.n})" for r in t.itertuples()]


# ------------------------------------------------------------------ checks before slow work
def check_inputs(model_a: EmbeddingModel, model_b: EmbeddingModel, catalog: Catalog,
                 fields: Sequence[str]) -> None:
    """One `FclipError` line for the same model twice or a field the catalog lacks (before any embedding)."""
    if model_a.fingerprint == model_b.fingerprint:
        raise FclipError(f"A and B are the same model ({model_a.name!r} and {model_b.name!r}, fingerprint "
                         f"{model_a.fingerprint[:12]}): compare two different models")
    missing = [f for f in fields if f not in catalog.attributes]
    if missing:
        raise FclipError(f"Catalog {catalog.name!r} has no field(s) {missing}; its fields: "
                         f"{', '.join(catalog.attributes) or '(none)'}")
    if not fields:
        raise FclipError(f"No label field to compare on in catalog {catalog.name!r}: pass fields=[...]")


def shared_heldout(model_a: EmbeddingModel, model_b: EmbeddingModel, catalog: Catalog
                   ) -> tuple[EvalSplit, np.ndarray, int, int]:
    """(split, rows to score, n refused from the split, n trained): held out by the split and by both models."""
    found = [model_split(m) for m in (model_a, model_b)]
    record = next((f[0] for f in found if f is not None), None)
    split = choose_split(record)
    rows = split.rows(catalog)
    trained: set[str] = set()
    for f in found:
        if f is not None:
            got = trained_ids_in(catalog, *f)
            if got:
                trained |= got
    ids = catalog.ids
    keep = np.array([r for r in rows if ids[int(r)] not in trained], dtype=np.int64)
    if len(keep) < 2:
        raise FclipError(f"Only {len(keep)} products of catalog {catalog.name!r} are held out from both "
                         f"{model_a.name!r} and {model_b.name!r} ({split.describe()}, {len(trained)} trained on)")
    return split, keep, len(rows) - len(keep), len(trained)


# ------------------------------------------------------------------ pieces
def _labels_of(catalog: Catalog, fld: str) -> tuple[list[str], dict[str, str]]:
    """(classes over the whole catalog, item id -> label) of field `fld`; missing labels left out."""
    values = [str(v).strip() for v in catalog.table[fld]]
    classes = sorted({v for v in values if v.lower() not in _MISSING_LABELS})
    of: dict[str, str] = {}
    for item_id, v in zip(catalog.ids, values):
        if v.lower() not in _MISSING_LABELS:
            of.setdefault(item_id, v)
    return classes, of


def _zero_shot(models: tuple[EmbeddingModel, EmbeddingModel], images: Sequence[EmbeddingResult],
               classes: list[str], label_of: dict[str, str], fld: str, n_boot: int, seed: int,
               names=None) -> FieldResult:
    """Zero-shot predictions of both models on the products both could embed, with paired statistics."""
    rows = [im.row_of() for im in images]
    ids = [i for i in images[0].ids if i in rows[1] and i in label_of]
    if not ids:
        raise FclipError(f"No labelled product of field {fld!r} was embedded by both models")
    preds = [ZeroShotClassifier(m, classes, names=names).predict(im.vectors[[r[i] for i in ids]])  # (n,)
             for m, im, r in zip(models, images, rows)]
    truth = [label_of[i] for i in ids]
    (t, a, b), all_classes = encode([truth, preds[0], preds[1]])
    ci = paired_bootstrap(t, a, b, len(all_classes), n_boot, seed)
    per = per_class_bootstrap(t, a, b, len(all_classes), min(n_boot, 500), seed)
    table = pd.DataFrame([{"class": c, "n": p.n, "A": p.a, "B": p.b, "delta": p.delta, "lo": p.lo, "hi": p.hi}
                          for c, p in zip(all_classes, per) if p.n > 0]).sort_values("n", ascending=False)
    return FieldResult(fld, ids, truth, preds[0], preds[1], ci, table.reset_index(drop=True))


def _retrieval(models, images, texts, sub: Catalog, n_retrieval: int, n_boot: int, seed: int
               ) -> tuple[dict[str, PairedCI], pd.DataFrame]:
    """Each product's title queries the images of the same `n_retrieval` products, in each model's space."""
    img_rows = [im.row_of() for im in images]
    txt_rows = [tx.row_of() for tx in texts]
    both = [i for i in dict.fromkeys(sub.ids) if all(i in r for r in img_rows + txt_rows)][:n_retrieval]
    if len(both) < 2:
        raise FclipError(f"Retrieval needs at least 2 products embedded by both models; {len(both)} were")
    ranks, tops = [], []
    for im, tx, ir, tr in zip(images, texts, img_rows, txt_rows):
        sims = tx.vectors[[tr[i] for i in both]] @ im.vectors[[ir[i] for i in both]].T  # (n, n)
        ranks.append(np.array([r.min() for r in ranks_of_relevant(sims)]))  # (n,) 1-based
        tops.append(np.argsort(-sims, axis=1, kind="stable")[:, :3])  # (n, 3)
    ra, rb = ranks
    metrics = {"R@1": mean_ci(ra <= 1, rb <= 1, n_boot, seed), "R@10": mean_ci(ra <= 10, rb <= 10, n_boot, seed),
               "MRR": mean_ci(1.0 / ra, 1.0 / rb, n_boot, seed)}
    text_of = dict(zip(sub.ids, sub.texts))
    queries = pd.DataFrame({"item_id": both, "text": [text_of[i] for i in both], "rank_a": ra, "rank_b": rb,
                            "top_a": [[both[j] for j in row] for row in tops[0]],
                            "top_b": [[both[j] for j in row] for row in tops[1]]})
    return metrics, queries


def _length_bucket(text: str) -> str:
    n = len(str(text).split())
    for lo, hi in QUERY_LENGTHS:
        if lo <= n <= hi:
            return f"{lo}-{hi} words" if hi < 99 else f"{lo}+ words"
    return "0 words"


def _slices(sub: Catalog, res: FieldResult | None, queries: pd.DataFrame | None, slice_fields: Sequence[str],
            seed: int) -> pd.DataFrame:
    """F1 of the first field and R@10 per slice value (values with at least MIN_SLICE products)."""
    out = []
    table = sub.table.assign(item_id=sub.ids).drop_duplicates("item_id").set_index("item_id")
    cols = {c: table[c].astype(str).str.strip() for c in slice_fields if c in table.columns}
    cols["query length"] = pd.Series([_length_bucket(t) for t in sub.texts], index=sub.ids).groupby(level=0).first()

    def add(name, value, metric, ci):
        out.append({"slice": name, "value": value, "metric": metric, "n": ci.n, "A": ci.a, "B": ci.b,
                    "delta": ci.delta, "lo": ci.lo, "hi": ci.hi, "significant": ci.significant})

    for name, col in cols.items():
        counts = col.value_counts()
        values = [v for v in counts.index[:MAX_SLICE_VALUES] if counts[v] >= MIN_SLICE and v.lower() not in
                  _MISSING_LABELS]
        for v in values:
            if res is not None:
                pick = [k for k, i in enumerate(res.ids) if col.get(i) == v]
                if len(pick) >= MIN_SLICE:
                    (t, a, b), cl = encode([[res.truth[k] for k in pick], [res.pred_a[k] for k in pick],
                                            [res.pred_b[k] for k in pick]])
                    add(name, v, f"{res.field} weighted F1", paired_bootstrap(t, a, b, len(cl), SLICE_BOOT, seed))
            if queries is not None:
                q = queries[queries.item_id.map(col.get) == v]
                if len(q) >= MIN_SLICE:
                    add(name, v, "text→image R@10", mean_ci(q.rank_a <= 10, q.rank_b <= 10, SLICE_BOOT, seed))
    return pd.DataFrame(out)


def _fmnist(models, fmnist: Catalog, store, progress, n_boot, seed) -> dict[str, PairedCI]:
    """Zero-shot weighted F1 on Fashion-MNIST (every product: a test set), names as written and common names."""
    plan = plan_eval(fmnist)
    if "label" not in plan.fields:
        raise FclipError(f"{fmnist.name!r} is not a Fashion-MNIST catalog (no field 'label')")
    images = tuple(embed_images(m, fmnist, store, progress=progress) for m in models)
    classes, label_of = _labels_of(fmnist, "label")
    out = {"names as written": _zero_shot(models, images, classes, label_of, "label", n_boot, seed).f1}
    if plan.label_names.get("label"):
        out["common names"] = _zero_shot(models, images, classes, label_of, "label", n_boot, seed,
                                         names=plan.label_names["label"]).f1
    return out


def _crossdomain(models, images, sub: Catalog, ccp_root, store, progress, n_boot, seed, crops_dir):
    """Cross-domain P@10 (CCP crops → held-out KAGL packshots) by CCP label, and the crops' table."""
    from fclip_workbench.analysis.crossdomain import ccp_crops, crop_precision, load_mapping

    if "articleType" not in sub.attributes:
        raise FclipError(f"Cross-domain retrieval needs KAGL's articleType; catalog {sub.name!r} has none")
    mapping = load_mapping()
    crops, unmapped = ccp_crops(ccp_root, crops_dir, mapping)
    types = dict(zip(sub.ids, (str(v).strip() for v in sub.table["articleType"])))
    results = []
    crop_res = [embed_images(m, crops, store, progress=progress) for m in models]
    common = [i for i in crop_res[0].ids if i in crop_res[1].row_of()]
    label_of = dict(zip(crops.ids, crops.table["ccp_label"]))
    for im, cr in zip(images, crop_res):
        g_ids = im.ids
        r = cr.row_of()
        results.append(crop_precision(cr.vectors[[r[i] for i in common]], [label_of[i] for i in common],
                                      im.vectors, [types.get(i, "") for i in g_ids], mapping))
    ga = results[0].by_label()
    gb = results[1].by_label()
    table = pd.DataFrame({"n": ga["n"], "A": ga["P@10"], "B": gb["P@10"]})
    table["delta"] = table.B - table.A
    table = table.reset_index().sort_values("n", ascending=False)
    path_of = dict(zip(crops.ids, (str(crops.image_path(k)) for k in range(len(crops)))))
    rows = pd.DataFrame({"item_id": common, "ccp_label": [label_of[i] for i in common],
                         "image": [path_of[i] for i in common], "p_a": results[0].hits, "p_b": results[1].hits,
                         "top_a": [[images[0].ids[j] for j in row[:3]] for row in results[0].top],
                         "top_b": [[images[1].ids[j] for j in row[:3]] for row in results[1].top]})
    ci = mean_ci(results[0].hits, results[1].hits, n_boot, seed)
    note = (f"cross-domain: {len(common)} garment crops of held-out CCP photos; CCP labels without a KAGL "
            f"mapping, not queried: " + (", ".join(f"{k} ({v})" for k, v in sorted(unmapped.items())) or "none"))
    return table, ci, rows, note


# ------------------------------------------------------------------ compare
def compare(model_a: EmbeddingModel, model_b: EmbeddingModel, catalog: Catalog, fields: Sequence[str] | None = None,
            store: EmbeddingStore | None = None, n_boot: int = DEFAULT_BOOT, seed: int = 0, n_retrieval: int = 1000,
            fmnist: Catalog | None = None, ccp: str | Path | None = None, slice_fields: Sequence[str] = SLICE_FIELDS,
            progress: bool = False, crops_dir: str | Path | None = None) -> CompareReport:
    """Score A and B on the same held-out products of `catalog` (see the module docstring).

    `fields=None`: `evaluate.default_fields`. `fmnist`: a Fashion-MNIST catalog for forgetting; `ccp`: the
    CCP folder for the street-photo slice and cross-domain retrieval (needs KAGL's articleType).
    """
    fields = list(default_fields(catalog) if fields is None else fields)
    check_inputs(model_a, model_b, catalog, fields)
    if ccp is not None and not (Path(ccp) / "photos").is_dir():
        raise FclipError(f"CCP folder {ccp} has no photos/ folder; pass the Clothing Co-Parsing folder or no ccp")
    if ccp is not None and "articleType" not in catalog.attributes:
        raise FclipError(f"Cross-domain retrieval needs KAGL's articleType; catalog {catalog.name!r} has none")
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(what: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[what] = round(now - clock, 2)
        clock = now

    models = (model_a, model_b)
    split, rows, n_refused, n_trained = shared_heldout(model_a, model_b, catalog)
    sub = catalog.subset(rows, name=f"{catalog.name}-heldout")
    store = store or EmbeddingStore()
    images = tuple(embed_images(m, sub, store, progress=progress) for m in models)
    texts = tuple(embed_texts(m, sub, store, progress=progress) for m in models)
    lap("embed")
    results = {}
    for fld in fields:
        classes, label_of = _labels_of(catalog, fld)
        results[fld] = _zero_shot(models, images, classes, label_of, fld, n_boot, seed)
    lap("zero-shot")
    metrics, queries = _retrieval(models, images, texts, sub, n_retrieval, n_boot, seed)
    lap("retrieval")
    report = CompareReport((model_a.name, model_b.name), (model_a.fingerprint[:12], model_b.fingerprint[:12]),
                           catalog.name, split, len(rows) + n_refused, n_refused, n_trained, results, metrics,
                           queries)
    report.images = {i: str(sub.image_path(k)) for k, i in enumerate(sub.ids)}
    report.slices = _slices(sub, results[fields[0]], queries, slice_fields, seed)
    lap("slices")
    if fmnist is not None:
        report.fmnist = _fmnist(models, fmnist, store, progress, n_boot, seed)
        lap("Fashion-MNIST")
    if ccp is not None:
        with tempfile.TemporaryDirectory() as tmp:
            table, ci, crop_rows, note = _crossdomain(models, images, sub, ccp, store, progress, n_boot, seed,
                                                      crops_dir or tmp)
            report.crossdomain, report.crossdomain_ci, report.notes = table, ci, report.notes + [note]
            report.images.update(zip(crop_rows.item_id, crop_rows.image))
            report.crops = crop_rows
            if crops_dir is None:  # the report's thumbnails are read from the crops: keep them in memory
                from PIL import Image

                report.crop_images = {i: Image.open(p).copy() for i, p in zip(crop_rows.item_id, crop_rows.image)}
            report.slices = pd.concat([report.slices, _photo_slice(crop_rows, ci)], ignore_index=True)
        lap("cross-domain")
    report.seconds = seconds
    return report


def _photo_slice(crop_rows: pd.DataFrame, ci: PairedCI) -> pd.DataFrame:
    """The street-photo slice: CCP crops' P@10 against KAGL packshots."""
    return pd.DataFrame([{"slice": "photo", "value": "street (CCP crops)", "metric": "crop→packshot P@10",
                          "n": ci.n, "A": ci.a, "B": ci.b, "delta": ci.delta, "lo": ci.lo, "hi": ci.hi,
                          "significant": ci.significant}])


def flipped_predictions(res: FieldResult, n: int = N_FLIPS) -> tuple[pd.DataFrame, int, int]:
    """Products right under one model and wrong under the other (item_id, truth, pred_a, pred_b, flip), with
    the number fixed by B and broken by B."""
    t = pd.DataFrame({"item_id": res.ids, "truth": res.truth, "pred_a": res.pred_a, "pred_b": res.pred_b})
    ok_a, ok_b = t.truth == t.pred_a, t.truth == t.pred_b
    fixed = t[~ok_a & ok_b].assign(flip="fixed by B")
    broken = t[ok_a & ~ok_b].assign(flip="broken by B")
    return pd.concat([fixed.head(n), broken.head(n)], ignore_index=True), int(len(fixed)), int(len(broken))


def flipped_queries(queries: pd.DataFrame, k: int = 10, n: int = N_FLIPS) -> tuple[pd.DataFrame, int, int]:
    """Queries whose product is in the top k under one model only, with their counts."""
    in_a, in_b = queries.rank_a <= k, queries.rank_b <= k
    fixed = queries[~in_a & in_b].assign(flip="found by B only")
    broken = queries[in_a & ~in_b].assign(flip="found by A only")
    return pd.concat([fixed.head(n), broken.head(n)], ignore_index=True), int(len(fixed)), int(len(broken))
