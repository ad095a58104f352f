"""The `fclip` command's shared options: value types argparse checks, and what --data/--model/--cache open.

Every option value is checked by its type before any work (`positive_int`, `unit_float`, ...:
a bad value is one line and exit 2); `add_data_args` adds the catalog, model and store options
that most commands share, and `open_from_args` / `model_from_args` / `store_from_args` open them.

Example:
    >>> positive_int("3"), unit_float("0.5")
    (3, 0.5)
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path


# ------------------------------------------------------------------ option types (argparse rejects bad values)
def _whole_number(text: str, minimum: int) -> int:
    """`text` as an int >= `minimum`, else argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1.

    >>> positive_int("3")
    3
    """
    return _whole_number(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0.

    >>> nonnegative_int("0")
    0
    """
    return _whole_number(text, 0)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1] (NaN refused).

    >>> unit_float("0.25")
    0.25
    """
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def open_unit_float(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a fraction of the products)."""
    value = _float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (e.g. a learning rate)."""
    value = _float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (exit 2), like every other user mistake."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: object) -> str:
    """A message on one line: newlines and the spaces around them collapse to one space.

    >>> one_line("bad value\\n  try again")
    'bad value try again'
    """
    return re.sub(r"\s*\n\s*", " ", str(message)).strip()


# ------------------------------------------------------------------ catalog, model, store from options
def add_data_args(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.add_argument("--data", default="auto",
                   help="catalog: a data folder (KAGL, CCP, Fashion-MNIST, images), a CSV/Parquet file, 'teaching', "
                        "or 'auto' (default: ../shared/data/kagl when present, else the generated teaching catalog)")
    p.add_argument("--format", default="auto", choices=["auto", "kagl", "ccp", "fmnist", "csv", "parquet", "folder"],
                   help="catalog format (default: detected)")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N rows")
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
    p.add_argument("--cache", default=None, help="embedding store: SQLite file or folder, or a team server postgresql://USER:PW@HOST/DB (default: $FCLIP_EMBEDDING_STORE, else $FCLIP_CACHE/embeddings.sqlite, else data/cache/embeddings.sqlite)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def open_from_args(args):
    """The catalog that --data and the CSV/Parquet options describe."""
    from fclip_workbench.data.datasets import detect_format, open_catalog
    from fclip_workbench.workshop import resolve_data

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


def model_from_args(args, catalog, spec: str | None = None):
    """The model --model names (or `spec`), loaded quietly under -q when the loader supports it."""
    from fclip_workbench.workshop import resolve_model

    spec = args.model if spec is None else spec
    return resolve_model(spec, catalog, device=args.device, progress=not getattr(args, "quiet", False))


def quiet_loading(quiet: bool):
    """Silence weight-loading progress bars under -q."""
    from fclip_workbench.embedding.models import quiet_progress

    return quiet_progress(quiet)


def store_from_args(args):
    """The embedding store --cache names (default: $FCLIP_CACHE, else data/cache/embeddings.sqlite)."""
    from fclip_workbench.embedding.store import EmbeddingStore
    return EmbeddingStore(args.cache)
