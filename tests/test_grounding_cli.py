"""`fclip ground`: output paths refused in one line before the photo is decoded or the model loaded;
huge photos decoded reduced (maps at a bounded size); decompression bombs one line."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from fclip_workbench.cli import main


@pytest.fixture
def no_slow_work(monkeypatch):
    """Any photo decode or model load fails the test: the refusals must come first."""
    import fclip_workbench.grounding.maps as grounding
    import fclip_workbench.workshop as workshop

    def boom(*a, **k):
        raise AssertionError("slow work started before the output paths were checked")

    monkeypatch.setattr(grounding, "load_image", boom)
    monkeypatch.setattr(grounding, "open_image", boom)
    monkeypatch.setattr(workshop, "resolve_model", boom)


def photo(tmp_path, size=(48, 32)) -> str:
    path = tmp_path / "p.jpg"
    Image.new("RGB", size, (200, 40, 40)).save(path)
    return str(path)


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fclip ground: error:"), err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_save_maps_refused_before_any_work(tmp_path, capsys, no_slow_work, where):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    target = {"under_a_file": tmp_path / "file.txt" / "m.npy",  # refused as root too (no chmod involved)
              "a_folder": tmp_path / "folder"}[where]
    rc = main(["ground", photo(tmp_path), "shoes", "-o", str(tmp_path / "o.png"), "--save-maps", str(target)])
    assert rc == 2
    one_line_error(capsys, "--save-maps")
    assert not (tmp_path / "o.png").exists()


def test_out_under_a_file_refused_before_any_work(tmp_path, capsys, no_slow_work):
    (tmp_path / "file.txt").write_text("x")
    assert main(["ground", photo(tmp_path), "shoes", "-o", str(tmp_path / "file.txt" / "o.png")]) == 2
    one_line_error(capsys, "-o", "is a file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders; "
                    "the under-a-file case covers the check there")
def test_save_maps_in_a_read_only_folder_refused(tmp_path, capsys, no_slow_work):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["ground", photo(tmp_path), "shoes", "-o", str(tmp_path / "o.png"),
                     "--save-maps", str(ro / "m.npy")]) == 2
        one_line_error(capsys, "not writable")
    finally:
        ro.chmod(0o700)


def test_decompression_bomb_is_one_line(tmp_path, capsys, monkeypatch):
    path = photo(tmp_path, size=(300, 200))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 60,000 px > 2 x the limit: PIL refuses to open it
    assert main(["ground", path, "shoes", "-o", str(tmp_path / "o.png")]) == 2
    one_line_error(capsys, "too large")


def test_a_big_photo_gives_bounded_maps_and_npy_suffix(tmp_path, tiny_model_dir, capsys):
    from fclip_workbench.grounding.maps import DISPLAY_MAX_SIDE

    path = photo(tmp_path, size=(3000, 2000))  # wider than tall
    rc = main(["ground", path, "shoes", "--method", "saliency", "--model", str(tiny_model_dir), "--device", "cpu",
               "-o", str(tmp_path / "o.png"), "--save-maps", str(tmp_path / "maps")])
    assert rc == 0, capsys.readouterr().err
    maps = np.load(tmp_path / "maps.npy")  # np.save's own suffix, and the command says so
    assert maps.shape == (1, 1, round(2000 * DISPLAY_MAX_SIDE / 3000), DISPLAY_MAX_SIDE)
    assert "maps.npy" in capsys.readouterr().out
    assert max(Image.open(tmp_path / "o.png").size) < 3 * DISPLAY_MAX_SIDE


def test_attribute_on_a_big_jpeg_returns_own_pixels_or_max_side(tmp_path, tiny_model):
    from fclip_workbench.grounding.maps import GroundingExplainer, open_image

    path = photo(tmp_path, size=(2400, 1600))
    img, own = open_image(path, max_side=512)
    assert own == (1600, 2400) and max(img.size) == 512  # decoded reduced, the photo's own size known
    ex = GroundingExplainer(tiny_model, method="saliency")
    assert ex.attribute(path, "shoes").shape == (1600, 2400)
    assert ex.attribute(path, ["shoes", "bag"], max_side=300).shape == (2, 200, 300)


def test_a_huge_jpeg_is_never_decoded_at_full_size(tmp_path):
    """8000 x 8000 (192 MB as RGB): decoding and preparing it for the maps adds well under that to the peak RSS."""
    import subprocess
    import sys

    path = tmp_path / "huge.jpg"
    Image.new("RGB", (8000, 8000), (90, 90, 90)).save(path, quality=80)
    code = ("import resource, sys; from fclip_workbench.grounding.maps import open_image; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "img, own = open_image(sys.argv[1], 1280); "
            "print(img.size, own, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    grown_mib = int(out.split()[-1])
    assert "(1280, 1280) (8000, 8000)" in out, out
    assert grown_mib < 64, f"peak RSS grew {grown_mib} MiB for an 8000 x 8000 JPEG (full decode: 183 MiB)"


def test_rerun_replaces_its_outputs_and_creates_new_folders(tmp_path, tiny_model_dir, capsys):
    out, maps = tmp_path / "new" / "o.png", tmp_path / "deeper" / "still" / "m.npy"
    for _ in range(2):  # the second run replaces both files (an existing output is not an error)
        rc = main(["ground", photo(tmp_path), "shoes", "--method", "saliency", "--model", str(tiny_model_dir),
                   "--device", "cpu", "-o", str(out), "--save-maps", str(maps)])
        assert rc == 0, capsys.readouterr().err
    assert out.is_file() and np.load(maps).shape[:2] == (1, 1)
