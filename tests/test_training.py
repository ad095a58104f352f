"""Training: resume gives identical weights; fine-tuning improves held-out metrics; checkpoints load."""
from dataclasses import replace

import pytest
import torch

from fclip_workbench.data.datasets import make_teaching_catalog
from fclip_workbench.errors import FclipError
from fclip_workbench.analysis.evaluate import evaluate
from fclip_workbench.embedding.models import load_model
from fclip_workbench.embedding.store import EmbeddingStore
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
    with pytest.raises(FclipError, match="larger than the .* training products"):
        train(teaching, replace(_cfg(), batch_size=4096), tmp_path / "x", recipe="tiny-teaching",
              store=EmbeddingStore(tmp_path / "s.sqlite"), num_workers=0, progress=False)


def test_siglip_loss_and_gradient_accumulation_train(tiny_model_dir, teaching, tmp_path):
    cfg = replace(_cfg(), loss="siglip", grad_accum=2, batch_size=8, epochs=1)
    res = train(teaching, cfg, tmp_path / "s", model=load_model(tiny_model_dir, "cpu"),
                store=EmbeddingStore(tmp_path / "s.sqlite"), num_workers=0, progress=False)
    assert res.history[0]["step"] == res.n_train // 16 and res.step_losses
    assert all(l == l for l in res.step_losses)  # no NaN


# ------------------------------------------------------------------ hardening (issue 6)
def _rows(store, fingerprint):
    """Every stored row (all columns) of a model: its key is the fingerprint, or starts with it."""
    return sorted(store.db.execute("SELECT * FROM vectors WHERE model=? OR model LIKE ?",
                                   (fingerprint, fingerprint + ":%")).fetchall())


def test_training_in_place_refreshes_the_fingerprint_so_embeddings_are_not_stale(tiny_model_dir, teaching, tmp_path):
    """Embed with M, train M in place, embed again: fresh vectors of the new weights; M's old cache untouched."""
    from fclip_workbench.embedding.embed import embed_images

    store = EmbeddingStore(tmp_path / "s.sqlite")
    m = load_model(tiny_model_dir, "cpu")
    fp0 = m.fingerprint
    before = embed_images(m, teaching, store, num_workers=0, progress=False)
    cached0 = _rows(store, fp0)
    assert cached0
    res = train(teaching, replace(_cfg(), epochs=1, max_steps=2), tmp_path / "run", model=m, store=store,
                num_workers=0, progress=False)
    assert res.model is m and m.source == tmp_path / "run"
    assert m.fingerprint != fp0
    assert m.fingerprint == load_model(tmp_path / "run", "cpu").fingerprint
    after = embed_images(m, teaching, store, num_workers=0, progress=False)
    fresh = embed_images(m, teaching, EmbeddingStore(":memory:"), num_workers=0, progress=False)
    assert after.ids == fresh.ids == before.ids
    assert after.n_cached == 0
    assert torch.allclose(torch.from_numpy(after.vectors), torch.from_numpy(fresh.vectors), atol=1e-5)
    assert not torch.allclose(torch.from_numpy(after.vectors), torch.from_numpy(before.vectors), atol=1e-3)
    assert _rows(store, fp0) == cached0  # byte-identical


def test_shifted_rows_keep_each_image_with_its_own_captions(tiny_model_dir, teaching, tmp_path):
    """A second catalog with the same images one row further down (a bad row in front): no stale row indices."""
    import pandas as pd

    from fclip_workbench.data.catalog import Catalog

    store = EmbeddingStore(tmp_path / "s.sqlite")
    cfg = replace(_cfg(), epochs=1, max_steps=1)
    train(teaching, cfg, tmp_path / "a", model=load_model(tiny_model_dir, "cpu"), store=store, num_workers=0,
          progress=False)
    ghost = teaching.table.iloc[[0]].assign(item_id="ghost", image="no-such-file.png")
    shifted = Catalog(pd.concat([ghost, teaching.table]), teaching.image_root, teaching.name)
    res = train(shifted, cfg, tmp_path / "b", model=load_model(tiny_model_dir, "cpu"), store=store, num_workers=0,
                progress=False)
    assert [p.row for p in res.skipped if p.item_id == "ghost"] == [0]
    assert res.n_train == train(teaching, cfg, tmp_path / "c", model=load_model(tiny_model_dir, "cpu"), store=store,
                                num_workers=0, progress=False).n_train


