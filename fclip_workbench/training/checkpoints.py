"""Per-epoch checkpoints: the model folder, the optimizer state and the run's settings.

`checkpoints/epoch-NNN/` holds a loadable model folder plus `training_state.pt`
(optimizer, step, history, the config of every run segment, the architecture
and the digest of the training ids). `check_resume` compares a checkpoint with
the run about to resume it and refuses a different config, architecture or data.

Example:
    >>> latest_checkpoint("runs/x")          # doctest: +SKIP
    PosixPath('runs/x/checkpoints/epoch-003')
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from fclip_workbench.errors import CheckpointError
from fclip_workbench.embedding.models import EmbeddingModel, read_state_dict, save_model_folder
from fclip_workbench.data.splits import ID_RULE
from fclip_workbench.training.recipes import TrainConfig

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"
# Fields that may change on resume: epochs (to continue a run; never below the epochs done)
# and the RAM given to the pixel cache (it changes no value).
RESUMABLE_CHANGES = ("epochs", "pixel_cache_mb")
# Values of settings that checkpoints written before the setting existed were trained with.
LEGACY_DEFAULTS = {"split_rule": ID_RULE}


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The last epoch's checkpoint folder under `out_dir`, or None."""
    ckpts = sorted(Path(out_dir, CHECKPOINTS).glob("epoch-*/" + STATE_FILE))
    return ckpts[-1].parent if ckpts else None


def config_dict(cfg: TrainConfig) -> dict:
    """JSON-able settings (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def save_checkpoint(model: EmbeddingModel, opt: torch.optim.Optimizer, folder: Path, include_text: bool,
                    **state) -> None:
    """Write the model folder and `training_state.pt` (optimizer + `state`, JSON-encoded) atomically."""
    save_model_folder(model.model, model.model_cfg, model.preprocess_cfg, folder, include_text_tower=include_text)
    payload = {"optimizer": opt.state_dict(), **{k: json.dumps(v, default=str) for k, v in state.items()}}
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, folder / STATE_FILE)


def read_state(ckpt: Path) -> dict:
    """A checkpoint's state: JSON fields decoded, the optimizer state as saved."""
    try:
        raw = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"Cannot read {ckpt / STATE_FILE}: {e}. Delete {ckpt} or train without --resume.") from e
    return {k: (json.loads(v) if isinstance(v, str) else v) for k, v in raw.items()}


def _arch(state: dict, ckpt: Path) -> tuple[dict | None, dict | None]:
    if "model_cfg" in state:
        return state["model_cfg"], state.get("preprocess_cfg")
    cfg_file = ckpt / "open_clip_config.json"  # checkpoints written before the state held it
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        return cfg.get("model_cfg"), cfg.get("preprocess_cfg")
    return None, None


def _norm(v):
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def check_resume(ckpt: Path, state: dict, cfg: TrainConfig, model_cfg: dict | None = None,
                 preprocess_cfg: dict | None = None) -> None:
    """Refuse to resume `ckpt` with other settings or another architecture (CheckpointError naming them)."""
    new = config_dict(cfg)
    defaults = {**config_dict(TrainConfig()), **LEGACY_DEFAULTS}  # for settings older checkpoints lack
    old = {**defaults, **(state.get("config") or {})}
    diffs = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new
             if k not in RESUMABLE_CHANGES and _norm(old.get(k)) != _norm(new[k])]
    if diffs:
        raise CheckpointError(f"Cannot resume {ckpt} with other settings ({'; '.join(diffs)}). "
                              "Use the original settings (only epochs may grow) or another --out folder.")
    done = int(state.get("epoch", -1)) + 1
    if cfg.epochs < done:
        raise CheckpointError(f"Cannot resume {ckpt} with epochs={cfg.epochs}: it already finished {done} epochs. "
                              f"Give epochs >= {done} or another --out folder.")
    old_model, old_pp = _arch(state, ckpt)
    for name, a, b in (("model_cfg", old_model, model_cfg), ("preprocess_cfg", old_pp, preprocess_cfg)):
        if a is None or b is None:
            continue
        a, b = _norm(a), _norm(b)
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            what = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys)
            raise CheckpointError(f"Cannot resume {ckpt}: the model's {name} differs ({what}). "
                                  "Resume with the same recipe/model, or use another --out folder.")


def check_resume_data(ckpt: Path, state: dict, field: str, train_ids_sha256: str) -> None:
    """Refuse to resume on other training products than the checkpoint's (`field`: which digest to compare)."""
    old = state.get(field)
    if old and old != train_ids_sha256:
        raise CheckpointError(f"Cannot resume {ckpt}: it was trained on other products (train ids sha256 "
                              f"{old[:12]}... -> {train_ids_sha256[:12]}...). Use the same catalog and split, "
                              "or another --out folder.")


def load_weights(net: torch.nn.Module, ckpt: Path) -> None:
    """Load a checkpoint's weights into `net` (a left-out pretrained text tower stays as built)."""
    net.load_state_dict(read_state_dict(ckpt / "open_clip_model.safetensors"), strict=False)
