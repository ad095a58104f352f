"""The `fclip` command: the package's jobs without a notebook.

    fclip models
    fclip embed --data ../shared/data/kagl --model fclip-mini
    fclip search "navy blue shirt" --data ../shared/data/kagl -k 10
    fclip lab

User mistakes (unknown model, missing file, bad data) print one line on stderr
and exit with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import FclipError

log = logging.getLogger("fclip")
REPO_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def add_data_args(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.add_argument("--data", default="auto",
                   help="catalog: a data folder (KAGL, CCP, Fashion-MNIST, images), a CSV/Parquet file, 'teaching', "
                        "or 'auto' (default: ../shared/data/kagl when present, else the generated teaching catalog)")
    p.add_argument("--format", default="auto", choices=["auto", "kagl", "ccp", "fmnist", "csv", "parquet", "folder"],
                   help="catalog format (default: detected)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    p.add_argument("--split", default="test", choices=["train", "test"], help="Fashion-MNIST split (default test)")
    p.add_argument("--image-root", default=None, help="CSV/Parquet: folder the image paths are relative to (default: the table's folder)")
    p.add_argument("--id-col", default="item_id", help="CSV/Parquet: id column")
    p.add_argument("--text-col", default="text", help="CSV/Parquet: title/description column")
    p.add_argument("--image-col", default="image", help="CSV/Parquet: image path column")
    if model:
        p.add_argument("--model", default="auto",
                       help="model spec: preset, hf-hub:..., open_clip name:tag or local path; 'auto' (default): "
                            "fclip-mini, or the teaching model for the teaching catalog")
        p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--cache", default=None, help="embedding store (SQLite file; default $FCLIP_CACHE or ~/.cache/fclip-workbench)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def open_from_args(args):
    from .datasets import detect_format, open_catalog
    from .workshop import resolve_data

    if args.data in ("auto", "teaching", "kagl"):
        return resolve_data(args.data, limit=args.limit)
    kwargs = {}
    if detect_format(Path(args.data)) == "fmnist" or args.format == "fmnist":
        kwargs = {"split": args.split, "limit": args.limit}
    elif Path(args.data).is_file() or args.format in ("csv", "parquet"):
        kwargs = {"id_col": args.id_col, "text_col": args.text_col, "image_col": args.image_col}
        if args.image_root:
            kwargs["image_root"] = args.image_root
    cat = open_catalog(args.data, args.format, **kwargs)
    if args.limit is not None:
        cat = cat.subset(range(min(args.limit, len(cat))))
    return cat


def model_from_args(args, catalog):
    from .workshop import resolve_model
    return resolve_model(args.model, catalog, device=args.device)


def _store(args):
    from .store import EmbeddingStore
    return EmbeddingStore(args.cache)


def cmd_models(args) -> int:
    from .models import list_models
    print(f"{'name':22s} {'source':10s} location")
    for p in list_models():
        loc = p.location + (f" ({p.pretrained})" if p.pretrained else "")
        print(f"{p.name:22s} {p.source:10s} {loc}\n{'':33s} {p.description}")
    print("\nAlso accepted: a local folder/file, 'hf-hub:org/repo', or an open_clip 'ARCH:TAG'.")
    return 0


def cmd_embed(args) -> int:
    from .embed import embed_images, embed_texts

    t0 = time.perf_counter()
    cat = open_from_args(args)
    print(cat.report(limit=args.show_problems))
    model = model_from_args(args, cat)
    store = _store(args)
    t1 = time.perf_counter()
    res = embed_images(model, cat, store, batch_size=args.batch_size, num_workers=args.workers,
                       progress=not args.quiet)
    t2 = time.perf_counter()
    print(f"images: {res.summary()} in {t2 - t1:.1f} s")
    for p in res.failures[: args.show_problems]:
        print(f"  not embedded: {p}")
    if len(res.failures) > args.show_problems:
        print(f"  ... and {len(res.failures) - args.show_problems} more")
    if not args.no_text:
        tres = embed_texts(model, cat, store, progress=not args.quiet)
        print(f"texts: {tres.summary()} in {time.perf_counter() - t2:.1f} s")
    if args.out:
        import numpy as np
        np.savez(args.out, ids=np.array(res.ids), vectors=res.vectors)
        print(f"wrote {args.out}")
    print(f"model {model.name} fingerprint {model.fingerprint}; store {store.path}; total {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_search(args) -> int:
    from .search import Searcher

    cat = open_from_args(args)
    searcher = Searcher.build(model_from_args(args, cat), cat, store=_store(args), index=args.index,
                              image_weight=args.image_weight, progress=not args.quiet)
    if args.image:
        hits = searcher.by_image(args.image, k=args.k)
    else:
        if not args.query:
            raise FclipError("Give a text query, or --image PATH")
        hits = searcher.by_text(args.query, k=args.k)
    print(hits.to_string(index=False))
    return 0


def cmd_lab(args) -> int:
    folder = Path(args.notebooks) if args.notebooks else (REPO_NOTEBOOKS if REPO_NOTEBOOKS.is_dir() else Path.cwd())
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
        extra.append("--allow-root")  # containers and CI boxes run as root; Jupyter refuses without it
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={folder}", *extra]
    print("starting:", " ".join(cmd))
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fclip", description="FashionCLIP workbench: embed, search, train, evaluate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list model presets")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("embed", help="embed a catalog's images and texts into the cache")
    add_data_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="image decoding processes (default: 0 on <= 2 cores, else half the cores)")
    p.add_argument("--no-text", action="store_true", help="images only")
    p.add_argument("--out", default=None, help="also write ids + image vectors to this .npz")
    p.add_argument("--show-problems", type=int, default=10, help="how many problems to list")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("search", help="search a catalog by text or by image")
    p.add_argument("query", nargs="?", default=None, help='text query, e.g. "navy blue shirt"')
    add_data_args(p)
    p.add_argument("--image", default=None, help="query by this image file instead of text")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--index", default="exact", choices=["exact", "faiss"])
    p.add_argument("--image-weight", type=float, default=1.0,
                   help="product vectors = w * image + (1 - w) * title embedding (default 1: images only)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("lab", help="start JupyterLab on the notebooks")
    p.add_argument("--notebooks", default=None, help="folder to open (default: the repository's notebooks/)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed on to jupyter lab")
    p.set_defaults(func=cmd_lab)

    from .training import add_train_parser
    from .evaluate import add_eval_parser
    add_train_parser(sub)
    add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FclipError, FileNotFoundError) as e:
        print(f"fclip {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
