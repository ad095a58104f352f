"""Hugging Face `CLIPModel` checkpoints -> open_clip `CLIP` (config + state dict), and safe checkpoint reading.

FashionCLIP 2.0 (patrickjohncyh/fashion-clip) ships only in the transformers
format; open_clip has no config for it. This module maps the config (activation,
LayerNorm eps, EOS pooling), renames the weights so the model runs as an
open_clip `CLIP`, and reproduces the folder's own `CLIPImageProcessor`
(resize the shortest side, centre crop, normalise) so embeddings match
transformers' own pipeline (tests/test_hf_convert.py, tests/test_hf_parity.py).

Checkpoints are untrusted input: `read_state_dict` and `read_json_object` turn
every way a file can be wrong into one `CheckpointError` line.

Example:
    >>> model_cfg, state_dict, preprocess_cfg = convert_hf_clip_folder("fashion-clip/")  # doctest: +SKIP
    >>> HFClipImageTransform(resize_size=40, crop_size=32)(Image.new("RGB", (60, 80))).shape  # doctest: +SKIP
    torch.Size([3, 32, 32])
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from fclip_workbench.errors import CheckpointError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# Files of a Hugging Face tokenizer saved in a model folder (any one of the first three suffices).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes in preprocessor_config.json


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]


# ---------------------------------------------------------------- safe reading
def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object; anything else is a one-line `CheckpointError`.

    >>> read_json_object(Path("missing.json"))  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a JSON file; remove or rename it.")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                              "fix it or re-create the folder.") from e
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path} is not a UTF-8 text file; expected JSON.") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a JSON object ({{...}}), found a {type(obj).__name__}: "
                              f"{json.dumps(obj)[:60]}")
    return obj


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an untrusted checkpoint: safetensors, or torch.load with weights_only=True.

    Directories, empty/truncated files and pickles that ask for arbitrary objects are
    refused with one `CheckpointError` line.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a weights file; remove or rename it.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); re-download or re-save the weights.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            sd = load_file(str(path))
        except Exception as e:  # SafetensorError: header too small, incomplete buffer, ...
            raise CheckpointError(f"{path} is not a valid safetensors file (truncated or corrupt: "
                                  f"{_first_line(e)}); re-download or re-save the weights.") from e
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only" not in str(e).lower():
                raise CheckpointError(f"Cannot read checkpoint {path}: not a torch checkpoint (truncated or "
                                      f"corrupt: {_first_line(e)}).") from e
            wanted = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            what = f" (it asks for {wanted.group(1)})" if wanted else ""
            raise CheckpointError(
                f"Cannot read checkpoint {path} safely: refused to unpickle arbitrary objects from an untrusted "
                f"checkpoint{what}; convert it to safetensors on a machine you trust.") from None  # not `from e`:
            # torch's message advises weights_only=False, wrong advice for an untrusted file
        except Exception as e:  # truncated zip, EOF, not a torch file at all
            raise CheckpointError(f"Cannot read checkpoint {path}: not a readable torch checkpoint (truncated or "
                                  f"corrupt: {_first_line(e)}); re-download it or convert it to safetensors.") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in sd.items()}


def non_finite_tensors(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or inf."""
    return [k for k, v in state_dict.items()
            if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]


