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
import tempfile
from collections.abc import Callable, Iterable
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
# The one rule for every file or folder a command writes (fclip embed/index/train/eval/ground/data fetch, label
# exports): refused in one line before any model is loaded or any image embedded, never after the slow work.
PROBE_PREFIX = ".fclip-write-probe-"


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_not_empty(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse an empty (or blank) path in one line, before it silently means the current folder.

    >>> check_not_empty("", "--out")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --out is empty; give a path
    """
    from fclip_workbench.errors import InvalidArgumentError

    if not str(os.fspath(path)).strip():  # Path("") is ".": the current folder, silently
        raise InvalidArgumentError(f"{what} is empty; give a path")
    return Path(path).expanduser()


def _probe_folder(folder: Path, path: Path, what: str) -> None:
    """Create and remove a file in `folder`, or in its nearest existing parent when it is still to be made.

    Permission bits lie (root passes `os.access` on /proc and on read-only folders), so the probe writes for real;
    the folders still missing are not created here (a refused run leaves nothing behind)."""
    from fclip_workbench.errors import InvalidArgumentError

    base = _nearest_existing(folder)
    if os.path.islink(base) and not base.exists():
        raise InvalidArgumentError(f"{what} {path}: {base} is a link to nothing")
    if not base.is_dir():
        raise InvalidArgumentError(f"{what} {path}: {base} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InvalidArgumentError(f"{what} {path}: {base} is not writable ({e.strerror or e})") from None


def _check_can_create(path: Path, what: str) -> None:
    _probe_folder(path.parent, path, what)


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, in one line, an output file that cannot be written: call before any slow work.

    An empty path, a folder in its place, something other than a regular file (a FIFO, a device), a file in place
    of one of its folders, or a folder where no file can be created (probed for real: /proc, a read-only
    file system) is an `InvalidArgumentError`; an existing file is replaced. Missing folders are created at write
    time.

    >>> check_output_file("/", "--out")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --out /: is a folder; give a file name
    >>> check_output_file("", "--out")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --out is empty; give a path
    """
    from fclip_workbench.errors import InvalidArgumentError

    path = check_not_empty(path, what)
    if path.is_dir():
        raise InvalidArgumentError(f"{what} {path}: is a folder; give a file name")
    if path.exists():
        if not path.is_file():
            raise InvalidArgumentError(f"{what} {path}: is not a regular file; give a file name")
        try:  # opened for appending and closed at once: its contents are untouched
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as e:
            raise InvalidArgumentError(f"{what} {path}: the file is not writable ({e.strerror or e})") from None
    _check_can_create(path, what)
    return path


def check_output_folder(path: str | os.PathLike, what: str = "--out", *,
                        reuse: Callable[[Path], bool] | None = None, holds: str = "this command's output",
                        own: Iterable[str] = ()) -> Path:
    """Refuse, in one line, an output folder that cannot be written: call before any slow work.

    An empty path, a file in its place or in place of one of its folders, or a folder where nothing can be created
    (probed for real) is an `InvalidArgumentError`. With `reuse`, a folder that holds other files is refused too
    unless `reuse(folder)` says it is this command's earlier output (`holds` names that output in the message;
    names in `own`, such as a lock file, do not count as other files): its files are never mixed with ours.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     check_output_folder(f.name, "--out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --out ...: is a file, not a folder
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "notes.txt").write_text("mine")
    ...     check_output_folder(d, reuse=lambda p: False, holds="a training run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --out ... holds 1 file(s) that are not a training run ...
    """
    from fclip_workbench.errors import InvalidArgumentError

    path = check_not_empty(path, what)
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"{what} {path}: is a file, not a folder")
    if reuse is not None and path.is_dir():
        try:
            others = [p.name for p in path.iterdir() if p.name not in set(own)]
        except OSError as e:
            raise InvalidArgumentError(f"{what} {path}: cannot be read ({e.strerror or e})") from None
        if others and not reuse(path):
            raise InvalidArgumentError(f"{what} {path} holds {len(others)} file(s) that are not {holds} (e.g. "
                                       f"{sorted(others)[0]}): give a new or empty folder, so they are not mixed "
                                       "with its files (nothing was written)")
    _probe_folder(path, path, what)
    return path
