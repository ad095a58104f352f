"""Benchmark: label suggestions (Suggester) on KAGL with fclip-mini: quality after 0/50/200/1,000 labels, and speed.

Protocol. Evaluation products: fclip-mini's recorded held-out split of KAGL
(`evaluate.recorded_heldout`: 1,997 products it never
trained on). Labelling pool: KAGL products fclip-mini trained on (its frozen
image embeddings are "seen", but the probe's labels are new to it, as an
annotator's would be). For each field (articleType, baseColour) the label set
is every value of that field in the catalog; n random pool items are
"labelled" with their catalog value (3 seeds; mean +- sd) and the Suggester is
fitted on them, then scored on the evaluation products: top-1, top-3,
weighted F1, and the 15-bin expected calibration error before calibration
(CLIP's logit scale 100, temperature 1) and after (scale and temperature fitted
on the labels).

Calibration under the annotator's queue. Random draws are not what the app
does: it queues by uncertainty (`AnnotationSession`'s default order) and refits
every `DEFAULT_REFIT_EVERY` labels, so the labels a temperature is fitted on are
the hard ones. So a real `AnnotationSession` (on a temporary SQLite label store,
over the labelling pool) is driven by a simulated annotator who types each
product's catalog value, in the app's default queue order and in random order
(`--queue-orders`); after 50/200/1,000 labels its suggester is scored on the
held-out products the same way (ECE target <= 0.05 under the app's queue).

Labels to a target F1 (`--queue`). The same simulated sessions, in every queue order that picks by
the model ("uncertainty", "diversity", "activelab") and "random", 3 draws each, scored every `--step`
labels up to `--max-labels`: how many labels each order needs before the held-out weighted F1 reaches
`--target-f1` (default: what random order reaches at `--target-at` labels, mean of its draws). A draw that
never reaches it counts as "> max". `--annotator-noise e`: the simulated annotator types a wrong value
(uniform among the others) with probability e on each decision, so that re-labelling ("activelab") has
something to fix; 0 by default (every label is the catalog value). It also times each order's first
product (the queue built from the suggestions at the start of the session, and the item shown).

Speed: suggestions (top 3) for all 39,953 KAGL products over the articleType
labels from stored embeddings; a refit after one new label on top of 1,000.

    python benchmarks/bench_suggest.py [--data DIR] [--store PATH]
        [--sizes 50 200 1000] [--seeds 3] [--pool-limit N] [--speed-only]
        [--queue-orders uncertainty random] [--queue-fields articleType] [--queue-seeds 3] [--queue-only]
        [--queue [--target-f1 F | --target-at 500] [--step 25] [--max-labels 1000] [--annotator-noise 0]]

The first run embeds what it needs into --store (all KAGL images: minutes to an
hour on 2 CPU cores); later runs read the store.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np

MISSING = ("", "nan", "none")
log = logging.getLogger("bench_suggest")


def vectors_for(model, catalog, rows, store, name: str):
    """(ids, (n, dim) vectors) of `catalog` rows, embedded or read from `store`."""
    from fclip_workbench.embedding.embed import embed_images

    res = embed_images(model, catalog.subset(rows, name=name), store, num_workers=1, progress=True)
    return res.ids, res.vectors


def label_table(catalog, fld: str) -> dict[str, str]:
    of: dict[str, str] = {}
    for item_id, v in zip(catalog.ids, catalog.table[fld]):
        v = str(v).strip()
        if v.lower() not in MISSING:
            of.setdefault(item_id, v)
    return of


def scores(s, x, y_idx, labels) -> dict[str, float]:
    from fclip_workbench.analysis.metrics import expected_calibration_error, top_k_accuracy, weighted_f1

    p = s.predict_proba(x)  # (n, L)
    return {"top1": top_k_accuracy(p, y_idx, 1), "top3": top_k_accuracy(p, y_idx, 3),
            "wF1": weighted_f1([labels[i] for i in y_idx], [labels[i] for i in p.argmax(1)]),
            "ECE": expected_calibration_error(p, y_idx, 15)}


def fmt(vals: list[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} +- {statistics.stdev(vals):.3f}"


def all_kagl_vectors(model, catalog, store) -> np.ndarray | None:
    """(39,953, dim) stored vectors of every KAGL image, or None when some are not embedded yet."""
    from fclip_workbench.embedding.embed import image_model_key

    rows = catalog.usable_rows("image")
    digests = store.file_digests([catalog.image_path(int(r)) for r in rows])
    got = store.get_many(image_model_key(model), "image", {d for d in digests if d})
    if any(d is None or d not in got for d in digests):
        return None
    return np.stack([got[d] for d in digests]).astype(np.float32)


def app_queue_order() -> str:
    """The queue order the annotator app uses by default (read from AnnotationSession, not restated)."""
    import inspect

    from fclip_workbench.labelling.annotate import AnnotationSession

    return inspect.signature(AnnotationSession).parameters["order"].default


def queue_run(model, catalog, fld: str, labels: list[str], tw, pool_rows, pool_ids, pool_x, of: dict, order: str,
              sizes: list[int], seed: int, x_ev, y_ev, noise: float = 0.0) -> dict[int, dict[str, float]]:
    """Scores on the held-out products after each of `sizes` labels, given by a simulated annotator in an
    `AnnotationSession` queued by `order` (refit every DEFAULT_REFIT_EVERY labels, as in the app); the
    annotator types a wrong value with probability `noise`. Also "first_s" (seconds to the first product)
    and "relabels" (decisions on products labelled before)."""
    import tempfile
    from pathlib import Path

    from fclip_workbench.labelling.annotate import DEFAULT_REFIT_EVERY, AnnotationSession
    from fclip_workbench.embedding.embed import EmbeddingResult
    from fclip_workbench.labelling.labels import LabelStore
    from fclip_workbench.labelling.suggest import Suggester
    from fclip_workbench.labelling.taxonomy import Taxonomy

    keep = [i for i, item in enumerate(pool_ids) if item in of]  # products with a value to type
    keep = sorted(np.random.default_rng(seed).choice(keep, size=int(0.9 * len(keep)), replace=False))  # this seed's pool
    sub = catalog.subset(pool_rows, name="kagl-pool")
    out: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(Path(tmp) / "labels.sqlite", catalog=sub)
        session = AnnotationSession(sub, fld, store, Suggester(labels=labels, text_weights=tw),
                                    EmbeddingResult([pool_ids[i] for i in keep], pool_x[keep]),
                                    taxonomy=Taxonomy.from_values(fld, labels), annotator="bench", order="random",
                                    refit_every=DEFAULT_REFIT_EVERY, seed=seed, background=False)
        t = time.perf_counter()
        session.set_order(order)  # the queue from the zero-shot suggestions, as when a session opens
        first_s = time.perf_counter() - t
        rng = np.random.default_rng(1000 + seed)  # the annotator's slips
        relabels = 0
        t = time.perf_counter()
        for n in range(1, max(sizes) + 1):
            if session.current is None:
                break
            value = of[session.current.item_id]
            relabels += session.current.current is not None
            if noise and rng.random() < noise:
                value = labels[(labels.index(value) + 1 + rng.integers(len(labels) - 1)) % len(labels)]
            session.correct(value)
            if n in sizes:
                if n % DEFAULT_REFIT_EVERY:  # refitted inline on every DEFAULT_REFIT_EVERY-th label already
                    session.refit(wait=True)
                out[n] = scores(session.suggester, x_ev, y_ev, labels)
        print(f"queue {order} seed {seed}: {n} labels ({relabels} re-labels) in {time.perf_counter() - t:.0f} s, "
              f"first product in {first_s:.3f} s", flush=True)
        out[0] = {"first_s": first_s, "relabels": relabels}
        session.close()
        store.close()
    return out


def labels_to_target(curve: dict[int, float], target: float) -> int | None:
    """The first number of labels whose weighted F1 reaches `target` ({labels: F1}), None if none does."""
    return next((n for n in sorted(curve) if curve[n] >= target - 1e-9), None)


def print_labels_to_target(args, queue_out) -> None:
    """One line per field and order: labels to the target F1, mean +- sd over the draws."""
    for fld in dict.fromkeys(f for f, *_ in queue_out):
        curves: dict[str, dict[int, dict[int, float]]] = {}  # order -> seed -> {labels: wF1}
        first: dict[str, list[float]] = {}
        relabels: dict[str, list[int]] = {}
        for f, order, seed, n, m in queue_out:
            if f != fld:
                continue
            if n == 0:
                first.setdefault(order, []).append(m["first_s"])
                relabels.setdefault(order, []).append(m["relabels"])
            else:
                curves.setdefault(order, {}).setdefault(seed, {})[n] = m["wF1"]
        target = args.target_f1
        how = "given"
        if target is None:
            target = statistics.mean(c[args.target_at] for c in curves["random"].values())
            how = f"random order's at {args.target_at} labels"
        print(f"\n{fld}: labels to a held-out weighted F1 of {target:.3f} ({how}); scored every {args.step} labels up "
              f"to {args.max_labels}; annotator noise {args.annotator_noise}:")
        for order, by_seed in curves.items():
            hits = [labels_to_target(by_seed[s], target) for s in sorted(by_seed)]
            draws = ", ".join(str(h) if h is not None else f">{args.max_labels}" for h in hits)
            got = [h for h in hits if h is not None]
            if len(got) == len(hits):
                mean = f"{statistics.mean(got):.0f}±{statistics.stdev(got) if len(got) > 1 else 0:.0f}"
            else:
                mean = f">{args.max_labels} ({len(got)} of {len(hits)} draws reached it)"
            f1_end = [by_seed[s][max(by_seed[s])] for s in sorted(by_seed)]
            print(f"order={order} labels_to_target={mean} (draws: {draws}) target_f1={target:.3f} "
                  f"wF1@{max(next(iter(by_seed.values())))}={fmt(f1_end)} re-labels={relabels[order]} "
                  f"first_product_s={max(first[order]):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="KAGL folder (default: paths.find_dataset('kagl'))")
    ap.add_argument("--model", default="fclip-mini@1")  # the README's figures were measured with v1
    ap.add_argument("--store", default=None, help="embedding store (default: the workbench's, data/cache/embeddings.sqlite)")
    ap.add_argument("--fields", nargs="+", default=["articleType", "baseColour"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[50, 200, 1000])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--pool-limit", type=int, default=None,
                    help="label from only the first N training products (catalog order); default all")
    ap.add_argument("--queue-orders", nargs="*", default=None,
                    help="annotator queue orders to measure calibration under (default: the app's default and random; "
                         "none: skip)")
    ap.add_argument("--queue-fields", nargs="+", default=None, help="fields for the queue runs (default: --fields)")
    ap.add_argument("--queue-seeds", type=int, default=3,
                    help="seeds per queue order: each draws 90%% of the pool (and, in random order, the permutation)")
    ap.add_argument("--queue-only", action="store_true", help="only the queue runs (no random-draw table, no speed)")
    ap.add_argument("--queue", action="store_true",
                    help="labels each queue order needs to reach --target-f1 (implies --queue-only; default orders "
                         "uncertainty diversity activelab random, field articleType)")
    ap.add_argument("--target-f1", type=float, default=None,
                    help="weighted F1 on the held-out products to reach (default: random order's at --target-at)")
    ap.add_argument("--target-at", type=int, default=500, help="labels at which random order sets the target")
    ap.add_argument("--step", type=int, default=25, help="--queue: score every STEP labels")
    ap.add_argument("--max-labels", type=int, default=1000, help="--queue: labels per session at most")
    ap.add_argument("--annotator-noise", type=float, default=0.0,
                    help="share of decisions the simulated annotator gets wrong (0: always the catalog value)")
    ap.add_argument("--speed-only", action="store_true",
                    help="articleType, 1,000 labels, 1 seed: just enough for the speed lines")
    args = ap.parse_args()
    if args.speed_only:
        args.fields, args.sizes, args.seeds, args.queue_orders = ["articleType"], [1000], 1, []
    if args.queue:
        args.queue_only = True
        if args.queue_orders is None:
            args.queue_orders = ["uncertainty", "diversity", "activelab", "random"]
        if args.queue_fields is None:
            args.queue_fields = ["articleType"]
        args.fields = args.queue_fields
        if args.target_f1 is None and "random" not in args.queue_orders:
            raise SystemExit("--queue without --target-f1 sets the target from random order: add random to "
                             "--queue-orders or give --target-f1")
        if not 0 < args.step <= args.max_labels or (args.target_f1 is None and args.target_at % args.step):
            raise SystemExit(f"--step must be 1..--max-labels and divide --target-at (got {args.step})")
        args.sizes = sorted(set(range(args.step, args.max_labels + 1, args.step)) | set(args.sizes)
                            | ({args.target_at} if args.target_f1 is None else set()))
    if not 0 <= args.annotator_noise < 1:
        raise SystemExit(f"--annotator-noise must be in [0, 1) (got {args.annotator_noise})")
    if args.queue_orders is None:
        args.queue_orders = list(dict.fromkeys([app_queue_order(), "random"]))
    logging.basicConfig(level=logging.WARNING)

    from fclip_workbench.data.datasets import open_catalog
    from fclip_workbench.analysis.evaluate import recorded_heldout
    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.paths import find_dataset
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.labelling.suggest import Suggester
    from fclip_workbench.analysis.zeroshot import class_weights

    data = args.data or find_dataset("kagl")
    if data is None:
        raise SystemExit("KAGL not found: pass --data or see data/README.md (fclip data fetch kagl)")
    catalog = open_catalog(data)
    model = load_model(args.model, progress=False)
    record, held_rows, train_ids = recorded_heldout(model, catalog)  # (1,997,); refuses a product it trained on
    pool_rows = np.array([r for r in catalog.usable_rows("image") if catalog.ids[int(r)] in train_ids])
    if args.pool_limit:
        pool_rows = pool_rows[:args.pool_limit]
    store = EmbeddingStore(args.store)
    print(f"{model.name} ({model.fingerprint[:12]}), catalog {catalog.name}: {len(held_rows)} held-out products "
          f"({record.rule}, seed {record.seed}, fraction {record.val_fraction}) to score; labelling pool "
          f"{len(pool_rows)} training products; store {args.store}")
    ev_ids, ev_x = vectors_for(model, catalog, held_rows, store, "kagl-heldout")
    pool_ids, pool_x = vectors_for(model, catalog, pool_rows, store, "kagl-pool")

    rows_out = []
    queue_out = []
    suggesters = {}
    for fld in dict.fromkeys(args.fields + (args.queue_fields or [])):
        of = label_table(catalog, fld)
        labels = sorted(set(of.values()))
        pos = {v: i for i, v in enumerate(labels)}
        t = time.perf_counter()
        tw = class_weights(model, labels)  # (L, dim)
        t_text = time.perf_counter() - t
        ev_keep = [i for i, item in enumerate(ev_ids) if item in of]
        x_ev, y_ev = ev_x[ev_keep], np.array([pos[of[ev_ids[i]]] for i in ev_keep])
        pool_keep = np.array([i for i, item in enumerate(pool_ids) if item in of])
        print(f"\n{fld}: {len(labels)} labels (prompt vectors in {t_text:.1f} s), {len(ev_keep)} products scored, "
              f"{len(pool_keep)} in the labelling pool")
        if fld in (args.queue_fields or args.fields):
            for order in args.queue_orders:
                for seed in range(args.queue_seeds):
                    res = queue_run(model, catalog, fld, labels, tw, pool_rows, pool_ids, pool_x, of, order,
                                    args.sizes, seed, x_ev, y_ev, noise=args.annotator_noise)
                    queue_out += [(fld, order, seed, n, m) for n, m in res.items()]
        if args.queue_only or fld not in args.fields:
            continue
        zero = Suggester(labels=labels, text_weights=tw).fit()
        m = scores(zero, x_ev, y_ev, labels)
        rows_out.append((fld, "zero-shot", {k: [v] for k, v in m.items()}, None))
        for n in args.sizes:
            acc: dict[str, list[float]] = {}
            raw_ece = []
            for seed in range(args.seeds):
                pick = np.random.default_rng(seed).choice(pool_keep, size=min(n, len(pool_keep)), replace=False)
                y = [of[pool_ids[i]] for i in pick]
                s = Suggester(labels=labels, text_weights=tw).fit(pool_x[pick], y)
                for k, v in scores(s, x_ev, y_ev, labels).items():
                    acc.setdefault(k, []).append(v)
                raw = Suggester(labels=labels, text_weights=tw, calibrate=False).fit(pool_x[pick], y)
                raw_ece.append(scores(raw, x_ev, y_ev, labels)["ECE"])
                if fld == "articleType" and n == max(args.sizes) and seed == 0:
                    suggesters[fld] = (s, labels, tw, pool_keep, pick, of)
            rows_out.append((fld, f"{n} labels", acc, raw_ece))

    if args.queue:
        print_labels_to_target(args, queue_out)
    if queue_out and not args.queue:
        app = app_queue_order()
        print(f"\ncalibration under the annotator's queue (AnnotationSession, refit every 5 labels; the app's default "
              f"queue is {app!r}); scored on the held-out products:")
        print("| field | queue | labels | top-1 | top-3 | ECE |")
        print("|---|---|---|---|---|---|")
        for fld in dict.fromkeys(f for f, *_ in queue_out):
            for order in args.queue_orders:
                for n in args.sizes:
                    ms = [m for f, o, _, k, m in queue_out if f == fld and o == order and k == n]
                    if ms:
                        print(f"| {fld} | {order}{' (app default)' if order == app else ''} | {n} | "
                              f"{fmt([m['top1'] for m in ms])} | {fmt([m['top3'] for m in ms])} | "
                              f"{fmt([m['ECE'] for m in ms])} |")
            last = [m["ECE"] for f, o, _, k, m in queue_out if f == fld and o == app and k == max(args.sizes)]
            if last:
                print(f"{fld}: ECE after {max(args.sizes)} labels in the app's {app!r} queue {statistics.mean(last):.3f} "
                      f"(target <= 0.05)")
    if args.queue_only:
        return
    print("\n| field | labels | top-1 | top-3 | weighted F1 | ECE before calibration | ECE after calibration |")
    print("|---|---|---|---|---|---|---|")
    for fld, cond, m, raw_ece in rows_out:
        before = fmt(m["ECE"]) if raw_ece is None else fmt(raw_ece)
        after = "(no labels to fit T)" if raw_ece is None else fmt(m["ECE"])
        print(f"| {fld} | {cond} | {fmt(m['top1'])} | {fmt(m['top3'])} | {fmt(m['wF1'])} | {before} | {after} |")
    for fld in args.fields:
        z = next(m for f, c, m, _ in rows_out if f == fld and c == "zero-shot")
        last = [m for f, c, m, _ in rows_out if f == fld][-1]
        gain = 100 * (statistics.mean(last["top1"]) - z["top1"][0])
        print(f"{fld}: after {max(args.sizes)} labels top-1 {gain:+.1f} points over zero-shot (target >= +5); "
              f"ECE {statistics.mean(last['ECE']):.3f} (target <= 0.05)")

    if "articleType" in suggesters:
        s, labels, tw, pool_keep, pick, of = suggesters["articleType"]
        x_all = all_kagl_vectors(model, catalog, store)
        source = "stored embeddings of all KAGL products"
        if x_all is None:
            n_all = len(catalog.usable_rows("image"))
            base = np.concatenate([ev_x, pool_x])
            x_all = base[np.arange(n_all) % len(base)]  # (n_all, dim)
            source = (f"NOT all KAGL images are embedded yet: {len(base)} real fclip-mini vectors tiled to {n_all} "
                      "rows (timing does not depend on the values)")
        s.predict_proba(x_all[:100])  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            out = s.suggest(x_all, top=3)
            times.append(time.perf_counter() - t)
        print(f"\nspeed: suggest(top=3) for {len(out)} products x {len(labels)} articleType labels: "
              f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over 3 runs (target < 2 s); {source}")
        rest = np.setdiff1d(pool_keep, pick)
        rng = np.random.default_rng(99)
        refits = []
        for i in rng.choice(rest, size=5, replace=False):
            t = time.perf_counter()
            s.partial_fit(pool_x[i:i + 1], [of[pool_ids[i]]])
            refits.append(time.perf_counter() - t)
        print(f"speed: refit after one new label ({s.n_labelled_ - 5}..{s.n_labelled_} labels, {len(labels)} labels, "
              f"{tw.shape[1]}-d): median {statistics.median(refits):.3f} s, max {max(refits):.3f} s over 5 "
              "(target < 0.5 s)")
        t = time.perf_counter()
        Suggester(labels=labels, text_weights=tw).fit(s.X_, list(s.classes_[s.y_]))
        print(f"speed: cold fit on {s.n_labelled_} labels: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
