"""Benchmark: does a confirmed batch's stated error ("expected wrong: k of N", 90 % interval) match the realised one?

Protocol. fclip-mini v1 image embeddings of KAGL, read from an embedding store opened read-only (only
the products that have a cached vector take part: the figures say how many). Field articleType
(every value in the catalog is a label). The labelling pool is the products fclip-mini trained on;
`--sizes` of them (200 and 1,000) are labelled at random with their catalog value (`--seeds` draws),
and a `Suggester` is fitted on them with the annotator's calibration items (`calibration_items` of
the labelled ids: the temperature is fitted on those, as `AnnotationSession` refits do). With
`--orders uncertainty` the labels come instead from a real `AnnotationSession` driven in the app's
default queue (least confident first, a calibration item every 5th place, refit every 5 labels).

Then model batches are drawn from products whose labels the suggester never saw, two ways:
- "held-out split": fclip-mini's recorded held-out products (never trained on by the image model);
- "unlabelled pool": every other cached product (what the app pages through: the unlabelled catalog).
For each label, pages 1..`--pages` of the `--batch` (24) unlabelled products with the highest
probability of that label (what `batch_candidates(label=...)` shows), all confirmed. Each batch's
stated error is `batch_error` of the suggester's probabilities of the label (what `confirm_batch`
reports); the realised error is how many of its products the catalog gives another value. Reported:
mean stated vs realised error rate, and the share of batches whose realised count lies in the stated
90 % interval (below / above it), over all batches, by stated error rate (a merchandiser confirms
the batches the model is sure of: rate <= 0.25) and by how many labels of the batch's value the
suggester was fitted on (>= 10: its probe has learnt the value; fewer: mostly zero-shot).

    nice -n 5 python benchmarks/bench_batch_error.py --cache /work/main/data/cache/embeddings.sqlite \
        [--data ../shared/data/kagl] [--sizes 200 1000] [--seeds 3] [--batch 24] [--pages 3] \
        [--orders random uncertainty] [--level 0.9]
"""
from __future__ import annotations

import argparse
import collections
import logging
import statistics
import time

import numpy as np

MISSING = ("", "nan", "none")
TAUGHT = 10  # labels of a value, among those fitted on, past which its probabilities are mostly the probe's
BINS = ((0.0, 0.05), (0.05, 0.25), (0.25, 0.5), (0.5, 1.01))  # stated error rate bins
log = logging.getLogger("bench_batch_error")


def cached_vectors(model, catalog, store) -> tuple[np.ndarray, np.ndarray]:
    """(catalog rows, (n, dim) vectors) of the products whose image vector `store` holds for `model`."""
    from fclip_workbench.embedding.embed import image_model_key

    rows = catalog.usable_rows("image")
    digests = store.file_digests([catalog.image_path(int(r)) for r in rows])
    got = store.get_many(image_model_key(model), "image", {d for d in digests if d})
    keep = [(int(r), d) for r, d in zip(rows, digests) if d and d in got]
    print(f"{len(keep)} of {len(rows)} KAGL products have a cached {model.name} vector")
    return np.array([r for r, _ in keep]), np.stack([got[d] for _, d in keep]).astype(np.float32)


def truth(catalog, rows, fld: str) -> list[str | None]:
    out = []
    for r in rows:
        v = str(catalog.table.at[int(r), fld]).strip()
        out.append(None if v.lower() in MISSING else v)
    return out


def random_fit(labels, tw, ids, x, y, pick):
    """A Suggester fitted on the products `pick` with their values, the annotator's calibration items marked."""
    from fclip_workbench.labelling.suggest import Suggester, calibration_items

    cal = calibration_items([ids[i] for i in pick])
    return Suggester(labels=labels, text_weights=tw).fit(x[pick], [y[i] for i in pick], calibration=cal)


