"""Training: resume gives identical weights; fine-tuning improves held-out metrics; checkpoints load."""
from dataclasses import replace

import pytest
import torch

from fclip_workbench.datasets import make_teaching_catalog
from fclip_workbench.evaluate import evaluate
from fclip_workbench.models import load_model
from fclip_workbench.store import EmbeddingStore
from fclip_workbench.training import RECIPES, TrainConfig, cosine_lr, latest_checkpoint, train

TEACH_CAPTIONS = RECIPES["tiny-teaching"].train.captions


@pytest.fixture(scope="module")
def teaching(tmp_path_factory):
    return make_teaching_catalog(tmp_path_factory.mktemp("teach"), n=160, seed=1)


def _cfg(**kw):
    return TrainConfig(epochs=2, batch_size=16, lr=1e-3, warmup_steps=3, val_fraction=0.2, val_max=32,
                       captions=TEACH_CAPTIONS, lock_text=False, **kw)


def test_resume_after_epoch_one_gives_the_same_weights(tiny_model_dir, teaching, tmp_path):
    store = EmbeddingStore(tmp_path / "s.sqlite")
    full = train(teaching, _cfg(), tmp_path / "full", model=load_model(tiny_model_dir, "cpu"), store=store,
                 num_workers=0, progress=False)
    stopped = train(teaching, _cfg(), tmp_path / "resumed", model=load_model(tiny_model_dir, "cpu"), store=store,
                    num_workers=0, progress=False, stop_after_epochs=1)
    assert len(stopped.history) == 1 and latest_checkpoint(tmp_path / "resumed").name == "epoch-001"
    resumed = train(teaching, _cfg(), tmp_path / "resumed", model=load_model(tiny_model_dir, "cpu"), store=store,
                    num_workers=0, progress=False, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a = load_model(tmp_path / "full", "cpu").model.state_dict()
    b = load_model(tmp_path / "resumed", "cpu").model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], abs=0)


def test_training_changes_and_improves_the_model(tmp_path):
    """LiT recipe on the teaching catalog: held-out retrieval and zero-shot beat the untrained model."""
    teaching = make_teaching_catalog(tmp_path / "teach", n=480, seed=2)
    store = EmbeddingStore(tmp_path / "s.sqlite")
    from fclip_workbench.training import new_model
    before_model = new_model("tiny-teaching", device="cpu")
    before = evaluate(before_model, teaching, ["garment"], n_retrieval=32, val_fraction=0.2, store=store, progress=False)
    cfg = replace(RECIPES["tiny-teaching"].train, epochs=6, batch_size=32, warmup_steps=10, val_fraction=0.2)
    res = train(teaching, cfg, tmp_path / "run", recipe="tiny-teaching", store=store, num_workers=0, progress=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    after_model = load_model(tmp_path / "run", "cpu")
    assert after_model.fingerprint != before_model.fingerprint
    after = evaluate(after_model, teaching, ["garment"], n_retrieval=32, val_fraction=0.2, store=store, progress=False)
    task = "zero-shot garment (6 classes)"
    assert after.value("text-to-image", "R@10") > before.value("text-to-image", "R@10")
    assert after.value(task, "weighted F1") > before.value(task, "weighted F1") + 0.15


def test_shipped_text_tower_is_not_copied(teaching, tmp_path):
    cfg = replace(RECIPES["tiny-teaching"].train, epochs=1, batch_size=32, max_steps=1, val_fraction=0.2)
    train(teaching, cfg, tmp_path / "run", recipe="tiny-teaching", store=EmbeddingStore(tmp_path / "s.sqlite"),
          num_workers=0, progress=False)
    from safetensors.torch import load_file
    keys = load_file(str(tmp_path / "run" / "open_clip_model.safetensors")).keys()
    assert not any(k.startswith("text.transformer.") for k in keys) and "text.proj.weight" in keys


def test_cosine_schedule():
    assert cosine_lr(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert cosine_lr(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert cosine_lr(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert cosine_lr(100, 1.0, 10, 100) == pytest.approx(0.0)


def test_too_small_catalog_is_a_clear_error(teaching, tmp_path):
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train(teaching, replace(_cfg(), batch_size=4096), tmp_path / "x", recipe="tiny-teaching",
              store=EmbeddingStore(tmp_path / "s.sqlite"), num_workers=0, progress=False)


def test_siglip_loss_and_gradient_accumulation_train(tiny_model_dir, teaching, tmp_path):
    cfg = replace(_cfg(), loss="siglip", grad_accum=2, batch_size=8, epochs=1)
    res = train(teaching, cfg, tmp_path / "s", model=load_model(tiny_model_dir, "cpu"),
                store=EmbeddingStore(tmp_path / "s.sqlite"), num_workers=0, progress=False)
    assert res.history[0]["step"] == res.n_train // 16 and res.step_losses
    assert all(l == l for l in res.step_losses)  # no NaN
