"""The training loop: `train(catalog, cfg, out_dir, ...)` -> `TrainResult`.

Order of work: check the settings (and, on resume, the checkpoint's settings
and architecture), choose captions and the split, then the slow part: decode
every image once (failures reported), compute the frozen text features, train.

Determinism: the shuffle, caption choice and augmentation of epoch e depend
only on (seed, e), cached and freshly decoded pixels are rounded alike (fp16),
and a checkpoint holds the weights and the optimizer state, so a run resumed
after epoch k ends with the same weights as an uninterrupted one.

Example:
    >>> result = train(catalog, TrainConfig(epochs=2), out_dir="runs/x", recipe="tiny-teaching")  # doctest: +SKIP
    >>> result.model.source                                                                       # doctest: +SKIP
    PosixPath('runs/x')
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fclip_workbench.data.catalog import Catalog, Problem
from fclip_workbench.embedding.decode import default_num_workers
from fclip_workbench.training.losses import ContrastiveLoss
from fclip_workbench.analysis.metrics import retrieval_metrics
from fclip_workbench.embedding.models import EmbeddingModel, save_model_folder, weights_fingerprint
from fclip_workbench.data.splits import SplitRecord, ids_digest, is_validation, write_split
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.training.checkpoints import (CHECKPOINTS, check_resume, check_resume_data, config_dict, latest_checkpoint,
                          load_weights, read_state, save_checkpoint)
from fclip_workbench.training.data import (PixelCache, PixelSource, augment, caption_rows, caption_table, colour_free_captions,
                   pick_captions, pixel_keys)
from fclip_workbench.training.domain import domain_views
from fclip_workbench.training.outdir import claim_out_dir
from fclip_workbench.training.recipes import ConfigError, Recipe, TrainConfig, get_recipe, new_model
from fclip_workbench.training.text import TextSide

log = logging.getLogger(__name__)
VAL_BATCH = 512


@dataclass
class TrainResult:
    out_dir: Path
    history: list[dict]  # per epoch: loss, val_R@1 / val_R@10 (None when nothing is held out), seconds, ...
    skipped: list[Problem]  # products left out, with the reason
    n_train: int
    n_val: int  # held-out products (the first `val_max` are scored each epoch)
    step_losses: list[float] = field(default_factory=list)  # this run's loss per optimizer step
    model: EmbeddingModel | None = None  # the trained model: fresh fingerprint, source = out_dir
    split: SplitRecord | None = None  # how the training products were chosen (also in training.json)


# ------------------------------------------------------------------ schedule, optimizer, trainable parts
def cosine_lr(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to 0 at `total`.

    >>> cosine_lr(0, 1.0, 10, 100)
    0.1
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on weight matrices only."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "bn" in name or "ln" in name or "logit" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def set_trainable(model: EmbeddingModel, cfg: TrainConfig) -> None:
    """Freeze the text transformer (LiT) and/or the image tower as `cfg` says."""
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


def refresh_model(model: EmbeddingModel, out_dir: Path) -> None:
    """After in-place training: a fingerprint of the new weights, and `source` = the folder holding them."""
    model.source = out_dir
    if callable(getattr(model, "refresh_fingerprint", None)):
        model.refresh_fingerprint()
        return
    try:
        model.fingerprint = weights_fingerprint(model.model, model.model_cfg, model.preprocess_cfg)
    except AttributeError:  # a read-only property that refreshes itself
        pass


# ------------------------------------------------------------------ evaluation during training
@torch.inference_mode()
def _val_recall(model: EmbeddingModel, text: TextSide, source: PixelSource, positions: list[int],
                title_ids: dict[int, int]) -> dict:
    model.model.eval()
    order = [positions[i:i + VAL_BATCH] for i in range(0, len(positions), VAL_BATCH)]
    done, img = [], []
    for pos, x in source.batches(order):
        done += pos
        img.append(model.encode_images(x))  # (b, dim)
    ids = torch.tensor([title_ids[p] for p in done], dtype=torch.long)
    txt = torch.cat([text.encode(ids[i:i + VAL_BATCH]) for i in range(0, len(ids), VAL_BATCH)]).float().cpu().numpy()
    return retrieval_metrics(txt @ np.concatenate(img).T, ks=(1, 10))


def _epoch_line(epoch: int, cfg: TrainConfig, rec: dict, n_scored: int) -> str:
    val = (f"val R@1 {rec['val_R@1']:.3f} R@10 {rec['val_R@10']:.3f} ({n_scored} held-out)"
           if rec["val_R@1"] is not None else "no held-out products")
    return f"epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.3f}, {val}, {rec['seconds']} s"


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
    overwrite: bool = False,
) -> TrainResult:
    """Train `model` (a loaded model, trained in place; a spec; or a fresh `recipe` model) on `catalog`.

    `stop_after_epochs` ends the run early (as an interruption would) after that
    many epochs; the checkpoint lets `resume=True` finish the same schedule.
    `result.model` is the trained model (the same object when one was passed).
    `out_dir` must not hold another run (unless `resume`, or `overwrite=True`
    replaces it) nor be the starting model's folder; one run writes it at a time
    (`outdir.claim_out_dir`).
    """
    if isinstance(model, EmbeddingModel):
        source = model.source
    elif isinstance(model, (str, Path)) and Path(model).exists():
        source = Path(model)
    else:
        source = None
    with claim_out_dir(out_dir, resume, overwrite, source):
        return _train(catalog, cfg, out_dir, model, recipe, resume, store, num_workers, progress, stop_after_epochs)


def _train(catalog, cfg, out_dir, model, recipe, resume, store, num_workers, progress,
           stop_after_epochs) -> TrainResult:
    from fclip_workbench.embedding.models import load_model

    # 1. settings, then the checkpoint's settings: before any slow work
    if model is None and recipe is None:
        raise ConfigError("Give a model to fine-tune or a recipe to train from scratch")
    rec = get_recipe(recipe) if recipe is not None else None
    cfg = cfg or (rec.train if rec else TrainConfig())
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    out_dir = Path(out_dir)
    ckpt = latest_checkpoint(out_dir) if resume else None
    state = read_state(ckpt) if ckpt is not None else None
    if state is not None:
        check_resume(ckpt, state, cfg)
    # 2. extra data (CCP crops of the training photos), captions and the split: enough products for one step?
    data_record = None
    if cfg.ccp_heldout is not None:
        catalog, data_record = _with_ccp(catalog, cfg, out_dir)
    rows, captions, skipped = caption_rows(catalog, cfg.captions)
    ids = [catalog.ids[r] for r in rows]
    held = is_validation(ids, cfg.val_fraction, cfg.seed, titles=[catalog.texts[r] for r in rows], rule=cfg.split_rule)
    _check_batch(cfg, int((~held).sum()), catalog)
    planned = ids_digest(ids[p] for p in np.flatnonzero(~held))
    if state is not None:
        check_resume_data(ckpt, state, "planned_train_ids_sha256", planned)

    # 3. the model (built, loaded or given); on resume its architecture must be the checkpoint's
    store = store or EmbeddingStore()
    torch.manual_seed(cfg.seed)
    if isinstance(model, (str, Path)):
        model = load_model(model)
    elif model is None:
        model = new_model(rec, seed=cfg.seed)
    if state is not None:
        check_resume(ckpt, state, cfg, model.model_cfg, model.preprocess_cfg)
    dev = model.device
    use_amp = cfg.precision == "amp" or (cfg.precision == "auto" and dev.type == "cuda")

    # 4. decode every image once (the bounded cache keeps what fits); failures are reported
    paths = [str(catalog.image_path(r)) for r in rows]
    digests = store.file_digests(paths)
    for p, d in enumerate(digests):
        if d is None:
            skipped.append(catalog.problem(rows[p], "image", f"missing file {paths[p]}"))
    source = PixelSource(paths, pixel_keys(digests, model.preprocess_cfg), model.preprocess,
                         PixelCache(int(cfg.pixel_cache_mb * 2**20)),
                         default_num_workers() if num_workers is None else num_workers)
    val_all = [int(p) for p in np.flatnonzero(held) if digests[p] is not None]
    train_all = [int(p) for p in np.flatnonzero(~held) if digests[p] is not None]
    failed = source.prefetch(val_all[: cfg.val_max] + train_all + val_all[cfg.val_max:], progress)
    skipped += [catalog.problem(rows[p], "image", err) for p, err in sorted(failed.items())]
    train_pos = [p for p in train_all if p not in failed]
    val_pos = [p for p in val_all if p not in failed]
    _check_batch(cfg, len(train_pos), catalog)
    train_ids = [ids[p] for p in train_pos]
    split = SplitRecord(cfg.split_rule, cfg.seed, cfg.val_fraction, catalog.name, len(train_pos), len(val_pos),
                        ids_digest(train_ids))
    scored = val_pos[: cfg.val_max]  # scored each epoch

    # 5. unique texts, the (product, caption) -> text id table, text features
    #    with colour_free_captions, a second table per product (appended, so the first's text ids stay)
    plain = colour_free_captions(catalog, rows, cfg.captions) if cfg.colour_free_captions else []
    if cfg.colour_free_captions and not any(plain):
        log.warning("colour_free_captions is on, but no caption template names a product without its colour or "
                    "title (e.g. '{articleType}'): colourless views keep their ordinary captions")
    texts, cap_table, n_caps = caption_table(captions + plain)  # (n_products [* 2], max_caps), (n_products [* 2],)
    plain_table, plain_n = cap_table[len(rows):], n_caps[len(rows):]  # empty unless colour_free_captions
    cap_table, n_caps = cap_table[:len(rows)], n_caps[:len(rows)]
    set_trainable(model, cfg)
    text = TextSide(model, texts, cfg.lock_text, store, progress)
    title_ids = {p: int(cap_table[p, 0]) for p in scored}  # the first template is the title

    # 6. optimizer, schedule, resume
    net = model.model
    opt = make_optimizer(net, cfg)
    loss_fn = ContrastiveLoss(cfg.loss)
    steps_per_epoch = len(train_pos) // (cfg.batch_size * cfg.grad_accum)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    start_epoch, step, history, step_losses, runs = 0, 0, [], [], []
    if state is not None:
        load_weights(net, ckpt)
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, history = int(state["epoch"]) + 1, int(state["step"]), list(state["history"])
        runs = list(state.get("runs") or [{"from_epoch": 0, "config": state.get("config")}])
        log.info("resumed from %s (epoch %d, step %d)", ckpt, start_epoch, step)
    runs.append({"from_epoch": start_epoch, "resumed_from": str(ckpt) if ckpt else None, "config": config_dict(cfg)})
    mean = torch.tensor(model.preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)
    include_text = not (cfg.lock_text and text.is_hf)
    fill = _letterbox_fill(model.preprocess_cfg)
    train_t = torch.tensor(train_pos, dtype=torch.long)

    for epoch in range(start_epoch, cfg.epochs):
        if step >= total_steps:
            break
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = train_t[torch.randperm(len(train_t), generator=g)]  # (n_train,) positions
        n_steps = min(steps_per_epoch, total_steps - step)
        bs = cfg.batch_size
        order = [perm[i * bs:(i + 1) * bs].tolist() for i in range(n_steps * cfg.grad_accum)]
        batches = source.batches(order)
        net.train()
        if cfg.lock_image:
            net.visual.eval()
        losses = []
        bar = tqdm(range(n_steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        for _ in bar:
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, cfg.lr, cfg.warmup_steps, total_steps)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for _micro in range(cfg.grad_accum):
                pos, x = next(batches)  # (b,) positions, (b, 3, S, S) pixels
                batch = torch.tensor(pos, dtype=torch.long)
                x = x.to(dev, non_blocking=True)  # augmentation runs on the training device
                colourless = None  # (b,) bool: views drawn without colour
                if cfg.augment and cfg.domain_augment:
                    x, colourless = domain_views(x, g, mean, std, fill=fill)
                elif cfg.augment:
                    x = augment(x, g, mean, std)
                text_ids = pick_captions(batch, cap_table, n_caps, g,
                                         *((colourless, plain_table, plain_n) if cfg.colour_free_captions else ()))
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    img = F.normalize(net.encode_image(x), dim=-1)  # (b, dim)
                    txt = text.encode(text_ids)  # (b, dim)
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
        batches.close()
        val = _val_recall(model, text, source, scored, title_ids) if scored else None
        rec_ = {"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)) if losses else float("nan"),
                "val_R@1": val["R@1"] if val else None, "val_R@10": val["R@10"] if val else None,
                "seconds": round(time.perf_counter() - t0, 1), "logit_scale": float(net.logit_scale.detach().exp())}
        history.append(rec_)
        (tqdm.write if progress else log.info)(_epoch_line(epoch, cfg, rec_, len(scored)))
        save_checkpoint(model, opt, out_dir / CHECKPOINTS / f"epoch-{epoch + 1:03d}", include_text,
                        epoch=epoch, step=step, history=history, config=config_dict(cfg), runs=runs,
                        model_cfg=model.model_cfg, preprocess_cfg=model.preprocess_cfg,
                        planned_train_ids_sha256=planned, train_ids_sha256=split.train_ids_sha256)
        if stop_after_epochs is not None and epoch + 1 >= stop_after_epochs:
            break

    # 7. the model folder, the split, the summary; the passed model now names its new weights
    net.eval()
    save_model_folder(net, model.model_cfg, model.preprocess_cfg, out_dir, include_text_tower=include_text)
    write_split(out_dir, split, train_ids)
    late = sorted(source.failures.keys() - failed.keys())  # images that stopped decoding during the run
    skipped += [catalog.problem(rows[p], "image", source.failures[p]) for p in late]
    summary = {"recipe": rec.name if rec else None, "config": config_dict(cfg), "config_history": runs,
               "split": split.to_dict(), "history": history, "n_train": split.n_train, "n_heldout": split.n_heldout,
               "n_val_scored": len(scored), "skipped": len(skipped), "catalog": catalog.name, "n_texts": len(texts)}
    if data_record is not None:
        summary["data"] = data_record
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    refresh_model(model, out_dir)
    return TrainResult(out_dir, history, skipped, split.n_train, split.n_heldout, step_losses, model, split)


def _check_batch(cfg: TrainConfig, n_train: int, catalog: Catalog) -> None:
    need = cfg.batch_size * cfg.grad_accum
    if n_train == 0:
        raise ConfigError(f"Catalog {catalog.name!r} has no training products (usable image and a caption "
                          f"from the templates, outside the held-out share val_fraction={cfg.val_fraction})")
    if n_train < need:
        acc = f" x grad_accum={cfg.grad_accum}" if cfg.grad_accum > 1 else ""
        raise ConfigError(f"batch_size={cfg.batch_size}{acc} is larger than the {n_train} training products of "
                          f"catalog {catalog.name!r}: give a batch size of at most {n_train // cfg.grad_accum}")


def _with_ccp(catalog: Catalog, cfg: TrainConfig, out_dir: Path) -> tuple[Catalog, dict]:
    """The catalog plus CCP garment crops and photos of the training photos (written under out_dir/ccp-data)."""
    from fclip_workbench.paths import find_dataset
    from fclip_workbench.training.mix import v2_catalog

    root = find_dataset("ccp")
    if root is None:
        raise ConfigError("this recipe also trains on CCP street photos (ccp_heldout is set), but no CCP folder was "
                          "found (../shared/data/ccp or $FCLIP_DATA/ccp); set FCLIP_DATA, or ccp_heldout=None")
    keep = None
    if cfg.train_share < 1.0:  # fewer training products; the held-out ones stay (same split as without it)
        held = is_validation(catalog.ids, cfg.val_fraction, cfg.seed, titles=catalog.texts, rule=cfg.split_rule)
        kept = is_validation(catalog.ids, cfg.train_share, cfg.seed + 7_919, rule="id-hash-v1")
        keep = held | kept
    return v2_catalog(catalog, root, out_dir / "ccp-data", cfg.ccp_heldout, cfg.seed, cfg.ccp_repeat, keep)


def _letterbox_fill(preprocess_cfg: dict) -> tuple[float, float, float] | None:
    """The letterbox colour in [0, 1] for letterboxing preprocessings, else None."""
    if (preprocess_cfg or {}).get("resize_mode") != "longest":
        return None
    c = preprocess_cfg.get("fill_color", 0)
    c = c if isinstance(c, (list, tuple)) else (c, c, c)
    return tuple(float(v) / 255 for v in c)
