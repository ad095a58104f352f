"""Benchmark: do the team figures recover what is true? A simulated team with known error rates on KAGL.

Protocol. `--products` KAGL products (seeded draw) are labelled for `--field` by a team whose annotators
have known error rates (`--rates`). A wrong answer is a *confusable* value: drawn from the zero-shot
model's top-5 values for that product other than the true one (uniform over the taxonomy when the model
has none), which is how people err. Every product goes to one annotator drawn at random, the overlap share
(`--overlap`, the store's hash) to two distinct ones, through the real label store (a temporary SQLite
file): `answer` for overlap products, `set` for the others; the lead adjudicates disagreements with the
truth. Then:

- each annotator's accuracy against the settled labels (`store.agreement`) next to the true 1 - rate,
  with a 95 % Wilson interval: the interval should hold the true value;
- Cohen's kappa per pair and Krippendorff's alpha (the pairs with the worst annotators must agree least:
  Spearman correlation of kappa with the product of the two true accuracies);
- consensus over every labelled product: majority vote and CROWDLAB (`store.consensus` with out-of-fold
  suggester probabilities: 5 folds, each fitted on the other folds' majority labels), accuracy against the
  truth, and how well CROWDLAB's quality score ranks the wrong consensus labels first (AUROC);
- the number of wrong labels in the store stated from the measured accuracies, against the realised one.

    python benchmarks/bench_team.py [--data ../shared/data/kagl] [--model fclip-mini@1] [--field articleType]
        [--products 4000] [--overlap 0.25] [--rates 0.02 0.05 0.1 0.2 0.35] [--seed 0] [--cache PATH]
"""
from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "kagl"))
    ap.add_argument("--model", default="fclip-mini@1")
    ap.add_argument("--field", default="articleType")
    ap.add_argument("--products", type=int, default=4000)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.02, 0.05, 0.10, 0.20, 0.35])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="embedding store (default: the workbench's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from fclip_workbench.data.datasets import open_catalog
    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.labelling.labels import LabelStore
    from fclip_workbench.labelling.suggest import Suggester
    from fclip_workbench.labelling.taxonomy import Taxonomy

    rng = np.random.default_rng(args.seed)
    cat = open_catalog(args.data)
    keep = [r for r in cat.usable_rows("image") if str(cat.table.at[int(r), args.field]).strip()]
    rows = np.sort(rng.choice(np.asarray(keep), size=min(args.products, len(keep)), replace=False))
    cat = cat.subset(rows, name=f"{cat.name}-team{len(rows)}")
    model = load_model(args.model, progress=False)
    emb = embed_images(model, cat, store=EmbeddingStore(args.cache), progress=False)
    truth = dict(zip(cat.ids, cat.table[args.field].astype(str)))
    ids = [i for i in emb.ids]
    X = np.asarray(emb.vectors, np.float32)  # (n, dim)
    classes = sorted(set(truth[i] for i in ids))
    zero = Suggester(model=model, labels=classes).fit()
    top5 = np.argsort(-zero.predict_proba(X), axis=1)[:, :5]  # (n, 5) confusable values per product
    names = [f"a{k}" for k in range(len(args.rates))]
    rate = dict(zip(names, args.rates))
    print(f"{model.name}, {len(ids)} KAGL products, field {args.field} ({len(classes)} values), overlap "
          f"{args.overlap:.0%}, annotators (true error rates): "
          + ", ".join(f"{n} {r:.0%}" for n, r in rate.items()))

    def answer_of(name: str, row: int) -> str:
        true = truth[ids[row]]
        if rng.random() >= rate[name]:
            return true
        near = [classes[j] for j in top5[row] if classes[j] != true]
        return str(rng.choice(near if near else [c for c in classes if c != true]))

    with tempfile.TemporaryDirectory(prefix="fclip-bench-team-") as tmp:
        store = LabelStore(Path(tmp) / "labels.sqlite", catalog=cat)
        store.grant("lead", "lead", by="lead")
        store.set_overlap(args.field, args.overlap, by="lead")
        store.set_taxonomy(args.field, Taxonomy(args.field, classes))
        overlap = set(store.overlap_items(args.field, ids))
        t = time.perf_counter()
        given: dict[str, list[tuple[str, str]]] = {}
        for row, item in enumerate(ids):
            who = rng.choice(names, size=2 if item in overlap else 1, replace=False)
            for name in map(str, who):
                value = answer_of(name, row)
                given.setdefault(item, []).append((name, value))
                if item in overlap:
                    store.answer(item, args.field, value, annotator=name)
                else:
                    store.set(item, args.field, value, annotator=name)
        pending = store.pending_adjudication(args.field)
        for item in pending["item_id"]:
            store.adjudicate(item, args.field, truth[item], annotator="lead")
        t_write = time.perf_counter() - t
        ag = store.agreement(args.field)
        print(f"written through the store in {t_write:.1f} s: {len(ids)} products, {len(overlap)} answered twice, "
              f"{ag.agreed} agreed, {len(pending)} adjudicated")

        print("\naccuracy against the settled labels (overlap products) vs the truth:")
        acc = ag.accuracy.set_index("annotator")
        inside = 0
        for name in names:
            k, n = int(acc.loc[name, "correct"]), int(acc.loc[name, "items"])
            lo, hi = wilson(k, n)
            ok = lo <= 1 - rate[name] <= hi
            inside += ok
            print(f"  {name}: true {1 - rate[name]:.3f}, measured {k / n:.3f} [{lo:.3f}, {hi:.3f}] on {n}"
                  f"{'' if ok else '  <- outside'}")
        print(f"  {inside} of {len(names)} 95% intervals hold the true accuracy")

        kap = ag.kappa
        product = [(1 - rate[a]) * (1 - rate[b]) for a, b in zip(kap["annotator_a"], kap["annotator_b"])]
        rho = spearmanr(kap["kappa"], product).statistic
        print(f"\nCohen's kappa per pair: {', '.join(f'{a}-{b} {k:.2f}' for a, b, k in kap[['annotator_a', 'annotator_b', 'kappa']].itertuples(index=False))}")
        print(f"  Spearman(kappa, product of true accuracies) = {rho:.2f}; Krippendorff's alpha {ag.alpha:.3f}")

        # consensus: majority vote and CROWDLAB with out-of-fold suggester probabilities
        vote = store.consensus(args.field)
        folds = rng.integers(0, 5, len(ids))
        majority = dict(zip(vote["item_id"], vote["consensus_label"]))
        probs = np.zeros((len(ids), len(classes)), np.float32)
        for f in range(5):
            train = np.flatnonzero(folds != f)
            s = Suggester(model=model, labels=classes).fit(X[train], [majority[ids[r]] for r in train])
            test = np.flatnonzero(folds == f)
            probs[test] = s.predict_proba(X[test])
        pred = pd.DataFrame(probs, index=ids, columns=classes)
        t = time.perf_counter()
        crowd = store.consensus(args.field, pred_probs=pred)
        t_crowd = time.perf_counter() - t
        for name, table in (("majority vote", vote), ("CROWDLAB", crowd)):
            right = (table["consensus_label"] == table["item_id"].map(truth))
            print(f"\nconsensus by {name}: {right.mean():.4f} of {len(table)} products right"
                  + (f" ({t_crowd:.1f} s)" if name == "CROWDLAB" else ""))
        wrong = (crowd["consensus_label"] != crowd["item_id"].map(truth)).to_numpy()
        if wrong.any() and not wrong.all():
            print(f"  CROWDLAB quality ranks the wrong ones first: AUROC {roc_auc_score(wrong, -crowd['quality']):.3f}")

        labels = store.labels(args.field)
        realised = int((labels["value"] != labels["item_id"].map(truth)).sum())
        measured = acc["accuracy"].to_dict()
        single = labels[~labels["item_id"].isin(overlap)]
        stated = float(sum(1 - measured.get(a, float("nan")) for a in single["annotator"]))
        print(f"\nwrong labels in the store: stated {stated:.0f} (from each annotator's measured accuracy, on the "
              f"{len(single)} products labelled once) + the agreed-but-wrong ones; realised {realised} of {len(labels)}")
        store.close()


if __name__ == "__main__":
    main()
