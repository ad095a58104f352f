"""The shipped fclip-mini: loads offline from the package, and meets its targets on real data."""
import json
from pathlib import Path

import pytest

from fclip_workbench.models import WEIGHTS_DIR, load_model
from tests.conftest import SHARED_DATA

MINI = WEIGHTS_DIR / "fclip-mini"
KAGL = SHARED_DATA / "kagl"
need_kagl = pytest.mark.skipif(not (KAGL / "styles.csv").is_file(), reason=f"KAGL not found at {KAGL}")


@pytest.fixture(scope="module")
def mini():
    return load_model("fclip-mini", device="cpu")


def test_ships_small_and_loads_offline(mini):
    size = (MINI / "open_clip_model.safetensors").stat().st_size
    assert size <= 30e6
    emb = mini.encode_texts(["a black leather handbag", "blue jeans for men"])
    assert emb.shape == (2, 256)


@need_kagl
def test_kagl_heldout_targets(mini):
    """Zero-shot articleType weighted F1 >= 0.70 and text-to-image R@10 >= 0.50 among 1,000 held-out products."""
    from fclip_workbench.datasets import load_kagl
    from fclip_workbench.evaluate import evaluate

    report = evaluate(mini, load_kagl(KAGL), ["articleType"], n_retrieval=1000, progress=False)
    assert report.value("zero-shot articleType (143 classes)", "weighted F1") >= 0.70
    assert report.value("text-to-image", "R@10") >= 0.50


@pytest.mark.slow
@need_kagl
def test_recipe_reproduces_the_shipped_weights(tmp_path):
    """`fclip train --recipe mini-kagl` from scratch gives the shipped weights (about 40 minutes on 2 cores)."""
    from fclip_workbench.datasets import load_kagl
    from fclip_workbench.store import EmbeddingStore
    from fclip_workbench.training import train

    train(load_kagl(KAGL), out_dir=tmp_path / "mini", recipe="mini-kagl",
          store=EmbeddingStore(tmp_path / "cache" / "e.sqlite"), progress=False)
    assert load_model(tmp_path / "mini", device="cpu").fingerprint == load_model(MINI, device="cpu").fingerprint
    shipped = json.loads((MINI / "training.json").read_text())["history"][-1]
    assert json.loads((Path(tmp_path / "mini") / "training.json").read_text())["history"][-1]["loss"] == shipped["loss"]
