"""Contrastive training and fine-tuning on a catalog's (image, caption) pairs.

Modes: fine-tune a loaded model (towers optionally locked), LiT (frozen
pretrained text tower, image tower trained) and from scratch (a recipe's
config). Captions come from templates over each product's title and
attributes, sampled per step. With a locked text tower, the text features of
every caption are computed once and cached, so a step costs only the image tower.

Determinism: the shuffle, caption choice and augmentation of epoch e depend
only on (seed, e), and a checkpoint holds the weights and the optimizer state,
so a run resumed after epoch k ends with the same weights as an uninterrupted one.

Example:
    >>> result = train(catalog, TrainConfig(epochs=2), out_dir="runs/x", recipe="tiny-teaching")  # doctest: +SKIP
    >>> load_model("runs/x")                                                                     # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .catalog import Catalog, Problem
from .embed import _ImageDataset, _worker_init, default_num_workers
from .images import text_digest
from .losses import ContrastiveLoss
from .metrics import retrieval_metrics
from .models import MINILM_ALIAS, EmbeddingModel, build_model, save_model_folder, weights_fingerprint
from .prompts import KAGL_CAPTIONS, product_texts
from .splits import split_rows
from .store import EmbeddingStore

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    epochs: int = 5  # passes over the training products
    batch_size: int = 256  # products per micro-batch (contrastive negatives come from it)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.1  # on weight matrices only (not gains, biases, temperature)
    warmup_steps: int = 200  # linear warm-up, then cosine decay to 0
    loss: str = "clip"  # "clip" (InfoNCE) or "siglip"
    lock_text: bool = True  # freeze the text transformer (LiT); its projection still trains
    lock_image: bool = False  # freeze the image tower
    val_fraction: float = 0.05  # share of product ids held out (hash split, no leakage)
    val_max: int = 1000  # held-out products scored each epoch
    seed: int = 0  # seeds the split, init, shuffles, captions and augmentation
    precision: str = "auto"  # "fp32", "amp" (bf16 autocast on CUDA) or "auto" (amp on CUDA)
    augment: bool = True  # random zoom/shift, flip and greyscale of training images
    captions: tuple[str, ...] = KAGL_CAPTIONS  # caption templates sampled per step
    max_steps: int | None = None  # stop after this many optimizer steps (quick runs)


@dataclass(frozen=True)
class Recipe:
    """A model architecture plus its training settings: `fclip train --recipe NAME`."""

    name: str
    description: str
    model_cfg: dict = field(hash=False)
    preprocess_cfg: dict = field(hash=False)
    train: TrainConfig = TrainConfig()


MINILM_TEXT = {"hf_model_name": MINILM_ALIAS, "hf_tokenizer_name": MINILM_ALIAS, "hf_pooler_type": "mean_pooler",
               "hf_proj_type": "linear", "context_length": 32}

RECIPES: dict[str, Recipe] = {
    "mini-kagl": Recipe(
        "mini-kagl",
        "fclip-mini: ResNet image tower (64 px, 6.9M params) trained on KAGL against the frozen MiniLM text tower",
        {"embed_dim": 256, "vision_cfg": {"layers": [2, 2, 2, 2], "width": 32, "image_size": 64, "head_width": 64},
         "text_cfg": MINILM_TEXT},
        {"size": 64, "resize_mode": "squash", "interpolation": "bicubic"},
        TrainConfig(epochs=10, batch_size=256, lr=2e-3, warmup_steps=300, val_fraction=0.05),
    ),
    "tiny-teaching": Recipe(
        "tiny-teaching",
        "a tiny model for the synthetic teaching catalog: small ResNet (32 px) and the frozen MiniLM text tower",
        {"embed_dim": 128, "vision_cfg": {"layers": [1, 1, 1, 1], "width": 16, "image_size": 32, "head_width": 64},
         "text_cfg": MINILM_TEXT},
        {"size": 32, "resize_mode": "squash", "interpolation": "bicubic"},
        TrainConfig(epochs=6, batch_size=128, lr=2e-3, warmup_steps=50, val_fraction=0.1,
                    captions=("{title}", "{title}", "a {colour} {garment}", "a {pattern} {garment}",
                              "{garment}", "a photo of a {garment}", "{colour} {pattern} {garment}")),
    ),
}


def new_model(recipe: str | Recipe, device=None, seed: int = 0) -> EmbeddingModel:
    """A freshly initialised model of a recipe (the MiniLM text tower is pretrained)."""
    recipe = get_recipe(recipe)
    torch.manual_seed(seed)
    return build_model(recipe.model_cfg, None, recipe.preprocess_cfg, recipe.name, device)


def get_recipe(recipe: str | Recipe) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}. Known recipes: {', '.join(RECIPES)}")
    return RECIPES[recipe]


@dataclass
class TrainResult:
    out_dir: Path
    history: list[dict]
    skipped: list[Problem]  # products left out, with the reason
    n_train: int
    n_val: int  # held-out products (the first `val_max` are scored each epoch)
    step_losses: list[float] = field(default_factory=list)  # this run's loss per optimizer step


# ------------------------------------------------------------------ data
def product_fields(catalog: Catalog, row: int) -> dict:
    rec = catalog.table.iloc[row].to_dict()
    return {**rec, "title": rec["text"]}


def preload_images(model: EmbeddingModel, catalog: Catalog, rows: Sequence[int], store: EmbeddingStore,
                   num_workers: int | None = None, progress: bool = True) -> tuple[torch.Tensor, np.ndarray, list[Problem]]:
    """Decode + preprocess images once: (pixels (n_ok, 3, S, S) float16, ok rows, failures).

    The tensor is cached on disk (keyed by preprocessing and image contents).
    """
    rows = [int(r) for r in rows]
    digests = store.file_digests([catalog.image_path(r) for r in rows])
    key = hashlib.blake2b(json.dumps([model.preprocess_cfg, digests], default=str).encode(), digest_size=12).hexdigest()
    cache = Path(store.path).parent / "pixels" if store.path != ":memory:" else None
    if cache is not None and (cache / f"{key}.npz").is_file():
        data = np.load(cache / f"{key}.npz")
        failures = [Problem(catalog.ids[r], "image", str(reason), row=int(r))
                    for r, reason in zip(data["bad_rows"], data["bad_reasons"])]
        return torch.from_numpy(data["pixels"]), data["ok_rows"], failures
    num_workers = default_num_workers() if num_workers is None else num_workers
    ds = _ImageDataset([str(catalog.image_path(r)) for r in rows], model.preprocess)
    loader = DataLoader(ds, batch_size=256, num_workers=num_workers, worker_init_fn=_worker_init if num_workers else None,
                        collate_fn=lambda b: b)
    pixels, ok, bad = [], [], []
    with tqdm(total=len(rows), desc="decoding images", unit="img", disable=not progress) as bar:
        for batch in loader:
            for pos, x, err in batch:
                if x is None:
                    bad.append((rows[pos], err))
                else:
                    pixels.append(x.half())
                    ok.append(rows[pos])
            bar.update(len(batch))
    size = model.image_size
    tensor = torch.stack(pixels) if pixels else torch.zeros((0, 3, size, size), dtype=torch.float16)
    ok_rows = np.array(ok, dtype=np.int64)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"{key}.tmp.npz"
        np.savez(tmp, pixels=tensor.numpy(), ok_rows=ok_rows, bad_rows=np.array([r for r, _ in bad], np.int64),
                 bad_reasons=np.array([e for _, e in bad], dtype=str))
        os.replace(tmp, cache / f"{key}.npz")
    failures = [Problem(catalog.ids[r], "image", e, row=r) for r, e in bad]
    return tensor, ok_rows, failures


def augment(x: torch.Tensor, g: torch.Generator, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Random zoom (0.8-1), shift, horizontal flip, 20% greyscale (half of it inverted). x: (b, 3, h, w) normalised."""
    b = x.shape[0]
    scale = 1.0 - 0.2 * torch.rand(b, generator=g)
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * (1 - scale)[:, None]
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid.to(x.dtype), padding_mode="border", align_corners=False)
    grey = torch.rand(b, generator=g) < 0.2
    invert = torch.rand(b, generator=g) < 0.5  # half the greyscale ones: light garment on dark ground
    if grey.any():
        raw = x[grey] * std + mean  # (g, 3, h, w) in [0, 1]
        lum = (0.299 * raw[:, 0] + 0.587 * raw[:, 1] + 0.114 * raw[:, 2])[:, None]
        lum = torch.where(invert[grey].view(-1, 1, 1, 1), 1.0 - lum, lum)
        x[grey] = (lum - mean) / std
    return x