def _image_files(tmp_path, n=6):
    from PIL import Image
    import numpy as np

    paths = []
    for i in range(n):
        arr = np.random.default_rng(i).integers(0, 255, (40 + i, 30, 3), dtype=np.uint8)
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return [str(p) for p in paths]


def test_decoding_works_in_a_spawned_dataloader_worker(tiny_model, tmp_path):
    from fclip_workbench.embedding.images import load_rgb
    from fclip_workbench.training.data import DecodeDataset, make_loader

    paths = _image_files(tmp_path, 3)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths.append(str(tmp_path / "bad.jpg"))
    loader = make_loader(DecodeDataset(paths, tiny_model.preprocess), [3, 2, 0, 1], batch_size=2, num_workers=1,
                         mp_context="spawn")
    items = [item for batch in loader for item in batch]
    assert [i for i, *_ in items] == [3, 2, 0, 1]
    assert items[0][1] is None and "bad.jpg" in items[0][2]
    for i, x, err, _digest in items[1:]:
        assert err is None and torch.equal(x, tiny_model.preprocess(load_rgb(paths[i])))


def test_pixel_cache_is_bounded_and_hits_equal_misses(tiny_model, tmp_path):
    """Only what fits is kept; the rest is decoded again each pass; cached and fresh pixels are identical."""
    from fclip_workbench.embedding.images import file_digest, load_rgb
    from fclip_workbench.training.data import PixelCache, PixelSource, pixel_keys

    paths = _image_files(tmp_path, 6)
    one = 3 * 32 * 32 * 2  # bytes of one fp16 (3, 32, 32) image
    keys = pixel_keys([file_digest(p) for p in paths], tiny_model.preprocess_cfg)
    expect = {i: tiny_model.preprocess(load_rgb(p)).half().float() for i, p in enumerate(paths)}
    for capacity, decodes_per_pass in ((3 * one, 3), (100 * one, 0)):
        src = PixelSource(paths, keys, tiny_model.preprocess, PixelCache(capacity))
        assert src.prefetch(range(6), progress=False) == {}
        assert src.n_decoded == 6 and src.cache.nbytes <= capacity
        for _ in range(2):
            before = src.n_decoded
            for pos, x in src.batches([[5, 1], [0, 4, 2], [3]]):
                for p, xi in zip(pos, x):
                    assert torch.equal(xi, expect[p]), p
            assert src.n_decoded - before == decodes_per_pass
    assert pixel_keys(["d0"], {"size": 32})[0] != pixel_keys(["d0"], {"size": 64})[0]