def queue_fits(catalog, fld, labels, tw, ids, x, y, pool, sizes: list[int], seed: int):
    """An `AnnotationSession` (the app's default queue, refit every 5 labels) over the `pool` products, driven
    by a simulated annotator who types each catalog value; after each of `sizes` labels, yields (n, the
    suggester's (len(x), L) probabilities, classes, the labelled positions)."""
    import tempfile
    from pathlib import Path

    from fclip_workbench.embedding.embed import EmbeddingResult
    from fclip_workbench.labelling.annotate import DEFAULT_REFIT_EVERY, AnnotationSession
    from fclip_workbench.labelling.labels import LabelStore
    from fclip_workbench.labelling.suggest import Suggester
    from fclip_workbench.labelling.taxonomy import Taxonomy

    pool_ids = [ids[i] for i in pool]
    pos = {item: k for k, item in enumerate(ids)}
    sub = catalog.subset([catalog.row_of(i) for i in pool_ids], name="kagl-pool")
    of = dict(zip(pool_ids, (y[i] for i in pool)))
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(Path(tmp) / "labels.sqlite", catalog=sub)
        s = AnnotationSession(sub, fld, store, Suggester(labels=labels, text_weights=tw),
                              EmbeddingResult(pool_ids, x[pool]), taxonomy=Taxonomy.from_values(fld, labels),
                              annotator="bench", refit_every=DEFAULT_REFIT_EVERY, seed=seed, background=False)
        done: list[str] = []
        for n in range(1, max(sizes) + 1):
            if s.current is None:
                break
            done.append(s.current.item_id)
            s.correct(of[s.current.item_id])
            if n in sizes:
                s.refit(wait=True)  # on every label so far, as a confirm would see after the next refit
                st = s.suggester.snapshot()
                yield n, np.asarray(st.predict_proba(x), np.float32), list(st.labels), np.array([pos[i] for i in done])
        s.close()
        store.close()


def batches(proba, classes, y, candidates, size: int, pages: int, level: float) -> list[tuple]:
    """(label, page, n, stated BatchError, realised wrong) of the model batches over `candidates` (positions)."""
    from fclip_workbench.labelling.batch_error import batch_error

    out = []
    yc = np.array([y[i] for i in candidates], dtype=object)
    for j, label in enumerate(classes):
        order = candidates[np.argsort(-proba[candidates, j], kind="stable")]
        truth_sorted = yc[np.argsort(-proba[candidates, j], kind="stable")]
        for page in range(pages):
            sl = slice(page * size, (page + 1) * size)
            rows = order[sl]
            if not len(rows):
                break
            err = batch_error(np.clip(proba[rows, j].astype(np.float64), 0, 1), level=level)
            out.append((label, page + 1, len(rows), err, int((truth_sorted[sl] != label).sum())))
    return out


