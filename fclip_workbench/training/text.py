"""The text side of training: cached features of a locked text tower plus its trainable head.

With a locked (frozen) text tower the trunk features of every caption are
computed once and kept in the `EmbeddingStore`; a step then only runs the
trainable head (the HF tower's projection). The cache key names everything that
changes those features: the tower's weights, the tokenizer (class, name or path,
vocabulary / full tokenizer definition, context length, options), the pooler
and projection types and the model's text config.

Example:
    >>> side = TextSide(model, ["a red dress"], locked=True, store=EmbeddingStore(":memory:"))  # doctest: +SKIP
    >>> side.encode(torch.tensor([0])).shape                                                   # doctest: +SKIP
    torch.Size([1, 256])
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fclip_workbench.embedding.images import text_digest
from fclip_workbench.embedding.models import EmbeddingModel
from fclip_workbench.embedding.store import EmbeddingStore


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _describe(v) -> object:
    """A JSON-able description of a tokenizer attribute (scalars as is, functions by name)."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if callable(v):
        func = getattr(v, "func", v)  # functools.partial
        return [getattr(func, "__module__", ""), getattr(func, "__qualname__", type(v).__qualname__),
                repr(getattr(v, "args", ())), repr(sorted(getattr(v, "keywords", {}).items()))]
    return None


def tokenizer_signature(tokenizer) -> dict:
    """What makes a tokenizer's output: class, options, name/path and a digest of its vocabulary.

    >>> import open_clip
    >>> sig = tokenizer_signature(open_clip.tokenizer.SimpleTokenizer(context_length=16))
    >>> sig["context_length"], len(sig["vocab_sha256"])
    (16, 64)
    """
    sig: dict = {"class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}"}
    for name, v in sorted(vars(tokenizer).items()) if hasattr(tokenizer, "__dict__") else ():
        desc = _describe(v)
        if desc is not None and name != "cache":
            sig[name] = desc
    inner = getattr(tokenizer, "tokenizer", None)  # the transformers tokenizer inside open_clip's HFTokenizer
    if inner is not None:
        sig["hf_class"] = type(inner).__qualname__
        sig["name_or_path"] = str(getattr(inner, "name_or_path", ""))
        backend = getattr(inner, "backend_tokenizer", None)
        if backend is not None:  # normaliser, pre-tokeniser, vocabulary, special tokens
            sig["definition_sha256"] = _sha(backend.to_str())
        sig["vocab_sha256"] = _sha(json.dumps(sorted(inner.get_vocab().items())))
    elif hasattr(tokenizer, "encoder"):  # open_clip SimpleTokenizer: BPE vocabulary and merges
        merges = sorted((" ".join(k), v) for k, v in getattr(tokenizer, "bpe_ranks", {}).items())
        sig["vocab_sha256"] = _sha(json.dumps([sorted(tokenizer.encoder.items()), merges]))
    return sig


def _params_digest(named: list[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(named, key=lambda kv: kv[0]):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def is_hf_text(net: torch.nn.Module) -> bool:
    return hasattr(net, "text") and hasattr(net.text, "proj") and hasattr(net.text, "pooler")


def text_cache_key(model: EmbeddingModel) -> str:
    """Store key ("trunk:<hash>") of a model's frozen text-trunk features; see module docstring."""
    net: Any = model.model  # a CLIP module: its text tower's parts are untyped on nn.Module
    hf = is_hf_text(net)
    parts: dict[str, Any]
    if hf:
        weights = list(net.text.transformer.state_dict().items())
        parts = {"pooler": type(net.text.pooler).__qualname__, "proj": type(net.text.proj).__qualname__,
                 "proj_layout": [f"{n}:{tuple(p.shape)}" for n, p in net.text.proj.named_parameters()]}
    else:  # native tower: encode_text(normalize=False) uses every non-visual weight but the temperature
        weights = [(k, v) for k, v in net.state_dict().items()
                   if not k.startswith("visual.") and not k.startswith("logit_")]
        parts = {"pool_type": getattr(net, "text_pool_type", None)}
    text_cfg = (model.model_cfg or {}).get("text_cfg", {})
    desc = {"hf": hf, "weights": _params_digest(weights), "text_cfg": text_cfg, **parts,
            "tokenizer": tokenizer_signature(model.tokenizer)}
    return "trunk:" + hashlib.blake2b(json.dumps(desc, sort_keys=True, default=str).encode(),
                                      digest_size=16).hexdigest()


class TextSide:
    """Text features for training: cached trunk features + trainable head when the text tower is locked."""

    def __init__(self, model: EmbeddingModel, texts: list[str], locked: bool, store: EmbeddingStore,
                 progress: bool = True) -> None:
        self.model, self.texts, self.locked = model, texts, locked
        self.is_hf = is_hf_text(model.model)
        self.features: torch.Tensor | None = None
        if locked:
            self.features = self._trunk_features(store, progress)  # (n_texts, trunk_dim)

    def head(self) -> torch.nn.Module:
        net: Any = self.model.model  # text.proj: untyped on nn.Module
        return net.text.proj if self.is_hf else torch.nn.Identity()

    @torch.inference_mode()
    def _trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        net: Any = self.model.model  # text / encode_text: untyped on nn.Module
        if self.is_hf:
            attn_mask = (tokens != net.text.config.pad_token_id).long()
            out = net.text.transformer(input_ids=tokens, attention_mask=attn_mask)
            return net.text.pooler(out, attn_mask)
        return net.encode_text(tokens, normalize=False)

    def _trunk_features(self, store: EmbeddingStore, progress: bool) -> torch.Tensor:
        key = text_cache_key(self.model)
        keys = [text_digest(t) for t in self.texts]
        cached = store.get_many(key, "text", set(keys))
        todo = sorted({k: t for k, t in zip(keys, self.texts) if k not in cached}.items())
        self.model.model.eval()
        with tqdm(total=len(todo), desc="text features (frozen tower)", unit="text", disable=not progress or not todo) as bar:
            for i in range(0, len(todo), 256):
                chunk = todo[i:i + 256]
                tokens = self.model.tokenizer([t for _, t in chunk]).to(self.model.device)  # (b, ctx)
                feats = self._trunk(tokens).float().cpu().numpy()  # (b, trunk_dim)
                store.put_many(key, "text", [k for k, _ in chunk], feats)
                cached.update(zip([k for k, _ in chunk], feats))
                bar.update(len(chunk))
        return torch.from_numpy(np.stack([cached[k] for k in keys]))

    def encode(self, text_ids: torch.Tensor) -> torch.Tensor:
        """(b,) text indices -> (b, dim) L2-normalised features, with gradients where trainable."""
        dev = self.model.device
        if self.locked and self.features is not None:  # locked: the features were cached in __init__
            return F.normalize(self.head()(self.features[text_ids].to(dev)), dim=-1)
        tokens = self.model.tokenizer([self.texts[i] for i in text_ids.tolist()]).to(dev)
        net: Any = self.model.model  # encode_text: untyped on nn.Module
        return F.normalize(net.encode_text(tokens), dim=-1)
