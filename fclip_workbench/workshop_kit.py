"""The offline room kit: one folder (USB stick, local file server) from which a room installs with no network.

`fclip workshop pack OUT` writes:

    OUT/
      kit.json                      what is in it: sizes, platforms, what could not be fetched
      README.txt                    how to install from it (Linux, macOS, Windows)
      source/fclip-workbench.tar.gz the project at this commit (notebooks, fclip-mini weights included)
      wheels/linux-x86_64/          every wheel `make lab` installs (torch/torchvision as TORCH_PINS)
      wheels/macos-arm64/           the same for Apple silicon, where PyPI has wheels
      wheels/windows-amd64/         the same for 64-bit Windows, where PyPI has wheels
      data/kagl/                    a KAGL subset (styles.csv + images), found by `resolve_data("auto")`
      data/cache/teaching/          the teaching catalog, generated once here

`make lab KIT=OUT` (or `make setup KIT=OUT`) then installs with `pip --no-index --find-links`, and copies
the kit's data into `data/`; nothing is downloaded.

Example:
    >>> report = pack_kit(Path("/media/usb/fclip-kit"), platforms=("linux-x86_64",), kagl_rows=3000)  # doctest: +SKIP
    >>> report.total_mb   # doctest: +SKIP
    3412.5
"""
from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fclip_workbench.errors import FclipError, InvalidArgumentError
from fclip_workbench.paths import REPO_DIR, cache_dir, find_dataset

log = logging.getLogger(__name__)

PYTHON_VERSION = "3.11"  # the one Python the kit's wheels are for (the Makefile's TORCH_PINS are for 3.11)
# pip --platform tags per kit platform; pip widens each to the older manylinux / macOS versions itself.
PLATFORMS: dict[str, tuple[str, ...]] = {
    "linux-x86_64": (),  # this machine's own tags: no --platform
    "macos-arm64": ("macosx_14_0_arm64",),
    "windows-amd64": ("win_amd64",),
}
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")  # as the Makefile's TORCH_PINS
KIT_EXTRAS = ("dev",)  # what `make lab` installs by default (EXTRAS ?= dev)


@dataclass
class KitReport:
    """What `pack_kit` wrote: sizes in MB per part, and per platform what pip could not fetch."""

    out: str
    parts_mb: dict[str, float] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)  # platform -> requirements without wheels
    seconds: float = 0.0

    @property
    def total_mb(self) -> float:
        return round(sum(self.parts_mb.values()), 1)


def folder_mb(path: Path) -> float:
    """Size of every file under `path` in MB (10**6 bytes)."""
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 1)


def project_requirements(extras: tuple[str, ...] = KIT_EXTRAS, pyproject: Path = REPO_DIR / "pyproject.toml") -> list[str]:
    """The project's dependencies plus `extras`, torch and torchvision pinned as TORCH_PINS.

    >>> any(r.startswith("torch==") for r in project_requirements())
    True
    """
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        if extra not in project.get("optional-dependencies", {}):
            raise InvalidArgumentError(f"unknown extra {extra!r}; pyproject.toml has {sorted(project['optional-dependencies'])}")
        reqs += project["optional-dependencies"][extra]
    from packaging.requirements import Requirement

    build = tomllib.loads(pyproject.read_text()).get("build-system", {}).get("requires", [])
    pinned = {"torch", "torchvision"}
    kept = [r for r in reqs if Requirement(r).name not in pinned]
    return [*TORCH_PINS, *kept, *build, "pip"]


def platform_requirements(requirements: list[str], platform: str) -> list[str]:
    """`requirements` for one platform: TORCH_PINS are this Linux machine's pair; elsewhere the newest
    torch/torchvision that PyPI has for that platform and the project's ranges allow.

    >>> platform_requirements(["torch==2.14.1", "numpy"], "macos-arm64")
    ['torch>=2.4', 'torchvision>=0.19', 'numpy']
    """
    if platform == "linux-x86_64":
        return requirements
    from packaging.requirements import Requirement

    rest = [r for r in requirements if Requirement(r).name not in ("torch", "torchvision")]
    return ["torch>=2.4", "torchvision>=0.19", *rest]  # build backend and pip too: `pip install -e` builds offline


