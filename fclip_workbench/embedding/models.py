"""Model presets and `load_model(spec)`: one entry point for every FashionCLIP-style model.

A spec is one of:
- a preset name (`list_models()`): "fclip-mini", "fashion-clip", "marqo-fashionclip", ...
- "hf-hub:org/repo" (open_clip format on the Hugging Face hub),
- an open_clip architecture with a pretrained tag, "ViT-B-32:laion2b_s34b_b79k",
- a local folder (open_clip `open_clip_config.json` + weights, or a transformers
  CLIPModel folder, converted) or a weights file beside an `open_clip_config.json`.

Hub specs go through open_clip's own factory (`create_model_and_transforms`);
with HF_HUB_OFFLINE set only the local cache is read, and a missing weight is one
`WeightsNotFoundError`. Local checkpoints are untrusted: every malformed file is
one `CheckpointError` line. `EmbeddingModel.fingerprint` follows the weights.

Example:
    >>> m = load_model("fclip-mini")                              # doctest: +SKIP
    >>> m.encode_texts(["a red dress"]).shape                     # doctest: +SKIP
    (1, 256)
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fclip_workbench.errors import CheckpointError, FclipError, UnknownModelError, WeightsNotFoundError
from fclip_workbench.embedding.hf_convert import convert_hf_clip_folder, non_finite_tensors, read_json_object, read_state_dict
from fclip_workbench.embedding.embedding_model import EmbeddingModel, default_device, weights_fingerprint
from fclip_workbench.embedding.open_clip_folder import (CONFIG_FILE, MINILM_ALIAS, WEIGHTS_FILE, _load_open_clip_folder,
                                                       build_model, check_config, folder_tokenizer, quiet_progress,
                                                       save_model_folder)

log = logging.getLogger(__name__)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # fclip_workbench/weights

__all__ = ["ModelPreset", "PRESETS", "register_preset", "list_models", "load_model", "hub_file", "quiet_progress",
           # re-exported from where they live (embedding_model.py, open_clip_folder.py, hf_convert.py):
           "EmbeddingModel", "default_device", "weights_fingerprint", "build_model", "save_model_folder",
           "read_state_dict", "MINILM_ALIAS", "CONFIG_FILE", "WEIGHTS_FILE", "WEIGHTS_DIR"]


@dataclass(frozen=True)
class ModelPreset:
    """A named model: where its weights live and how they are stored."""

    name: str
    source: str  # "open_clip" (name + tag or hf-hub:), "hf-clip" (transformers repo), "bundled" (ships here)
    location: str  # open_clip name / "hf-hub:org/repo" / hf repo id / folder under weights/
    pretrained: str | None = None  # open_clip pretrained tag, when source == "open_clip"
    description: str = ""


PRESETS: dict[str, ModelPreset] = {}
BUNDLED_RECIPES = {"fclip-mini": "mini-kagl", "fclip-mini-v2": "mini-v2"}  # folder under weights/ -> its recipe


def register_preset(preset: ModelPreset) -> ModelPreset:
    """Add (or replace) a preset; returns it.

    >>> _ = register_preset(ModelPreset("my-clip", "open_clip", "ViT-B-32", "openai"))
    >>> "my-clip" in PRESETS
    True
    """
    PRESETS[preset.name] = preset
    return preset


for _p in (
    ModelPreset("fclip-mini", "bundled", "fclip-mini-v2",
                description="this project's small FashionCLIP, the best shipped version (now fclip-mini@2), ships offline"),
    ModelPreset("fclip-mini@1", "bundled", "fclip-mini",
                description="fclip-mini v1: recipe mini-kagl, KAGL packshots only, 64 px squashed (ResNet + frozen MiniLM)"),
    ModelPreset("fclip-mini@2", "bundled", "fclip-mini-v2",
                description="fclip-mini v2: recipe mini-v2, KAGL + CCP street-photo crops, domain augmentation, 96 px letterboxed"),
    ModelPreset("fashion-clip", "hf-clip", "patrickjohncyh/fashion-clip",
                description="FashionCLIP 2.0, ViT-B/32 (Chia et al. 2022), transformers format, converted"),
    ModelPreset("marqo-fashionclip", "open_clip", "hf-hub:Marqo/marqo-fashionCLIP",
                description="Marqo-FashionCLIP, ViT-B/16"),
    ModelPreset("marqo-fashionsiglip", "open_clip", "hf-hub:Marqo/marqo-fashionSigLIP",
                description="Marqo-FashionSigLIP, ViT-B/16 SigLIP"),
    ModelPreset("openai-clip", "open_clip", "ViT-B-32", "openai", description="OpenAI CLIP ViT-B/32"),
):
    register_preset(_p)


def list_models() -> list[ModelPreset]:
    """All presets, sorted by name. Any open_clip name:tag also works as a spec."""
    return sorted(PRESETS.values(), key=lambda p: p.name)



# ---------------------------------------------------------------- hub access
def _hub_cache() -> str:
    from huggingface_hub import constants
    return str(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _not_found(repo_id: str, what: str, reason: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"Weights for {repo_id!r} ({what}) are not in the local Hugging Face cache ({_hub_cache()}) and could not "
        f"be fetched ({reason}). On a machine with a network run `hf download {repo_id}` (older huggingface_hub: "
        f"`huggingface-cli download {repo_id}`), then copy the cache, or pass a local folder: "
        "load_model('/path/to/folder').")


def hub_file(repo_id: str, filename: str) -> Path:
    """A file of a Hugging Face hub repo: the local cache, or a download when online.

    With HF_HUB_OFFLINE set only the cache is read (local_files_only); a missing
    file raises one `WeightsNotFoundError` saying where it looked and how to get it.
    """
    from huggingface_hub import hf_hub_download

    offline = _hub_offline()
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=offline))
    except Exception as e:  # LocalEntryNotFoundError, OfflineModeIsEnabled, HTTP errors, ...
        reason = "HF_HUB_OFFLINE is set" if offline else f"{type(e).__name__}: {_line(e)}"
        raise _not_found(repo_id, filename, reason) from e


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _load_hf_clip(folder: Path, name: str, device, progress: bool = True) -> EmbeddingModel:
    model_cfg, sd, pp = convert_hf_clip_folder(folder)
    check_config(model_cfg, pp, str(folder / "config.json"))
    tok, tok_cfg = folder_tokenizer(folder, model_cfg["text_cfg"]["context_length"])
    model = build_model(model_cfg, sd, pp, name, device, progress=progress, tokenizer=tok, tokenizer_cfg=tok_cfg)
    model.source = folder
    return model


def _load_hub_hf_clip(repo_id: str, name: str, device, progress: bool = True) -> EmbeddingModel:
    config = hub_file(repo_id, "config.json")
    try:
        hub_file(repo_id, "model.safetensors")
    except WeightsNotFoundError:
        hub_file(repo_id, "pytorch_model.bin")
    hub_file(repo_id, "preprocessor_config.json")
    for fname in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        try:  # all in the same snapshot folder as config.json
            hub_file(repo_id, fname)
        except WeightsNotFoundError:
            log.info("%s has no %s in reach; tokenizing with what the snapshot holds", repo_id, fname)
    return _load_hf_clip(config.parent, name, device, progress)


def _factory_error(e: Exception, spec: str, repo: str, what: str) -> Exception:
    """The `FclipError` for an exception of open_clip's factory, or `e` itself when it is a bug."""
    chain: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and len(chain) < 10:
        chain.append(x)
        x = x.__cause__ or x.__context__
    text = " | ".join(str(c) for c in chain)
    if any(isinstance(c, pickle.UnpicklingError) for c in chain):
        return CheckpointError(f"Cannot read the checkpoint of {spec} safely: refused to unpickle arbitrary objects "
                               "from an untrusted checkpoint; convert it to safetensors on a machine you trust.")
    if "size mismatch" in text or "Error(s) in loading state_dict" in text:
        return CheckpointError(f"Weights of {spec} do not fit its architecture: {_line(chain[-1])}")
    if "safetensor" in text.lower() and not any(isinstance(c, OSError) for c in chain):
        return CheckpointError(f"Weights of {spec} are not a valid safetensors file: {_line(chain[-1])}")
    if "PytorchStreamReader" in text or any(isinstance(c, EOFError) for c in chain):
        return CheckpointError(f"Weights of {spec} are a truncated or corrupt torch file: {_line(chain[-1])}")
    if any(isinstance(c, OSError) for c in chain) or "Required pretrained weights" in text:
        reason = "HF_HUB_OFFLINE is set" if _hub_offline() else f"{type(chain[-1]).__name__}: {_line(chain[-1])}"
        return _not_found(repo, what, reason)
    return e


