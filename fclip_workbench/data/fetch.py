"""Fetch the public data sets from their real sources into `data_home()/NAME`, atomically.

`DATASETS` says, for each set, where it comes from (homepage, download URLs,
licence), what the folder holds once fetched (layout, marker file) and how it is
checked (MD5 of the downloads, minimum file counts). `fetch_dataset(name)`
downloads into a temporary folder beside the destination, converts to the layout
the loaders in `fclip_workbench.data.datasets` read, verifies, then renames the folder
into place: a copy is either complete or absent. With no network it raises
`DataUnavailableError`, one line saying which URL to download, where to put it,
and the alternatives (`export FCLIP_DATA=...`, Debian's package for Fashion-MNIST).

Example:
    >>> fetch_dataset("fashionpedia")                        # doctest: +SKIP
    PosixPath('.../data/fashionpedia')
    >>> [name for name, where in dataset_status()]
    ['kagl', 'fmnist', 'ccp', 'fashionpedia']
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from fclip_workbench.errors import FclipError
from fclip_workbench import paths
from fclip_workbench.paths import DATASET_MARKERS, data_home, is_complete

log = logging.getLogger(__name__)

TIMEOUT_S = 20.0  # seconds without an answer before a download counts as offline (connect and each read)
CHUNK = 1 << 20  # download block size in bytes
USER_AGENT = "fclip-workbench/0.1 (fclip data fetch)"


class DataUnavailableError(FclipError, FileNotFoundError):
    """A public data set is not on disk and cannot be downloaded or verified; the message says what to do."""


class UnknownDatasetError(FclipError, ValueError):
    """A data set name that `DATASETS` does not know."""


@dataclass(frozen=True)
class DatasetSource:
    """Where a public data set comes from and what a complete copy looks like."""

    title: str  # human name
    homepage: str  # where a person reads about it (and downloads it by hand)
    downloads: tuple[tuple[str, str], ...]  # (URL, local file name), fetched in order
    licence: str  # licence as stated by the source
    layout: str  # what the folder holds once fetched (the loaders read this)
    marker: str  # file whose presence marks a complete copy (as in paths.DATASET_MARKERS)
    size: str  # download size, for people deciding whether to fetch
    md5: dict[str, str] = field(default_factory=dict)  # local file name -> MD5 of the download, where known
    min_files: dict[str, int] = field(default_factory=dict)  # sub-folder -> least number of files it must hold
    note: str = ""  # one more hint for the error message (e.g. a system package)


KAGGLE_REF = "paramaggarwal/fashion-product-images-small"
CCP_ARCHIVE = "https://github.com/bearpaw/clothing-co-parsing/archive/refs/heads/master.zip"
FMNIST_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHIONPEDIA_RAW = "https://raw.githubusercontent.com/KMnP/fashionpedia-api/master/"
FMNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

DATASETS: dict[str, DatasetSource] = {
    "kagl": DatasetSource(
        title="KAGL (Fashion Product Images Small, Kaggle)",
        homepage=f"https://www.kaggle.com/datasets/{KAGGLE_REF}",
        downloads=((f"https://www.kaggle.com/api/v1/datasets/download/{KAGGLE_REF}",
                    "fashion-product-images-small.zip"),),
        licence="as published on Kaggle by Param Aggarwal (no licence file shipped): research and testing",
        layout="styles.csv and images/<id>.jpg",
        marker="styles.csv",
        size="about 0.6 GB (zip)",
        min_files={"images": 39000},
        note=f"with a Kaggle account: `kaggle datasets download -d {KAGGLE_REF}` "
             "(KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json are also used by `fclip data fetch`)",
    ),
    "fmnist": DatasetSource(
        title="Fashion-MNIST (Zalando Research)",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        downloads=tuple((FMNIST_BASE + f, f) for f in FMNIST_FILES),
        licence="MIT",
        layout=", ".join(FMNIST_FILES),
        marker="t10k-images-idx3-ubyte.gz",
        size="30 MB (4 files)",
        md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        note="on Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (found in /usr/share/datasets/fashion-mnist)",
    ),
    "ccp": DatasetSource(
        title="Clothing Co-Parsing (CCP)",
        homepage="https://github.com/bearpaw/clothing-co-parsing",
        downloads=((CCP_ARCHIVE, "clothing-co-parsing-master.zip"),),
        licence="Apache-2.0 (repository); photo ownership not stated by the source",
        layout="photos/NNNN.jpg, masks/NNNN.png (uint8 label index), label_list.json "
               "(converted from the archive's annotations/pixel-level/*.mat and label_list.mat)",
        marker="label_list.json",
        size="large (2,098 photos in the archive; the 1,004 with pixel masks are kept)",
        min_files={"photos": 1000, "masks": 1000},
    ),
    "fashionpedia": DatasetSource(
        title="Fashionpedia ontology (categories and attributes)",
        homepage="https://github.com/KMnP/fashionpedia-api",
        downloads=((FASHIONPEDIA_RAW + "data/demo/category_attributes_descriptions.json",
                    "category_attributes_descriptions.json"),
                   (FASHIONPEDIA_RAW + "license.txt", "LICENSE-api-code.txt")),
        licence="BSD-2-Clause (API code); ontology from the Fashionpedia project",
        layout="category_attributes_descriptions.json (46 categories, 294 attributes)",
        marker="category_attributes_descriptions.json",
        size="52 kB",
    ),
}
assert set(DATASETS) == set(DATASET_MARKERS), "datafetch.DATASETS and paths.DATASET_MARKERS must list the same sets"


# ------------------------------------------------------------------ where things are
def dataset_status() -> list[tuple[str, Path | None]]:
    """(name, folder where it was found or None) for every known set, in `DATASETS` order.

    >>> dict(dataset_status())["kagl"]          # doctest: +SKIP
    PosixPath('/work/shared/data/kagl')
    """
    return [(name, paths.find_dataset(name)) for name in DATASETS]


def _source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise UnknownDatasetError(f"Unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def how_to_get(name: str, dest: Path | None = None) -> str:
    """One line: what to download (URLs), where to put it (folder, layout, marker), and the alternatives."""
    src = _source(name)
    dest = Path(dest) if dest is not None else data_home() / name
    urls = " and ".join(url for url, _ in src.downloads)
    line = (f"Download {urls} (see {src.homepage}) and put {src.layout} into {dest}/ "
            f"(complete when {dest / src.marker} exists), or point FCLIP_DATA at the folder that holds {name}/: `export FCLIP_DATA=/path/holding/{name}`")
    return line + (f"; {src.note}" if src.note else "")


def require_dataset(name: str) -> Path:
    """Folder of data set `name` (`paths.find_dataset`), or `DataUnavailableError` saying where it looked.

    >>> require_dataset("kagl")                 # doctest: +SKIP
    PosixPath('/work/shared/data/kagl')
    """
    src = _source(name)
    found = paths.find_dataset(name)
    if found is not None:
        return found
    looked = ", ".join(str(base / name) for base in paths.dataset_search_path())
    if not os.environ.get("FCLIP_DATA"):
        looked += " ($FCLIP_DATA is not set)"
    raise DataUnavailableError(f"{src.title} not found (looked in {looked}). Get it with "
                               f"`fclip data fetch {name}`. By hand: {how_to_get(name)}")


# ------------------------------------------------------------------ downloading
def _kaggle_auth() -> str | None:
    """'Basic ...' from KAGGLE_USERNAME/KAGGLE_KEY or kaggle.json (the Kaggle API's own settings), if any."""
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if not (user and key):
        cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
        try:
            creds = json.loads(cfg.read_text())
            user, key = creds.get("username"), creds.get("key")
        except (OSError, ValueError):
            return None
    if not (user and key):
        return None
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


def _download(url: str, dest: Path, progress: bool = True) -> Path:
    """Stream `url` to `dest` (via `dest.part`); urllib honours http(s)_proxy. Raises URLError/OSError offline."""
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    auth = _kaggle_auth() if urllib.parse.urlsplit(url).hostname == "www.kaggle.com" else None
    if auth:  # to Kaggle only, not to the storage it redirects to
        req.add_unredirected_header("Authorization", auth)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with open(part, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                                         disable=not progress) as bar:
            while block := resp.read(CHUNK):
                f.write(block)
                bar.update(len(block))
    os.replace(part, dest)
    return dest


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ from downloads to the loaders' layout
def _members(zf: zipfile.ZipFile) -> list[PurePosixPath]:
    """Safe member paths of an archive (no absolute paths, no '..')."""
    out = []
    for n in zf.namelist():
        p = PurePosixPath(n)
        if p.is_absolute() or ".." in p.parts:
            raise DataUnavailableError(f"Refusing archive member {n!r}: it points outside the destination")
        out.append(p)
    return out


def _extract(zf: zipfile.ZipFile, member: PurePosixPath, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(str(member)) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def _prepare_kagl(files: dict[str, Path], out: Path, progress: bool) -> None:
    """Kaggle's zip holds styles.csv + images/ (and a second copy under myntradataset/): keep the shallowest."""
    from tqdm.auto import tqdm

    with zipfile.ZipFile(files["fashion-product-images-small.zip"]) as zf:
        members = _members(zf)
        styles = sorted((m for m in members if m.name == "styles.csv"), key=lambda m: len(m.parts))
        if not styles:
            raise DataUnavailableError("The KAGL archive has no styles.csv: not the Fashion Product Images (Small) set")
        top = styles[0].parent
        keep = [m for m in members if m.parent == top / "images" and m.suffix.lower() == ".jpg"]
        _extract(zf, styles[0], out / "styles.csv")
        for m in tqdm(keep, desc="kagl images", disable=not progress):
            _extract(zf, m, out / "images" / m.name)


def _prepare_fmnist(files: dict[str, Path], out: Path, progress: bool) -> None:
    for name, path in files.items():
        os.replace(path, out / name)


def _prepare_fashionpedia(files: dict[str, Path], out: Path, progress: bool) -> None:
    for name, path in files.items():
        os.replace(path, out / name)


def _mat_names(cell) -> list[str]:
    """MATLAB 1xN cell array of strings (as scipy.io.loadmat returns it) -> list of str."""
    import numpy as np

    return [str(np.asarray(c).ravel()[0]) if np.asarray(c).size else "" for c in np.asarray(cell).ravel()]


def _prepare_ccp(files: dict[str, Path], out: Path, progress: bool) -> None:
    """bearpaw/clothing-co-parsing archive -> photos/NNNN.jpg, masks/NNNN.png, label_list.json, LICENSE."""
    import io

    import numpy as np
    from PIL import Image
    from scipy.io import loadmat
    from tqdm.auto import tqdm

    with zipfile.ZipFile(files["clothing-co-parsing-master.zip"]) as zf:
        members = _members(zf)
        by_name = {m.relative_to(m.parts[0]).as_posix(): m for m in members if len(m.parts) > 1}
        if "label_list.mat" not in by_name:
            raise DataUnavailableError("The CCP archive has no label_list.mat: not bearpaw/clothing-co-parsing")
        with zf.open(str(by_name["label_list.mat"])) as f:
            names = _mat_names(loadmat(io.BytesIO(f.read()))["label_list"])
        (out / "label_list.json").write_text(json.dumps(names, indent=0) + "\n")
        if "LICENSE" in by_name:
            _extract(zf, by_name["LICENSE"], out / "LICENSE")
        annotated = sorted(k for k in by_name if k.startswith("annotations/pixel-level/") and k.endswith(".mat"))
        (out / "masks").mkdir()
        for key in tqdm(annotated, desc="ccp masks", disable=not progress):
            stem = PurePosixPath(key).stem
            photo = by_name.get(f"photos/{stem}.jpg")
            if photo is None:
                log.warning("CCP: no photo for %s; skipped", key)
                continue
            with zf.open(str(by_name[key])) as f:
                mask = np.asarray(loadmat(io.BytesIO(f.read()))["groundtruth"])  # (H, W) label index
            if mask.max(initial=0) >= len(names):
                raise DataUnavailableError(f"CCP mask {key} has label {mask.max()} beyond label_list.mat "
                                           f"({len(names)} labels): the archive is damaged")
            Image.fromarray(mask.astype(np.uint8)).save(out / "masks" / f"{stem}.png")
            _extract(zf, photo, out / "photos" / f"{stem}.jpg")


PREPARE = {"kagl": _prepare_kagl, "fmnist": _prepare_fmnist, "ccp": _prepare_ccp,
           "fashionpedia": _prepare_fashionpedia}


def verify(name: str, folder: Path) -> None:
    """Raise `DataUnavailableError` unless `folder` is a complete copy of `name` (marker, checksums, counts)."""
    src = _source(name)
    if not (folder / src.marker).is_file():
        raise DataUnavailableError(f"{src.title}: {folder / src.marker} is missing after the download")
    for fname, want in src.md5.items():
        got = _md5(folder / fname) if (folder / fname).is_file() else "missing"
        if got != want:
            raise DataUnavailableError(f"{src.title}: {fname} has MD5 {got}, expected {want}: "
                                       f"the download is damaged or not the original; try again or {how_to_get(name)}")
    for sub, least in src.min_files.items():
        n = sum(1 for p in (folder / sub).iterdir() if p.is_file()) if (folder / sub).is_dir() else 0
        if n < least:
            raise DataUnavailableError(f"{src.title}: {folder / sub} holds {n} files, expected at least {least}")
    if name == "kagl":
        header = (folder / "styles.csv").open(encoding="utf-8", errors="replace").readline()
        if not {"id", "productDisplayName"} <= set(header.strip().split(",")):
            raise DataUnavailableError(f"{src.title}: styles.csv lacks the id/productDisplayName columns")
    if name == "fashionpedia":
        data = json.loads((folder / src.marker).read_text())
        if not {"categories", "attributes"} <= set(data):
            raise DataUnavailableError(f"{src.title}: {src.marker} lacks 'categories'/'attributes'")


# ------------------------------------------------------------------ the one verb
def fetch_dataset(name: str, dest: str | Path | None = None, progress: bool = True) -> Path:
    """Download data set `name` into `dest` (default `data_home() / name`) and return that folder.

    An already complete `dest` is returned as is. Everything is downloaded and
    converted in a temporary folder beside `dest`, verified, then renamed into
    place; on any failure that folder is removed and `dest` is left untouched.

    >>> fetch_dataset("fmnist", dest="/tmp/fmnist", progress=False)      # doctest: +SKIP
    PosixPath('/tmp/fmnist')
    """
    src = _source(name)
    dest = Path(dest).expanduser() if dest is not None else data_home() / name
    if is_complete(name, dest):
        log.info("%s already in %s", name, dest)
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataUnavailableError(f"{dest} exists but is not a complete copy of {name} (no {src.marker}): "
                                   "move it away or remove it, then fetch again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        got = tmp / ".download"
        got.mkdir()
        files = {}
        for url, fname in src.downloads:
            log.info("downloading %s", url)
            try:
                files[fname] = _download(url, got / fname, progress)
            except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError, ssl.SSLError) as e:
                reason = (f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError)
                          else getattr(e, "reason", None) or e)
                raise DataUnavailableError(f"Cannot download {src.title} from {url} ({reason}). "
                                           f"{how_to_get(name, dest)}") from e
        out = tmp / name
        out.mkdir()
        PREPARE[name](files, out, progress)
        verify(name, out)
        if dest.is_dir():
            dest.rmdir()  # empty (checked above): rename needs the name free
        os.replace(out, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s ready in %s", name, dest)
    return dest
