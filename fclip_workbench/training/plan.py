"""Planning a run: which model to train and with which settings (shared by the CLI and notebook 06).

Example:
    >>> model, cfg = plan_run(catalog, model="fclip-mini", epochs=2, lr=3e-4)   # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import replace

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.models import EmbeddingModel
from fclip_workbench.data.prompts import KAGL_CAPTIONS
from fclip_workbench.training.recipes import RECIPES, ConfigError, Recipe, TrainConfig, get_recipe, new_model

TEACHING_CAPTIONS = RECIPES["tiny-teaching"].train.captions


def default_captions(catalog: Catalog) -> tuple[str, ...]:
    """Caption templates that fit the catalog's fields: KAGL's, the teaching catalog's, else the title."""
    cols = set(catalog.table.columns)
    if {"articleType", "baseColour"} <= cols:
        return KAGL_CAPTIONS
    if {"garment", "colour", "pattern"} <= cols:
        return TEACHING_CAPTIONS
    return ("{title}",)


def plan_run(catalog: Catalog, recipe: str | Recipe | None = None, model: str | EmbeddingModel | None = None,
             device=None, **overrides) -> tuple[EmbeddingModel, TrainConfig]:
    """The model to train and its config.

    With `recipe`: a fresh model of the recipe and its settings. With `model`
    (a spec or a loaded model): that model, with fine-tuning defaults (lr 1e-5,
    50 warm-up steps) and captions that fit the catalog. `overrides` (None
    values ignored) replace TrainConfig fields; they are checked before any
    model is built.
    """
    from fclip_workbench.embedding.models import load_model

    if (recipe is None) == (model is None):
        raise ConfigError("Give exactly one of recipe (train from scratch) or model (fine-tune)")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"Unknown training setting(s) {unknown}; known: {', '.join(TrainConfig.__dataclass_fields__)}")
    if recipe is not None:
        cfg = replace(get_recipe(recipe).train, **given)
        return new_model(recipe, device, cfg.seed), cfg
    if model is None:  # not reached: exactly one of recipe and model is given (checked above)
        raise ConfigError("Give exactly one of recipe (train from scratch) or model (fine-tune)")
    cfg = replace(TrainConfig(lr=1e-5, warmup_steps=50, captions=default_captions(catalog)), **given)
    return (load_model(model, device=device) if not isinstance(model, EmbeddingModel) else model), cfg
