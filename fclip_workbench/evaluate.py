"""`fclip eval`: the FashionCLIP paper's protocol on any model and catalog.

- retrieval, text to image: each held-out product's title queries the images of
  `n_retrieval` held-out products; Recall@1/5/10, HITS@5 and MRR;
- zero-shot classification: each label field's values become prompt-ensembled
  classes; weighted F1 over held-out products.

Held-out products are those `splits.is_validation` puts aside (the same hash
split training uses, so a model is never scored on products it trained on);
`heldout=False` scores every product (e.g. Fashion-MNIST's test set).

Example:
    >>> report = evaluate(load_model("fclip-mini"), load_kagl(root), ["articleType"])   # doctest: +SKIP
    >>> print(report.to_markdown())                                                   # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .catalog import Catalog
from .embed import embed_images, embed_texts
from .errors import FclipError
from .metrics import retrieval_metrics, weighted_f1
from .models import EmbeddingModel
from .splits import is_validation
from .store import EmbeddingStore
from .zeroshot import ZeroShotClassifier


@dataclass
class EvalReport:
    table: pd.DataFrame  # columns: model, fingerprint, data, task, n, metric, value

    def to_markdown(self) -> str:
        t = self.table.copy()
        t["value"] = t["value"].map(lambda v: f"{v:.3f}")
        header = "| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns) + "\n"
        return header + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in t.itertuples(index=False))

    def value(self, task: str, metric: str) -> float:
        hit = self.table[(self.table.task == task) & (self.table.metric == metric)]
        if hit.empty:
            raise KeyError(f"No {metric} for {task}; have {sorted(set(zip(self.table.task, self.table.metric)))}")
        return float(hit.value.iloc[0])

    def save(self, out: str | Path) -> tuple[Path, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(out / "eval.csv", index=False)
        (out / "eval.md").write_text(self.to_markdown() + "\n")
        return out / "eval.csv", out / "eval.md"


def evaluate(model: EmbeddingModel, catalog: Catalog, label_fields: Sequence[str] = (),
             retrieval: bool = True, n_retrieval: int = 1000, heldout: bool = True, val_fraction: float = 0.05,
             seed: int = 0, store: EmbeddingStore | None = None, progress: bool = True) -> EvalReport:
    """Score `model` on `catalog`; see the module docstring for the protocol."""
    unknown = [f for f in label_fields if f not in catalog.table.columns]
    if unknown:
        raise FclipError(f"Unknown label field(s) {unknown}; catalog fields: {catalog.attributes}")
    store = store or EmbeddingStore()
    rows = np.arange(len(catalog))
    if heldout:
        rows = rows[is_validation(catalog.ids, val_fraction, seed)]
    sub = catalog.subset(rows, name=f"{catalog.name}-{'heldout' if heldout else 'all'}")
    images = embed_images(model, sub, store, progress=progress)
    img_row = images.row_of()
    data = f"{catalog.name} ({'held-out' if heldout else 'all'} products, split seed {seed})"
    records = []

    def add(task: str, n: int, metrics: dict) -> None:
        records.extend({"model": model.name, "fingerprint": model.fingerprint[:12], "data": data, "task": task,
                        "n": n, "metric": k, "value": v} for k, v in metrics.items())

    if retrieval:
        texts = embed_texts(model, sub, store, progress=progress)
        txt_row = texts.row_of()
        both = [i for i in sub.ids if i in img_row and i in txt_row][:n_retrieval]
        if len(both) < 2:
            raise FclipError(f"Retrieval needs at least 2 products with image and text; {sub.name} has {len(both)}")
        q = texts.vectors[[txt_row[i] for i in both]]  # (n, dim)
        g = images.vectors[[img_row[i] for i in both]]  # (n, dim)
        m = retrieval_metrics(q @ g.T, ks=(1, 5, 10))
        add("text-to-image", len(both), {k: m[k] for k in ("R@1", "R@5", "R@10", "HITS@5", "MRR")})

    for fld in label_fields:
        labels_all = catalog.table[fld].astype(str).str.strip()
        classes = sorted(v for v in labels_all.unique() if v and v.lower() not in ("nan", "none"))
        clf = ZeroShotClassifier(model, classes)
        y = sub.table.set_index("item_id")[fld].astype(str).str.strip()
        ids = [i for i in images.ids if y.get(i, "") in set(classes)]
        pred = clf.predict(images.vectors[[img_row[i] for i in ids]])
        truth = [y[i] for i in ids]
        add(f"zero-shot {fld} ({len(classes)} classes)", len(ids),
            {"weighted F1": weighted_f1(truth, pred), "accuracy": float(np.mean(np.array(truth) == np.array(pred)))})
    return EvalReport(pd.DataFrame.from_records(records))


def add_eval_parser(sub) -> None:
    from .cli import add_data_args

    p = sub.add_parser("eval", help="retrieval and zero-shot metrics (FashionCLIP protocol)")
    add_data_args(p)
    p.add_argument("--fields", nargs="*", default=None,
                   help="label fields for zero-shot F1 (default: KAGL articleType subCategory baseColour; "
                        "FMNIST label; teaching garment colour pattern)")
    p.add_argument("--all-items", action="store_true", help="score every product, not the held-out split")
    p.add_argument("--no-retrieval", action="store_true")
    p.add_argument("--n-retrieval", type=int, default=1000, help="held-out products in the retrieval gallery")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for eval.csv and eval.md")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .cli import model_from_args, open_from_args

    cat = open_from_args(args)
    fields = args.fields
    if fields is None:
        fields = ["label"] if "label" in cat.table.columns else [
            f for f in ("articleType", "subCategory", "baseColour", "garment", "colour", "pattern")
            if f in cat.table.columns]
    heldout = not args.all_items and not cat.name.startswith("fmnist")
    t0 = time.perf_counter()
    model = model_from_args(args, cat)
    report = evaluate(model, cat, fields, retrieval=not args.no_retrieval and "label" not in fields,
                      n_retrieval=args.n_retrieval, heldout=heldout, val_fraction=args.val_fraction, seed=args.seed,
                      store=EmbeddingStore(args.cache), progress=not args.quiet)
    print(report.to_markdown())
    if args.out:
        csv_path, md_path = report.save(args.out)
        print(f"wrote {csv_path} and {md_path}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0
