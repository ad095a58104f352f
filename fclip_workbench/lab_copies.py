"""Learners' own copies of the notebooks: what `fclip lab` opens, so a class never edits the repository.

The repository's `notebooks/` holds jupytext pairs (NAME.ipynb + NAME.py) that tests and CI check.
A learner who ran them in place would leave outputs and edits there (a dirty `git status`, a failing
`make test`) and would see every notebook twice in the file browser. So `fclip lab` opens a copy:
`data/lab/` (under `paths.data_home()`, ignored by git) with only the `.ipynb` files, and whatever the
notebooks write with relative paths (training runs, label stores) lands there too.

A learner's work is never lost:
- a notebook is copied only when the copy is missing, or when the learner has not changed its cells
  and the repository's version is newer (outputs alone are not a change);
- a notebook the learner changed is kept, and `refresh=True` (`fclip lab --refresh`) first moves it
  aside to NAME.mine-YYYYMMDD-HHMMSS.ipynb, then takes the repository's version.

Example:
    >>> report = sync_learner_copies(Path("notebooks"), Path("data/lab"))   # doctest: +SKIP
    >>> report.copied, report.kept_edited   # doctest: +SKIP
    (['01_embed_and_search.ipynb', ...], [])
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from fclip_workbench.errors import FclipError

MANIFEST = ".fclip-lab.json"  # {relative path: digest of the cells as copied}


@dataclass
class CopyReport:
    """What `sync_learner_copies` did, one list per outcome (paths relative to the copy's folder)."""

    copied: list[str] = field(default_factory=list)  # new or updated from the repository
    unchanged: list[str] = field(default_factory=list)  # copy already current
    kept_edited: list[str] = field(default_factory=list)  # learner's edits kept; the repository has a newer version
    moved_aside: list[str] = field(default_factory=list)  # learner's edited copies renamed before a refresh

    def lines(self) -> list[str]:
        """One line per thing the learner should know (nothing when all is current)."""
        out = []
        if self.copied:
            out.append(f"notebooks copied for you: {', '.join(self.copied)}")
        for name in self.moved_aside:
            out.append(f"your edited copy kept as {name}")
        if self.kept_edited:
            out.append(f"kept your edits in {', '.join(self.kept_edited)}; the course has a newer version: "
                       "`fclip lab --refresh` takes it (your copies are kept as NAME.mine-DATE.ipynb)")
        return out


def cells_digest(path: Path) -> str:
    """sha256 of a notebook's cell types and sources: outputs, counts and metadata do not count.

    >>> cells_digest(Path("notebooks/01_embed_and_search.ipynb"))[:8]   # doctest: +SKIP
    '3fa4c2d1'
    """
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        parts = [[c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"]]
                 for c in cells]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FclipError(f"{path} is not a readable notebook ({e})") from e
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _read_manifest(dest: Path) -> dict[str, str]:
    try:
        data = json.loads((dest / MANIFEST).read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # no manifest yet, or a damaged one: every existing copy counts as the learner's


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.stem}.mine-{stamp}{path.suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.mine-{stamp}-{n}{path.suffix}")
        n += 1
    path.rename(target)
    return target


def sync_learner_copies(source: Path, dest: Path, refresh: bool = False) -> CopyReport:
    """Bring the learner's copies in `dest` up to the `.ipynb` notebooks under `source` (see module doc).

    Only `*.ipynb` files are copied (sub-folders such as `solutions/` included; checkpoints skipped),
    never the paired `.py` or `jupytext.toml`, so each notebook shows once.
    """
    if not source.is_dir():
        raise FclipError(f"no notebooks folder at {source}")
    dest.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(dest)
    report = CopyReport()
    for src in sorted(source.rglob("*.ipynb")):
        rel = src.relative_to(source)
        if ".ipynb_checkpoints" in rel.parts:
            continue
        key, copy = rel.as_posix(), dest / rel
        upstream = cells_digest(src)
        if copy.exists():
            try:
                current: str | None = cells_digest(copy)
            except FclipError:
                current = None  # a copy the learner broke is still theirs: kept (or moved aside on refresh)
            if current == upstream:
                manifest[key] = upstream
                report.unchanged.append(key)
                continue
            if current != manifest.get(key):  # the learner changed it (or we never recorded it)
                if not refresh:
                    report.kept_edited.append(key)
                    continue
                report.moved_aside.append(_move_aside(copy).relative_to(dest).as_posix())
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_name(copy.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(copy)  # atomic: a crash never leaves half a notebook
        manifest[key] = upstream
        report.copied.append(key)
    tmp_manifest = dest / (MANIFEST + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    tmp_manifest.replace(dest / MANIFEST)
    return report
