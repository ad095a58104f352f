"""Catalog validation: every kind of bad input is reported per row, nothing silently dropped."""
import numpy as np
import pytest
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import CatalogError
from fclip_workbench.embedding.images import ImageLoadError, load_rgb
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


@pytest.mark.parametrize("levels, mode, grey", [
    (np.full((16, 16), 65535, np.uint16), "I;16", 255),  # flat white stays white
    (np.zeros((16, 16), np.uint16), "I;16", 0),
    (np.full((16, 16), 32896, np.uint16), "I;16", 128),  # mid grey, not stretched
    (np.full((16, 16), 1.0, np.float32), "F", 255),
    (np.full((16, 16), 0.5, np.float32), "F", 128),
    (np.full((16, 16), 200, np.int32), "I", 200),  # 8-bit levels in a 32-bit image (convert("I"))
    (np.full((16, 16), 51400, np.int32), "I", 200),  # 16-bit levels in a 32-bit image
])
def test_deep_greyscale_keeps_its_levels(tmp_path, levels, mode, grey):
    path = tmp_path / "x.tif"
    Image.fromarray(levels).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB"
    assert set(np.unique(np.asarray(img))) == {grey}


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


# ---- hardening (issue 6): each test below failed on the code before the fix ----------------------
def test_repeated_header_names_are_refused_with_their_positions(tmp_path):
    write_csv(tmp_path / "c.csv", b"item_id,text,image,text\na,red dress,,red\n")
    with pytest.raises(CatalogError, match=r"'text' at columns 2, 4"):
        Catalog.from_csv(tmp_path / "c.csv")
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table([pa.array(["a"]), pa.array(["x"]), pa.array(["y"])], names=["item_id", "text", "text"]),
                   tmp_path / "d.parquet")
    with pytest.raises(CatalogError, match=r"'text' at columns 2, 3"):
        Catalog.from_parquet(tmp_path / "d.parquet")
    df = pd.DataFrame([["a", "", "x", "y"]], columns=["item_id", "image", "text", "text"])
    with pytest.raises(CatalogError, match=r"'text' at columns 3, 4"):
        Catalog(df)


EXCEL_ROWS = "item_id\timage\ttext\r\na\t\tcafé crème dress\r\nb\t\tblue shirt\r\n"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
@pytest.mark.parametrize("sep", [",", "\t"])
def test_utf16_with_bom_is_read(tmp_path, encoding, sep):
    import codecs
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE}
    path = write_csv(tmp_path / "c.csv", bom[encoding] + EXCEL_ROWS.replace("\t", sep).encode(encoding))
    cat = Catalog.from_csv(path)
    assert cat.ids == ["a", "b"] and cat.texts == ["café crème dress", "blue shirt"]
    assert cat.lines == [2, 3] and not [p for p in cat.problems if p.field != "image"]


def test_utf16_bad_units_are_replaced_and_reported_per_row(tmp_path):
    import codecs
    body = "item_id,image,text\na,,ok\nb,,x".encode("utf-16-le") + b"\x00\xd8" + "y\n".encode("utf-16-le")
    cat = Catalog.from_csv(write_csv(tmp_path / "c.csv", codecs.BOM_UTF16_LE + body))
    assert cat.texts == ["ok", "x\ufffd\ufffdy"]
    enc = [p for p in cat.problems if p.field == "encoding"]
    assert [(p.item_id, p.line) for p in enc] == [("b", 3)]


def test_utf16_without_bom_is_refused_clearly(tmp_path):
    write_csv(tmp_path / "c.csv", "item_id,image,text\na,,red dress\n".encode("utf-16-le"))
    with pytest.raises(CatalogError, match="looks like UTF-16 without a byte-order mark; save as UTF-8"):
        Catalog.from_csv(tmp_path / "c.csv")


def test_unreadable_parquet_folders_and_empty_files_are_catalog_errors(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"item_id,text\na,b\n")
    with pytest.raises(CatalogError, match="bad.parquet is not a readable Parquet file: "):
        Catalog.from_parquet(tmp_path / "bad.parquet")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(CatalogError, match="is a folder, not a CSV file"):
        Catalog.from_csv(tmp_path / "dir.csv")
    (tmp_path / "dir.parquet").mkdir()
    with pytest.raises(CatalogError, match="is a folder, not a Parquet file"):
        Catalog.from_parquet(tmp_path / "dir.parquet")
    for name, read in (("e.csv", Catalog.from_csv), ("e.parquet", Catalog.from_parquet)):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(CatalogError, match="is empty"):
            read(tmp_path / name)
    with pytest.raises(CatalogError, match="not found"):
        Catalog.from_parquet(tmp_path / "nope.parquet")


