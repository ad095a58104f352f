"""The training output folder: never overwrites another run, the starting model or a file; one run at a time."""
import multiprocessing as mp
import os

import pytest

from fclip_workbench.data.datasets import make_teaching_catalog
from fclip_workbench.errors import ConfigError
from fclip_workbench.embedding.models import load_model
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.training import RECIPES, TrainConfig, train
from fclip_workbench.training.outdir import LOCK_FILE, check_out_dir, claim_out_dir


@pytest.fixture(scope="module")
def teaching(tmp_path_factory):
    return make_teaching_catalog(tmp_path_factory.mktemp("teach"), n=96, seed=2)


def _cfg():
    return TrainConfig(epochs=1, batch_size=16, max_steps=1, warmup_steps=1, val_fraction=0.2,
                       captions=RECIPES["tiny-teaching"].train.captions, lock_text=False)


def _train(catalog, out, model, tmp_path, **kw):
    return train(catalog, _cfg(), out, model=model, store=EmbeddingStore(tmp_path / "s.sqlite"), num_workers=0,
                 progress=False, **kw)


def test_a_second_run_into_the_same_folder_is_refused_and_the_first_kept(tiny_model_dir, teaching, tmp_path):
    out = tmp_path / "run"
    _train(teaching, out, load_model(tiny_model_dir, "cpu"), tmp_path)
    weights = (out / "open_clip_model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds a training run: continue it with --resume, replace it "
                                          "with --overwrite, or choose another --out"):
        _train(teaching, out, load_model(tiny_model_dir, "cpu"), tmp_path)
    assert (out / "open_clip_model.safetensors").read_bytes() == weights
    _train(teaching, out, load_model(tiny_model_dir, "cpu"), tmp_path, overwrite=True)  # explicit: replaced
    assert (out / "training.json").is_file()


def test_training_into_the_starting_models_folder_is_refused(tiny_model_dir, teaching, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    before = (copy / "open_clip_model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="is the folder the starting model was loaded from"):
        _train(teaching, copy, load_model(copy, "cpu"), tmp_path, overwrite=True)
    assert (copy / "open_clip_model.safetensors").read_bytes() == before


def test_out_that_is_a_file_and_resume_without_checkpoint_are_refused(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_out_dir(f, resume=False)
    with pytest.raises(ConfigError, match="nothing to resume in .*no checkpoint"):
        check_out_dir(tmp_path / "empty", resume=True)
    with pytest.raises(ConfigError, match="exclude each other"):
        check_out_dir(tmp_path / "empty", resume=True, overwrite=True)


def _hold(out, ready, release):
    with claim_out_dir(out, resume=False):
        ready.set()
        release.wait(30)


def test_a_folder_another_process_trains_into_is_refused(tmp_path):
    out = tmp_path / "busy"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(out, ready, release))
    proc.start()
    try:
        assert ready.wait(60)
        with pytest.raises(ConfigError, match=rf"another training run \(pid {proc.pid}\) is writing to"):
            with claim_out_dir(out, resume=False):
                pass
    finally:
        release.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    with claim_out_dir(out, resume=False):  # released when the run ended
        assert (out / LOCK_FILE).read_text() == str(os.getpid())


def test_cli_refuses_before_loading_anything(tmp_path, capsys):
    from fclip_workbench.cli import main

    f = tmp_path / "afile"
    f.write_text("x")
    rc = main(["train", "--recipe", "tiny-teaching", "--data", "/no/such/catalog", "--out", str(f), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"fclip train: error: --out {f} is a file, not a folder: choose a folder for the " \
                              "trained model"
