"""workshop: folders come from paths.py; a missing KAGL says where it looked and how to fetch it."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from fclip_workbench import paths, workshop
from fclip_workbench.data.fetch import DataUnavailableError
from fclip_workbench.errors import FclipError


@pytest.fixture
def nowhere(tmp_path, monkeypatch) -> Path:
    """No public data set anywhere: an empty data home, no $FCLIP_DATA, no ../shared/data."""
    home = tmp_path / "home"
    monkeypatch.setenv("FCLIP_HOME", str(home))
    monkeypatch.delenv("FCLIP_DATA", raising=False)
    monkeypatch.setattr(paths, "dataset_search_path", lambda: [home, tmp_path / "shared" / "data"])
    monkeypatch.setattr(paths, "FMNIST_DEBIAN_DIR", tmp_path / "no-debian")
    return home


def tiny_kagl(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    rows = [{"id": i, "gender": "Men", "masterCategory": "Apparel", "subCategory": "Topwear",
             "articleType": "Shirts", "baseColour": c, "season": "Summer", "year": 2012, "usage": "Casual",
             "productDisplayName": f"{c} shirt"} for i, c in enumerate(["Blue", "Red", "Green"], start=1)]
    pd.DataFrame(rows).to_csv(root / "styles.csv", index=False)
    for r in rows:
        Image.new("RGB", (6, 8), (100, 100, 100)).save(root / "images" / f"{r['id']}.jpg")
    return root


def test_missing_kagl_says_where_it_looked_and_how_to_fetch(nowhere, tmp_path):
    with pytest.raises(DataUnavailableError) as err:
        workshop.resolve_data("kagl")
    msg = str(err.value)
    assert isinstance(err.value, FclipError) and "\n" not in msg
    assert "`fclip data fetch kagl`" in msg
    assert str(nowhere / "kagl") in msg and str(tmp_path / "shared" / "data" / "kagl") in msg
    assert "FCLIP_DATA" in msg


def test_kagl_in_the_data_home_is_found(nowhere):
    tiny_kagl(nowhere / "kagl")
    cat = workshop.resolve_data("kagl")
    assert cat.name == "kagl" and len(cat) == 3
    assert len(workshop.resolve_data("kagl", limit=2)) == 2


def test_auto_uses_kagl_from_fclip_data(nowhere, tmp_path, monkeypatch):
    tiny_kagl(tmp_path / "elsewhere" / "kagl")
    monkeypatch.setenv("FCLIP_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(paths, "dataset_search_path", lambda: [nowhere, tmp_path / "elsewhere"])
    assert workshop.resolve_data("auto").name == "kagl"


def test_auto_without_kagl_is_the_teaching_catalog_in_the_cache_dir(nowhere, tmp_path, monkeypatch):
    monkeypatch.setenv("FCLIP_CACHE", str(tmp_path / "cache"))
    made = []
    monkeypatch.setattr(workshop, "make_teaching_catalog", lambda root, n: made.append((Path(root), n)) or "catalog")
    assert workshop.resolve_data("auto") == "catalog"
    assert made == [(tmp_path / "cache" / "teaching", workshop.TEACHING_SIZE)]


def test_cache_defaults_to_the_data_home(nowhere, monkeypatch):
    monkeypatch.delenv("FCLIP_CACHE", raising=False)
    made = []
    monkeypatch.setattr(workshop, "make_teaching_catalog", lambda root, n: made.append(Path(root)) or "catalog")
    workshop.resolve_data("teaching")
    assert made == [nowhere / "cache" / "teaching"]


def test_other_sets_by_name_fail_the_same_way(nowhere):
    for name in ("ccp", "fmnist"):
        with pytest.raises(DataUnavailableError, match=f"fclip data fetch {name}"):
            workshop.resolve_data(name)


def test_no_private_folder_logic_left():
    """One place decides folders: workshop has no cache_root/find_shared_data of its own."""
    assert not hasattr(workshop, "cache_root") and not hasattr(workshop, "find_shared_data")
