"""Linear probes vs zero-shot with fclip-mini: KAGL held-out products, few-shot curve, Fashion-MNIST.

Protocol (KAGL): fclip-mini's recorded split (`evaluate.model_split`): the probe
is fitted on image embeddings of training products (at most --max-train of them,
drawn at random with seed 0) and scored on every held-out product, the same
products zero-shot is scored on (zero-shot classes: every value of the field in
the whole catalog, as `fclip eval`). C is swept on a 20% validation split of the
training products (CLIP App. A.3), then the probe is refitted on all of them.
Few-shot: k training products per articleType (seeds 0-2), scored on the held-out set.
Fashion-MNIST: probe fitted on the first --fmnist-train training images, scored on
the first --fmnist-test test images (10,000 = the whole test set); zero-shot beside it.

    .venv/bin/python benchmarks/bench_probes.py [--store PATH]

BLAS runs single-threaded (--threads 1): on a busy 2-core machine, L-BFGS with more
threads than free cores is several times slower.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from fclip_workbench.data.datasets.fmnist import load_fashion_mnist
from fclip_workbench.data.datasets.kagl import load_kagl
from fclip_workbench.embedding.embed import embed_images, image_model_key
from fclip_workbench.embedding.models import load_model
from fclip_workbench.paths import find_dataset
from fclip_workbench.analysis.probe_eval import few_shot_curve, heldout_rows, labelled, probe_vs_zero_shot
from fclip_workbench.embedding.store import EmbeddingStore

FIELDS = ("articleType", "subCategory", "baseColour")


def cached(model, catalog, rows: np.ndarray, store) -> np.ndarray:
    """(n,) bool over `rows`: True where the row's image vector is already in `store`."""
    digests = store.file_digests([catalog.image_path(int(r)) for r in rows])
    have = store.get_many(image_model_key(model), "image", {d for d in digests if d})
    return np.array([d in have for d in digests], dtype=bool)


def kagl_rows(model, kagl, max_train: int | None, store=None) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, training rows): every held-out row; training rows drawn at random (seed 0), capped.

    With `store`, training rows are drawn among those already embedded in it (--cached-only).
    """
    held = heldout_rows(model, kagl, kagl.ids)  # (n,) bool
    pool = np.flatnonzero(~held)
    if store is not None:
        pool = pool[cached(model, kagl, pool, store)]
    train = np.random.default_rng(0).permutation(pool)
    return np.flatnonzero(held), np.sort(train[:max_train] if max_train else train)


def vectors_for(model, catalog, rows, store) -> tuple[np.ndarray, pd.DataFrame]:
    """Embeddings (n_ok, dim) of catalog rows and their table rows (items that failed to embed are left out, counted)."""
    sub = catalog.subset(rows, name=catalog.name)
    res = embed_images(model, sub, store, progress=True)
    if res.failures:
        logging.warning("%s: %d items could not be embedded (left out)", catalog.name, len(res.failures))
    pos = dict(zip(sub.ids, range(len(sub))))
    table = sub.table.iloc[[pos[i] for i in res.ids]].reset_index(drop=True)  # row i describes vectors[i]
    return res.vectors, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="embedding store (default: the workbench's, data/cache/embeddings.sqlite)")
    ap.add_argument("--max-train", type=int, default=10000, help="training products for the KAGL probe (0: all)")
    ap.add_argument("--ks", default="1,5,10,50")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fmnist-train", type=int, default=5000)
    ap.add_argument("--fmnist-test", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cached-only", action="store_true",
                    help="train on KAGL training products already in --store (no embedding of others)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pd.set_option("display.width", 160)
    store = EmbeddingStore(args.store)
    model = load_model("fclip-mini@1", progress=False)  # the README's figures: v1
    kagl = load_kagl(find_dataset("kagl"))
    held_rows, train_rows = kagl_rows(model, kagl, args.max_train or None, store if args.cached_only else None)
    Xte, Tte = vectors_for(model, kagl, held_rows, store)
    Xtr, Ttr = vectors_for(model, kagl, train_rows, store)
    print(f"KAGL: {len(Xtr)} training products (of {len(kagl) - len(held_rows)}), {len(Xte)} held-out products, "
          f"model {model.name} {model.fingerprint[:12]}")
    all_classes = {f: sorted({str(v).strip() for v in kagl.table[f] if labelled([v])[0]}) for f in FIELDS}
    with threadpool_limits(args.threads):
        t = time.perf_counter()
        table = probe_vs_zero_shot(model, Xtr, {f: Ttr[f].tolist() for f in FIELDS}, Xte,
                                   {f: Tte[f].tolist() for f in FIELDS}, classes=all_classes)
        print(f"\n## Probe vs zero-shot, weighted F1 on KAGL held-out products ({time.perf_counter() - t:.0f} s)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

        ks, seeds = [int(k) for k in args.ks.split(",")], [int(s) for s in args.seeds.split(",")]
        ytr, yte = Ttr["articleType"].astype(str).str.strip().to_numpy(), Tte["articleType"].astype(str).str.strip().to_numpy()
        mtr, mte = labelled(ytr), labelled(yte)
        t = time.perf_counter()
        curve = few_shot_curve(Xtr[mtr], ytr[mtr], ks=ks, seeds=seeds, test_vectors=Xte[mte], test_labels=yte[mte])
        summary = curve.groupby("k").agg(n_train=("n_train", "mean"), f1_mean=("weighted_f1", "mean"),
                                         f1_std=("weighted_f1", "std"), acc_mean=("accuracy", "mean"))
        print(f"\n## Few-shot curve, articleType, k per class, seeds {seeds} ({time.perf_counter() - t:.0f} s)")
        print(summary.to_string(float_format=lambda v: f"{v:.3f}"))

        fm_tr = load_fashion_mnist(split="train", limit=args.fmnist_train)
        fm_te = load_fashion_mnist(split="test", limit=args.fmnist_test)
        Ftr, FTtr = vectors_for(model, fm_tr, np.arange(len(fm_tr)), store)
        Fte, FTte = vectors_for(model, fm_te, np.arange(len(fm_te)), store)
        t = time.perf_counter()
        fm = probe_vs_zero_shot(model, Ftr, {"label": FTtr["label"].tolist()}, Fte, {"label": FTte["label"].tolist()})
        print(f"\n## Fashion-MNIST: probe on {len(Ftr)} training images, scored on {len(Fte)} test images "
              f"({time.perf_counter() - t:.0f} s)")
        print(fm.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
