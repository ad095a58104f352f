"""Offline defaults for notebooks and workshops: find the real data if it is there, else
generate the teaching catalog; pick a model that knows the data.

- data "auto": `$FCLIP_DATA`/kagl or `../shared/data/kagl` (from the repository or the
  working folder) when present, else the generated teaching catalog;
- model "auto": fclip-mini (ships with the package) for real fashion data; for the
  teaching catalog, the tiny teaching model, trained once (< 1 minute) and cached.

Example:
    >>> catalog = resolve_data("auto", limit=2000)      # doctest: +SKIP
    >>> model = resolve_model("auto", catalog)           # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .catalog import Catalog
from .datasets import make_teaching_catalog, open_catalog
from .models import EmbeddingModel, load_model

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    return Path(os.environ.get("FCLIP_CACHE") or Path.home() / ".cache" / "fclip-workbench")


def find_shared_data() -> Path | None:
    """The shared data folder (with kagl/ inside), if any is reachable."""
    candidates = [os.environ.get("FCLIP_DATA"), REPO.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
                  Path.cwd().parent.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "kagl" / "styles.csv").is_file():
            return Path(c)
    return None


def resolve_data(spec: str = "auto", limit: int | None = None) -> Catalog:
    """A catalog for `spec`: "auto", "teaching", "kagl", or any path `open_catalog` reads."""
    if spec == "auto":
        shared = find_shared_data()
        spec = str(shared / "kagl") if shared else "teaching"
    if spec == "teaching":
        cat = make_teaching_catalog(cache_root() / "teaching", n=1200)
    elif spec == "kagl":
        shared = find_shared_data()
        if shared is None:
            raise FileNotFoundError("KAGL not found: set FCLIP_DATA to the folder holding kagl/, or use 'teaching'")
        cat = open_catalog(shared / "kagl")
    else:
        cat = open_catalog(spec)
    if limit is not None and limit < len(cat):
        cat = cat.subset(range(limit))
    return cat


def teaching_model(progress: bool = False, device=None) -> EmbeddingModel:
    """The tiny teaching model, trained on the teaching catalog on first use and cached."""
    from .store import EmbeddingStore
    from .training import train

    out = cache_root() / "models" / "tiny-teaching"
    if not (out / "open_clip_model.safetensors").is_file():
        log.info("training the teaching model once into %s", out)
        cat = make_teaching_catalog(cache_root() / "teaching", n=1200)
        train(cat, out_dir=out, recipe="tiny-teaching", store=EmbeddingStore(), progress=progress)
    return load_model(out, device=device)


def resolve_model(spec: str = "auto", catalog: Catalog | None = None, device=None) -> EmbeddingModel:
    """A loaded model: "auto" picks by catalog (see module docstring), anything else goes to `load_model`."""
    if spec == "auto":
        if catalog is not None and catalog.name == "teaching":
            return teaching_model(device=device)
        spec = "fclip-mini"
    if spec == "tiny-teaching":
        return teaching_model(device=device)
    return load_model(spec, device=device)
