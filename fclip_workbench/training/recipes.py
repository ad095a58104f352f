"""Training settings and recipes: `TrainConfig` (hyper-parameters), `Recipe` (architecture + settings).

A `TrainConfig` checks its values when it is made, so a bad epoch count or
learning rate fails at once, before any model is built or image decoded.

Example:
    >>> TrainConfig(epochs=2, batch_size=32).epochs
    2
    >>> sorted(RECIPES)
    ['mini-kagl', 'tiny-teaching']
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import errors
from ..models import MINILM_ALIAS, EmbeddingModel, build_model
from ..prompts import KAGL_CAPTIONS
from ..splits import DEFAULT_RULE, RULES

ConfigError = errors.ConfigError  # a bad training setting is a user error

LOSSES = ("clip", "siglip")
PRECISIONS = ("auto", "fp32", "amp")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (checked on creation)."""

    epochs: int = 5  # passes over the training products
    batch_size: int = 256  # products per micro-batch (contrastive negatives come from it)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.1  # on weight matrices only (not gains, biases, temperature)
    warmup_steps: int = 200  # linear warm-up, then cosine decay to 0
    loss: str = "clip"  # "clip" (InfoNCE) or "siglip"
    lock_text: bool = True  # freeze the text transformer (LiT); its projection still trains
    lock_image: bool = False  # freeze the image tower
    val_fraction: float = 0.05  # share of products held out (hash of the split key, no leakage)
    val_max: int = 1000  # held-out products scored each epoch
    seed: int = 0  # seeds the split, init, shuffles, captions and augmentation
    precision: str = "auto"  # "fp32", "amp" (bf16 autocast on CUDA) or "auto" (amp on CUDA)
    augment: bool = True  # random zoom/shift, flip and greyscale of training images
    captions: tuple[str, ...] = KAGL_CAPTIONS  # caption templates sampled per step
    max_steps: int | None = None  # stop after this many optimizer steps (quick runs)
    split_rule: str = DEFAULT_RULE  # splits.RULES: same normalised title -> same side ("title-group-v1")
    pixel_cache_mb: int = 1024  # decoded images kept in RAM (fp16); beyond it images are decoded each epoch

    def __post_init__(self) -> None:
        problems = []

        def need(ok: bool, what: str) -> None:
            if not ok:
                problems.append(what)

        need(_is_int(self.epochs) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}")
        need(_is_int(self.batch_size) and self.batch_size >= 1,
             f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        need(_is_int(self.grad_accum) and self.grad_accum >= 1,
             f"grad_accum must be an integer >= 1, got {self.grad_accum!r}")
        need(_is_number(self.lr) and math.isfinite(self.lr) and self.lr > 0,
             f"lr must be a finite number > 0, got {self.lr!r}")
        need(_is_number(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        need(_is_int(self.warmup_steps) and self.warmup_steps >= 0,
             f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        need(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        need(_is_number(self.val_fraction) and 0.0 <= self.val_fraction < 1.0,
             f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        need(_is_int(self.val_max) and self.val_max >= 0, f"val_max must be an integer >= 0, got {self.val_max!r}")
        need(self.max_steps is None or (_is_int(self.max_steps) and self.max_steps >= 1),
             f"max_steps must be None or an integer >= 1, got {self.max_steps!r}")
        need(self.split_rule in RULES, f"split_rule must be one of {', '.join(RULES)}, got {self.split_rule!r}")
        need(_is_number(self.pixel_cache_mb) and self.pixel_cache_mb >= 0,
             f"pixel_cache_mb must be a number >= 0, got {self.pixel_cache_mb!r}")
        need(bool(self.captions) and all(isinstance(c, str) for c in self.captions),
             f"captions must be a non-empty sequence of template strings, got {self.captions!r}")
        if problems:
            raise ConfigError("Bad training setting: " + "; ".join(problems))
        object.__setattr__(self, "captions", tuple(self.captions))  # lists from JSON/CLI become a tuple


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Recipe:
    """A model architecture plus its training settings: `fclip train --recipe NAME`."""

    name: str
    description: str
    model_cfg: dict = field(hash=False)
    preprocess_cfg: dict = field(hash=False)
    train: TrainConfig = TrainConfig()


MINILM_TEXT = {"hf_model_name": MINILM_ALIAS, "hf_tokenizer_name": MINILM_ALIAS, "hf_pooler_type": "mean_pooler",
               "hf_proj_type": "linear", "context_length": 32}

RECIPES: dict[str, Recipe] = {
    "mini-kagl": Recipe(
        "mini-kagl",
        "fclip-mini: ResNet image tower (64 px, 6.9M params) trained on KAGL against the frozen MiniLM text tower",
        {"embed_dim": 256, "vision_cfg": {"layers": [2, 2, 2, 2], "width": 32, "image_size": 64, "head_width": 64},
         "text_cfg": MINILM_TEXT},
        {"size": 64, "resize_mode": "squash", "interpolation": "bicubic"},
        TrainConfig(epochs=10, batch_size=256, lr=2e-3, warmup_steps=300, val_fraction=0.05),
    ),
    "tiny-teaching": Recipe(
        "tiny-teaching",
        "a tiny model for the synthetic teaching catalog: small ResNet (32 px) and the frozen MiniLM text tower",
        {"embed_dim": 128, "vision_cfg": {"layers": [1, 1, 1, 1], "width": 16, "image_size": 32, "head_width": 64},
         "text_cfg": MINILM_TEXT},
        {"size": 32, "resize_mode": "squash", "interpolation": "bicubic"},
        TrainConfig(epochs=6, batch_size=128, lr=2e-3, warmup_steps=50, val_fraction=0.1,
                    captions=("{title}", "{title}", "a {colour} {garment}", "a {pattern} {garment}",
                              "{garment}", "a photo of a {garment}", "{colour} {pattern} {garment}")),
    ),
}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """A recipe by name (or the recipe itself).

    >>> get_recipe("tiny-teaching").train.epochs
    6
    """
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise errors.UnknownModelError(f"Unknown recipe {recipe!r}. Known recipes: {', '.join(RECIPES)}")
    return RECIPES[recipe]


def new_model(recipe: str | Recipe, device=None, seed: int = 0) -> EmbeddingModel:
    """A freshly initialised model of a recipe (the MiniLM text tower is pretrained).

    >>> new_model("tiny-teaching", device="cpu").dim          # doctest: +SKIP
    128
    """
    recipe = get_recipe(recipe)
    torch.manual_seed(seed)
    return build_model(recipe.model_cfg, None, recipe.preprocess_cfg, recipe.name, device)