def _load_open_clip_factory(model_name: str, pretrained: str | None, name: str, device,
                            progress: bool = True) -> EmbeddingModel:
    """`hf-hub:org/repo` or a built-in open_clip architecture (+ pretrained tag) through open_clip's factory."""
    import open_clip

    device = torch.device(device) if device is not None else default_device()
    pcfg: dict[str, Any]  # open_clip's pretrained config of the tag
    if model_name.startswith("hf-hub:"):
        repo, what, pcfg = model_name.removeprefix("hf-hub:"), "open_clip_config.json + weights", {}
    else:
        pcfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
        if pretrained and not pcfg:
            raise UnknownModelError(f"Unknown pretrained tag {pretrained!r} for {model_name!r}. "
                                    f"Known tags: {open_clip.list_pretrained_tags_by_model(model_name)}")
        hub = pcfg.get("hf_hub", "").strip("/")
        repo, what = "/".join(hub.split("/")[:2]) or model_name, f"{model_name}:{pretrained} weights"
        if pretrained and not hub:  # published at a URL only: open_clip caches it in ~/.cache/clip
            target = Path("~/.cache/clip").expanduser() / os.path.basename(pcfg.get("url", ""))
            if _hub_offline() and not target.is_file():
                raise WeightsNotFoundError(
                    f"{model_name}:{pretrained} is published only at {pcfg.get('url')}; it is not in {target} and "
                    "HF_HUB_OFFLINE is set. Download it there on a machine with a network, or pass a local folder "
                    "with an open_clip_config.json.")
    want_weights = bool(pretrained) or model_name.startswith("hf-hub:")
    try:
        with quiet_progress(not progress):
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device, require_pretrained=want_weights,
                weights_only=True)
            tokenizer = open_clip.get_tokenizer(model_name)
    except FclipError:
        raise
    except Exception as e:
        err = _factory_error(e, name, repo, what)
        if err is e:
            raise
        raise err from e
    if model_name.startswith("hf-hub:"):
        cfg = read_json_object(hub_file(repo, CONFIG_FILE))  # open_clip accepted it: no key check here
        model_cfg = cfg.get("model_cfg", cfg)
    else:
        model_cfg = open_clip.get_model_config(model_name) or {}
        if pcfg.get("quick_gelu"):
            model_cfg = {**model_cfg, "quick_gelu": True}
    bad = non_finite_tensors(model.state_dict())
    if bad:
        raise CheckpointError(f"Refusing the weights of {name!r}: {len(bad)} tensors contain non-finite values "
                              f"(NaN/inf), e.g. {bad[0]}")
    pp = dict(open_clip.get_model_preprocess_cfg(model))
    model.eval()
    return EmbeddingModel(model, preprocess, tokenizer, name, weights_fingerprint(model, model_cfg, pp), device,
                          model_cfg, pp)


