"""fetch_dataset: real sources described, offline error that says what to do, atomic landing, verification;
dataset_status finds the shared sets."""
from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fclip_workbench import paths
from fclip_workbench.data import fetch as datafetch
from fclip_workbench.data.fetch import (DATASETS, DataUnavailableError, UnknownDatasetError, dataset_status,
                                       fetch_dataset)
from fclip_workbench.errors import FclipError
from tests.conftest import SHARED_DATA


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty data home; no $FCLIP_DATA."""
    monkeypatch.setenv("FCLIP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FCLIP_DATA", raising=False)
    return tmp_path / "home"


def serve(files: dict[str, bytes], calls: list | None = None):
    """A stand-in for `datafetch._download` that "downloads" from a dict of file name -> bytes."""
    def fake(url: str, dest: Path, progress: bool = True) -> Path:
        if calls is not None:
            calls.append(url)
        name = next(f for u, f in sum((s.downloads for s in DATASETS.values()), ()) if u == url)
        dest.write_bytes(files[name])
        return dest
    return fake


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def jpeg(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 8), color).save(buf, format="JPEG")
    return buf.getvalue()


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


# ------------------------------------------------------------------ what is described
def test_every_known_set_names_its_real_source():
    assert set(DATASETS) == set(paths.DATASET_MARKERS)
    assert "paramaggarwal/fashion-product-images-small" in DATASETS["kagl"].downloads[0][0]
    assert [u for u, _ in DATASETS["fmnist"].downloads] == [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" + f for f in datafetch.FMNIST_FILES]
    assert DATASETS["ccp"].downloads[0][0].startswith("https://github.com/bearpaw/clothing-co-parsing/")
    assert DATASETS["fashionpedia"].downloads[0][0].endswith("KMnP/fashionpedia-api/master/data/demo/"
                                                             "category_attributes_descriptions.json")
    for name, src in DATASETS.items():
        assert src.marker in paths.DATASET_MARKERS[name] and src.licence and src.size and src.homepage


def test_unknown_name_lists_the_known_ones(home):
    with pytest.raises(UnknownDatasetError, match="known: kagl, fmnist, ccp, fashionpedia"):
        fetch_dataset("kagle")


# ------------------------------------------------------------------ offline
@pytest.mark.parametrize("name", list(DATASETS))
def test_offline_says_what_to_download_and_where_and_leaves_nothing(name, home, monkeypatch):
    def offline(url, dest, progress=True):
        dest.with_name(dest.name + ".part").write_bytes(b"half a file")  # what a cut connection leaves
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datafetch, "_download", offline)
    with pytest.raises(DataUnavailableError) as err:
        fetch_dataset(name, progress=False)
    msg = str(err.value)
    assert isinstance(err.value, FclipError) and "\n" not in msg
    assert DATASETS[name].downloads[0][0] in msg  # the URL
    assert str(home / name) in msg and DATASETS[name].marker in msg  # the folder and its marker
    assert f"export FCLIP_DATA=/path/holding/{name}" in msg
    assert ("apt-get install dataset-fashion-mnist" in msg) == (name == "fmnist")
    assert isinstance(err.value.__cause__, urllib.error.URLError)
    assert leftovers(home) == []  # no partial folder, no .part file, no empty destination


def test_real_downloader_offline_is_an_fclip_error(home, monkeypatch):
    """The real `_download` (urllib, proxies honoured) against an address that cannot answer: one clear error."""
    monkeypatch.setattr(datafetch, "TIMEOUT_S", 2.0)
    monkeypatch.setitem(DATASETS, "fashionpedia", replace(
        DATASETS["fashionpedia"], downloads=(("http://fclip-no-such-host.invalid/x.json", "x.json"),)))
    with pytest.raises(DataUnavailableError, match="fclip-no-such-host.invalid"):
        fetch_dataset("fashionpedia", progress=False)
    assert leftovers(home) == []


# ------------------------------------------------------------------ fake downloads land atomically and verified
def test_kagl_lands_atomically_with_the_loader_layout(home, monkeypatch):
    styles = b"id,gender,articleType,productDisplayName\n1,Men,Shirts,Blue Shirt\n2,Women,Dresses,Red Dress\n"
    archive = zip_bytes({"styles.csv": styles, "images/1.jpg": jpeg(), "images/2.jpg": jpeg((20, 20, 200)),
                         "myntradataset/styles.csv": styles, "myntradataset/images/1.jpg": jpeg()})
    monkeypatch.setattr(datafetch, "_download", serve({"fashion-product-images-small.zip": archive}))
    monkeypatch.setitem(DATASETS, "kagl", replace(DATASETS["kagl"], min_files={"images": 2}))
    renames = []
    real_replace = datafetch.os.replace
    monkeypatch.setattr(datafetch.os, "replace", lambda a, b: (renames.append((Path(a), Path(b))), real_replace(a, b)))

    out = fetch_dataset("kagl", progress=False)

    assert out == home / "kagl" and paths.is_complete("kagl", out)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["1.jpg", "2.jpg"]
    assert not (out / "myntradataset").exists() and leftovers(home) == ["kagl"]
    assert renames[-1][1] == out and renames[-1][0].parent.parent == home  # one rename from beside dest
    from fclip_workbench.data.datasets import open_catalog
    assert open_catalog(out).name == "kagl" and len(open_catalog(out)) == 2


def test_fmnist_checksums_are_verified(home, monkeypatch):
    files = {f: f.encode() * 10 for f in datafetch.FMNIST_FILES}
    monkeypatch.setattr(datafetch, "_download", serve(files))
    with pytest.raises(DataUnavailableError, match="MD5"):
        fetch_dataset("fmnist", progress=False)
    assert leftovers(home) == []
    good = {f: hashlib.md5(data).hexdigest() for f, data in files.items()}
    monkeypatch.setitem(DATASETS, "fmnist", replace(DATASETS["fmnist"], md5=good))
    out = fetch_dataset("fmnist", progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(datafetch.FMNIST_FILES)


def test_ccp_archive_is_converted_to_the_loader_layout(home, monkeypatch):
    from scipy.io import savemat

    names = np.empty((1, 4), dtype=object)
    names[0, :] = ["null", "bag", "dress", "skin"]

    def mat(**arrays) -> bytes:
        buf = io.BytesIO()
        savemat(buf, arrays)
        return buf.getvalue()

    mask = np.zeros((8, 6), np.uint8)
    mask[2:6, 1:4] = 2  # a dress
    mask[0, 0] = 3  # skin
    top = "clothing-co-parsing-master/"
    archive = zip_bytes({top + "label_list.mat": mat(label_list=names), top + "LICENSE": b"Apache",
                         top + "photos/0001.jpg": jpeg(), top + "photos/0002.jpg": jpeg(),
                         top + "photos/1500.jpg": jpeg(),  # no pixel annotation: not kept
                         top + "annotations/pixel-level/0001.mat": mat(groundtruth=mask),
                         top + "annotations/pixel-level/0002.mat": mat(groundtruth=np.zeros((8, 6), np.uint8))})
    monkeypatch.setattr(datafetch, "_download", serve({"clothing-co-parsing-master.zip": archive}))
    monkeypatch.setitem(DATASETS, "ccp", replace(DATASETS["ccp"], min_files={"photos": 2, "masks": 2}))

    out = fetch_dataset("ccp", progress=False)

    assert json.loads((out / "label_list.json").read_text()) == ["null", "bag", "dress", "skin"]
    assert sorted(p.name for p in (out / "photos").iterdir()) == ["0001.jpg", "0002.jpg"]
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "0001.png")), mask)
    from fclip_workbench.data.datasets import load_ccp
    cat = load_ccp(out)
    assert cat.table.set_index("item_id").loc["0001", "labels"] == "dress"


def test_fashionpedia_and_complete_copies_are_not_fetched_again(home, monkeypatch):
    ontology = json.dumps({"categories": [{"id": 0, "name": "shirt, blouse"}], "attributes": []}).encode()
    calls = []
    monkeypatch.setattr(datafetch, "_download", serve({"category_attributes_descriptions.json": ontology,
                                                       "LICENSE-api-code.txt": b"BSD"}, calls))
    out = fetch_dataset("fashionpedia", progress=False)
    assert (out / "LICENSE-api-code.txt").read_bytes() == b"BSD" and len(calls) == 2
    assert fetch_dataset("fashionpedia", progress=False) == out and len(calls) == 2


def test_wrong_content_is_refused_and_nothing_lands(home, monkeypatch):
    monkeypatch.setattr(datafetch, "_download", serve({"category_attributes_descriptions.json": b'{"x": 1}',
                                                       "LICENSE-api-code.txt": b"BSD"}))
    with pytest.raises(DataUnavailableError, match="categories"):
        fetch_dataset("fashionpedia", progress=False)
    assert leftovers(home) == []


def test_an_incomplete_destination_is_not_overwritten(home, monkeypatch):
    (home / "fashionpedia").mkdir(parents=True)
    (home / "fashionpedia" / "notes.txt").write_text("mine")
    monkeypatch.setattr(datafetch, "_download", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(DataUnavailableError, match="not a complete copy"):
        fetch_dataset("fashionpedia", progress=False)
    assert (home / "fashionpedia" / "notes.txt").read_text() == "mine"


def test_explicit_dest_is_the_data_set_folder(tmp_path, home, monkeypatch):
    ontology = json.dumps({"categories": [], "attributes": []}).encode()
    monkeypatch.setattr(datafetch, "_download", serve({"category_attributes_descriptions.json": ontology,
                                                       "LICENSE-api-code.txt": b"BSD"}))
    (tmp_path / "elsewhere" / "fp").mkdir(parents=True)  # an empty folder is fine
    out = fetch_dataset("fashionpedia", dest=tmp_path / "elsewhere" / "fp", progress=False)
    assert out == tmp_path / "elsewhere" / "fp" and paths.is_complete("fashionpedia", out)
    assert leftovers(tmp_path / "elsewhere") == ["fp"] and not home.exists()


# ------------------------------------------------------------------ status
@pytest.mark.skipif(not (SHARED_DATA / "kagl" / "styles.csv").is_file(), reason="needs ../shared/data")
def test_dataset_status_finds_the_shared_sets(home, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    status = dict(dataset_status())
    assert list(status) == list(DATASETS)
    for name in ("kagl", "ccp", "fashionpedia"):
        assert status[name] is not None and status[name].resolve() == (SHARED_DATA / name).resolve()


def test_dataset_status_prefers_data_home(home, monkeypatch):
    (home / "fashionpedia").mkdir(parents=True)
    (home / "fashionpedia" / "category_attributes_descriptions.json").write_text("{}")
    assert dict(dataset_status())["fashionpedia"] == home / "fashionpedia"


def test_real_downloader_end_to_end_from_a_local_server(home, monkeypatch, tmp_path):
    """The real `_download` (urllib, streaming, .part then rename) against a local HTTP server, stopped after."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    site = tmp_path / "site"
    site.mkdir()
    (site / "ontology.json").write_text(json.dumps({"categories": [{"id": 0}], "attributes": []}))
    (site / "license.txt").write_text("BSD")
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        monkeypatch.setitem(DATASETS, "fashionpedia", replace(DATASETS["fashionpedia"], downloads=(
            (base + "ontology.json", "category_attributes_descriptions.json"),
            (base + "license.txt", "LICENSE-api-code.txt"))))
        out = fetch_dataset("fashionpedia", progress=False)
        assert json.loads((out / "category_attributes_descriptions.json").read_text())["categories"] == [{"id": 0}]
        assert leftovers(home) == ["fashionpedia"] and sorted(p.name for p in out.iterdir()) == [
            "LICENSE-api-code.txt", "category_attributes_descriptions.json"]
        with pytest.raises(DataUnavailableError, match="404"):  # a missing file is a clear error too
            monkeypatch.setitem(DATASETS, "ccp", replace(DATASETS["ccp"], downloads=((base + "nope.zip", "x.zip"),)))
            fetch_dataset("ccp", progress=False)
        assert leftovers(home) == ["fashionpedia"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