def test_streamed_training_equals_cached_training(tiny_model_dir, teaching, tmp_path):
    """pixel_cache_mb=0 (decode every epoch) gives the same weights as decoding once."""
    store = EmbeddingStore(tmp_path / "s.sqlite")
    cfg = replace(_cfg(), max_steps=3)
    for name, mb in (("cached", 1024), ("streamed", 0)):
        train(teaching, replace(cfg, pixel_cache_mb=mb), tmp_path / name, model=load_model(tiny_model_dir, "cpu"),
              store=store, num_workers=0, progress=False)
    a = load_model(tmp_path / "cached", "cpu").model.state_dict()
    b = load_model(tmp_path / "streamed", "cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_text_feature_cache_is_keyed_by_the_tokenizer(tiny_model, tmp_path):
    import dataclasses

    import open_clip

    from fclip_workbench.training.text import TextSide

    store = EmbeddingStore(tmp_path / "s.sqlite")
    texts = ["A RED Dress", "Blue JEANS for Men"]
    first = TextSide(tiny_model, texts, locked=True, store=store, progress=False).features
    other = dataclasses.replace(tiny_model, tokenizer=open_clip.tokenizer.SimpleTokenizer(context_length=16,
                                                                                          clean="whitespace"))
    side = TextSide(other, texts, locked=True, store=store, progress=False)
    assert torch.allclose(side.features, side._trunk(other.tokenizer(texts)).float())
    assert not torch.allclose(side.features, first)


def test_text_feature_key_names_pooler_projection_and_context_length():
    import dataclasses

    from open_clip.hf_model import ClsPooler

    from fclip_workbench.training import new_model
    from fclip_workbench.training.text import text_cache_key

    m = new_model("tiny-teaching", device="cpu")
    key = text_cache_key(m)
    assert text_cache_key(m) == key
    cfg = {**m.model_cfg, "text_cfg": {**m.model_cfg["text_cfg"], "hf_proj_type": "mlp"}}
    assert text_cache_key(dataclasses.replace(m, model_cfg=cfg)) != key
    tok = type(m.tokenizer)(str(m.tokenizer.tokenizer.name_or_path), context_length=16)
    assert text_cache_key(dataclasses.replace(m, tokenizer=tok)) != key
    m.model.text.pooler = ClsPooler()
    assert text_cache_key(m) != key


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode images fails the test: checks must come before slow work."""
    import fclip_workbench.training.loop as loop

    def refuse(*a, **k):
        raise AssertionError("decoding started before the settings were checked")
    monkeypatch.setattr(loop, "PixelSource", refuse)


def test_resume_refuses_other_settings_and_architecture_but_may_grow_epochs(tiny_model_dir, teaching, tmp_path,
                                                                             monkeypatch):
    import json

    from fclip_workbench.errors import CheckpointError
    from fclip_workbench.embedding.models import build_model
    from tests.conftest import TINY_CFG

    store = EmbeddingStore(tmp_path / "s.sqlite")
    out = tmp_path / "run"
    train(teaching, _cfg(), out, model=load_model(tiny_model_dir, "cpu"), store=store, num_workers=0,
          progress=False, stop_after_epochs=1)
    with monkeypatch.context() as mp:
        import fclip_workbench.training.loop as loop
        mp.setattr(loop, "PixelSource", lambda *a, **k: pytest.fail("decoding before the resume check"))
        with pytest.raises(CheckpointError, match=r"batch_size: 16 -> 8.*lr: 0\.001 -> 0\.002"):
            train(teaching, replace(_cfg(), batch_size=8, lr=2e-3), out, model=load_model(tiny_model_dir, "cpu"),
                  store=store, num_workers=0, progress=False, resume=True)
        other = build_model({**TINY_CFG, "embed_dim": 8}, None, {"size": 32}, "other", "cpu")
        with pytest.raises(CheckpointError, match=r"model_cfg differs \(embed_dim: 16 -> 8\)"):
            train(teaching, _cfg(), out, model=other, store=store, num_workers=0, progress=False, resume=True)
    res = train(teaching, replace(_cfg(), epochs=3), out, model=load_model(tiny_model_dir, "cpu"), store=store,
                num_workers=0, progress=False, resume=True)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    info = json.loads((out / "training.json").read_text())
    assert [(r["from_epoch"], r["config"]["epochs"]) for r in info["config_history"]] == [(0, 2), (1, 3)]


@pytest.mark.parametrize("bad, field", [({"batch_size": 0}, "batch_size"), ({"epochs": 0}, "epochs"),
                                        ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"),
                                        ({"lr": float("inf")}, "lr"), ({"lr": -1e-3}, "lr"),
                                        ({"grad_accum": 0}, "grad_accum")])
def test_bad_settings_are_one_line_errors(bad, field):
    with pytest.raises(FclipError, match=rf"{field} must be") as e:
        replace(_cfg(), **bad)
    assert "\n" not in str(e.value)


def test_batch_larger_than_the_training_products_fails_before_decoding(teaching, tmp_path, no_decoding):
    with pytest.raises(FclipError, match=r"batch_size=4096 is larger than the \d+ training products") as e:
        train(teaching, replace(_cfg(), batch_size=4096), tmp_path / "x", model="unused-model-spec",
              store=EmbeddingStore(tmp_path / "s.sqlite"), num_workers=0, progress=False)
    assert "\n" not in str(e.value)


def test_no_held_out_products_give_none_not_zero(tiny_model_dir, teaching, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="fclip_workbench.training")
    res = train(teaching, replace(_cfg(), epochs=1, max_steps=1, val_fraction=0.0), tmp_path / "run",
                model=load_model(tiny_model_dir, "cpu"), store=EmbeddingStore(tmp_path / "s.sqlite"),
                num_workers=0, progress=False)
    assert res.n_val == 0 and res.history[0]["val_R@1"] is None and res.history[0]["val_R@10"] is None
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1")]
    assert lines and "no held-out products" in lines[0] and "0.000" not in lines[0]


def test_split_is_recorded_and_keeps_same_titles_together(tiny_model_dir, teaching, tmp_path):
    import pandas as pd

    from fclip_workbench.data.catalog import Catalog
    from fclip_workbench.data.splits import TITLE_RULE, ids_digest, read_split_record

    table = teaching.table.copy()
    twins = table.iloc[::2].assign(item_id=lambda t: t.item_id + "-twin", text=lambda t: "  " + t.text.str.upper() + "!")
    cat = Catalog(pd.concat([table, twins]), teaching.image_root, "teaching")
    res = train(cat, replace(_cfg(), epochs=1, max_steps=1, val_fraction=0.3), tmp_path / "run",
                model=load_model(tiny_model_dir, "cpu"), store=EmbeddingStore(tmp_path / "s.sqlite"),
                num_workers=0, progress=False)
    record, ids = read_split_record(tmp_path / "run")
    assert record == res.split and record.rule == TITLE_RULE and record.catalog == "teaching"
    assert len(ids) == record.n_train == res.n_train and ids_digest(ids) == record.train_ids_sha256
    assert record.n_heldout == res.n_val > 0
    for twin in twins.item_id:
        assert (twin in ids) == (twin.removesuffix("-twin") in ids), twin


def test_images_that_fail_to_decode_are_reported_with_their_row(tiny_model_dir, teaching, tmp_path):
    import pandas as pd

    from fclip_workbench.data.catalog import Catalog

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    table = teaching.table.assign(image=[str(teaching.image_path(r)) for r in range(len(teaching))])
    broken = table.iloc[[0]].assign(item_id="broken", image=str(tmp_path / "broken.png"))
    cat = Catalog(pd.concat([table, broken]), None, "teaching")
    res = train(cat, replace(_cfg(), epochs=1, max_steps=1, val_fraction=0.0), tmp_path / "run",
                model=load_model(tiny_model_dir, "cpu"), store=EmbeddingStore(tmp_path / "s.sqlite"),
                num_workers=0, progress=False)
    bad = [p for p in res.skipped if p.item_id == "broken"]
    assert len(bad) == 1 and bad[0].field == "image" and bad[0].row == len(teaching)
    assert res.n_train == len(teaching)


def test_checkpoint_from_before_split_rules_resumes_only_with_the_id_rule(tmp_path):
    from fclip_workbench.errors import CheckpointError
    from fclip_workbench.data.splits import ID_RULE
    from fclip_workbench.training.checkpoints import check_resume, config_dict

    old = config_dict(_cfg())
    del old["split_rule"], old["pixel_cache_mb"]  # a checkpoint written before these settings existed
    state = {"config": old, "epoch": 0}
    check_resume(tmp_path, state, replace(_cfg(), split_rule=ID_RULE, pixel_cache_mb=64, epochs=5))
    with pytest.raises(CheckpointError, match="split_rule: 'id-hash-v1' -> 'title-group-v1'"):
        check_resume(tmp_path, state, _cfg())
    with pytest.raises(CheckpointError, match="already finished 3 epochs"):
        check_resume(tmp_path, {"config": config_dict(_cfg()), "epoch": 2}, replace(_cfg(), epochs=2))