def pip_download_command(requirements: list[str], dest: Path, platform: str, index_url: str | None = None,
                         find_links: Path | None = None) -> list[str]:
    """`pip download` of binary wheels of `requirements` for one kit platform into `dest`
    (from `index_url` instead of pip's configured index; also from the wheels in `find_links`).

    >>> pip_download_command(["torch==2.14.1"], Path("w"), "linux-x86_64", index_url="https://download.pytorch.org/whl/cpu")[-3:]
    ['--index-url', 'https://download.pytorch.org/whl/cpu', 'torch==2.14.1']
    """
    if platform not in PLATFORMS:
        raise InvalidArgumentError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest), "--only-binary=:all:",
           "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for tag in PLATFORMS[platform]:
        cmd += ["--platform", tag]
    if find_links is not None:
        cmd += ["--find-links", str(find_links)]
    if index_url is not None:
        cmd += ["--index-url", index_url]
    return [*cmd, *requirements]


def check_torch_index(index: str) -> str:
    """`index` as pip's --index-url takes it (http(s):// or file:// URL, or a folder), else a one-line error.

    >>> check_torch_index("https://download.pytorch.org/whl/cpu")
    'https://download.pytorch.org/whl/cpu'
    >>> check_torch_index("download.pytorch.org")
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: --torch-index 'download.pytorch.org' is neither an http(s):// or file:// URL nor a folder
    """
    if index.startswith(("https://", "http://", "file://")):
        return index
    if Path(index).is_dir():
        return Path(index).resolve().as_uri()
    raise InvalidArgumentError(f"--torch-index {index!r} is neither an http(s):// or file:// URL nor a folder")