class TextSide:
    """Text features for training: cached trunk features + trainable head when the text tower is locked."""

    def __init__(self, model: EmbeddingModel, texts: list[str], locked: bool, store: EmbeddingStore,
                 progress: bool = True) -> None:
        self.model, self.texts, self.locked = model, texts, locked
        net = model.model
        self.is_hf = hasattr(net, "text") and hasattr(net.text, "proj") and hasattr(net.text, "pooler")
        self.features = None
        if locked:
            self.features = self._trunk_features(store, progress)  # (n_texts, trunk_dim)

    def head(self) -> torch.nn.Module:
        return self.model.model.text.proj if self.is_hf else torch.nn.Identity()

    @torch.inference_mode()
    def _trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        net = self.model.model
        if self.is_hf:
            attn_mask = (tokens != net.text.config.pad_token_id).long()
            out = net.text.transformer(input_ids=tokens, attention_mask=attn_mask)
            return net.text.pooler(out, attn_mask)
        return net.encode_text(tokens, normalize=False)

    def _trunk_features(self, store: EmbeddingStore, progress: bool) -> torch.Tensor:
        net = self.model.model
        tower = net.text.transformer if self.is_hf else net
        fp = "trunk:" + weights_fingerprint(tower, {"hf": self.is_hf})
        keys = [text_digest(t) for t in self.texts]
        cached = store.get_many(fp, "text", set(keys))
        todo = sorted({k: t for k, t in zip(keys, self.texts) if k not in cached}.items())
        net.eval()
        with tqdm(total=len(todo), desc="text features (frozen tower)", unit="text", disable=not progress or not todo) as bar:
            for i in range(0, len(todo), 256):
                chunk = todo[i:i + 256]
                tokens = self.model.tokenizer([t for _, t in chunk]).to(self.model.device)
                feats = self._trunk(tokens).float().cpu().numpy()
                store.put_many(fp, "text", [k for k, _ in chunk], feats)
                cached.update(zip([k for k, _ in chunk], feats))
                bar.update(len(chunk))
        return torch.from_numpy(np.stack([cached[k] for k in keys]))

    def encode(self, text_ids: torch.Tensor) -> torch.Tensor:
        """(b,) text indices -> (b, dim) L2-normalised features, with gradients where trainable."""
        dev = self.model.device
        if self.locked:
            return F.normalize(self.head()(self.features[text_ids].to(dev)), dim=-1)
        tokens = self.model.tokenizer([self.texts[i] for i in text_ids.tolist()]).to(dev)
        return F.normalize(self.model.model.encode_text(tokens), dim=-1)


