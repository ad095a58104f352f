"""`fclip lab` opens learners' copies of the notebooks (lab_copies): the repository stays clean, each
notebook shows once, and a learner's edits are never overwritten."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from fclip_workbench.errors import FclipError
from fclip_workbench.lab_copies import cells_digest, sync_learner_copies

REPO_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _edit(path: Path, source: str, outputs_only: bool = False) -> None:
    nb = nbformat.read(path, as_version=4)
    if outputs_only:
        nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="42\n")]
        nb.cells[0].execution_count = 1
    else:
        nb.cells[0].source = source
    nbformat.write(nb, path)


@pytest.fixture()
def course(tmp_path):
    src = tmp_path / "notebooks"
    _notebook(src / "01_a.ipynb", "x = 1")
    _notebook(src / "solutions" / "01_a.ipynb", "x = 2")
    (src / "01_a.py").write_text("# %%\nx = 1\n")
    (src / "jupytext.toml").write_text('formats = "ipynb,py:percent"\n')
    _notebook(src / ".ipynb_checkpoints" / "01_a-checkpoint.ipynb", "old")
    return src


def test_the_repository_notebooks_are_copied_once_each_without_their_pairs(tmp_path):
    dest = tmp_path / "lab"
    report = sync_learner_copies(REPO_NOTEBOOKS, dest)
    ipynbs = sorted(p.relative_to(REPO_NOTEBOOKS).as_posix() for p in REPO_NOTEBOOKS.rglob("*.ipynb")
                    if ".ipynb_checkpoints" not in p.parts)
    assert sorted(report.copied) == ipynbs and ipynbs
    assert not list(dest.rglob("*.py")) and not (dest / "jupytext.toml").exists()
    assert sync_learner_copies(REPO_NOTEBOOKS, dest).copied == []  # a second start copies nothing


def test_only_notebooks_are_copied_and_subfolders_kept(course, tmp_path):
    dest = tmp_path / "lab"
    report = sync_learner_copies(course, dest)
    assert report.copied == ["01_a.ipynb", "solutions/01_a.ipynb"]
    assert sorted(p.name for p in dest.iterdir()) == [".fclip-lab.json", "01_a.ipynb", "solutions"]


def test_outputs_alone_are_not_an_edit_so_a_newer_course_version_is_taken(course, tmp_path):
    dest = tmp_path / "lab"
    sync_learner_copies(course, dest)
    _edit(dest / "01_a.ipynb", "", outputs_only=True)  # the learner ran it
    _edit(course / "01_a.ipynb", "x = 10")  # the course moved on
    report = sync_learner_copies(course, dest)
    assert report.copied == ["01_a.ipynb"] and report.kept_edited == []
    assert nbformat.read(dest / "01_a.ipynb", as_version=4).cells[0].source == "x = 10"


def test_a_learners_edits_are_kept_and_a_refresh_moves_them_aside(course, tmp_path):
    dest = tmp_path / "lab"
    sync_learner_copies(course, dest)
    _edit(dest / "01_a.ipynb", "x = 'my answer'")
    assert sync_learner_copies(course, dest).unchanged == ["solutions/01_a.ipynb"]  # nothing to do yet
    _edit(course / "01_a.ipynb", "x = 10")
    report = sync_learner_copies(course, dest)
    assert report.kept_edited == ["01_a.ipynb"] and "fclip lab --refresh" in " ".join(report.lines())
    assert nbformat.read(dest / "01_a.ipynb", as_version=4).cells[0].source == "x = 'my answer'"

    report = sync_learner_copies(course, dest, refresh=True)
    (mine,) = report.moved_aside
    assert mine.startswith("01_a.mine-") and mine.endswith(".ipynb")
    assert nbformat.read(dest / mine, as_version=4).cells[0].source == "x = 'my answer'"
    assert nbformat.read(dest / "01_a.ipynb", as_version=4).cells[0].source == "x = 10"


def test_a_copy_from_before_the_manifest_counts_as_the_learners(course, tmp_path):
    dest = tmp_path / "lab"
    _notebook(dest / "01_a.ipynb", "x = 'mine, from last year'")
    report = sync_learner_copies(course, dest)
    assert report.kept_edited == ["01_a.ipynb"]
    (dest / ".fclip-lab.json").write_text("{not json")  # a damaged manifest loses nothing either
    assert sync_learner_copies(course, dest).kept_edited == ["01_a.ipynb"]


def test_a_broken_copy_is_kept_not_a_crash(course, tmp_path):
    dest = tmp_path / "lab"
    sync_learner_copies(course, dest)
    (dest / "01_a.ipynb").write_text("{ half a notebook")
    _edit(course / "01_a.ipynb", "x = 10")
    assert sync_learner_copies(course, dest).kept_edited == ["01_a.ipynb"]
    report = sync_learner_copies(course, dest, refresh=True)
    assert len(report.moved_aside) == 1 and (dest / report.moved_aside[0]).read_text() == "{ half a notebook"


def test_cells_digest_ignores_outputs_and_rejects_non_notebooks(tmp_path):
    nb = _notebook(tmp_path / "a.ipynb", "x = 1")
    before = cells_digest(nb)
    _edit(nb, "", outputs_only=True)
    assert cells_digest(nb) == before
    (tmp_path / "b.ipynb").write_text(json.dumps({"no": "cells"}))
    with pytest.raises(FclipError, match="not a readable notebook"):
        cells_digest(tmp_path / "b.ipynb")
    with pytest.raises(FclipError, match="no notebooks folder"):
        sync_learner_copies(tmp_path / "missing", tmp_path / "lab")
    shutil.rmtree(tmp_path / "lab", ignore_errors=True)
