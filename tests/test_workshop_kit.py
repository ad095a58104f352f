"""The offline room kit (`fclip workshop pack`): what goes in, and an install from it with no network."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from fclip_workbench.cli import main
from fclip_workbench.errors import FclipError, InvalidArgumentError
from fclip_workbench.workshop_kit import (PLATFORMS, TORCH_PINS, check_torch_index, download_wheels, folder_mb,
                                          pack_kagl_subset, pack_source, pip_download_command, project_requirements,
                                          unpack_kit_data)

REPO = Path(__file__).resolve().parents[1]


def test_requirements_pin_torch_and_carry_the_build_backend():
    reqs = project_requirements()
    assert reqs[:2] == ["torch==2.14.1", "torchvision==0.29.1"]
    assert not [r for r in reqs[2:] if r.startswith(("torch>", "torchvision>"))], "unpinned torch left in"
    assert any(r.startswith("setuptools") for r in reqs) and "pip" in reqs  # `pip install -e` builds offline
    assert any(r.startswith("jupyterlab") for r in reqs) and any(r.startswith("pytest") for r in reqs)
    with pytest.raises(InvalidArgumentError, match="unknown extra 'nope'"):
        project_requirements(("nope",))


def test_download_command_per_platform(tmp_path):
    mac = pip_download_command(["numpy"], tmp_path, "macos-arm64")
    assert mac[mac.index("--platform") + 1] == "macosx_14_0_arm64" and "--only-binary=:all:" in mac
    assert "--platform" not in pip_download_command(["numpy"], tmp_path, "linux-x86_64")
    assert set(PLATFORMS) == {"linux-x86_64", "macos-arm64", "windows-amd64"}
    with pytest.raises(InvalidArgumentError, match="unknown platform 'amiga'"):
        pip_download_command(["numpy"], tmp_path, "amiga")


def test_kagl_subset_keeps_only_rows_whose_image_exists(tmp_path):
    src = tmp_path / "kagl"
    (src / "images").mkdir(parents=True)
    (src / "styles.csv").write_text("id,articleType,productDisplayName\n1,Tshirts,a\n2,Jeans,no image\n3,Shirts,\"c, d\"\n\n4,Tops,e\n")
    for i in (1, 3, 4):
        Image.new("RGB", (8, 8)).save(src / "images" / f"{i}.jpg")
    assert pack_kagl_subset(tmp_path / "out", rows=2, source=src) == 2
    lines = (tmp_path / "out" / "styles.csv").read_text().splitlines()
    assert lines == ["id,articleType,productDisplayName", "1,Tshirts,a", '3,Shirts,"c, d"']
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["1.jpg", "3.jpg"]


def test_source_tarball_holds_the_notebooks_and_weights(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    names = tarfile.open(pack_source(tmp_path)).getnames()
    assert "fclip-workbench/notebooks/01_embed_and_search.ipynb" in names
    assert "fclip-workbench/fclip_workbench/weights/fclip-mini/open_clip_model.safetensors" in names


def test_unpack_copies_the_kits_data_and_keeps_what_is_there(tmp_path, capsys):
    kit = tmp_path / "kit"
    (kit / "data" / "kagl").mkdir(parents=True)
    (kit / "data" / "kagl" / "styles.csv").write_text("id\n")
    (kit / "data" / "cache" / "teaching").mkdir(parents=True)
    data = tmp_path / "data"
    (data / "cache" / "teaching").mkdir(parents=True)
    (data / "cache" / "teaching" / "mine.txt").write_text("keep")
    with pytest.raises(FclipError, match="not a room kit"):
        unpack_kit_data(kit, data)
    (kit / "kit.json").write_text(json.dumps({"out": str(kit)}))
    assert unpack_kit_data(kit, data) == ["kagl"]
    assert (data / "kagl" / "styles.csv").is_file() and (data / "cache" / "teaching" / "mine.txt").read_text() == "keep"
    os.environ["FCLIP_HOME"], old = str(data), os.environ.get("FCLIP_HOME")
    try:
        assert main(["workshop", "unpack", str(kit)]) == 0
    finally:
        os.environ.pop("FCLIP_HOME") if old is None else os.environ.__setitem__("FCLIP_HOME", old)
    assert "already has the kit's data" in capsys.readouterr().out


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel NAME-VERSION-py3-none-any.whl that pip can download and install."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name}/__init__.py", f"__version__ = {version!r}\n")
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    return path


def test_a_torch_index_gives_the_kit_its_torch_pair_and_not_pypis(tmp_path, capsys):
    """--torch-index (PyTorch's CPU index in a real room): the pair comes from there, and the rest of the
    resolve keeps it; here a local PEP 503 index holds `+cpu` stand-ins, so nothing is downloaded."""
    simple = tmp_path / "simple"
    for pin in TORCH_PINS:
        name, version = pin.split("==")
        wheel = fake_wheel(simple / name, name, f"{version}+cpu")
        (simple / name / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>')
    dest = tmp_path / "wheels"
    assert download_wheels(list(TORCH_PINS), dest, "linux-x86_64", torch_index=check_torch_index(str(simple))) == []
    assert sorted(p.name for p in dest.iterdir()) == ["torch-2.14.1+cpu-py3-none-any.whl",
                                                      "torchvision-0.29.1+cpu-py3-none-any.whl"]
    with pytest.raises(FclipError, match="--torch-index .*could not download torch==2.14.1"):
        download_wheels(list(TORCH_PINS), tmp_path / "w2", "linux-x86_64", torch_index=(tmp_path / "empty").as_uri())
    assert main(["workshop", "pack", str(tmp_path / "kit"), "--torch-index", "pytorch.org/cpu"]) == 2
    assert capsys.readouterr().err.strip().endswith("'pytorch.org/cpu' is neither an http(s):// or file:// URL nor a folder")
    assert not (tmp_path / "kit").exists(), "a bad --torch-index is refused before anything is written"


@pytest.mark.slow
def test_a_room_installs_from_the_kit_with_no_network_and_runs_notebook_01(tmp_path):
    """Pack a Linux kit, then in a network-less namespace (`unshare -n`, root) `make setup KIT=...` in the
    unpacked source, with pip's own config ignored, and execute notebook 01. Minutes and ~4 GB of disk."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a network-less namespace")
    kit = Path(os.environ.get("FCLIP_TEST_KIT", tmp_path / "kit"))
    if not (kit / "kit.json").is_file():
        subprocess.run([sys.executable, "-m", "fclip_workbench.cli", "workshop", "pack", str(kit),
                        "--platforms", "linux-x86_64", "--kagl-rows", "300"], check=True)
    with tarfile.open(kit / "source" / "fclip-workbench.tar.gz") as tar:
        tar.extractall(tmp_path / "room", filter="data")
    room = tmp_path / "room" / "fclip-workbench"
    if shutil.which("ip") is None:
        pytest.skip("needs ip(8) (iproute2) to bring up loopback in the namespace")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull, "FCLIP_HOME": str(room / "data")}
    def offline(*cmd: str) -> None:  # a new network namespace: no route out, only loopback (kernels use it)
        subprocess.run(["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd],
                       cwd=room, env=env, check=True)

    started = time.perf_counter()
    offline("make", "setup", f"KIT={kit}", "PYTHON=/usr/bin/python3.11")
    print(f"offline install: {time.perf_counter() - started:.0f} s, .venv {folder_mb(room / '.venv'):,.0f} MB")
    assert (room / "data" / "kagl" / "styles.csv").is_file(), "the kit's KAGL subset was not unpacked"
    out = tmp_path / "01.ipynb"
    started = time.perf_counter()
    offline(str(room / ".venv/bin/python"), "-m", "papermill", "notebooks/01_embed_and_search.ipynb", str(out),
            "-p", "LIMIT", "200", "--cwd", "notebooks")
    print(f"notebook 01 offline: {time.perf_counter() - started:.0f} s")
    assert out.is_file()
