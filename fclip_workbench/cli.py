"""The `fclip` command: the package's jobs without a notebook.

    fclip models
    fclip embed --data ../shared/data/kagl --model fclip-mini
    fclip search "navy blue shirt" --data ../shared/data/kagl -k 10
    fclip index --data ../shared/data/kagl --out data/indexes/kagl   (then: fclip search ... --index-dir data/indexes/kagl)
    fclip train --recipe tiny-teaching --data teaching --out runs/tiny
    fclip eval --model runs/tiny --data teaching
    fclip data list
    fclip lab
    fclip label --data teaching --field colour --store labels.sqlite
    fclip team status colour --store labels.sqlite      (roles, overlap, agreement, adjudication: cli_team.py)

This module owns the whole command line: it imports the library, never the
reverse. User mistakes (unknown model, missing file, bad data, bad option
values) print one line on stderr and exit with status 2, no traceback, and are
caught before slow work: options first, then the catalog, then the model.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from fclip_workbench.cli_args import (Parser, add_data_args, model_from_args, nonnegative_int, one_line, open_from_args,
                                      open_unit_float, positive_float, positive_int, quiet_loading, store_from_args,
                                      unit_float)
from fclip_workbench.cli_label import add_label_options
from fclip_workbench.cli_team import add_team_parser
from fclip_workbench.cli_compare import add_compare_parser
from fclip_workbench.cli_workshop import add_workshop_parser
from fclip_workbench.errors import FclipError, MissingExtraError
from fclip_workbench.search.index import EXACT_MAX, INDEX_KINDS, TARGET_RECALL  # NumPy only: cheap to import

log = logging.getLogger("fclip")
REPO_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
DATASET_NAMES = ("kagl", "fmnist", "ccp", "fashionpedia")
USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
USER_ERRNOS = {errno.ENOSPC, errno.EROFS}  # disk full, read-only file system: the user can act on these


# ------------------------------------------------------------------ commands
def cmd_models(args) -> int:
    from fclip_workbench.embedding.models import list_models
    if args.precisions:
        return _print_precisions(args.device)
    print(f"{'name':22s} {'source':10s} location")
    for p in list_models():
        loc = p.location + (f" ({p.pretrained})" if p.pretrained else "")
        print(f"{p.name:22s} {p.source:10s} {loc}\n{'':33s} {p.description}")
    print("\nAlso accepted: a local folder/file, 'hf-hub:org/repo', or an open_clip 'ARCH:TAG'.")
    return 0


def _print_precisions(device: str | None) -> int:
    """`fclip models --precisions`: every precision, and whether (or why not) it runs on this machine."""
    from fclip_workbench.embedding.models import default_device
    from fclip_workbench.embedding.precision import FAST, PRECISIONS, SPEED_FLAGS, cpu_flags
    from fclip_workbench.embedding.precision_fast import cpu_name, supported_precisions

    dev = str(device or default_device())
    print(f"precisions on {dev} ({cpu_name()}; flags: {' '.join(f for f in SPEED_FLAGS if f in cpu_flags())})")
    for name, why in supported_precisions(dev):
        print(f"  {name:10s} {'yes' if not why else 'no ':4s} {why or PRECISIONS[name].description}")
    print(f"  {FAST.name:10s} yes  the fastest of these measured faithful here (worst cosine >= 0.999 to fp32), "
          "measured once per CPU and weights")
    return 0


def cmd_embed(args) -> int:
    from fclip_workbench.embedding.embed import embed_images, embed_texts

    t0 = time.perf_counter()
    precision = getattr(args, "precision", "fp32")
    if precision != "fp32":  # a bad name or device is one line, before any loading
        from fclip_workbench.embedding.models import default_device
        from fclip_workbench.embedding.precision import check_precision
        check_precision(precision, args.device or default_device())
    if args.fast_min_cosine is not None:
        from fclip_workbench.embedding.precision_fast import check_min_cosine
        check_min_cosine(args.fast_min_cosine)
    if args.out is not None:  # "" is refused, not ignored
        from fclip_workbench.paths import check_output_file
        check_output_file(args.out)  # a folder given here is refused (NumPy would write FOLDER.npz beside it)
        check_output_file(args.out if str(args.out).endswith(".npz") else f"{args.out}.npz")
    cat = open_from_args(args)
    print(cat.report(limit=args.show_problems))
    store = store_from_args(args)
    model = model_from_args(args, cat)
    if precision == "fast":
        from fclip_workbench.embedding.precision_fast import apply_fast
        model = apply_fast(model, args.fast_min_cosine)
    elif precision != "fp32":
        model = model.with_precision(precision)
    t1 = time.perf_counter()
    res = embed_images(model, cat, store, batch_size=args.batch_size, num_workers=args.workers,
                       progress=not args.quiet, engine=args.engine, address=args.address)
    t2 = time.perf_counter()
    print(f"images: {res.summary()} in {t2 - t1:.1f} s")
    for p in res.failures[: args.show_problems]:
        print(f"  not embedded: {p}")
    if len(res.failures) > args.show_problems:
        print(f"  ... and {len(res.failures) - args.show_problems} more")
    if not args.no_text:
        tres = embed_texts(model, cat, store, progress=not args.quiet)
        print(f"texts: {tres.summary()} in {time.perf_counter() - t2:.1f} s")
    if args.out is not None:
        import numpy as np
        out = Path(args.out).expanduser()
        out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")  # as np.savez names it
        out.parent.mkdir(parents=True, exist_ok=True)
        import json
        # the space as JSON text, so a reader can tell an onnx-int8 file from an fp32 one (EmbeddingSpace.from_dict)
        np.savez(out, ids=np.array(res.ids), vectors=res.vectors, space=np.array(json.dumps(model.space.to_dict())))
        print(f"wrote {out}")
    print(f"model {model.name} fingerprint {model.fingerprint}; store {store.name}; total {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_search(args) -> int:
    from fclip_workbench.search.searcher import Searcher, check_query, load_query_image, require_images

    # 1. the query itself, before any slow work
    image = None
    if args.image and args.query is not None:
        raise FclipError("give a text query or --image PATH, not both")
    if args.image:
        image = load_query_image(args.image)
    elif args.query is None:
        raise FclipError("give a non-empty query, or --image PATH")
    else:
        check_query(args.query)
    if args.index_dir and args.index is not None:
        raise FclipError("give --index KIND (build one now) or --index-dir FOLDER (a saved index), not both")
    # 2. the catalog and the saved index (every part checked, its image weight too), 3. the model
    cat = open_from_args(args)
    require_images(cat)
    store = store_from_args(args)
    index = args.index or "auto"
    if args.index_dir:
        from fclip_workbench.search.saved import load_index
        from fclip_workbench.search.searcher import check_index_weight
        index = load_index(args.index_dir)
        check_index_weight(index, args.image_weight)
    # Searcher.build checks the saved index's embedding space against the model's before embedding
    searcher = Searcher.build(model_from_args(args, cat), cat, store=store, index=index,
                              image_weight=args.image_weight, progress=not args.quiet)
    n = len(searcher.images)
    if args.k > n:
        print(f"fclip search: note: -k {args.k} but only {n} products of {cat.name} have an image vector; "
              f"showing all {n}", file=sys.stderr)
    hits = searcher.by_image(image, k=args.k) if image is not None else searcher.by_text(args.query, k=args.k)
    print(hits.to_string(index=False))
    return 0


def cmd_index(args) -> int:
    """Build a search index over a catalog's (cached) product vectors, save it with its embedding space,
    print its recall (image and title queries) and memory."""
    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.paths import check_output_folder
    from fclip_workbench.search.index import build_index, choose_kind, is_approximate
    from fclip_workbench.search.saved import check_save_folder, save_index
    from fclip_workbench.search.searcher import _no_images, item_contents, product_vectors, require_images, title_queries

    check_output_folder(args.out, "--out")  # empty, a file, unwritable (probed): before any slow work
    check_save_folder(args.out, "--out")  # a folder of other files than a saved index
    cat = open_from_args(args)
    require_images(cat)
    store = store_from_args(args)
    model = model_from_args(args, cat)
    res = embed_images(model, cat, store, progress=not args.quiet)
    if len(res) == 0:
        raise _no_images(cat)
    vectors = product_vectors(model, cat, res, store, args.image_weight, progress=not args.quiet)  # (n, dim)
    kind = choose_kind(len(res), args.exact_max, args.low_memory) if args.index == "auto" else args.index
    options = {} if kind == "exact" else {"target_recall": args.target_recall}
    if is_approximate(kind):  # tuned: for title queries too, not only for image queries
        options["text_queries"] = title_queries(model, cat, store, progress=not args.quiet)
    t = time.perf_counter()
    index = build_index(vectors, res.ids, kind, space=model.space, image_weight=args.image_weight, **options)
    took = time.perf_counter() - t
    index.content = item_contents(cat, res.ids, store, args.image_weight)  # binds it to these products
    path = save_index(index, args.out)
    info = index.build_info
    if not is_approximate(kind):
        recall = "Recall@10 1.0 (exact search)"
    else:
        text = info.get("recall_at_10_text")
        recall = (f"Recall@10 against exact search {info['recall_at_10']} (image queries "
                  f"{info['recall_at_10_image']}, text queries {'n/a' if text is None else text}; "
                  f"target {info['target_recall']}, held-out queries)")
    space = index.space.describe() if index.space is not None else "not recorded"
    print(f"{type(index).__name__} {getattr(index, 'method', index.kind)} over {len(index)} products of {cat.name} "
          f"in {took:.1f} s: {recall}, memory {index.memory_bytes() / 2**20:.1f} MiB; "
          f"space {space}, image weight {index.image_weight:g}; saved to {path}")
    return 0


def cmd_train(args) -> int:
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.training import RECIPES, plan_run, train

    if args.recipe is not None and args.recipe not in RECIPES:
        raise FclipError(f"Unknown recipe {args.recipe!r}; known recipes: {', '.join(sorted(RECIPES))}")
    from fclip_workbench.paths import check_not_empty, check_output_folder
    from fclip_workbench.training.outdir import LOCK_FILE, check_out_dir, holds_run

    check_not_empty(args.out, "--out")  # before any slow work: the folder's own refusals, then
    check_out_dir(args.out, args.resume, args.overwrite,
                  args.model if args.model and Path(args.model).exists() else None)
    # ... an unrelated folder's files never mixed with checkpoints, and a place that cannot be written
    check_output_folder(args.out, "--out", reuse=holds_run, holds="a training run (training.json, checkpoints)",
                        own=(LOCK_FILE, "ccp-data"))
    cat = open_from_args(args)
    store = EmbeddingStore(args.cache)
    model = model_from_args(args, cat, spec=args.model) if args.model else None
    with quiet_loading(args.quiet):  # a recipe's fresh model loads its pretrained text tower
        model, cfg = plan_run(cat, recipe=args.recipe, model=model, device=args.device, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, grad_accum=args.grad_accum,
                              max_steps=args.max_steps, loss=args.loss, seed=args.seed,
                              lock_text=False if args.unlock_text else None,
                              lock_image=True if args.lock_image else None)
    t0 = time.perf_counter()
    res = train(cat, cfg, args.out, model=model, recipe=args.recipe, resume=args.resume, overwrite=args.overwrite,
                store=store, num_workers=args.workers, progress=not args.quiet)
    n_val = getattr(res, "n_val", getattr(res, "n_heldout", 0))
    print(f"trained on {res.n_train} products ({n_val} held out, {len(res.skipped)} skipped) "
          f"in {time.perf_counter() - t0:.0f} s; model in {res.out_dir}")
    for h in res.history:
        val = ("no held-out products" if h.get("val_R@1") is None
               else f"val R@1 {h['val_R@1']:.3f}  R@10 {h.get('val_R@10') or 0:.3f}")
        print(f"  epoch {h['epoch']}: loss {h['loss']:.3f}  {val}")
    return 0


def cmd_eval(args) -> int:
    from fclip_workbench.analysis.evaluate import evaluate, plan_eval
    from fclip_workbench.embedding.store import EmbeddingStore

    if args.out is not None:
        from fclip_workbench.paths import check_output_folder
        check_output_folder(args.out)
    cat = open_from_args(args)
    plan = plan_eval(cat, args.fields, all_items=args.all_items, retrieval=not args.no_retrieval)
    for note in plan.notes:
        print(f"fclip eval: note: {note}", file=sys.stderr)
    store = EmbeddingStore(args.cache)
    t0 = time.perf_counter()
    model = model_from_args(args, cat)
    report = evaluate(model, cat, **plan.kwargs(), n_retrieval=args.n_retrieval, val_fraction=args.val_fraction,
                      seed=args.seed, store=store, progress=not args.quiet)
    print(report.to_markdown())
    if args.out is not None:
        csv_path, md_path = report.save(args.out)
        print(f"wrote {csv_path} and {md_path}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


def cmd_data_list(args) -> int:
    from fclip_workbench.data.fetch import dataset_status

    print(f"{'name':14s} location")
    for name, path in dataset_status():
        print(f"{name:14s} {path if path is not None else f'not found (fclip data fetch {name})'}")
    return 0


def cmd_data_fetch(args) -> int:
    from fclip_workbench.data.fetch import fetch_dataset
    from fclip_workbench.paths import check_not_empty, check_output_folder, data_home, is_complete

    dest = check_not_empty(args.dest, "--dest") if args.dest is not None else data_home() / args.name
    if not is_complete(args.name, dest):  # a complete copy is kept as is (it may be read-only); else before download
        check_output_folder(dest, "--dest" if args.dest is not None else "the data folder")
    path = fetch_dataset(args.name, dest=dest, progress=not args.quiet)
    print(f"{args.name}: {path}")
    return 0


def cmd_lab(args) -> int:
    import importlib.util

    if args.notebooks and not Path(args.notebooks).is_dir():
        raise FclipError(f"--notebooks {args.notebooks}: no such folder")
    if importlib.util.find_spec("jupyterlab") is None:
        raise MissingExtraError("fclip lab needs JupyterLab: pip install jupyterlab")
    if args.notebooks or args.in_place:
        folder = Path(args.notebooks) if args.notebooks else REPO_NOTEBOOKS
    elif REPO_NOTEBOOKS.is_dir():
        from fclip_workbench.lab_copies import sync_learner_copies
        from fclip_workbench.paths import data_home

        folder = data_home() / "lab"  # the learner's copies: the repository's notebooks/ stays clean
        for line in sync_learner_copies(REPO_NOTEBOOKS, folder, refresh=args.refresh).lines():
            print(line, flush=True)
    else:
        folder = Path.cwd()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else list(args.extra)
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
        extra.append("--allow-root")  # containers and CI boxes run as root; Jupyter refuses without it
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={folder}", *extra]
    print("starting:", " ".join(cmd), flush=True)
    from fclip_workbench.processes import become

    return become(cmd)  # JupyterLab replaces this process: Ctrl-C and SIGTERM reach the server


def cmd_label(args) -> int:
    """Serve the annotator as a Voila app; every option is checked before Voila starts (see label_app)."""
    from fclip_workbench.cli_label import prepare_label_args
    from fclip_workbench.data.datasets import detect_format
    from fclip_workbench.labelling.app import serve_label_app

    if (code := prepare_label_args(args)) is not None:
        return code  # --check
    options: dict = {}
    if args.data not in ("auto", "teaching", "kagl"):
        if args.format == "fmnist" or (Path(args.data).exists() and detect_format(Path(args.data)) == "fmnist"):
            options = {"split": args.split}
        elif Path(args.data).is_file() or args.format in ("csv", "parquet"):
            options = {"id_col": args.id_col, "text_col": args.text_col, "image_col": args.image_col}
            if args.image_root:
                options["image_root"] = str(Path(args.image_root).resolve())
    # --host given on the command line is the explicit request to bind beyond this machine
    return serve_label_app(args.data, args.field, model=args.model, store=args.store,
                           host=args.host or "127.0.0.1", port=args.port, annotator=args.annotator,
                           allow_remote=args.host is not None, format=args.format, limit=args.limit,
                           catalog_options=options, device=args.device, cache=args.cache,
                           progress=not args.quiet, token=args.token, pool_size=args.pool_size)


# ------------------------------------------------------------------ the parser
def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a catalog by text or by image")
    p.add_argument("query", nargs="?", default=None, help='text query, e.g. "navy blue shirt"')
    add_data_args(p)
    p.add_argument("--image", default=None, help="query by this image file instead of text")
    p.add_argument("-k", type=positive_int, default=10, help="number of results (>= 1)")
    p.add_argument("--index", default=None, choices=list(INDEX_KINDS),
                   help="auto (default): exact below 50,000 products, else IVF tuned to Recall@10 >= 0.95")
    p.add_argument("--index-dir", default=None,
                   help="search a saved index (from `fclip index --out`) instead; it must be in --model's "
                        "embedding space")
    p.add_argument("--image-weight", type=unit_float, default=None,
                   help="product vectors = w * image + (1 - w) * title embedding, w in [0, 1] (default 1: images "
                        "only; with --index-dir: the index's own weight, another is refused)")
    p.set_defaults(func=cmd_search)


def add_index_parser(sub) -> None:
    p = sub.add_parser("index", help="build and save a search index over a catalog's image vectors")
    add_data_args(p)
    p.add_argument("--index", default="auto", choices=list(INDEX_KINDS),
                   help="auto (default): exact below --exact-max products, else ivf (ivfpq with --low-memory)")
    p.add_argument("--exact-max", type=nonnegative_int, default=EXACT_MAX, help="auto: exact search below this size")
    p.add_argument("--low-memory", action="store_true", help="auto: IVF-PQ (~1/3.5 the memory) instead of IVF")
    p.add_argument("--target-recall", type=unit_float, default=TARGET_RECALL,
                   help="Recall@10 against exact search the approximate index is tuned to, for image and for "
                        "title queries (default 0.95)")
    p.add_argument("--image-weight", type=unit_float, default=1.0,
                   help="product vectors = w * image + (1 - w) * title embedding (default 1: images only); "
                        "recorded in the index")
    p.add_argument("--out", required=True,
                   help="folder to save the index in (new, empty, or a saved index to replace; load with --index-dir)")
    p.set_defaults(func=cmd_index)


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="contrastive training / fine-tuning on a catalog")
    add_data_args(p, model=False)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--recipe", help="train a recipe's model from scratch (LiT text tower), e.g. tiny-teaching, mini-kagl")
    src.add_argument("--model", help="fine-tune this model spec")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--out", required=True, help="output folder (loadable with load_model / --model)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--grad-accum", type=positive_int)
    p.add_argument("--max-steps", type=positive_int)
    p.add_argument("--loss", choices=["clip", "siglip"])
    p.add_argument("--seed", type=int)
    p.add_argument("--unlock-text", action="store_true", help="train the text tower too")
    p.add_argument("--lock-image", action="store_true", help="freeze the image tower")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the training run already in --out (its checkpoints, weights and training.json)")
    p.add_argument("--workers", type=nonnegative_int, default=None, help="image decoding processes (default: by core count)")
    p.set_defaults(func=cmd_train)


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="retrieval and zero-shot metrics (FashionCLIP protocol)")
    add_data_args(p)
    p.add_argument("--fields", nargs="*", default=None,
                   help="label fields for zero-shot F1 (default: KAGL articleType subCategory baseColour; "
                        "FMNIST label; teaching garment colour pattern)")
    p.add_argument("--all-items", action="store_true", help="score every product, not the held-out split")
    p.add_argument("--no-retrieval", action="store_true")
    p.add_argument("--n-retrieval", type=positive_int, default=1000, help="held-out products in the retrieval gallery")
    p.add_argument("--val-fraction", type=open_unit_float, default=None,
                   help="held-out share (default: the model's recorded split, else 0.05)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the model's recorded split, else 0)")
    p.add_argument("--out", default=None, help="folder for eval.csv and eval.md")
    p.set_defaults(func=cmd_eval)


def add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="list or fetch the public data sets (KAGL, Fashion-MNIST, CCP, Fashionpedia)")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = dsub.add_parser("list", help="where each data set was found, or how to get it")
    q.set_defaults(func=cmd_data_list)
    q = dsub.add_parser("fetch", help="download a data set into the data folder (or --dest)")
    q.add_argument("name", choices=DATASET_NAMES)
    q.add_argument("--dest", default=None, help="folder to put it in (default: the workbench's data folder)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_data_fetch)


# grounding.METHOD_NOTES, listed here so building the parser needs no torch (a test checks they agree)
GROUNDING_METHODS = ("paper", "occlusion", "ablation", "integrated_gradients", "saliency", "gradcam", "grad_eclip",
                     "crops")


def add_ground_parser(sub) -> None:
    p = sub.add_parser("ground", help="grounding maps: where in a photo the model sees each query")
    p.add_argument("image", help="photo file")
    p.add_argument("queries", nargs="+", help='one or more texts, e.g. "red stripes" "shoes"')
    p.add_argument("--method", nargs="+", default=None, choices=GROUNDING_METHODS, metavar="M",
                   help=f"one or more of {', '.join(GROUNDING_METHODS)} "
                        "(default: grad_eclip for ViT towers, crops otherwise)")
    p.add_argument("-o", "--out", default=None, help="PNG of the photo and one overlay per query x method "
                                                     "(default: IMAGE_grounding.png in the current folder)")
    p.add_argument("--save-maps", default=None, help="also save the raw maps (n_methods, n_queries, H, W) to this .npy "
                                                      "(H, W: the photo's, its longer side at most 1024 px)")
    p.add_argument("--model", default="auto", help="model spec (default 'auto': fclip-mini)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--multiscale", action="store_true", help="grad_eclip: add four 2/3-size crops (finer grid)")
    p.set_defaults(func=cmd_ground)


def cmd_ground(args) -> int:
    from fclip_workbench.grounding.maps import DISPLAY_MAX_SIDE, GroundingExplainer, check_texts, load_image
    from fclip_workbench.paths import check_not_empty, check_output_file
    from fclip_workbench.widgets.viz import grounding_overlay, side_by_side
    from fclip_workbench.workshop import resolve_model

    texts = check_texts(args.queries)  # 1. the queries and the output paths: no work yet
    out = check_not_empty(args.out, "-o") if args.out is not None else Path(f"{Path(args.image).stem}_grounding.png")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise FclipError(f"-o {out}: give a .png or .jpg file name")
    maps_path = None
    for what, path in (("-o", out), ("--save-maps", args.save_maps)):
        if path is None:
            continue
        path = check_output_file(path, what)
        if what == "--save-maps":
            path = path if path.suffix == ".npy" else path.with_name(path.name + ".npy")  # as np.save names it
            maps_path = check_output_file(path, what)
        if Path(args.image).exists() and path.resolve() == Path(args.image).resolve():
            raise FclipError(f"{what} {path} is the input photo: give another file name (nothing was written)")
    img = load_image(args.image, max_side=DISPLAY_MAX_SIDE)  # 2. the photo, decoded at display size
    model = resolve_model(args.model, None, device=args.device)  # 3. the model
    methods = args.method or [GroundingExplainer.DEFAULT]
    panels, titles, stack = [img], ["photo"], []
    for method in methods:
        opts: dict[str, Any] = {"multiscale": True} if args.multiscale and method == "grad_eclip" else {}
        ex = GroundingExplainer(model, method=method, **opts)
        maps = ex.attribute(img, texts)  # (n_queries, h, w): the display-size photo's pixels
        stack.append(maps)
        print(f"{method}: {ex.last_seconds_:.2f} s for {len(texts)} map(s)")
        for text, m in zip(texts, maps):
            panels.append(grounding_overlay(img, m))
            titles.append(f"{text} ({method})")
    out.parent.mkdir(parents=True, exist_ok=True)
    side_by_side(panels, titles).save(out)
    print(f"wrote {out}")
    if maps_path is not None:
        import numpy as np
        maps_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(maps_path, np.stack(stack))
        print(f"wrote {maps_path} (maps {img.height} x {img.width})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fclip", description="FashionCLIP workbench: embed, search, train, evaluate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list model presets (--precisions: the inference paths this machine runs)")
    p.add_argument("--precisions", action="store_true", help="list the precisions and whether each runs here")
    p.add_argument("--device", default=None, help="with --precisions: the device to ask about (default: the best)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("embed", help="embed a catalog's images and texts into the cache")
    add_data_args(p)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=nonnegative_int, default=None,
                   help="image decoding processes (default: 0 on <= 2 cores, else half the cores)")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="where image vectors are computed: local (default) or ray (a Ray cluster, "
                        "fclip-workbench[ray]; texts stay local)")
    p.add_argument("--address", default=None,
                   help="--engine ray: the cluster's head, host:port (default: $RAY_ADDRESS, the latest "
                        "local cluster, else a new local one)")
    p.add_argument("--no-text", action="store_true", help="images only")
    p.add_argument("--precision", default="fp32",
                   help="inference path: fp32 (exact, default), onnx, onnx-int8, openvino (CPU); bf16 (GPU, or "
                        "CPUs with AMX-BF16/AVX512-BF16), fp16 (GPU); fast (the fastest measured faithful here); "
                        "vectors are cached per precision (`fclip models --precisions` lists them)")
    p.add_argument("--fast-min-cosine", type=float, default=None,
                   help="--precision fast: the worst cosine to fp32 a path must keep (default 0.999, or "
                        "$FCLIP_FAST_MIN_COSINE)")
    p.add_argument("--out", default=None, help="also write ids + image vectors (and their embedding space, "
                                                "as JSON in 'space') to this .npz")
    p.add_argument("--show-problems", type=nonnegative_int, default=10, help="how many problems to list")
    p.set_defaults(func=cmd_embed)

    add_search_parser(sub)
    add_index_parser(sub)
    add_train_parser(sub)
    add_eval_parser(sub)
    add_data_parser(sub)
    add_ground_parser(sub)

    p = sub.add_parser("lab", help="start JupyterLab on the notebooks")
    p.add_argument("--notebooks", default=None,
                   help="folder to open as it is (default: your copies of the course notebooks in data/lab/)")
    p.add_argument("--refresh", action="store_true",
                   help="take the course's newer notebooks over the ones you edited (yours kept as NAME.mine-DATE.ipynb)")
    p.add_argument("--in-place", action="store_true",
                   help="open the repository's notebooks/ itself (for developers editing the course)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed on to jupyter lab")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("label", help="serve the annotator as a web app (Voila) for merchandisers")
    add_data_args(p)
    p.add_argument("--field", default=None, help="the catalog column to label, e.g. articleType (or in --config)")
    p.add_argument("--store", default=None,
                   help="label store: SQLite file or SQLAlchemy URL (default: data/labels.sqlite)")
    p.add_argument("--host", default=None,
                   help="address to serve on (default 127.0.0.1; e.g. 0.0.0.0 opens it to the network: token or link)")
    p.add_argument("--port", type=positive_int, default=8866, help="port (default 8866)")
    p.add_argument("--annotator", default=None, help="default annotator name (the URL's ?annotator=NAME wins)")
    p.add_argument("--pool-size", type=int, default=2, help="kernels kept preheated for the next pages (default 2; 0: none)")
    add_label_options(p)
    p.set_defaults(func=cmd_label)
    add_team_parser(sub)
    add_workshop_parser(sub)
    add_compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FclipError, *USER_OS_ERRORS) as e:
        return _user_error(args, e)
    except OSError as e:
        if e.errno in USER_ERRNOS:
            return _user_error(args, e)
        raise  # a genuine bug keeps its traceback
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _user_error(args, e: BaseException) -> int:
    print(f"fclip {args.command}: error: {one_line(e)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