def download_torch(requirements: list[str], dest: Path, platform: str, torch_index: str) -> None:
    """Download the torch/torchvision pins of `requirements` (and what they need) from `torch_index`,
    e.g. PyTorch's CPU-only index, into `dest`: one line of error when that index has no such pair."""
    from packaging.requirements import Requirement

    pins = [r for r in requirements if Requirement(r).name in ("torch", "torchvision")]
    done = subprocess.run(pip_download_command(pins, dest, platform, index_url=torch_index),
                          capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise FclipError(f"--torch-index {torch_index}: could not download {' '.join(pins)} for {platform} ({last})")


def download_wheels(requirements: list[str], dest: Path, platform: str, torch_index: str | None = None) -> list[str]:
    """Download the wheels for `platform`; the requirements no wheel exists for (empty when all came).

    With `torch_index` the torch pair comes from there first (PyPI's Linux torch is a CUDA build: about
    3.6 GB of wheels; the CPU build is a fraction of that), and the rest resolves against it.
    One pip run resolves everything; if it fails, each requirement is tried alone so the kit says
    exactly which ones have no wheel for that platform (and holds all the others)."""
    dest.mkdir(parents=True, exist_ok=True)
    links = None
    if torch_index is not None:
        download_torch(requirements, dest, platform, torch_index)
        links = dest  # torch 2.14.1+cpu there satisfies torch==2.14.1, and outranks PyPI's 2.14.1
    whole = subprocess.run(pip_download_command(requirements, dest, platform, find_links=links),
                           capture_output=True, text=True)
    if whole.returncode == 0:
        return []
    missing = []
    for req in requirements:
        one = subprocess.run(pip_download_command([req], dest, platform, find_links=links), capture_output=True, text=True)
        if one.returncode != 0:
            missing.append(req)
            log.warning("%s: no wheel for %s (%s)", platform, req, one.stderr.strip().splitlines()[-1:])
    return missing


def pack_source(out: Path) -> Path:
    """The project at HEAD as a tarball (`git archive`): notebooks and fclip-mini weights included."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "fclip-workbench.tar.gz"
    try:
        subprocess.run(["git", "archive", "--format=tar.gz", "--prefix=fclip-workbench/", "-o", str(target), "HEAD"],
                       cwd=REPO_DIR, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise FclipError(f"fclip workshop pack runs from a git checkout of fclip-workbench ({e})") from e
    return target


def pack_kagl_subset(out: Path, rows: int, source: Path | None = None) -> int:
    """The first `rows` KAGL products whose image exists: styles.csv + images; returns how many."""
    source = source or find_dataset("kagl")
    if source is None:
        raise FclipError("no KAGL copy found (fclip data fetch kagl, or $FCLIP_DATA): pass --kagl-rows 0 to leave it out")
    (out / "images").mkdir(parents=True, exist_ok=True)
    kept = 0
    with open(source / "styles.csv", newline="", encoding="utf-8") as f_in, \
            open(out / "styles.csv", "w", newline="", encoding="utf-8") as f_out:
        reader = csv.reader(f_in)
        writer = csv.writer(f_out)
        writer.writerow(next(reader))
        for row in reader:
            image = source / "images" / f"{row[0]}.jpg" if row else None
            if image is None or not image.is_file():
                continue
            shutil.copyfile(image, out / "images" / image.name)
            writer.writerow(row)
            kept += 1
            if kept == rows:
                break
    return kept


def _read_kit_json(out: Path) -> dict:
    try:
        data = json.loads((out / "kit.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def unpack_kit_data(kit: Path, data: Path) -> list[str]:
    """Copy the kit's data sets into `data` (the user's data folder); what is already there is kept.

    Returns the top-level folders copied, e.g. ['kagl', 'cache/teaching']."""
    if not (kit / "kit.json").is_file():
        raise FclipError(f"{kit} is not a room kit (no kit.json): make one with `fclip workshop pack {kit}`")
    copied = []
    for part in ("kagl", "cache/teaching"):
        src, dest = kit / "data" / part, data / part
        if src.is_dir() and not dest.exists():
            shutil.copytree(src, dest)
            copied.append(part)
    return copied


def pack_kit(out: Path, platforms: tuple[str, ...] = tuple(PLATFORMS), kagl_rows: int = 3000,
             extras: tuple[str, ...] = KIT_EXTRAS, torch_index: str | None = None) -> KitReport:
    """Write the room kit into `out` (see module doc); an existing kit there is completed, not wiped.

    `torch_index`: where the Linux torch pair comes from (e.g. https://download.pytorch.org/whl/cpu for
    CPU-only laptops); None takes pip's configured index (PyPI: the CUDA build)."""
    from fclip_workbench.data.datasets import make_teaching_catalog
    from fclip_workbench.workshop import TEACHING_SIZE

    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise InvalidArgumentError(f"unknown platform(s) {unknown}; known: {', '.join(PLATFORMS)}")
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"{out} is a file: give a folder for the kit")
    started = time.perf_counter()
    report = KitReport(out=str(out))
    previous = _read_kit_json(out)  # a kit packed in several runs (one platform at a time) keeps every part
    report.parts_mb.update(previous.get("parts_mb", {}))
    report.missing.update(previous.get("missing", {}))
    pack_source(out / "source")
    report.parts_mb["source"] = folder_mb(out / "source")
    requirements = project_requirements(extras)
    for platform in platforms:
        report.missing[platform] = download_wheels(platform_requirements(requirements, platform),
                                                   out / "wheels" / platform, platform,
                                                   torch_index if platform == "linux-x86_64" else None)
        report.parts_mb[f"wheels/{platform}"] = folder_mb(out / "wheels" / platform)
    if kagl_rows:
        pack_kagl_subset(out / "data" / "kagl", kagl_rows)
        report.parts_mb["data/kagl"] = folder_mb(out / "data" / "kagl")
    teaching = cache_dir() / "teaching"
    make_teaching_catalog(teaching, n=TEACHING_SIZE)
    shutil.copytree(teaching, out / "data" / "cache" / "teaching", dirs_exist_ok=True)
    report.parts_mb["data/cache/teaching"] = folder_mb(out / "data" / "cache" / "teaching")
    report.seconds = round(time.perf_counter() - started, 1)
    (out / "kit.json").write_text(json.dumps({**asdict(report), "python": PYTHON_VERSION,
                                              "requirements": requirements}, indent=1))
    (out / "README.txt").write_text(KIT_README)
    return report


KIT_README = """fclip-workbench room kit: install with no network.

Linux x86_64 (Python 3.11):
    tar xzf source/fclip-workbench.tar.gz && cd fclip-workbench
    make lab KIT=/path/to/this/kit
macOS (Apple silicon) / Windows, Python 3.11 (see kit.json "missing" for what PyPI has no wheel for):
    tar xzf source/fclip-workbench.tar.gz && cd fclip-workbench
    python3.11 -m venv .venv
    .venv/bin/pip install --no-index --find-links /path/to/kit/wheels/macos-arm64 -e ".[dev]"
        (Windows: .venv\\Scripts\\pip ... wheels\\windows-amd64)
    copy the kit's data/ folder into fclip-workbench/data/, then: .venv/bin/fclip lab
"""