def summary(rows: list[tuple]) -> str:
    if not rows:
        return "| 0 | | | | | |"
    stated = [r[3].rate for r in rows]
    real = [r[4] / r[2] for r in rows]
    inside = np.mean([r[3].contains(r[4]) for r in rows])
    below = np.mean([r[4] < r[3].low for r in rows])
    above = np.mean([r[4] > r[3].high for r in rows])
    tot_s = sum(r[3].expected_wrong for r in rows)
    tot_r = sum(r[4] for r in rows)
    return (f"| {len(rows)} | {statistics.mean(stated):.3f} | {statistics.mean(real):.3f} | {tot_s:.0f} / {tot_r} | "
            f"**{inside:.3f}** | {below:.3f} / {above:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="KAGL folder (default: paths.find_dataset('kagl'))")
    ap.add_argument("--model", default="fclip-mini@1")
    ap.add_argument("--cache", default=None, help="embedding store, opened read-only (default: the workbench's)")
    ap.add_argument("--field", default="articleType")
    ap.add_argument("--sizes", nargs="+", type=int, default=[200, 1000])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=24, help="products on a batch page (the app's DEFAULT_BATCH_SIZE)")
    ap.add_argument("--pages", type=int, default=3, help="pages per label (each confirmed in full)")
    ap.add_argument("--orders", nargs="+", default=["random"], choices=["random", "uncertainty"],
                    help="how the labels are drawn: at random, or by an AnnotationSession in the app's queue")
    ap.add_argument("--level", type=float, default=0.9)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from fclip_workbench.analysis.evaluate import recorded_heldout
    from fclip_workbench.analysis.zeroshot import class_weights
    from fclip_workbench.data.datasets import open_catalog
    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.paths import find_dataset

    data = args.data or find_dataset("kagl")
    if data is None:
        raise SystemExit("KAGL not found: pass --data or see data/README.md (fclip data fetch kagl)")
    t0 = time.perf_counter()
    catalog = open_catalog(data)
    model = load_model(args.model, progress=False)
    _, held_rows, train_ids = recorded_heldout(model, catalog)
    held = {catalog.ids[int(r)] for r in held_rows}
    with EmbeddingStore(args.cache, readonly=True) as store:
        rows, x = cached_vectors(model, catalog, store)
    ids = [catalog.ids[int(r)] for r in rows]
    y = truth(catalog, rows, args.field)
    ok = np.array([v is not None for v in y])
    labels = sorted({v for v in truth(catalog, range(len(catalog)), args.field) if v is not None})
    tw = class_weights(model, labels)  # (L, dim)
    is_held = np.array([i in held for i in ids])
    is_train = np.array([i in train_ids for i in ids])
    pool = np.flatnonzero(is_train & ok)
    print(f"{model.name} ({model.fingerprint[:12]}), field {args.field} ({len(labels)} labels): labelling pool "
          f"{len(pool)} training products, {int((is_held & ok).sum())} held-out-split products; batches of "
          f"{args.batch}, {args.pages} pages per label, {args.level:.0%} intervals ({time.perf_counter() - t0:.0f} s)")

    results: dict[tuple, list[tuple]] = {}

    def page(order, n, seed, proba, classes, pick, t):
        taught = collections.Counter(y[i] for i in pick)  # labels of each value the suggester was fitted on
        unlabelled = ok.copy()
        unlabelled[pick] = False
        for where, mask in (("held-out split", unlabelled & is_held), ("unlabelled pool", unlabelled)):
            got = batches(proba, classes, y, np.flatnonzero(mask), args.batch, args.pages, args.level)
            results.setdefault((order, n, where), []).extend(r + (taught[r[0]],) for r in got)
        print(f"{order} {n} labels seed {seed}: fitted and paged in {time.perf_counter() - t:.0f} s", flush=True)

    for order in args.orders:
        for seed in range(args.seeds):
            t = time.perf_counter()
            if order == "random":
                for n in args.sizes:
                    pick = np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False)
                    s = random_fit(labels, tw, ids, x, y, pick)
                    page(order, n, seed, np.asarray(s.predict_proba(x), np.float32), [str(c) for c in s.classes_],
                         pick, t)
                    t = time.perf_counter()
            else:  # this seed's 90 % of the pool, as bench_suggest's queue runs
                sub = np.sort(np.random.default_rng(seed).choice(pool, size=int(0.9 * len(pool)), replace=False))
                for n, proba, classes, pick in queue_fits(catalog, args.field, labels, tw, ids, x, y, sub,
                                                          sorted(args.sizes), seed):
                    page(order, n, seed, proba, classes, pick, t)
                    t = time.perf_counter()

    print(f"\nstated vs realised error of model batches ({args.batch} per page, {args.pages} pages per label, "
          f"{args.seeds} draws; interval {args.level:.0%}):")
    head = ("| labels | batches from | stated rate | batches | mean stated rate | mean realised rate | "
            "wrong stated / realised | realised in interval | below / above |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for (order, n, where), rows_ in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        tag = f"{n} ({order})"
        print(f"| {tag} | {where} | all " + summary(rows_))
        for lo, hi in BINS:
            part = [r for r in rows_ if lo <= r[3].rate < hi]
            print(f"| | | {lo:.2f}–{min(hi, 1):.2f} " + summary(part))
        for name, keep in ((f"label with >= {TAUGHT} labels", lambda r: r[5] >= TAUGHT),
                           (f"label with < {TAUGHT} labels", lambda r: r[5] < TAUGHT)):
            print(f"| | | {name} " + summary([r for r in rows_ if keep(r)]))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
