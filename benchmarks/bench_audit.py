"""Label audit on planted errors, near-duplicate groups and outliers: fclip-mini image embeddings of KAGL.

Planted errors: 2% of the products' articleType labels are changed to another
class drawn uniformly at random (--seeds). `--split heldout` audits only the
model's held-out products (~2,000, many classes of 1-5 items: the hard case);
`all` every product. Probabilities: "probe" = 5-fold cross-validated
`LinearProbe`s alone (C chosen once on the noisy labels; the old method),
"ensemble" = `audit.label_probabilities` (probe x leave-one-out class centroids x
kNN votes from one shared kNN graph, geometric mean; the default). Each ranking
(cleanlab confident learning, normalized margin, self-confidence) lists judged
items first (classes of >= 3 items) and items of smaller classes after them; the
score is the share of flipped products among the top N of that list, N = the
number flipped (precision at N). `judgeable` = the share of flips whose (noisy)
class has >= 3 items: the most any list that ranks small classes apart can find.

Near-duplicates (cosine >= 0.95, exact FAISS range search + connected components)
and kNN outliers (k=10) over every embedded product, timed.

    .venv/bin/python benchmarks/bench_audit.py [--store PATH] [--cached-only] [--max-items N]
    .venv/bin/python benchmarks/bench_audit.py --model fclip-mini --split heldout --seeds 0,1,2,3,4,5,6,7,8,9 --skip-neighbours
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from fclip_workbench.analysis.audit import (ISSUE_METHODS, MIN_CLASS_SIZE, find_label_issues, label_probabilities,
                                   near_duplicates, outliers, plant_label_errors)
from fclip_workbench.data.datasets.kagl import load_kagl
from fclip_workbench.embedding.embed import embed_images
from bench_probes import cached
from fclip_workbench.embedding.models import load_model
from fclip_workbench.paths import find_dataset
from fclip_workbench.analysis.probe_eval import heldout_rows, labelled, out_of_fold
from fclip_workbench.embedding.store import EmbeddingStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="embedding store (default: the workbench's, data/cache/embeddings.sqlite)")
    ap.add_argument("--max-items", type=int, default=0, help="products for the label audit (0: all; random, seed 0)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--share", type=float, default=0.02)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cached-only", action="store_true", help="audit only products already embedded in --store")
    ap.add_argument("--dup-thresholds", default="0.95,0.98")
    ap.add_argument("--model", default="fclip-mini@1", help="model spec (the README's first figures: v1)")
    ap.add_argument("--split", choices=("all", "heldout"), default="all",
                    help="label audit over every product, or only the model's held-out products")
    ap.add_argument("--skip-neighbours", action="store_true", help="skip the near-duplicate and outlier timings")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = EmbeddingStore(args.store)
    model = load_model(args.model, progress=False)
    kagl = load_kagl(find_dataset("kagl"))
    rows = np.arange(len(kagl)) if args.split == "all" else np.flatnonzero(heldout_rows(model, kagl, kagl.ids))
    if args.cached_only:
        rows = rows[cached(model, kagl, rows, store)]
    if args.max_items:
        rows = np.sort(np.random.default_rng(0).permutation(rows)[:args.max_items])
    sub = kagl.subset(rows, name="kagl")
    res = embed_images(model, sub, store, progress=True)
    pos = dict(zip(sub.ids, range(len(sub))))
    y = sub.table["articleType"].astype(str).str.strip().to_numpy()[[pos[i] for i in res.ids]]
    keep = labelled(y)
    X, y = res.vectors[keep], y[keep]  # (n, 256), (n,)
    print(f"KAGL products ({args.split}): {len(X)} with an articleType ({len(np.unique(y))} classes), "
          f"{len(res.failures)} not embeddable, of {len(kagl)}; space {model.space.describe()}")

    records = []
    with threadpool_limits(args.threads):
        for seed in [int(s) for s in args.seeds.split(",")]:
            noisy, flipped = plant_label_errors(y, args.share, seed)
            _, counts = np.unique(noisy, return_counts=True)
            size_of = dict(zip(np.unique(noisy), counts))
            judgeable = float(np.mean([size_of[noisy[i]] >= MIN_CLASS_SIZE for i in flipped]))
            for signals in ("probe", "ensemble"):
                t = time.perf_counter()
                probs = (out_of_fold(X, noisy, cv=args.cv) if signals == "probe"
                         else label_probabilities(X, noisy, cv=args.cv))  # (n, n_classes), sorted class order
                t_cv = time.perf_counter() - t
                for method in ISSUE_METHODS:
                    t = time.perf_counter()
                    issues = find_label_issues(X, noisy, method=method, pred_probs=probs)
                    top = issues.position.to_numpy()[:len(flipped)]
                    records.append({"seed": seed, "signals": signals, "method": method, "n_flipped": len(flipped),
                                    "precision_at_n": len(np.intersect1d(top, flipped)) / len(flipped),
                                    "judgeable": judgeable, "n_flagged": int(issues.is_issue.sum()),
                                    "recall_of_flagged": float(np.isin(flipped,
                                                                       issues.position[issues.is_issue]).mean()),
                                    "probs_s": t_cv, "rank_s": time.perf_counter() - t})
    table = pd.DataFrame.from_records(records)
    print(f"\n## Planted label errors ({args.share:.0%} of articleType flipped), {args.cv}-fold probe probabilities")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = table.groupby(["signals", "method"]).agg(precision_at_n=("precision_at_n", "mean"),
                                                       sd=("precision_at_n", "std"), judgeable=("judgeable", "mean"),
                                                       probs_s=("probs_s", "mean"))
    print(f"\n## Mean over seeds {args.seeds}")
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    if args.skip_neighbours:
        return

    rows = np.arange(len(kagl))  # near-duplicates and outliers: every product (--cached-only: every embedded one)
    if args.cached_only:
        rows = rows[cached(model, kagl, rows, store)]
    everything = embed_images(model, kagl.subset(rows, name="kagl"), store, progress=True)
    vecs, ids = everything.vectors, everything.ids
    for threshold in [float(x) for x in args.dup_thresholds.split(",")]:
        t = time.perf_counter()
        groups = near_duplicates(vecs, ids, threshold=threshold)
        t_dup = time.perf_counter() - t
        print(f"\n## Near-duplicates (cosine >= {threshold}) over {len(ids)} products: {t_dup:.1f} s, "
              f"{groups.group.nunique() if len(groups) else 0} groups, {len(groups)} products in them, "
              f"largest group {groups.group_size.max() if len(groups) else 0}")
    t = time.perf_counter()
    odd = outliers(vecs, ids, k=10)
    print(f"\n## kNN outliers (k=10) over {len(ids)} products: {time.perf_counter() - t:.1f} s; top 5:")
    print(odd.head(5).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
