"""A generated teaching catalog: garments of known shape, colour and pattern, with masks.

Every product has a title ("red striped dress"), attribute columns (`garment`,
`colour`, `pattern`) and a pixel mask of its garment, so retrieval, zero-shot,
probes and grounding all have ground truth, offline, in seconds.

Example:
    >>> cat = make_teaching_catalog("/tmp/teach", n=60)      # doctest: +SKIP
    >>> cat.table[["text", "garment", "colour", "pattern"]].head(1)   # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from fclip_workbench.data.catalog import Catalog

COLOURS = {"red": (210, 35, 40), "blue": (35, 70, 200), "green": (40, 150, 60), "yellow": (235, 200, 40),
           "black": (25, 25, 25), "pink": (240, 130, 180), "orange": (240, 130, 30), "purple": (120, 50, 160)}
PATTERNS = ("plain", "striped", "dotted", "checked")
GARMENTS = ("t-shirt", "dress", "trousers", "skirt", "bag", "hat")
SIZE = 64


def _garment_mask(garment: str, rng: np.random.Generator) -> Image.Image:
    """Binary mask ('L', 0/255) of a garment silhouette, slightly jittered in place and scale."""
    m = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(m)
    s = rng.uniform(0.8, 1.0)
    ox, oy = rng.uniform(-4, 4), rng.uniform(-4, 4)

    def P(pts):
        return [(32 + (x - 32) * s + ox, 32 + (y - 32) * s + oy) for x, y in pts]

    if garment == "t-shirt":
        d.polygon(P([(20, 12), (44, 12), (58, 24), (50, 30), (46, 26), (46, 56), (18, 56), (18, 26), (14, 30), (6, 24)]), fill=255)
    elif garment == "dress":
        d.polygon(P([(25, 6), (39, 6), (41, 22), (54, 58), (10, 58), (23, 22)]), fill=255)
    elif garment == "trousers":
        d.polygon(P([(18, 6), (46, 6), (50, 58), (36, 58), (32, 24), (28, 58), (14, 58)]), fill=255)
    elif garment == "skirt":
        d.polygon(P([(20, 16), (44, 16), (54, 50), (10, 50)]), fill=255)
    elif garment == "bag":
        d.rectangle(P([(12, 26), (52, 56)]), fill=255)
        d.arc(P([(20, 8), (44, 40)]), 180, 360, fill=255, width=4)
    elif garment == "hat":
        d.ellipse(P([(6, 36), (58, 50)]), fill=255)
        d.ellipse(P([(18, 14), (46, 46)]), fill=255)
    else:
        raise ValueError(f"Unknown garment {garment!r}; known: {GARMENTS}")
    return m


def _texture(colour: tuple[int, int, int], pattern: str, rng: np.random.Generator) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 fabric of `colour` with `pattern`."""
    base = np.array(colour, dtype=np.float32)
    accent = np.where(base.mean() < 90, base + 120, base * 0.45)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    period = int(rng.integers(8, 12))
    if pattern == "plain":
        on = np.zeros((SIZE, SIZE), bool)
    elif pattern == "striped":
        on = (yy // (period // 2)) % 2 == 0
    elif pattern == "dotted":
        on = ((yy % period - period / 2) ** 2 + (xx % period - period / 2) ** 2) < (period / 4) ** 2
    elif pattern == "checked":
        on = ((yy // (period // 2)) + (xx // (period // 2))) % 2 == 0
    else:
        raise ValueError(f"Unknown pattern {pattern!r}; known: {PATTERNS}")
    tex = np.where(on[..., None], accent, base) + rng.normal(0, 6, (SIZE, SIZE, 3))
    return tex.clip(0, 255).astype(np.uint8)


def teaching_title(colour: str, pattern: str, garment: str) -> str:
    """A teaching product's title: "red striped dress", "blue t-shirt" (plain goes unsaid).

    >>> teaching_title("blue", "plain", "t-shirt")
    'blue t-shirt'
    """
    return f"{colour} {pattern} {garment}" if pattern != "plain" else f"{colour} {garment}"


def make_teaching_catalog(root: str | Path, n: int = 1200, seed: int = 0) -> Catalog:
    """Write (or reuse) `n` products under `root`: catalog.csv, images/, masks/; return the Catalog."""
    root = Path(root)
    meta = root / "teaching.json"
    if meta.is_file() and json.loads(meta.read_text()) == {"n": n, "seed": seed} and (root / "catalog.csv").is_file():
        return Catalog.from_csv(root / "catalog.csv", image_root=root, name="teaching")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        garment = GARMENTS[i % len(GARMENTS)]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
        mask = _garment_mask(garment, rng)
        bg = np.full((SIZE, SIZE, 3), 250, np.uint8)
        img = np.where(np.asarray(mask)[..., None] > 0, _texture(COLOURS[colour], pattern, rng), bg)
        item = f"t{i:05d}"
        Image.fromarray(img).save(root / "images" / f"{item}.png")
        mask.save(root / "masks" / f"{item}.png")
        title = teaching_title(colour, pattern, garment)
        rows.append({"item_id": item, "image": f"images/{item}.png", "text": title, "garment": garment,
                     "colour": colour, "pattern": pattern, "mask": f"masks/{item}.png"})
    pd.DataFrame(rows).to_csv(root / "catalog.csv", index=False)
    meta.write_text(json.dumps({"n": n, "seed": seed}))
    return Catalog.from_csv(root / "catalog.csv", image_root=root, name="teaching")
