"""Where the workbench keeps and finds things: one place decides every default folder.

- `data_home()`: the user's data folder: `$FCLIP_HOME` if set, else the
  repository's top-level `data/` when running from a checkout, else
  `~/.local/share/fclip-workbench` (or `$XDG_DATA_HOME/fclip-workbench`).
  Catalogs fetched with `fclip data fetch`, caches and the label store live there.
- `cache_dir()`: `$FCLIP_CACHE` if set, else `data_home() / "cache"`: the
  embedding store, training pixel caches, the teaching catalog and model.
- `find_dataset(name)`: a public data set (`kagl`, `ccp`, `fashionpedia`,
  `fmnist`) looked up in `data_home()`, then `$FCLIP_DATA`, then `../shared/data`
  (beside the repository or the working folder), then, for Fashion-MNIST,
  Debian's `/usr/share/datasets/fashion-mnist`.

Example:
    >>> cache_dir().name in ("cache",) or "FCLIP_CACHE" in os.environ
    True
    >>> find_dataset("kagl") is None or (find_dataset("kagl") / "styles.csv").is_file()
    True
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
FMNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# A file (or any of several files) whose presence marks a complete copy of each public data set.
DATASET_MARKERS: dict[str, tuple[str, ...]] = {
    "kagl": ("styles.csv",),
    "ccp": ("label_list.json",),
    "fashionpedia": ("category_attributes_descriptions.json",),
    "fmnist": ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"),
}


def _in_checkout() -> bool:
    return (REPO_DIR / "pyproject.toml").is_file() and (REPO_DIR / "fclip_workbench").is_dir()


def data_home() -> Path:
    """The user's data folder (see module docstring); not created here."""
    if os.environ.get("FCLIP_HOME"):
        return Path(os.environ["FCLIP_HOME"]).expanduser()
    if _in_checkout():
        return REPO_DIR / "data"
    xdg = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(xdg) / "fclip-workbench"


def cache_dir() -> Path:
    """Folder of every cache (embedding store, pixel caches, teaching catalog and model)."""
    if os.environ.get("FCLIP_CACHE"):
        return Path(os.environ["FCLIP_CACHE"]).expanduser()
    return data_home() / "cache"


def default_store_path() -> Path:
    """The embedding store used when none is given: `cache_dir() / "embeddings.sqlite"`."""
    return cache_dir() / "embeddings.sqlite"


def default_labels_path() -> Path:
    """The label store used when none is given: `data_home() / "labels.sqlite"`."""
    return data_home() / "labels.sqlite"


def dataset_search_path() -> list[Path]:
    """Folders searched for public data sets, in order."""
    out = [data_home()]
    if os.environ.get("FCLIP_DATA"):
        out.append(Path(os.environ["FCLIP_DATA"]).expanduser())
    out += [REPO_DIR.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
            Path.cwd().parent.parent / "shared" / "data"]
    seen, unique = set(), []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def is_complete(name: str, folder: Path) -> bool:
    """True when `folder` holds a copy of data set `name` (its marker file exists)."""
    return any((folder / marker).is_file() for marker in DATASET_MARKERS[name])


def find_dataset(name: str) -> Path | None:
    """Folder of data set `name` (see module docstring), or None when it is nowhere."""
    if name not in DATASET_MARKERS:
        raise ValueError(f"Unknown data set {name!r}; known: {', '.join(DATASET_MARKERS)}")
    candidates = [base / name for base in dataset_search_path()]
    if name == "fmnist":
        candidates += [base / "fashion-mnist" for base in dataset_search_path()] + [FMNIST_DEBIAN_DIR]
    for folder in candidates:
        if is_complete(name, folder):
            return folder
    return None


# ------------------------------------------------------------------ output paths, checked before slow work
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_can_create(path: Path, what: str) -> None:
    from fclip_workbench.errors import InvalidArgumentError

    base = _nearest_existing(path.parent)
    if base.exists() and not base.is_dir():
        raise InvalidArgumentError(f"{what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{what} {path}: {base} is not writable")


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, in one line, an output file that cannot be written: call before any slow work.

    A folder in its place, a file in place of one of its folders, or a read-only folder is an
    `InvalidArgumentError`; an existing file is replaced. Missing folders are created at write time.

    >>> check_output_file("/", "--out")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --out /: is a folder; give a file name
    """
    from fclip_workbench.errors import InvalidArgumentError

    path = Path(path).expanduser()
    if path.is_dir():
        raise InvalidArgumentError(f"{what} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidArgumentError(f"{what} {path}: the file is not writable")
    _check_can_create(path, what)
    return path


def check_output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, in one line, an output folder that cannot be written: call before any slow work.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     check_output_folder(f.name, "--out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --out ...: is a file, not a folder
    """
    from fclip_workbench.errors import InvalidArgumentError

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"{what} {path}: is a file, not a folder")
    _check_can_create(path / "x", what)
    return path
