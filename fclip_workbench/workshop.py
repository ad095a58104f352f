"""Offline defaults for notebooks and workshops: find the real data if it is there, else
generate the teaching catalog; pick a model that knows the data.

Folders come from `paths` (one place decides them):
- data "auto": KAGL wherever `paths.find_dataset("kagl")` finds it (`data/kagl`,
  `$FCLIP_DATA/kagl`, `../shared/data/kagl`), else the generated teaching catalog in
  `paths.cache_dir() / "teaching"`;
- data "kagl", "ccp", "fmnist": that public set, or an error that says where it was
  looked for and to run `fclip data fetch NAME`;
- model "auto": fclip-mini (ships with the package) for real fashion data; for the
  teaching catalog, the tiny teaching model, trained once (< 1 minute) and cached.
  "The teaching catalog" is decided by its rows (`datasets.catalog_kind`), never by its
  name: a renamed copy gets the teaching model, another catalog named "teaching" does not.

Example:
    >>> catalog = resolve_data("auto", limit=2000)      # doctest: +SKIP
    >>> model = resolve_model("auto", catalog)           # doctest: +SKIP
"""
from __future__ import annotations

import logging

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.data.fetch import require_dataset
from fclip_workbench.data.datasets import catalog_kind, make_teaching_catalog, open_catalog
from fclip_workbench.embedding.models import EmbeddingModel, load_model
from fclip_workbench.paths import cache_dir, find_dataset

log = logging.getLogger(__name__)

TEACHING_SIZE = 1200  # products in the generated teaching catalog
CATALOG_SETS = ("kagl", "ccp", "fmnist")  # public sets `resolve_data` opens by name


def resolve_data(spec: str = "auto", limit: int | None = None) -> Catalog:
    """A catalog for `spec`: "auto", "teaching", "kagl", "ccp", "fmnist", or any path `open_catalog` reads.

    >>> resolve_data("teaching", limit=100).name          # doctest: +SKIP
    'teaching'
    """
    if spec == "auto":
        kagl = find_dataset("kagl")
        spec = str(kagl) if kagl else "teaching"
        log.info("data 'auto': %s", spec)
    if spec == "teaching":
        cat = make_teaching_catalog(cache_dir() / "teaching", n=TEACHING_SIZE)
    elif spec == "fmnist":
        # limit inside the loader: it writes one PNG per image it returns
        return open_catalog(require_dataset("fmnist"), "fmnist", split="test", limit=limit)
    elif spec in CATALOG_SETS:
        cat = open_catalog(require_dataset(spec))
    else:
        cat = open_catalog(spec)
    if limit is not None and limit < len(cat):
        cat = cat.subset(range(limit))
    return cat


def teaching_model(progress: bool = False, device=None) -> EmbeddingModel:
    """The tiny teaching model, trained on the teaching catalog on first use and cached in `cache_dir()`."""
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.training import train

    out = cache_dir() / "models" / "tiny-teaching"
    if not (out / "open_clip_model.safetensors").is_file():
        log.info("training the teaching model once into %s", out)
        cat = make_teaching_catalog(cache_dir() / "teaching", n=TEACHING_SIZE)
        train(cat, out_dir=out, recipe="tiny-teaching", store=EmbeddingStore(), progress=progress,
              overwrite=True)  # a run interrupted earlier is replaced
    return load_model(out, device=device, progress=progress)


def resolve_model(spec: str = "auto", catalog: Catalog | None = None, device=None,
                  progress: bool = True) -> EmbeddingModel:
    """A loaded model: "auto" picks by catalog (see module docstring), anything else goes to `load_model`
    (`progress=False`: its download and loading progress bars stay quiet)."""
    if spec == "auto":
        if catalog is not None and catalog_kind(catalog) == "teaching":  # by its rows, not its name
            return teaching_model(device=device)
        spec = "fclip-mini"
    if spec == "tiny-teaching":
        return teaching_model(device=device)
    return load_model(spec, device=device, progress=progress)
