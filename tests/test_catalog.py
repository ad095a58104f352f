"""Catalog validation: every kind of bad input is reported per row, nothing silently dropped."""
import numpy as np
import pytest
from PIL import Image

from fclip_workbench.catalog import Catalog
from fclip_workbench.errors import CatalogError
from fclip_workbench.images import ImageLoadError, load_rgb
from tests.conftest import make_image


def write_csv(path, text: bytes):
    path.write_bytes(text)
    return path


def reasons(cat, item_id):
    return [p.reason for p in cat.problems if p.item_id == item_id]


@pytest.fixture
def messy(tmp_path):
    img = tmp_path / "images"
    make_image(img / "ok.jpg")
    make_image(img / "dup.jpg")
    (img / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = img / "trunc_src.jpg"
    make_image(good, size=(200, 200))
    (img / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    make_image(tmp_path / "outside.jpg")
    csv = (b"item_id,image,text,colour\n"
           b"a,ok.jpg,red shirt,red\n"
           b"b,missing.jpg,blue shirt,blue\n"
           b"c,../outside.jpg,sneaky,red\n"
           b"d,ok.jpg,,red\n"
           b"a,dup.jpg,duplicate id,red\n"
           b"e,ok.jpg,too,many,fields\n"
           b"f,ok.jpg,caf\xe9 au lait dress,brown\n"
           b"g,corrupt.jpg,corrupt,red\n"
           b"h,truncated.jpg,truncated,red\n")
    return Catalog.from_csv(write_csv(tmp_path / "c.csv", csv), image_root=img)


def test_every_problem_is_reported_with_its_row(messy):
    assert "missing file" in reasons(messy, "b")[0]
    assert "escapes the image root" in reasons(messy, "c")[0]
    assert reasons(messy, "d") == ["empty text"]
    assert any("duplicate id" in r for r in reasons(messy, "a"))
    bad_line = [p for p in messy.problems if p.field == "line"]
    assert len(bad_line) == 1 and bad_line[0].line == 7 and "5 fields, header has 4" in bad_line[0].reason
    enc = [p for p in messy.problems if p.field == "encoding"]
    assert enc and enc[0].item_id == "f" and enc[0].line == 8
    assert messy.table.set_index("item_id").loc["f", "text"] == "caf\ufffd au lait dress"


def test_unusable_rows_stay_in_table_but_out_of_use(messy):
    assert len(messy) == 8  # 9 lines, 1 malformed; nothing else removed
    usable_img = set(messy.table.item_id[messy.usable_rows("image")])
    assert usable_img == {"a", "d", "f", "g", "h"}  # the first "a" only; duplicate row excluded
    usable_txt = set(messy.table.item_id[messy.usable_rows("text")])
    assert "d" not in usable_txt and "b" in usable_txt


def test_decoding_audit_reports_corrupt_and_truncated(messy):
    found = {p.item_id: p.reason for p in messy.check_image_contents()}
    assert set(found) == {"g", "h"}
    assert "corrupt" in found["g"] and "truncated" in found["h"]


@pytest.mark.parametrize("mode", ["CMYK", "P", "I;16", "RGBA", "LA", "L"])
def test_odd_image_modes_become_rgb(tmp_path, mode):
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    if mode == "I;16":
        Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(path)
    elif mode == "RGBA":
        Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(path)
    else:
        Image.new("RGB", (8, 8), (200, 10, 10)).convert(mode).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size[0] > 0
    if mode == "RGBA":  # fully transparent pixels land on white
        assert img.getpixel((0, 0)) == (255, 255, 255)
    if mode == "I;16":
        assert np.asarray(img).max() == 255


def test_unreadable_image_raises_clear_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageLoadError, match="not an image"):
        load_rgb(tmp_path / "x.jpg")


def test_missing_columns_and_files_are_catalog_errors(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        Catalog.from_csv(tmp_path / "nope.csv")
    write_csv(tmp_path / "c.csv", b"id,title\n1,x\n")
    with pytest.raises(CatalogError, match="no column 'text'"):
        Catalog.from_csv(tmp_path / "c.csv", id_col="id")


def test_folder_catalog(tmp_path):
    make_image(tmp_path / "a" / "red_dress.png")
    make_image(tmp_path / "b.jpg")
    cat = Catalog.from_folder(tmp_path)
    assert sorted(cat.ids) == ["a/red_dress.png", "b.jpg"]
    assert "red dress" in cat.texts and not cat.problems


def test_parquet_catalog(small_catalog_dir):
    import pandas as pd
    pd.read_csv(small_catalog_dir / "products.csv").to_parquet(small_catalog_dir / "p.parquet")
    cat = Catalog.from_parquet(small_catalog_dir / "p.parquet", image_root=small_catalog_dir / "images")
    assert len(cat) == 12 and not cat.problems and "colour" in cat.attributes