# ------------------------------------------------------------------ schedule, optimizer
def cosine_lr(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "bn" in name or "ln" in name or "logit" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def set_trainable(model: EmbeddingModel, cfg: TrainConfig) -> None:
    net = model.model
    for p in net.parameters():
        p.requires_grad_(True)
    if cfg.lock_text:
        tower = net.text.transformer if hasattr(net, "text") and hasattr(net.text, "transformer") else None
        if tower is not None:  # HF tower: the transformer is frozen, the projection trains
            for p in tower.parameters():
                p.requires_grad_(False)
        else:  # open_clip native text tower: freeze all of it
            for name, p in net.named_parameters():
                if not name.startswith("visual.") and not name.startswith("logit_"):
                    p.requires_grad_(False)
    if cfg.lock_image:
        for p in net.visual.parameters():
            p.requires_grad_(False)


# ------------------------------------------------------------------ checkpoints
def latest_checkpoint(out_dir: str | Path) -> Path | None:
    ckpts = sorted(Path(out_dir, CHECKPOINTS).glob("epoch-*/" + STATE_FILE))
    return ckpts[-1].parent if ckpts else None


def _save_checkpoint(model: EmbeddingModel, opt, epoch: int, step: int, history: list[dict], cfg: TrainConfig,
                     folder: Path, include_text: bool) -> None:
    save_model_folder(model.model, model.model_cfg, model.preprocess_cfg, folder, include_text_tower=include_text)
    state = {"epoch": epoch, "step": step, "optimizer": opt.state_dict(), "history": json.dumps(history),
             "config": json.dumps(asdict(cfg))}
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE_FILE)


