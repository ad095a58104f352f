"""The output folder of a training run: checked before slow work, and held by one run at a time.

`claim_out_dir` refuses, with one line each: a path that is a file; the folder the
starting model was loaded from (training would overwrite the model it starts from);
a folder that already holds a run, unless resuming it (or `overwrite=True`, which
removes only that run's own files); `resume=True` with no checkpoint to resume; and
a folder another training process is writing to (an exclusive lock on
`.training.lock`, released when the run ends or its process dies).

Example:
    >>> with claim_out_dir("runs/x", resume=False):      # doctest: +SKIP
    ...     ...                                           # train into runs/x
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from fclip_workbench.training.checkpoints import CHECKPOINTS, latest_checkpoint
from fclip_workbench.training.recipes import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the other checks still apply
    fcntl = None  # type: ignore[assignment]  # the module is absent there: checked before each use

LOCK_FILE = ".training.lock"
# What a finished or interrupted run leaves in its folder (removed by overwrite=True).
RUN_FILES = ("training.json", "train_ids.txt", "open_clip_config.json", "open_clip_model.safetensors",
             "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def holds_run(folder: Path) -> bool:
    """True when `folder` has the files of a training run (finished or interrupted)."""
    return folder.is_dir() and ((folder / CHECKPOINTS).exists() or (folder / "training.json").exists()
                                or (folder / "open_clip_config.json").exists())


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_out_dir(out_dir: str | Path, resume: bool, overwrite: bool = False,
                  model_source: str | Path | None = None) -> Path:
    """The refusals of the module docstring, without creating or locking anything (cheap: call it first)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: choose a folder for the trained model")
    if model_source is not None and _same_folder(out, Path(model_source)):
        raise ConfigError(f"--out {out} is the folder the starting model was loaded from: training would overwrite "
                          "it; choose another --out")
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume continues the run in --out, "
                          "overwrite replaces it")
    if resume and latest_checkpoint(out) is None:
        raise ConfigError(f"nothing to resume in {out}: no checkpoint under {out / CHECKPOINTS}; "
                          "run without --resume to start a new run there")
    if holds_run(out) and not resume and not overwrite:
        raise ConfigError(f"{out} already holds a training run: continue it with --resume, replace it with "
                          "--overwrite, or choose another --out")
    return out


@contextlib.contextmanager
def claim_out_dir(out_dir: str | Path, resume: bool, overwrite: bool = False,
                  model_source: str | Path | None = None) -> Iterator[Path]:
    """`check_out_dir`, then create the folder and lock it for this run; yields the folder."""
    out = check_out_dir(out_dir, resume, overwrite, model_source)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK_FILE, "a+")
    except OSError as e:
        raise ConfigError(f"cannot write the training output folder {out}: {e.strerror or e}") from e
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                raise ConfigError(f"another training run (pid {owner}) is writing to {out}: wait for it, "
                                  "or choose another --out") from e
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        if overwrite and holds_run(out):
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        yield out
    finally:
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
