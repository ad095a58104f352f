"""Hugging Face `CLIPModel` checkpoints -> open_clip `CLIP` (config + state dict).

FashionCLIP 2.0 (patrickjohncyh/fashion-clip) ships only in the transformers
format; open_clip has no config for it. This module maps the config and renames
the weights so the model runs as an open_clip `CLIP`, with identical outputs
(tests/test_hf_convert.py checks max |diff| <= 1e-4 against transformers).

Example:
    >>> model_cfg, state_dict, preprocess_cfg = convert_hf_clip_folder("fashion-clip/")  # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import CheckpointError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def is_hf_clip_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "clip"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def hf_config_to_open_clip(config: dict) -> dict:
    """open_clip model_cfg for a transformers CLIPConfig dict."""
    v, t = config.get("vision_config", {}), config.get("text_config", {})
    acts = {v.get("hidden_act", "quick_gelu"), t.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise CheckpointError(f"Unsupported activations {sorted(acts)}: both towers must use quick_gelu or gelu")

    def tower(c: dict, defaults: dict) -> dict:
        c = {**defaults, **c}
        return dict(width=c["hidden_size"], layers=c["num_hidden_layers"],
                    head_width=c["hidden_size"] // c["num_attention_heads"],
                    heads=c["num_attention_heads"], mlp_ratio=c["intermediate_size"] / c["hidden_size"])

    vis = tower(v, dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072))
    txt = tower(t, dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048))
    return {
        "embed_dim": config.get("projection_dim", 512),
        "quick_gelu": acts == {"quick_gelu"},
        "vision_cfg": {
            "image_size": v.get("image_size", 224), "patch_size": v.get("patch_size", 32),
            "layers": vis["layers"], "width": vis["width"], "head_width": vis["head_width"],
            "mlp_ratio": vis["mlp_ratio"],
        },
        "text_cfg": {
            "context_length": t.get("max_position_embeddings", 77), "vocab_size": t.get("vocab_size", 49408),
            "width": txt["width"], "heads": txt["heads"], "layers": txt["layers"], "mlp_ratio": txt["mlp_ratio"],
        },
    }


def _blocks(sd: dict, src: str, dst: str, n_layers: int) -> dict:
    """Rename one tower's encoder layers; q, k, v projections are fused into in_proj."""
    out = {}
    for i in range(n_layers):
        s, d = f"{src}.encoder.layers.{i}", f"{dst}.resblocks.{i}"
        for kind in ("weight", "bias"):
            out[f"{d}.attn.in_proj_{kind}"] = torch.cat(
                [sd[f"{s}.self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
            out[f"{d}.attn.out_proj.{kind}"] = sd[f"{s}.self_attn.out_proj.{kind}"]
            out[f"{d}.ln_1.{kind}"] = sd[f"{s}.layer_norm1.{kind}"]
            out[f"{d}.ln_2.{kind}"] = sd[f"{s}.layer_norm2.{kind}"]
            out[f"{d}.mlp.c_fc.{kind}"] = sd[f"{s}.mlp.fc1.{kind}"]
            out[f"{d}.mlp.c_proj.{kind}"] = sd[f"{s}.mlp.fc2.{kind}"]
    return out


def hf_state_dict_to_open_clip(sd: dict[str, torch.Tensor], model_cfg: dict) -> dict[str, torch.Tensor]:
    """Rename a transformers CLIPModel state dict to open_clip CLIP keys."""
    sd = {k.removeprefix("model."): v for k, v in sd.items()}
    try:
        vm, tm = "vision_model", "text_model"
        out = {
            "visual.class_embedding": sd[f"{vm}.embeddings.class_embedding"],
            "visual.positional_embedding": sd[f"{vm}.embeddings.position_embedding.weight"],
            "visual.conv1.weight": sd[f"{vm}.embeddings.patch_embedding.weight"],
            "visual.proj": sd["visual_projection.weight"].T.contiguous(),
            "token_embedding.weight": sd[f"{tm}.embeddings.token_embedding.weight"],
            "positional_embedding": sd[f"{tm}.embeddings.position_embedding.weight"],
            "text_projection": sd["text_projection.weight"].T.contiguous(),
            "logit_scale": sd["logit_scale"].reshape(()),
        }
        for kind in ("weight", "bias"):
            out[f"visual.ln_pre.{kind}"] = sd[f"{vm}.pre_layrnorm.{kind}"]
            out[f"visual.ln_post.{kind}"] = sd[f"{vm}.post_layernorm.{kind}"]
            out[f"ln_final.{kind}"] = sd[f"{tm}.final_layer_norm.{kind}"]
        out |= _blocks(sd, vm, "visual.transformer", model_cfg["vision_cfg"]["layers"])
        out |= _blocks(sd, tm, "transformer", model_cfg["text_cfg"]["layers"])
    except KeyError as e:
        raise CheckpointError(f"Not a Hugging Face CLIPModel state dict: key {e} is missing") from e
    return out


def load_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a transformers folder: safetensors preferred, else a weights-only torch load."""
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file
        return load_file(str(st))
    pt = folder / "pytorch_model.bin"
    if pt.is_file():
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise CheckpointError(f"No model.safetensors or pytorch_model.bin in {folder}")


def hf_preprocess_cfg(folder: Path) -> dict:
    """open_clip PreprocessCfg fields from preprocessor_config.json (OpenAI defaults otherwise)."""
    cfg_path = folder / "preprocessor_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    size = cfg.get("crop_size", cfg.get("size", 224))
    if isinstance(size, dict):
        size = size.get("height", size.get("shortest_edge", 224))
    return {"size": size, "mean": tuple(cfg.get("image_mean", OPENAI_MEAN)),
            "std": tuple(cfg.get("image_std", OPENAI_STD)), "interpolation": "bicubic", "resize_mode": "shortest"}


def convert_hf_clip_folder(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(open_clip model_cfg, open_clip state dict, preprocess cfg) for a transformers CLIP folder."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    model_cfg = hf_config_to_open_clip(config)
    state_dict = hf_state_dict_to_open_clip(load_hf_weights(folder), model_cfg)
    return model_cfg, state_dict, hf_preprocess_cfg(folder)