# ---------------------------------------------------------------- entry point
def load_model(spec: str | os.PathLike, device: str | torch.device | None = None,
               progress: bool = True, precision: str = "fp32") -> EmbeddingModel:
    """Load any supported model spec (see module docstring). Device: CUDA > MPS > CPU unless given.

    `progress=False` keeps transformers' and huggingface_hub's progress bars quiet
    (the CLI passes `progress=not args.quiet`). `precision` picks the inference
    path (precision.py: "fp32", "onnx-int8", "bf16", ...); checked before loading.
    """
    if precision != "fp32":
        from fclip_workbench.embedding.precision import check_precision

        check_precision(precision, device if device is not None else default_device())
        return _load_model(spec, device, progress).with_precision(precision)
    return _load_model(spec, device, progress)


def _load_model(spec: str | os.PathLike, device: str | torch.device | None, progress: bool) -> EmbeddingModel:
    import open_clip

    spec_str = str(spec)
    if spec_str in PRESETS:
        p = PRESETS[spec_str]
        if p.source == "bundled":
            folder = WEIGHTS_DIR / p.location
            if not (folder / CONFIG_FILE).is_file():
                raise WeightsNotFoundError(
                    f"Bundled weights of {p.name!r} are missing from {folder}. Rebuild them with "
                    f"`fclip train --recipe {BUNDLED_RECIPES.get(p.location, 'mini-kagl')} --data ../shared/data/kagl "
                    f"--out {folder}`.")
            return _load_open_clip_folder(folder, p.name, device, progress)
        if p.source == "hf-clip":
            return _load_hub_hf_clip(p.location, p.name, device, progress)
        return _load_open_clip_factory(p.location, p.pretrained, p.name, device, progress)

    path = Path(spec_str).expanduser()
    if path.exists():
        if path.is_file():
            if not (path.parent / CONFIG_FILE).exists():
                raise CheckpointError(
                    f"{path} is a bare weights file; put an {CONFIG_FILE} beside it (open_clip format) "
                    "or pass a transformers CLIP folder (config.json + model.safetensors).")
            return _load_open_clip_folder(path.parent, path.name, device, progress, weights=path)
        if (path / CONFIG_FILE).exists():
            return _load_open_clip_folder(path, path.name, device, progress)
        if (path / "config.json").exists():
            model_type = read_json_object(path / "config.json").get("model_type")
            if model_type == "clip":
                return _load_hf_clip(path, path.name, device, progress)
            what = (f"describes a {model_type!r} model" if isinstance(model_type, str) and model_type
                    else "names no model_type (it is not a transformers model config)")
            raise CheckpointError(f"{path / 'config.json'} {what}; only transformers "
                                  f"CLIP folders (model_type 'clip') and open_clip folders ({CONFIG_FILE}) load.")
        raise CheckpointError(f"{path} holds neither {CONFIG_FILE} (open_clip format) nor a transformers "
                              "CLIP config.json (model_type 'clip').")

    if spec_str.startswith("hf-hub:"):
        return _load_open_clip_factory(spec_str, None, spec_str, device, progress)
    arch, _, tag = spec_str.partition(":")
    if arch in open_clip.list_models():
        return _load_open_clip_factory(arch, tag or None, spec_str, device, progress)
    raise UnknownModelError(
        f"Unknown model {spec_str!r}. Known presets: {', '.join(PRESETS)}. Also accepted: a local folder or "
        "file, 'hf-hub:org/repo', or an open_clip architecture with a tag (e.g. 'ViT-B-32:laion2b_s34b_b79k'; "
        "`python -c \"import open_clip; print(open_clip.list_pretrained())\"` lists them).")