def test_header_only_csv_is_an_empty_catalog_and_says_so(tmp_path):
    cat = Catalog.from_csv(write_csv(tmp_path / "c.csv", b"item_id,image,text,colour\n"), name="c")
    assert len(cat) == 0 and cat.attributes == ["colour"] and not cat.problems
    assert cat.report() == "c: 0 rows (no products: the table has a header but no data rows), no problems"


def test_user_column_named_line_is_kept_as_an_attribute(tmp_path):
    csv = b"item_id,image,text,_line,_note\na,,red dress,L-100,x\nb,,,L-200,y\n"
    cat = Catalog.from_csv(write_csv(tmp_path / "c.csv", csv))
    assert cat.table["_line"].tolist() == ["L-100", "L-200"]
    assert cat.attributes == ["_line", "_note"]
    assert [p.line for p in cat.problems if p.field == "text"] == [3]  # source lines kept beside the table
    assert cat.subset([1]).problem(0, "text", "x").line == 3


def test_problem_table_with_non_utf8_ids_round_trips_through_csv(tmp_path):
    import pandas as pd
    csv = (b"item_id,image,text\n"
           b"caf\xe9,,latte dress\n"
           b"t\xe9,,too,many\n"
           b"ok\xff,,\n")
    cat = Catalog.from_csv(write_csv(tmp_path / "c.csv", csv))
    assert cat.ids == ["caf\ufffd", "ok\ufffd"]
    out = tmp_path / "problems.csv"
    cat.problem_table().to_csv(out, index=False)  # UTF-8: failed on surrogate escapes before
    back = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert set(back.item_id) == {"caf\ufffd", "t\ufffd", "ok\ufffd"}
    assert back.set_index("reason").filter(like="malformed", axis=0).line.tolist() == ["3"]
    assert all("\udc80" > s or "\udcff" < s for s in "".join(map(str, cat.problems)))  # no lone surrogates


def test_parquet_integer_ids_with_nulls_print_as_integers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"item_id": pa.array([39386, None, 7], pa.int64()),
                             "image": pa.array([11, None, 12], pa.int64()),
                             "text": ["red dress", "blue shirt", "green bag"]}), tmp_path / "p.parquet")
    cat = Catalog.from_parquet(tmp_path / "p.parquet", check_images=False)
    assert cat.ids == ["39386", "", "7"] and cat.table["image"].tolist() == ["11", "", "12"]
    assert [(p.row, p.reason) for p in cat.problems if p.field == "item_id"] == [(1, "empty item id")]
    # the same through a float column (what pandas makes of integers with nulls), and in an image template
    import pandas as pd
    pd.DataFrame({"sku": [39386.0, float("nan")], "text": ["a", "b"]}).to_parquet(tmp_path / "f.parquet")
    cat = Catalog.from_parquet(tmp_path / "f.parquet", id_col="sku", image_template="{sku}.jpg", check_images=False)
    assert cat.ids == ["39386", ""] and cat.table["image"].tolist() == ["39386.jpg", ".jpg"]
    # CSV ids stay the strings they are (leading zeros kept)
    cat = Catalog.from_csv(write_csv(tmp_path / "c.csv", b"item_id,image,text\n00123,,x\n,,y\n"), check_images=False)
    assert cat.ids == ["00123", ""] and [p.line for p in cat.problems if p.field == "item_id"] == [3]