# ---------------------------------------------------------------- config
def is_hf_clip_folder(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "clip"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def has_tokenizer_files(folder: Path) -> bool:
    """True when `folder` holds a Hugging Face tokenizer (tokenizer.json, or vocab.json + merges.txt)."""
    return (folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file()
                                                    and (folder / "merges.txt").is_file())


def _eos_pooling(t: dict) -> dict:
    """open_clip text pooling that matches transformers' CLIPTextTransformer for this config.

    transformers pools at argmax(input_ids) when eos_token_id == 2 (configs from before
    its PR #24773), else at the first position of eos_token_id.
    """
    eos = t.get("eos_token_id", 49407)
    if isinstance(eos, (list, tuple)):
        eos = eos[0]
    return {"pool_type": "argmax"} if eos == 2 else {"pool_type": "eos", "eos_id": int(eos)}


def hf_config_to_open_clip(config: dict) -> dict:
    """open_clip model_cfg for a transformers CLIPConfig dict (activation, LayerNorm eps, pooling included)."""
    v, t = config.get("vision_config") or {}, config.get("text_config") or {}
    acts = {v.get("hidden_act", "quick_gelu"), t.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
        raise CheckpointError(f"Unsupported activations {sorted(acts)}: both towers must use quick_gelu or gelu")

    def tower(c: dict, defaults: dict) -> dict:
        c = {**defaults, **c}
        return dict(width=c["hidden_size"], layers=c["num_hidden_layers"],
                    head_width=c["hidden_size"] // c["num_attention_heads"],
                    heads=c["num_attention_heads"], mlp_ratio=c["intermediate_size"] / c["hidden_size"])

    def norm(c: dict) -> dict:  # only a non-default eps is written, so default configs keep their fingerprint
        eps = c.get("layer_norm_eps", 1e-5)
        return {} if eps == 1e-5 else {"norm_kwargs": {"eps": float(eps)}}

    vis = tower(v, dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072))
    txt = tower(t, dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048))
    return {
        "embed_dim": config.get("projection_dim", 512),
        "quick_gelu": acts == {"quick_gelu"},
        "vision_cfg": {
            "image_size": v.get("image_size", 224), "patch_size": v.get("patch_size", 32),
            "layers": vis["layers"], "width": vis["width"], "head_width": vis["head_width"],
            "mlp_ratio": vis["mlp_ratio"], **norm(v),
        },
        "text_cfg": {
            "context_length": t.get("max_position_embeddings", 77), "vocab_size": t.get("vocab_size", 49408),
            "width": txt["width"], "heads": txt["heads"], "layers": txt["layers"], "mlp_ratio": txt["mlp_ratio"],
            **_eos_pooling(t), **norm(t),
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
    except RuntimeError as e:  # torch.cat of q/k/v projections of different shapes
        raise CheckpointError(f"Not a consistent Hugging Face CLIPModel state dict: {_first_line(e)}") from e
    return out


def load_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a transformers folder: safetensors preferred, else a weights-only torch load."""
    for fname in ("model.safetensors", "pytorch_model.bin"):
        if (folder / fname).exists():
            return read_state_dict(folder / fname)
    raise CheckpointError(f"No model.safetensors or pytorch_model.bin in {folder}")


# ---------------------------------------------------------------- preprocessing
def _edge(size: Any, key: str) -> int | None:
    if isinstance(size, dict):
        return size.get(key) or size.get("height") or size.get("shortest_edge")
    return int(size) if isinstance(size, (int, float)) else None


def hf_preprocess_cfg(folder: Path) -> dict:
    """Preprocess cfg reproducing the folder's CLIPImageProcessor (OpenAI defaults otherwise).

    Read from preprocessor_config.json, or the "image_processor" of processor_config.json.

    `size` is the crop the model sees; `resize_size` the shortest edge before the
    crop (HF's `size.shortest_edge`, which may differ from `crop_size`). The key
    makes `build_model` use `HFClipImageTransform`, and the fingerprint cover it.
    """
    cfg = {}
    if (folder / "preprocessor_config.json").exists():
        cfg = read_json_object(folder / "preprocessor_config.json")
    elif (folder / "processor_config.json").exists():  # transformers 5 saves the image processor inside it
        cfg = read_json_object(folder / "processor_config.json").get("image_processor") or {}
    if not cfg.get("do_normalize", True):
        cfg = {**cfg, "image_mean": (0.0, 0.0, 0.0), "image_std": (1.0, 1.0, 1.0)}
    crop = _edge(cfg.get("crop_size", 224), "height") if cfg.get("do_center_crop", True) else None
    resize = _edge(cfg.get("size", 224), "shortest_edge") if cfg.get("do_resize", True) else None
    crop = crop or resize or 224
    return {"size": int(crop), "resize_size": int(resize or crop), "mean": tuple(cfg.get("image_mean", OPENAI_MEAN)),
            "std": tuple(cfg.get("image_std", OPENAI_STD)),
            "interpolation": PIL_RESAMPLE.get(cfg.get("resample", 3), "bicubic"), "resize_mode": "shortest"}


class HFClipImageTransform:
    """PIL image -> (3, crop, crop) float tensor, computed as transformers' CLIPImageProcessor does.

    Convert to RGB, resize the shortest side to `resize_size` (antialiased, on
    uint8, as its torchvision backend), centre crop `crop_size` (top/left rounded
    down, zero padding when smaller), rescale to [0, 1], normalise.

    >>> from PIL import Image
    >>> HFClipImageTransform(40, 32)(Image.new("RGB", (60, 80))).shape
    torch.Size([3, 32, 32])
    """

    def __init__(self, resize_size: int, crop_size: int, mean=OPENAI_MEAN, std=OPENAI_STD,
                 interpolation: str = "bicubic"):
        self.resize_size, self.crop_size = int(resize_size), int(crop_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # (3, 1, 1)
        self.interpolation = interpolation

    def __repr__(self) -> str:
        return (f"HFClipImageTransform(resize_size={self.resize_size}, crop_size={self.crop_size}, "
                f"interpolation={self.interpolation!r})")

    def __call__(self, image) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as tvF

        x = tvF.pil_to_tensor(image.convert("RGB"))  # (3, H, W) uint8
        h, w = x.shape[-2:]
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        new_hw = (new_long, new_short) if w <= h else (new_short, new_long)
        x = tvF.resize(x, list(new_hw), interpolation=InterpolationMode(self.interpolation), antialias=True)
        c = self.crop_size
        h, w = x.shape[-2:]
        if c > h or c > w:  # pad with zeros like transformers, then crop
            pad = [max(c - w, 0) // 2, max(c - h, 0) // 2, (max(c - w, 0) + 1) // 2, (max(c - h, 0) + 1) // 2]
            x = tvF.pad(x, pad, fill=0)
            h, w = x.shape[-2:]
        top, left = int((h - c) / 2.0), int((w - c) / 2.0)
        x = x[:, top:top + c, left:left + c]  # (3, c, c)
        return (x.float() / 255.0 - self.mean) / self.std


def convert_hf_clip_folder(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(open_clip model_cfg, open_clip state dict, preprocess cfg) for a transformers CLIP folder."""
    folder = Path(folder)
    config = read_json_object(folder / "config.json")
    model_cfg = hf_config_to_open_clip(config)
    state_dict = hf_state_dict_to_open_clip(load_hf_weights(folder), model_cfg)
    return model_cfg, state_dict, hf_preprocess_cfg(folder)
