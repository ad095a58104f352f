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


# ------------------------------------------------------------------ every command's output path, before slow work
# Each command that writes (flag, file or folder): refused in one line naming the path, before the catalog is
# opened, the model loaded or anything embedded, trained or downloaded.
OUTPUTS = {  # id: (argv before the output flag, the flag, the file name the flag takes)
    "embed --out": (["embed", "{data}", "--no-text", "--workers", "0"], "--out", "v.npz"),
    "index --out": (["index", "{data}"], "--out", "idx"),
    "train --out": (["train", "--model", "{model}", "--data", "{csv}", "--image-root", "{images}",
                     "--cache", "{cache}", "-q"], "--out", "run"),
    "eval --out": (["eval", "{data}"], "--out", "report"),
    "ground -o": (["ground", "{photo}", "shoes", "--model", "{model}"], "-o", "g.png"),
    "ground --save-maps": (["ground", "{photo}", "shoes", "--model", "{model}", "-o", "{tmp}/g.png"],
                           "--save-maps", "m.npy"),
    "data fetch --dest": (["data", "fetch", "fmnist", "-q"], "--dest", "fmnist"),
}
UNWRITABLE = {  # places that refuse a write even for root (the suite runs as root: permission bits would lie)
    "proc": "/proc/{name}",
    "missing_folder_in_proc": "/proc/fclip-no-such-folder/{name}",
    "under_a_regular_file": "{tmp}/a_file/{name}",
    "under_a_file_deeper": "{tmp}/a_file/sub/{name}",
}


class SlowWorkStarted(AssertionError):
    pass


@pytest.fixture
def no_slow_work(monkeypatch):
    """Opening a catalog, loading a model, embedding, training, evaluating, decoding the photo or downloading
    fails the test: every output path must be refused first."""
    import fclip_workbench.analysis.evaluate as evaluate
    import fclip_workbench.cli as cli
    import fclip_workbench.data.fetch as fetch
    import fclip_workbench.embedding.embed as embed
    import fclip_workbench.grounding.maps as grounding
    import fclip_workbench.training as training
    import fclip_workbench.workshop as workshop

    # modules that bind these functions at import (`from ... import embed_images`) are imported first, with the
    # real ones, so the stand-ins end with the test
    import fclip_workbench.search.saved  # noqa: F401
    import fclip_workbench.search.searcher  # noqa: F401
    import fclip_workbench.widgets.viz  # noqa: F401

    def boom(*a, **k):
        raise SlowWorkStarted("slow work started before the output path was checked")

    for module, name in [(cli, "open_from_args"), (workshop, "resolve_model"), (workshop, "resolve_data"),
                         (embed, "embed_images"), (embed, "embed_texts"), (training, "plan_run"), (training, "train"),
                         (evaluate, "evaluate"), (grounding, "load_image"), (fetch, "fetch_dataset")]:
        monkeypatch.setattr(module, name, boom)


def _argv(command, target, tmp_path, small_catalog_dir, tiny_model_dir):
    from PIL import Image

    before, flag, _ = OUTPUTS[command]
    (tmp_path / "a_file").write_text("not a folder")
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (40, 48), (200, 30, 30)).save(photo)
    csv, images, cache = small_catalog_dir / "products.csv", small_catalog_dir / "images", tmp_path / "cache.sqlite"
    data = ["--data", str(csv), "--image-root", str(images), "--model", str(tiny_model_dir), "--cache", str(cache),
            "-q"]
    values = {"{csv}": str(csv), "{images}": str(images), "{cache}": str(cache), "{model}": str(tiny_model_dir),
              "{photo}": str(photo), "{tmp}": str(tmp_path)}
    argv = []
    for a in before:
        if a == "{data}":
            argv += data
            continue
        for key, value in values.items():
            a = a.replace(key, value)
        argv.append(a)
    return [*argv, flag, target]


