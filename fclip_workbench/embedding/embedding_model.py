"""`EmbeddingModel`: a loaded CLIP-style model, its weights fingerprint and its embedding space.

The fingerprint follows the weights (an in-place change re-hashes them on the next read), and
`space` (space.EmbeddingSpace) is derived from it: there is no setter. Models are loaded by
`models.load_model`; this module only holds what a loaded model is.

Example:
    >>> m = load_model("fclip-mini")                              # doctest: +SKIP
    >>> m.space.dim, m.encode_texts(["a red dress"]).shape        # doctest: +SKIP
    (256, (1, 256))
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from fclip_workbench.embedding.space import EmbeddingSpace

log = logging.getLogger(__name__)


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

    if TYPE_CHECKING:  # properties set below the class (`fingerprint` stays a dataclass field for the constructor)
        @property
        def base_fingerprint(self) -> str: ...

        @property
        def space(self) -> EmbeddingSpace: ...

    def __post_init__(self) -> None:
        self._fp_signature: tuple | None = self._signature()  # the given fingerprint describes the weights now
        self._space_cache: EmbeddingSpace | None = None

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
        """This model embedding through another inference path ("fp32", "onnx-int8", "bf16", ... see precision.py;
        "fast": the fastest faithful one measured on this machine, precision_fast.py).

        >>> load_model("fclip-mini").with_precision("onnx").fingerprint.endswith("+onnx")  # doctest: +SKIP
        True
        """
        if precision == "fast":  # measured per machine: resolves to one of the others
            from fclip_workbench.embedding.precision_fast import apply_fast
            return apply_fast(self)
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
EmbeddingModel.fingerprint = property(  # type: ignore[assignment]
    _get_fingerprint, _set_fingerprint,
    doc="Hash of weights + configs (+ the precision when not fp32); recomputed when the weights change.")
EmbeddingModel.base_fingerprint = property(  # type: ignore[method-assign, assignment]
    _get_base_fingerprint, doc="The fingerprint of the fp32 weights.")


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


EmbeddingModel.space = property(  # type: ignore[method-assign, assignment]
    _get_space, doc="The embedding space of this model's vectors (space.EmbeddingSpace); follows the weights, "
                    "cannot be set.")


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


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _weights_signature(model: torch.nn.Module) -> tuple:
    """(name, id, version, data_ptr, shape, dtype, checksum) of every tensor: changes with any write.

    In-place ops (optimizer steps, `load_state_dict`'s copy_) bump `_version`;
    re-assigned parameters change `id`; `.data = ...` changes `data_ptr`. Writes that
    no counter sees (`p.data.add_()`, a numpy view, a buffer edited through another
    alias) change the checksum: the integer sum of each tensor's bit patterns, one
    pass over memory (~20 ms for 70M float32 parameters), never a hash.
    """
    if not isinstance(model, torch.nn.Module):  # a stand-in (tests, wrappers): nothing to follow
        return ()
    out = []
    for name, t in model.state_dict(keep_vars=True).items():
        try:
            version = t._version
        except RuntimeError:  # inference tensors carry no version counter
            version = -1
        out.append((name, id(t), version, t.data_ptr(), tuple(t.shape), t.dtype, _bit_checksum(t)))
    return tuple(out)


def _bit_checksum(t: torch.Tensor) -> int | None:
    """Integer sum of the tensor's bit patterns (any changed element changes it); None on `meta`."""
    if t.is_meta or t.numel() == 0:
        return None
    with torch.no_grad():
        flat = t.detach().reshape(-1)
        as_int = _INT_OF_SIZE.get(flat.element_size())
        bits = flat.view(as_int) if as_int is not None else flat.contiguous().view(torch.uint8)
        return int(bits.sum(dtype=torch.int64))