# ------------------------------------------------------------------ evaluation during training
@torch.inference_mode()
def encode_pixels(model: EmbeddingModel, pixels: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    model.model.eval()
    return np.concatenate([model.encode_images(pixels[i:i + batch_size].float())
                           for i in range(0, len(pixels), batch_size)]) if len(pixels) else np.zeros((0, 1), np.float32)


@torch.inference_mode()
def _val_recall(model: EmbeddingModel, text: TextSide, pixels: torch.Tensor, title_ids: torch.Tensor) -> dict:
    img = encode_pixels(model, pixels)  # (n, dim)
    txt = torch.cat([text.encode(title_ids[i:i + 512]) for i in range(0, len(title_ids), 512)]).float().cpu().numpy()
    return retrieval_metrics(txt @ img.T, ks=(1, 10))


# ------------------------------------------------------------------ the loop
def train(
    catalog: Catalog,
    cfg: TrainConfig | None = None,
    out_dir: str | Path = "runs/train",
    model: EmbeddingModel | str | None = None,
    recipe: str | Recipe | None = None,
    resume: bool = False,
    store: EmbeddingStore | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train `model` (a loaded model, a spec, or a fresh `recipe` model) on `catalog`; see module docstring.

    `stop_after_epochs` ends the run early (as an interruption would) after that
    many epochs; the checkpoint lets `resume=True` finish the same schedule.
    """
    from .models import load_model

    if model is None and recipe is None:
        raise ValueError("Give a model to fine-tune or a recipe to train from scratch")
    rec = get_recipe(recipe) if recipe is not None else None
    cfg = cfg or (rec.train if rec else TrainConfig())
    out_dir = Path(out_dir)
    store = store or EmbeddingStore()
    torch.manual_seed(cfg.seed)
    if isinstance(model, str):
        model = load_model(model)
    elif model is None:
        model = new_model(rec, seed=cfg.seed)
    dev = model.device
    use_amp = cfg.precision == "amp" or (cfg.precision == "auto" and dev.type == "cuda")

    # 1. captions per product; products without any caption or usable image are reported
    skipped: list[Problem] = [p for p in catalog.problems if p.row is not None and p.field in ("image", "item_id")]
    rows, captions = [], []
    for r in catalog.usable_rows("image"):
        caps = product_texts(product_fields(catalog, int(r)), cfg.captions)
        if caps:
            rows.append(int(r))
            captions.append(caps)
        else:
            skipped.append(Problem(catalog.ids[r], "text", "no caption template applies", row=int(r)))
    pixels, ok_rows, failed = preload_images(model, catalog, rows, store, num_workers, progress)
    skipped += failed
    keep = {r: i for i, r in enumerate(rows)}
    captions = [captions[keep[int(r)]] for r in ok_rows]
    ids = [catalog.ids[int(r)] for r in ok_rows]
    train_idx, val_idx = split_rows(ids, cfg.val_fraction, cfg.seed)
    if len(train_idx) < cfg.batch_size:
        raise ValueError(f"Only {len(train_idx)} training products, fewer than batch_size={cfg.batch_size}")
    n_heldout = len(val_idx)
    val_idx = val_idx[: cfg.val_max]  # scored each epoch

    # 2. unique texts and the (product, caption) -> text id table
    unique: dict[str, int] = {}
    max_caps = max(len(c) for c in captions)
    cap_table = torch.full((len(captions), max_caps), -1, dtype=torch.long)
    for i, caps in enumerate(captions):
        for j, t in enumerate(caps):
            cap_table[i, j] = unique.setdefault(t, len(unique))
    n_caps = (cap_table >= 0).sum(1)  # (n,)
    texts = list(unique)
    set_trainable(model, cfg)
    text = TextSide(model, texts, cfg.lock_text, store, progress)
    title_ids = cap_table[torch.from_numpy(val_idx), 0]  # the first template is the title

    # 3. optimizer, schedule, resume
    net = model.model
    opt = make_optimizer(net, cfg)
    loss_fn = ContrastiveLoss(cfg.loss)
    steps_per_epoch = len(train_idx) // (cfg.batch_size * cfg.grad_accum)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    start_epoch, step, history, step_losses = 0, 0, [], []
    if resume and (ckpt := latest_checkpoint(out_dir)) is not None:
        from .models import _read_state_dict
        net.load_state_dict(_read_state_dict(ckpt / "open_clip_model.safetensors"), strict=False)
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], json.loads(state["history"])
        log.info("resumed from %s (epoch %d, step %d)", ckpt, state["epoch"], step)
    mean = torch.tensor(model.preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)
    include_text = not (cfg.lock_text and text.is_hf)
    train_t = torch.from_numpy(train_idx)

    for epoch in range(start_epoch, cfg.epochs):
        if step >= total_steps:
            break
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = train_t[torch.randperm(len(train_t), generator=g)]
        net.train()
        if cfg.lock_image:
            net.visual.eval()
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for s in bar:
            if step >= total_steps:
                break
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, cfg.lr, cfg.warmup_steps, total_steps)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(cfg.grad_accum):
                lo = (s * cfg.grad_accum + micro) * cfg.batch_size
                batch = perm[lo: lo + cfg.batch_size]  # (b,) product indices
                x = pixels[batch].float()  # (b, 3, S, S)
                if cfg.augment:
                    x = augment(x, g, mean, std)
                pick = (torch.rand(len(batch), generator=g) * n_caps[batch]).long()
                text_ids = cap_table[batch, pick]  # (b,)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    img = F.normalize(net.encode_image(x.to(dev)), dim=-1)
                    txt = text.encode(text_ids)
                    loss = loss_fn(img.float(), txt.float(), net.logit_scale.exp(),
                                   getattr(net, "logit_bias", None), group_ids=text_ids.to(dev))
                (loss / cfg.grad_accum).backward()
                total += float(loss.detach()) / cfg.grad_accum
            opt.step()
            with torch.no_grad():
                net.logit_scale.clamp_(0, math.log(100))
            step += 1
            losses.append(total)
            step_losses.append(total)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
        bar.close()
        val = _val_recall(model, text, pixels[torch.from_numpy(val_idx)], title_ids) if len(val_idx) else {}
        rec_ = {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)) if losses else float("nan"),
                "val_R@1": val.get("R@1"), "val_R@10": val.get("R@10"), "seconds": round(time.perf_counter() - t0, 1),
                "logit_scale": float(net.logit_scale.detach().exp())}
        history.append(rec_)
        msg = (f"epoch {epoch + 1}/{cfg.epochs}: loss {rec_['loss']:.3f}, val R@1 {rec_['val_R@1'] or 0:.3f} "
               f"R@10 {rec_['val_R@10'] or 0:.3f} ({len(val_idx)} held-out), {rec_['seconds']} s")
        (tqdm.write if progress else log.info)(msg)
        _save_checkpoint(model, opt, epoch, step, history, cfg, out_dir / CHECKPOINTS / f"epoch-{epoch + 1:03d}",
                         include_text)
        if stop_after_epochs is not None and epoch + 1 >= stop_after_epochs:
            break

    net.eval()
    save_model_folder(net, model.model_cfg, model.preprocess_cfg, out_dir, include_text_tower=include_text)
    summary = {"recipe": rec.name if rec else None, "config": asdict(cfg), "history": history,
               "n_train": int(len(train_idx)), "n_heldout": n_heldout, "n_val_scored": int(len(val_idx)),
               "skipped": len(skipped),
               "catalog": catalog.name, "n_texts": len(texts)}
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    return TrainResult(out_dir, history, skipped, int(len(train_idx)), n_heldout, step_losses)


# ------------------------------------------------------------------ planning a run
TEACHING_CAPTIONS = RECIPES["tiny-teaching"].train.captions


def default_captions(catalog: Catalog) -> tuple[str, ...]:
    """Caption templates that fit the catalog's fields: KAGL's, the teaching catalog's, else the title."""
    cols = set(catalog.table.columns)
    if {"articleType", "baseColour"} <= cols:
        return KAGL_CAPTIONS
    if {"garment", "colour", "pattern"} <= cols:
        return TEACHING_CAPTIONS
    return ("{title}",)


def plan_run(catalog: Catalog, recipe: str | Recipe | None = None, model: str | EmbeddingModel | None = None,
             device=None, **overrides) -> tuple[EmbeddingModel, TrainConfig]:
    """The model to train and its config.

    With `recipe`: a fresh model of the recipe and its settings. With `model`
    (a spec or a loaded model): that model, with fine-tuning defaults (lr 1e-5,
    50 warm-up steps) and captions that fit the catalog. `overrides` (None
    values ignored) replace TrainConfig fields.

    >>> model, cfg = plan_run(catalog, model="fclip-mini", epochs=2, lr=3e-4)   # doctest: +SKIP
    """
    from .models import load_model

    if (recipe is None) == (model is None):
        raise ValueError("Give exactly one of recipe (train from scratch) or model (fine-tune)")
    given = {k: v for k, v in overrides.items() if v is not None}
    if recipe is not None:
        cfg = replace(get_recipe(recipe).train, **given)
        return new_model(recipe, device, cfg.seed), cfg
    cfg = replace(TrainConfig(lr=1e-5, warmup_steps=50, captions=default_captions(catalog)), **given)
    return (load_model(model, device=device) if not isinstance(model, EmbeddingModel) else model), cfg


# ------------------------------------------------------------------ CLI
def add_train_parser(sub) -> None:
    from .cli import add_data_args

    p = sub.add_parser("train", help="contrastive training / fine-tuning on a catalog")
    add_data_args(p, model=False)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--recipe", choices=sorted(RECIPES), help="train a recipe's model from scratch (LiT text tower)")
    src.add_argument("--model", help="fine-tune this model spec")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--out", required=True, help="output folder (loadable with load_model / --model)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--loss", choices=["clip", "siglip"])
    p.add_argument("--seed", type=int)
    p.add_argument("--unlock-text", action="store_true", help="train the text tower too")
    p.add_argument("--lock-image", action="store_true", help="freeze the image tower")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--workers", type=int, default=None, help="image decoding processes (default: by core count)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .cli import open_from_args

    cat = open_from_args(args)
    model, cfg = plan_run(cat, recipe=args.recipe, model=args.model, device=args.device, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, grad_accum=args.grad_accum,
                          max_steps=args.max_steps, loss=args.loss, seed=args.seed,
                          lock_text=False if args.unlock_text else None, lock_image=True if args.lock_image else None)
    t0 = time.perf_counter()
    res = train(cat, cfg, args.out, model=model, recipe=args.recipe, resume=args.resume,
                store=EmbeddingStore(args.cache), num_workers=args.workers, progress=not args.quiet)
    print(f"trained on {res.n_train} products ({res.n_val} held out, {len(res.skipped)} skipped) "
          f"in {time.perf_counter() - t0:.0f} s; model in {res.out_dir}")
    for h in res.history:
        print(f"  epoch {h['epoch']}: loss {h['loss']:.3f}  val R@1 {h['val_R@1'] or 0:.3f}  R@10 {h['val_R@10'] or 0:.3f}")
    return 0
