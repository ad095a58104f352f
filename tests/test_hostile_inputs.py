"""Issue 17, hostile review: each case is an input a reviewer found to be silently wrong or a traceback.

Labels: an import confirming another's label, a duplicate CSV column, a read-only store, exports to
impossible places. Images: a decompression bomb and a FIFO among the products. Outputs: reruns that
replace their file and folders that do not exist yet.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import (FclipError, InvalidArgumentError, LabelImportError, LabelStoreError,
                                    LabelStoreReadOnlyError, UndoConflictError)
from fclip_workbench.embedding.images import ImageLoadError, load_rgb_and_digest
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.paths import check_output_file


@pytest.fixture
def store(tmp_path):
    with LabelStore(tmp_path / "labels.sqlite") as s:
        yield s


# ----------------------------------------------------------------------------- labels
def test_import_of_the_same_value_confirms_it_so_an_undo_cannot_erase_it(store, tmp_path):
    store.set("p1", "colour", "red", annotator="ana")
    store.set("p2", "colour", "blue", annotator="ana")
    f = tmp_path / "bob.csv"
    pd.DataFrame({"item_id": ["p1"], "value": ["red"]}).to_csv(f, index=False)
    report = store.import_(f, field="colour", annotator="bob")
    assert report.unchanged == 1 and not report.applied and len(report.confirmed) == 1
    assert "1 confirmed" in str(report)
    store.undo("ana")  # ana's last decision: p2, nobody else touched it
    assert store.get("p2", "colour") is None
    with pytest.raises(UndoConflictError, match="bob set it to 'red'"):
        store.undo("ana")  # p1 is bob's decision too now
    assert store.get("p1", "colour") == "red"
    again = store.import_(f, field="colour", annotator="bob")  # bob's own value: no second event
    assert again.unchanged == 1 and not again.confirmed


def test_undo_refusal_names_an_undo_as_an_undo(store):
    store.set("p1", "colour", "red", annotator="ana")
    store.set("p1", "colour", "blue", annotator="bob")
    store.undo("bob")  # red is back, by bob's undo
    with pytest.raises(UndoConflictError) as e:
        store.undo("ana")
    assert "bob undid their decision ('red' restored)" in str(e.value)


def test_duplicate_csv_column_is_refused_in_one_line(store, tmp_path):
    f = tmp_path / "dup.csv"
    f.write_text("item_id,value,value\np1,red,blue\n")
    with pytest.raises(LabelImportError) as e:
        store.import_(f, field="colour", annotator="ana")
    assert "value more than once" in str(e.value) and "\n" not in str(e.value)
    assert store.labels("colour").empty


def test_read_only_store_opens_for_reading(tmp_path):
    path = tmp_path / "shared.sqlite"
    with LabelStore(path) as s:
        s.set("p1", "colour", "red", annotator="ana")
    path.chmod(0o444)
    try:
        for store in (LabelStore(path, read_only=True), LabelStore(f"sqlite:///{path}?mode=ro")):
            with store:
                assert store.read_only and store.get("p1", "colour") == "red"
                assert store.history()["annotator"].tolist() == ["ana"]
                with pytest.raises(LabelStoreReadOnlyError, match="opened read-only"):
                    store.set("p1", "colour", "blue", annotator="bob")
        with pytest.raises(LabelStoreReadOnlyError, match="read_only=True"):
            LabelStore(path)  # to label, it must be writable; the error says how to read it
    finally:
        path.chmod(0o644)
    with pytest.raises(LabelStoreError, match="does not exist"):
        LabelStore(tmp_path / "nope.sqlite", read_only=True)  # never created by a reader
    assert not (tmp_path / "nope.sqlite").exists()
    with pytest.raises(LabelStoreError, match=r"only the query \?mode=ro"):
        LabelStore(f"sqlite:///{path}?journal=off")


def test_read_only_store_refuses_a_database_that_is_not_one(tmp_path):
    import sqlite3
    other = tmp_path / "cache.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE vectors (k TEXT)")
    with pytest.raises(LabelStoreError, match="not a label store"):
        LabelStore(other, read_only=True)


@pytest.mark.parametrize("where", ["folder", "under_file", "proc"])
def test_export_to_an_impossible_place_is_one_line(store, tmp_path, where):
    store.set("p1", "colour", "red", annotator="ana")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "dir.csv").mkdir()
    target = {"folder": tmp_path / "dir.csv", "under_file": tmp_path / "a_file" / "x.csv",
              "proc": Path("/proc/labels.csv")}[where]
    with pytest.raises(InvalidArgumentError) as e:
        store.export(target)
    assert str(target) in str(e.value) and "\n" not in str(e.value)
    assert store.get("p1", "colour") == "red"


def test_export_creates_folders_and_replaces_its_file(store, tmp_path):
    store.set("p1", "colour", "red", annotator="ana")
    out = tmp_path / "new" / "sub" / "labels.csv"
    store.export(out)
    store.set("p1", "colour", "blue", annotator="ana")
    store.export(out)  # a rerun replaces it
    assert pd.read_csv(out)["value"].tolist() == ["blue"]
    assert [p.name for p in out.parent.iterdir()] == ["labels.csv"]  # no temporary file left


# ----------------------------------------------------------------------------- outputs
def test_check_output_file_accepts_an_existing_file_it_will_replace(tmp_path):
    old = tmp_path / "x.png"
    old.write_bytes(b"old")
    assert check_output_file(old) == old
    assert check_output_file(tmp_path / "new" / "deeper" / "x.png").name == "x.png"
    with pytest.raises(InvalidArgumentError, match="is a file, not a folder"):
        check_output_file(old / "y.png")


def test_embed_out_into_a_new_folder(small_catalog_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "newdir" / "vectors"
    cmd = [sys.executable, "-m", "fclip_workbench.cli", "embed", "--data", str(small_catalog_dir / "products.csv"),
           "--image-root", str(small_catalog_dir / "images"),
           "--model", str(tiny_model_dir), "--cache", str(tmp_path / "cache.sqlite"), "--out", str(out),
           "--quiet", "--no-text", "--workers", "0"]
    for _ in range(2):  # the second run replaces the file
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    import numpy as np
    saved = np.load(out.with_name("vectors.npz"))
    assert saved["vectors"].shape[0] == 12 and f"wrote {out}.npz" in res.stdout


# ----------------------------------------------------------------------------- images
def test_decompression_bomb_is_a_per_item_failure(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("1", (400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 160,000 px > 2 x 1000: Pillow refuses it
    with pytest.raises(ImageLoadError, match="too large to decode safely"):
        load_rgb_and_digest(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_among_the_images_is_reported_by_its_type_and_never_read(small_catalog_dir, tiny_model, tmp_path):
    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.embedding.store import EmbeddingStore

    fifo = small_catalog_dir / "images" / "p3.jpg"
    fifo.unlink()
    os.mkfifo(fifo)  # reading it would block forever
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    assert any("not a regular file (a FIFO)" in p.reason for p in cat.problems)
    with pytest.raises(ImageLoadError, match="a FIFO"):
        load_rgb_and_digest(fifo)
    unchecked = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images",
                                 check_images=False)
    with EmbeddingStore(tmp_path / "cache.sqlite") as store:
        res = embed_images(tiny_model, unchecked, store, num_workers=0, progress=False)
    assert len(res.ids) == 11 and any("a FIFO" in p.reason for p in res.failures)
    assert isinstance(ImageLoadError("x"), Exception) and issubclass(LabelImportError, FclipError)


# ----------------------------------------------------------------------------- taxonomies
@pytest.mark.parametrize("name,text", [
    ("twice.yaml", "colour: [red]\ncolour: [blue]\n"),
    ("twice.json", '{"colour": ["red"], "colour": ["blue"]}'),
    ("spaced.yaml", "colour: [red]\n' colour': [blue]\n"),  # the same field once names are canonical
])
def test_taxonomy_file_with_a_key_twice_is_refused(tmp_path, name, text):
    from fclip_workbench.errors import TaxonomyError
    from fclip_workbench.labelling.taxonomy import Taxonomy

    (tmp_path / name).write_text(text)
    with pytest.raises(TaxonomyError, match="has the key 'colour' twice"):
        Taxonomy.from_file(tmp_path / name)


# ---------------------------------------------------------------- second hostile pass (2026-12-07)
def test_grounding_a_fifo_is_one_line_and_never_blocks(tmp_path):
    from fclip_workbench.grounding.maps import open_image

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgumentError, match=r"not a regular file \(a FIFO\)"):
        open_image(fifo, max_side=512)  # before: blocked forever in open()


def test_ground_refuses_to_write_over_its_input_photo(small_catalog_dir, tiny_model_dir, tmp_path, capsys):
    from fclip_workbench.cli import main

    photo = tmp_path / "photo.png"
    Image.new("RGB", (60, 80), (200, 30, 30)).save(photo)
    before = photo.read_bytes()
    rc = main(["ground", str(photo), "shoes", "--model", str(tiny_model_dir), "-o", str(photo)])
    assert rc == 2 and "is the input photo" in capsys.readouterr().err
    assert photo.read_bytes() == before


@pytest.mark.parametrize("uri", ["file:{p}?mode=ro", "file:{p}", "{p}?mode=ro"])
def test_an_sqlite_uri_is_refused_not_created_as_a_file(tmp_path, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelStoreError, match="looks like a URI"):
        LabelStore(uri.format(p=tmp_path / "labels.sqlite"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, bad_rows", [
    ('item_id,field,value\np1,colour,"red\np2,colour,blue\np3,colour,green\n', [1]),  # unclosed quote
    ('item_id,field,value\np1,colour,"blue"x\np2,colour,blue\np3,colour,green\n', [1]),  # text after a quote
    ('item_id,field,value\np2,colour,blue\np3,colour,green\np1,colour,"red', [3]),  # unclosed at the end
])
def test_a_broken_csv_row_costs_only_itself(store, tmp_path, text, bad_rows):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    assert not store.import_(path, annotator="ana").applied  # a bad row stops the whole import by default
    report = store.import_(path, annotator="ana", partial=True)
    assert [p.row for p in report.problems] == bad_rows and report.rows == 3
    assert all("malformed row" in p.reason for p in report.problems)
    assert {e.item_id: e.new_value for e in report.applied} == {"p2": "blue", "p3": "green"}
    assert store.get("p1", "colour") is None  # never 'bluex', never a value swallowing later rows


def test_parquet_label_files_keep_big_integers_exactly_and_read_pandas_nulls_as_empty(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"item_id": pa.array([9007199254740993, None, 7], pa.int64()),
                             "field": ["colour"] * 3, "value": pa.array([9007199254740993, 5, None], pa.int64())}),
                   path)
    report = store.import_(path, annotator="ana", partial=True)
    assert store.get("9007199254740993", "colour") == "9007199254740993"  # not rounded to ...992 through float
    assert [p.reason for p in report.problems] == ["empty item id", "empty value"]
    nulls = tmp_path / "na.parquet"
    pd.DataFrame({"item_id": pd.array(["y1", None], dtype="string"), "field": "colour",
                  "value": pd.array(["red", pd.NA], dtype="string")}).to_parquet(nulls)
    report = store.import_(nulls, annotator="ana", partial=True)
    assert [(p.item_id, p.reason) for p in report.problems] == [("", "empty item id")]