def test_list_dict_and_bytes_text_is_a_text_problem_not_embedded(tmp_path):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"item_id": ["a", "b", "c"], "text": pa.array([["red", "dress"], None, ["x"]]),
                             "image": ["", "", ""]}), tmp_path / "l.parquet")
    cat = Catalog.from_parquet(tmp_path / "l.parquet")
    text_problems = {p.item_id: p.reason for p in cat.problems if p.field == "text"}
    assert text_problems == {
        "a": "text is a list, not a string: give one string per product (['red', 'dress'])",
        "b": "empty text",
        "c": "text is a list, not a string: give one string per product (['x'])"}
    assert cat.usable_rows("text").tolist() == [] and cat.texts == ["", "", ""]
    df = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "image": "",
                       "text": [["red", "dress"], {"en": "red dress"}, b"red dress", None]})
    cat = Catalog(df)
    reasons_by_id = {p.item_id: p.reason for p in cat.problems if p.field == "text"}
    assert reasons_by_id["a"].startswith("text is a list, not a string: give one string per product")
    assert reasons_by_id["b"].startswith("text is a dict, not a string")
    assert reasons_by_id["c"].startswith("text is bytes, not a string: decode it to a string first")
    assert reasons_by_id["d"] == "empty text"
    assert len([p for p in cat.problems if p.field == "text"]) == 4  # one problem per row, none doubled


def test_problem_locations_name_the_line_or_the_1_based_row(tmp_path):
    from fclip_workbench.data.catalog import Problem
    assert str(Problem("x", "image", "bad", row=4)) == "row 5 of the table (id 'x') image: bad"
    assert str(Problem("x", "image", "bad", row=4, line=6)) == "line 6 (id 'x') image: bad"
    assert str(Problem(None, "line", "bad", line=9)) == "line 9 line: bad"
    cat = Catalog.from_csv(write_csv(tmp_path / "c.csv", b"item_id,image,text\na,,x\nb,,y\na,,z\n"))
    dup = [p for p in cat.problems if p.field == "item_id"]
    assert [str(p) for p in dup] == ["line 4 (id 'a') item_id: duplicate id (first at line 2); this row is not used"]
    import pandas as pd
    cat = Catalog(pd.DataFrame({"item_id": ["a", "a"], "image": "", "text": ["x", "y"]}))
    assert [str(p) for p in cat.problems if p.field == "item_id"] == [
        "row 2 of the table (id 'a') item_id: duplicate id (first at row 1 of the table); this row is not used"]
    assert str(cat.problem(0, "image", "corrupt")) == "row 1 of the table (id 'a') image: corrupt"


def test_a_stray_quote_costs_its_own_line_never_the_rows_after_it(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('item_id,text,image\np1,"red dress,a.jpg\np2,blue,b.jpg\np3,"blue"x,c.jpg\np4,ok,d.jpg\n'
                    'p5,"soft cotton.\nmachine wash, tumble dry",e.jpg\n')
    cat = Catalog.from_csv(path, check_images=False)
    assert cat.ids == ["p2", "p4", "p5"]  # p2 was swallowed into p1's text before
    assert cat.texts[2] == "soft cotton.\nmachine wash, tumble dry"  # a quoted line break is still a description
    broken = sorted(p.line for p in cat.problems if p.field == "line")
    assert broken == [2, 4]


def test_a_stray_quote_closed_by_an_inch_mark_on_the_next_line_is_pointed_out(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('item_id,image,text,colour,garment\np0,p0.jpg,"red shirt,red,shirt\n'
                    'p1,p1.jpg,red 12",red,dress\np2,p2.jpg,red shoe,red,shoe\n')
    cat = Catalog.from_csv(path, check_images=False)
    [note] = cat.problems
    assert note.line == 2 and "line 3 reads as a row of its own" in note.reason and "p1,p1.jpg,red 12" in note.reason


def test_a_quoted_cell_swallowing_lines_that_read_as_rows_is_pointed_out(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('item_id,image,text\np1,a.jpg,"red\np2,b.jpg,blue\np3,c.jpg,green"\np4,d.jpg,x\n'
                    'p5,e.jpg,"soft cotton.\nmachine wash, cold"\n')
    cat = Catalog.from_csv(path, check_images=False)
    assert cat.ids == ["p1", "p4", "p5"]  # legal CSV: kept as read
    [note] = cat.problems
    assert note.line == 2 and "line 3 reads as a row of its own ('p2,b.jpg,blue'): a stray quote" in note.reason
    assert cat.usable_rows("text").tolist() == [0, 1, 2]  # a note, not a refusal


def test_a_tab_separated_file_with_cr_line_ends_is_read_as_tabs(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(b"item_id\timage\ttext\rp1\ta.jpg\tred, dress\rp2\tb.jpg\tblue\r")
    cat = Catalog.from_csv(path, check_images=False)
    assert cat.ids == ["p1", "p2"] and cat.texts == ["red, dress", "blue"] and not cat.problems
