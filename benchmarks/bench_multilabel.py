"""Calibration of multi-valued suggestions on KAGL: a multi-label field built from three KAGL columns.

KAGL has no per-garment attribute sets (Fashionpedia here is the ontology only, CCP has masks, not
attributes), so the field "tags" is honestly a construction: each product's set is {its baseColour, its
usage, its season} (three values from three columns; the suggester is not told that). Prompt vectors for
zero-shot, per-value probes fitted on labelled pool products, Platt calibration on other pool products,
then the binary ECE of every (product, value) pair on the model's held-out products.

    nice -n 10 python benchmarks/bench_multilabel.py --model fclip-mini@1 --labelled 2000
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench_suggest import vectors_for

COLUMNS = ("baseColour", "usage", "season")


def main() -> None:
    from fclip_workbench.analysis.evaluate import choose_split, model_split
    from fclip_workbench.analysis.zeroshot import class_weights
    from fclip_workbench.data.datasets import open_catalog
    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.labelling.suggest_multi import MultiSuggester, binary_ece, labels_matrix
    from fclip_workbench.paths import find_dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fclip-mini@1")
    ap.add_argument("--labelled", type=int, default=2000, help="pool products labelled (probes)")
    ap.add_argument("--calibration", type=int, default=1000, help="other pool products (Platt calibration)")
    args = ap.parse_args()
    catalog = open_catalog(find_dataset("kagl"))
    model = load_model(args.model, progress=False)
    record, train_ids = model_split(model)
    held_rows = choose_split(record).rows(catalog)
    pool_rows = np.array([r for r in catalog.usable_rows("image") if catalog.ids[int(r)] in train_ids])
    pool_rows = np.random.default_rng(0).permutation(pool_rows)[:args.labelled + args.calibration]
    store = EmbeddingStore(None)
    sets = {}
    for i, item in enumerate(catalog.ids):
        vals = [str(catalog.table[c].iloc[i]).strip() for c in COLUMNS]
        if all(v and v.lower() not in ("nan", "none", "na") for v in vals):
            sets[item] = vals
    values = sorted({v for s in sets.values() for v in s})
    ev_ids, ev_x = vectors_for(model, catalog, held_rows, store, "kagl-heldout")
    pool_ids, pool_x = vectors_for(model, catalog, pool_rows, store, "kagl-pool")
    keep_ev = [i for i, item in enumerate(ev_ids) if item in sets]
    keep_pool = [i for i, item in enumerate(pool_ids) if item in sets]
    y_ev = labels_matrix([sets[ev_ids[i]] for i in keep_ev], values)
    y_pool = labels_matrix([sets[pool_ids[i]] for i in keep_pool], values)
    x_ev, x_pool = ev_x[keep_ev], pool_x[keep_pool]
    n = args.labelled
    tw = class_weights(model, values)
    print(f"{model.name}: field tags = {{{', '.join(COLUMNS)}}}, {len(values)} values, mean set size "
          f"{y_ev.sum(1).mean():.2f}; {n} labelled, {len(x_pool) - n} calibration, {len(x_ev)} held-out products")
    for name, fit in (("zero-shot (prior scale)", None), ("zero-shot + Platt", "zs"), ("probes", "probe"),
                      ("probes + Platt", "probe+cal")):
        t = time.perf_counter()
        s = MultiSuggester(values, tw)
        if fit == "zs":
            s.zs = (1.0, 0.0)
            s.fit(x_pool[:0], y_pool[:0])
            from fclip_workbench.labelling.suggest_multi import _platt
            s.zs = _platt(s._cos(x_pool[:n]), y_pool[:n])
        elif fit is not None:
            s.fit(x_pool[:n], y_pool[:n])
            if fit == "probe+cal":
                s.calibrate(x_pool[n:], y_pool[n:])
        p = s.predict_proba(x_ev)
        hit = ((p >= 0.5) == y_ev.astype(bool))
        exact = hit.all(1).mean()
        print(f"{name:26s} ECE={binary_ece(p, y_ev):.4f}  pair accuracy={hit.mean():.4f}  exact set={exact:.3f}  "
              f"({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
