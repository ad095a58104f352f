"""Shared fixtures: tiny random models saved to temporary folders, small catalogs on disk."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Hermetic caches: tests never read or fill the user's ~/.cache/fclip-workbench.
os.environ["FCLIP_CACHE"] = tempfile.mkdtemp(prefix="fclip-test-cache-")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "layers": 2, "width": 32, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny open_clip CLIP saved in open_clip folder format."""
    import open_clip
    from fclip_workbench.models import save_model_folder

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)
    folder = tmp_path_factory.mktemp("tiny-clip")
    return save_model_folder(model, TINY_CFG, {"size": 32}, folder)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from fclip_workbench.models import load_model
    return load_model(tiny_model_dir, device="cpu")


def make_image(path: Path, color=(200, 30, 30), size=(40, 48), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


@pytest.fixture
def small_catalog_dir(tmp_path) -> Path:
    """A CSV + image folder of 12 coloured products (3 colours x 4 garments)."""
    rows = []
    colors = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 220)}
    i = 0
    for cname, rgb in colors.items():
        for garment in ("shirt", "dress", "shoe", "bag"):
            rng = np.random.default_rng(i)
            arr = (np.array(rgb) + rng.integers(-20, 20, (48, 40, 3))).clip(0, 255).astype(np.uint8)
            (tmp_path / "images").mkdir(exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "images" / f"p{i}.jpg")
            rows.append({"item_id": f"p{i}", "image": f"p{i}.jpg", "text": f"{cname} {garment}",
                         "colour": cname, "garment": garment})
            i += 1
    pd.DataFrame(rows).to_csv(tmp_path / "products.csv", index=False)
    return tmp_path