def _one_line_error(capsys, argv, *words):
    err = capsys.readouterr().err.strip()
    command = argv[0]
    assert len(err.splitlines()) == 1 and err.startswith(f"fclip {command}: error: "), err
    assert "Traceback" not in err and "Errno" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("where", list(UNWRITABLE))
@pytest.mark.parametrize("command", list(OUTPUTS))
def test_an_unwritable_output_is_refused_before_slow_work(command, where, tmp_path, small_catalog_dir,
                                                          tiny_model_dir, no_slow_work, capsys, monkeypatch):
    from fclip_workbench.cli import main

    monkeypatch.chdir(tmp_path)
    target = UNWRITABLE[where].format(tmp=tmp_path, name=OUTPUTS[command][2])
    argv = _argv(command, target, tmp_path, small_catalog_dir, tiny_model_dir)
    assert main(argv) == 2
    _one_line_error(capsys, argv, OUTPUTS[command][1], target)
    assert not (tmp_path / "cache.sqlite").exists()  # no store even opened
    assert not os.path.exists("/proc/fclip-no-such-folder")
    assert (tmp_path / "a_file").read_text() == "not a folder"


@pytest.mark.parametrize("command", list(OUTPUTS))
def test_an_empty_output_path_is_refused_not_ignored(command, tmp_path, small_catalog_dir, tiny_model_dir,
                                                     no_slow_work, capsys, monkeypatch):
    from fclip_workbench.cli import main

    monkeypatch.chdir(tmp_path)
    argv = _argv(command, "", tmp_path, small_catalog_dir, tiny_model_dir)
    assert main(argv) == 2
    err = _one_line_error(capsys, argv)
    assert err.endswith(f"error: {OUTPUTS[command][1]} is empty; give a path"), err
    assert not (tmp_path / "cache.sqlite").exists()


@pytest.mark.parametrize("command", ["train --out", "index --out"])
def test_a_folder_of_unrelated_files_is_refused_and_left_as_is(command, tmp_path, small_catalog_dir,
                                                               tiny_model_dir, no_slow_work, capsys):
    from fclip_workbench.cli import main

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"mine")
    (folder / "notes").mkdir()
    argv = _argv(command, str(folder), tmp_path, small_catalog_dir, tiny_model_dir)
    assert main(argv) == 2
    _one_line_error(capsys, argv, "--out", str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg", "notes"]
    assert (folder / "holiday.jpg").read_bytes() == b"mine" and not any((folder / "notes").iterdir())


def test_a_previous_training_output_still_resumes_or_is_replaced(tmp_path, small_catalog_dir, tiny_model_dir,
                                                                 no_slow_work, capsys):
    from fclip_workbench.cli import main
    from fclip_workbench.training import CHECKPOINTS

    run = tmp_path / "run"
    (run / CHECKPOINTS).mkdir(parents=True)
    (run / "training.json").write_text("{}")
    (run / "notes.txt").write_text("the user's own note beside a run")
    argv = _argv("train --out", str(run), tmp_path, small_catalog_dir, tiny_model_dir)
    assert main(argv) == 2  # as before: the run is neither mixed into nor replaced silently
    _one_line_error(capsys, argv, "already holds a training run")
    with pytest.raises(SlowWorkStarted):
        main([*argv, "--overwrite"])  # accepted: training would start
    crashed = tmp_path / "crashed"  # a run that stopped before its first checkpoint: only its lock
    crashed.mkdir()
    (crashed / LOCK_FILE).write_text("123")
    with pytest.raises(SlowWorkStarted):
        main(_argv("train --out", str(crashed), tmp_path, small_catalog_dir, tiny_model_dir))
    with pytest.raises(SlowWorkStarted):
        main(_argv("train --out", str(tmp_path / "new" / "run"), tmp_path, small_catalog_dir, tiny_model_dir))
    assert not (tmp_path / "new").exists()  # the check creates nothing
