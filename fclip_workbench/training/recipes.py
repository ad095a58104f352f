"""Training settings and recipes: `TrainConfig` (hyper-parameters), `Recipe` (architecture + settings).

A `TrainConfig` checks its values when it is made, so a bad epoch count or
learning rate fails at once, before any model is built or image decoded.

Example:
    >>> TrainConfig(epochs=2, batch_size=32).epochs
    2
    >>> sorted(RECIPES)
    ['mini-kagl', 'mini-v2', 'tiny-teaching']
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fclip_workbench import errors
from fclip_workbench.embedding.models import MINILM_ALIAS, EmbeddingModel, build_model
from fclip_workbench.data.prompts import KAGL_CAPTIONS
from fclip_workbench.data.splits import DEFAULT_RULE, ID_RULE, RULES
from fclip_workbench.training.mix import V2_CAPTIONS

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
    domain_augment: bool = False  # v2 augmentation (training.domain): multi-scale crops, greyscale, low-res, silhouettes, backgrounds
    ccp_heldout: float | None = None  # None: catalog only; a share: add CCP crops/photos, this share of photos held out
    ccp_repeat: int = 1  # each CCP row appears this many times per epoch (augmented anew each time)
    train_share: float = 1.0  # share of the catalog's training products used (hash of id; held-out ones unchanged)
    colour_free_captions: bool = False  # views the domain augmentation made colourless get a caption naming no colour

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
        need(self.ccp_heldout is None or (_is_number(self.ccp_heldout) and 0.0 <= self.ccp_heldout < 1.0),
             f"ccp_heldout must be None or in [0, 1), got {self.ccp_heldout!r}")
        need(_is_int(self.ccp_repeat) and self.ccp_repeat >= 1,
             f"ccp_repeat must be an integer >= 1, got {self.ccp_repeat!r}")
        need(_is_number(self.train_share) and 0.0 < self.train_share <= 1.0,
             f"train_share must be in (0, 1], got {self.train_share!r}")
        need(self.train_share == 1.0 or self.ccp_heldout is not None,
             "train_share < 1 is applied with the CCP data (ccp_heldout); set both or neither")
        need(not self.colour_free_captions or self.domain_augment,
             "colour_free_captions needs domain_augment (it is the domain augmentation that drops colour)")
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
    init: str | None = None  # a preset whose image tower and text projection start the run (None: random init)


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
    "mini-v2": Recipe(
        "mini-v2",
        "fclip-mini v2: the same ResNet at 96 px, letterboxed (3:4 kept), trained from scratch on KAGL + CCP garment "
        "crops and street photos with domain augmentation (greyscale, low-res, silhouettes, backgrounds, crops); "
        "a GPU recipe (bf16 autocast)",
        {"embed_dim": 256, "vision_cfg": {"layers": [2, 2, 2, 2], "width": 32, "image_size": 96, "head_width": 64},
         "text_cfg": MINILM_TEXT},
        {"size": 96, "resize_mode": "longest", "interpolation": "bicubic", "fill_color": 122},
        # KAGL split = fclip-mini@1's (id rule, seed 0, 5 %), so both are scored on the same held-out products
        TrainConfig(epochs=40, batch_size=512, lr=3e-3, warmup_steps=500, val_fraction=0.05, split_rule=ID_RULE,
                    captions=V2_CAPTIONS, domain_augment=True, ccp_heldout=0.3, ccp_repeat=2,
                    colour_free_captions=True, pixel_cache_mb=3072),  # 42k images at 96 px: 2.3 GB of fp16
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
    model = build_model(recipe.model_cfg, None, recipe.preprocess_cfg, recipe.name, device)
    if recipe.init is not None:
        start_from(model, recipe.init)
    return model


def start_from(model: EmbeddingModel, spec: str) -> None:
    """Copy the image tower and text projection of model `spec` into `model` (in place).

    Same-shaped tensors are copied; the attention pool's positional embedding is
    resized (bicubic over its grid) when the input size differs. Any other shape
    mismatch is refused.
    """
    from fclip_workbench.embedding.models import load_model

    src = load_model(spec, device="cpu", progress=False).model.state_dict()
    dst = model.model.state_dict()
    new = {}
    for k, v in dst.items():
        if k.startswith("text.transformer.") or k not in src:
            continue
        s = src[k]
        if s.shape != v.shape and k.endswith("attnpool.positional_embedding"):
            s = _resize_pos(s, v.shape[0])
        if s.shape != v.shape:
            raise ConfigError(f"cannot start from {spec!r}: {k} has shape {tuple(s.shape)}, the recipe needs "
                              f"{tuple(v.shape)}")
        new[k] = s
    missing = [k for k in dst if k not in new and not k.startswith("text.transformer.")]
    if missing:
        raise ConfigError(f"cannot start from {spec!r}: it lacks {missing[:5]}")
    model.model.load_state_dict(new, strict=False)
    if callable(getattr(model, "refresh_fingerprint", None)):
        model.refresh_fingerprint()


def _resize_pos(pos: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """(1 + g*g, d) -> (1 + G*G, d): the pooled token kept, the grid resized bicubically."""
    g, big = math.isqrt(pos.shape[0] - 1), math.isqrt(n_tokens - 1)
    grid = pos[1:].T.reshape(1, -1, g, g)  # (1, d, g, g)
    grid = torch.nn.functional.interpolate(grid, size=(big, big), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], grid.reshape(-1, big * big).T])
