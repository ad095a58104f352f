"""Benchmark: grounding maps scored against garment masks, and seconds per map.

Rows: every `GroundingExplainer` method plus the centre-point and uniform baselines.
Columns: pointing game (tolerance 4 % of the shorter side: 15 px at 375 px), energy share in the mask, IoU of the top-k% pixels
(k = the mask's area share), deletion AUC (similarity as the most-attributed pixels turn
mean-colour, lower = more faithful; baselines' ties broken at random).

Sets:
- CCP (street photos, pixel masks over 59 labels): the first `--ccp` photos by name among the
  photos held out from fclip-mini v2's training (`datasets.ccp.ccp_is_heldout`, 30 % of the
  photos by a hash of the photo id; `--ccp-photos all` scores every photo); queries are the
  garment labels present with a mask of at least 2% of the photo (the raw label: "shoes",
  "jeans"); models: `--models` (default fclip-mini@1 and fclip-mini@2).
- the teaching catalog (generated garments, exact masks): the first `--teaching` products,
  query = the garment name ("dress"), with fclip-mini and with the teaching model.
Timing: seconds per one-text map on this CPU for fclip-mini and for a random-weight ViT-B/32
(open_clip "ViT-B-32", no weights needed), one torch thread (on a shared 2-core machine more
threads only contend).

Usage:
    python benchmarks/bench_grounding.py [--ccp 30] [--teaching 30] [--steps 8] [--models fclip-mini@2]
        [--ccp-photos heldout|all] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict

import numpy as np
import torch

from fclip_workbench.grounding.maps import GroundingExplainer
from fclip_workbench.grounding.metrics import centre_map, deletion_auc, grounding_scores, uniform_map

METHOD_OPTS = {"paper": {}, "occlusion": {}, "ablation": {}, "integrated_gradients": {}, "saliency": {},
               "gradcam": {}, "gradcam+layer3": {"layer": "layer3"}, "grad_eclip": {},
               "grad_eclip+ms": {"multiscale": True}, "crops": {},
               "crops+small": {"scales": (0.2, 0.3, 0.45)}}
MIN_MASK_SHARE = 0.02


def ccp_items(limit: int, photos: str = "heldout", start: int = 0) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """(photo path, [(label, mask)]) for `limit` CCP photos with a mask (held-out ones by default), from the
    `start`-th such photo on (so settings tuned on the first photos can be checked on the next ones)."""
    from fclip_workbench.data.datasets.ccp import ccp_is_heldout, ccp_labels, load_mask
    from fclip_workbench.data.fetch import require_dataset

    root = require_dataset("ccp")
    names = ccp_labels(root)
    out = []
    all_photos = sorted((root / "photos").glob("*.jpg"))
    if photos == "heldout":  # never trained on by fclip-mini v2 (its training.json records the same ids)
        all_photos = [p for p, h in zip(all_photos, ccp_is_heldout([p.stem for p in all_photos])) if h]
    for photo in all_photos[start:]:
        mpath = root / "masks" / f"{photo.stem}.png"
        if not mpath.is_file():
            continue
        lab = load_mask(mpath)
        queries = [(names[v], lab == v) for v in np.unique(lab)
                   if names[v] not in ("null", "skin", "hair") and (lab == v).mean() >= MIN_MASK_SHARE]
        if queries:
            out.append((str(photo), queries))
        if len(out) >= limit:
            break
    return out


def teaching_items(limit: int) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    from PIL import Image

    from fclip_workbench.workshop import resolve_data

    cat = resolve_data("teaching")
    rows = []
    for i in range(limit):
        r = cat.table.iloc[i]
        mask = np.asarray(Image.open(cat.image_root / r["mask"])) > 0
        rows.append((str(cat.image_path(i)), [(r["garment"], mask)]))
    return rows


def score_set(model, items, steps: int, methods) -> tuple[dict, dict]:
    """Mean metrics per method (and baselines) over all (photo, query) pairs; seconds per photo."""
    from fclip_workbench.grounding.maps import load_image

    sums: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    secs: dict[str, list] = defaultdict(list)
    explainers = {}
    for name in methods:
        base = name.split("+")[0]
        try:
            explainers[name] = GroundingExplainer(model, method=base, **METHOD_OPTS.get(name, {}))
        except Exception as e:  # noqa: BLE001 - reported in the table
            logging.warning("%s: %s", name, e)
    for n, (path, queries) in enumerate(items):
        img = np.asarray(load_image(path))
        texts = [q for q, _ in queries]
        maps = {}
        for name, ex in list(explainers.items()):
            try:
                maps[name] = ex.attribute(path, texts)
                secs[name].append(ex.last_seconds_ / len(texts))
            except Exception as e:  # noqa: BLE001 - a method that does not fit this tower
                logging.warning("%s skipped: %s", name, e)
                del explainers[name]
        maps["centre"] = np.stack([centre_map(img.shape[:2])] * len(texts))
        maps["uniform"] = np.stack([uniform_map(img.shape[:2])] * len(texts))
        any_ex = next(iter(explainers.values()))
        for j, (text, mask) in enumerate(queries):
            scorer = any_ex.scorer(text)
            for name, m in maps.items():
                for k, v in grounding_scores(m[j], mask).items():
                    sums[name][k].append(v)
                if steps:
                    sums[name]["deletion"].append(deletion_auc(m[j], img, scorer, any_ex.fill, steps))
        logging.info("%d/%d %s", n + 1, len(items), path)
    table = {name: {k: float(np.mean(v)) for k, v in d.items()} | {"n": len(d["pointing"])} for name, d in sums.items()}
    return table, {k: float(np.mean(v)) for k, v in secs.items()}


def vit_timing(methods, repeats: int = 1) -> dict[str, float]:
    """Seconds per one-text map for a random-weight ViT-B/32 on a 550 x 832 CCP-sized photo."""
    import open_clip

    from fclip_workbench.embedding.models import EmbeddingModel

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32").eval()
    model = EmbeddingModel(model=clip, preprocess=None, tokenizer=open_clip.get_tokenizer("ViT-B-32"),
                           name="ViT-B-32 (random)", fingerprint="random", device=torch.device("cpu"),
                           model_cfg={"embed_dim": 512}, preprocess_cfg={"size": 224})
    img = np.random.default_rng(0).integers(0, 256, (832, 550, 3), dtype=np.uint8)
    out = {}
    for name in methods:
        try:
            ex = GroundingExplainer(model, method=name.split("+")[0], **METHOD_OPTS[name])
            ts = []
            for _ in range(repeats):
                ex.attribute(img, "a red dress")
                ts.append(ex.last_seconds_)
            out[name] = float(np.median(ts))
        except Exception as e:  # noqa: BLE001
            logging.warning("ViT-B/32 %s: %s", name, e)
    return out


def markdown(title: str, table: dict, secs: dict) -> str:
    lines = [f"### {title}", "", "| method | pointing | energy | IoU | deletion AUC | s/map |", "|---|---|---|---|---|---|"]
    for name, row in table.items():
        s = f"{secs[name]:.2f}" if name in secs else "-"
        dele = f"{row['deletion']:.4f}" if "deletion" in row else "-"
        lines.append(f"| {name} | {row['pointing']:.3f} | {row['energy']:.3f} | {row['iou']:.3f} | {dele} | {s} |")
    n = next(iter(table.values()))["n"] if table else 0
    return "\n".join(lines + ["", f"({n} photo x query pairs)", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ccp", type=int, default=30, help="CCP photos (first N by name)")
    ap.add_argument("--ccp-start", type=int, default=0, help="skip the first N CCP photos (held out or all)")
    ap.add_argument("--ccp-photos", choices=["heldout", "all"], default="heldout",
                    help="score only the CCP photos held out from fclip-mini v2's training (default), or all")
    ap.add_argument("--models", nargs="*", default=["fclip-mini@1", "fclip-mini@2"],
                    help="model specs scored on CCP and the teaching catalog")
    ap.add_argument("--teaching", type=int, default=30, help="teaching products")
    ap.add_argument("--steps", type=int, default=8, help="deletion curve steps (0: skip deletion AUC)")
    ap.add_argument("--methods", nargs="*", default=list(METHOD_OPTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-vit", action="store_true", help="skip the random ViT-B/32 timing")
    ap.add_argument("--out", default=None, help="write all numbers as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.workshop import teaching_model

    t0 = time.perf_counter()
    results = {}
    ccp = ccp_items(args.ccp, args.ccp_photos, args.ccp_start) if args.ccp else []
    items = teaching_items(args.teaching) if args.teaching else []
    for spec in args.models:
        mini = load_model(spec, device="cpu")
        if ccp:
            key = f"CCP ({args.ccp_photos} photos), {spec}"
            results[key] = score_set(mini, ccp, args.steps, args.methods)
            print(markdown(key, *results[key]), flush=True)
        if items:
            results[f"teaching, {spec}"] = score_set(mini, items, args.steps, args.methods)
            print(markdown(f"teaching, {spec}", *results[f"teaching, {spec}"]), flush=True)
    if items:
        results["teaching, teaching model"] = score_set(teaching_model(device="cpu"), items, args.steps, args.methods)
        print(markdown("teaching, teaching model", *results["teaching, teaching model"]), flush=True)
    vit = {} if args.skip_vit else vit_timing(args.methods)
    if vit:
        print("### seconds per one-text map, random ViT-B/32, 832 x 550 photo\n")
        print("\n".join(f"- {k}: {v:.2f} s" for k, v in vit.items()))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, torch threads {args.threads}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"sets": {k: {"table": t, "seconds_per_map": s} for k, (t, s) in results.items()},
                       "vit_b32_seconds_per_map": vit, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
