"""Contrastive training and fine-tuning on a catalog's (image, caption) pairs.

Modes: fine-tune a loaded model (towers optionally locked), LiT (frozen
pretrained text tower, image tower trained) and from scratch (a recipe's
config). Captions come from templates over each product's title and
attributes, sampled per step. Modules:

- `recipes`: `TrainConfig` (checked on creation), `Recipe`, `RECIPES`, `new_model`;
- `data`: captions, streamed decoding with a bounded pixel cache, augmentation;
- `text`: `TextSide`, the cached features of a locked text tower;
- `loop`: `train` -> `TrainResult`;
- `checkpoints`: per-epoch checkpoints, `latest_checkpoint`, resume checks;
- `plan`: `plan_run` and `default_captions` (the CLI and notebook 06 use them).

Example:
    >>> result = train(catalog, TrainConfig(epochs=2), out_dir="runs/x", recipe="tiny-teaching")  # doctest: +SKIP
    >>> load_model("runs/x")                                                                     # doctest: +SKIP
"""
from fclip_workbench.training.checkpoints import CHECKPOINTS, STATE_FILE, latest_checkpoint
from fclip_workbench.training.data import augment, product_fields
from fclip_workbench.training.loop import TrainResult, cosine_lr, make_optimizer, set_trainable, train
from fclip_workbench.training.plan import TEACHING_CAPTIONS, default_captions, plan_run
from fclip_workbench.training.recipes import MINILM_TEXT, RECIPES, ConfigError, Recipe, TrainConfig, get_recipe, new_model
from fclip_workbench.training.text import TextSide

__all__ = ["TrainConfig", "Recipe", "RECIPES", "get_recipe", "new_model", "train", "TrainResult", "plan_run",
           "default_captions", "latest_checkpoint", "cosine_lr", "TextSide", "ConfigError", "MINILM_TEXT",
           "TEACHING_CAPTIONS", "CHECKPOINTS", "STATE_FILE", "augment", "product_fields", "make_optimizer",
           "set_trainable"]
