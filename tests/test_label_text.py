"""Text in the label store is canonical, and its exports are safe in a spreadsheet and import back.

Categories (issue 17, items 4 and 5), each on SQLite and PostgreSQL: formula cells in CSV exports,
YAML/JSON taxonomies read as written, empty taxonomies, Unicode NFC, invisible and control characters
(NUL included), field names with spaces on every read path, and length limits with exact round trips.
"""
from __future__ import annotations

import csv
import random

import pandas as pd
import pytest

from fclip_workbench.labelling import textrules
from fclip_workbench.errors import (FclipError, InvalidArgumentError, LabelValueError, TaxonomyError,
                                    UnknownItemError)
from fclip_workbench.labelling.labels import LabelStore, check_annotator_name
from fclip_workbench.labelling.taxonomy import Taxonomy
from fclip_workbench.labelling.textrules import MAX_CHARS, canonical_text, csv_escape, csv_unescape

FORMULAS = ["=1+1", "+33 1 23", "-10%", "@SUM(A1:A9)", " =HYPERLINK(\"http://x\")", "'=already quoted", "''",
            "'", "'plain", "=", "-", "@", "+", "  -x", "''=x", "=cmd|' /C calc'!A0"]
INVISIBLE = ["\u200b", "\u200d", "\u200e", "\u202e", "\u2066", "\ufeff", "\u00ad", "\x00", "\x07", "\x1b",
             "\u2028", "\u3164", "\ue000", "\ufe0f", "\U000e0101", "\ufffc", "\ufffd", "\u17b4", "\u17b5",
             "\u180f", "\u061c", "\U0001d173"]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    return str(tmp_path / "labels.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    s = LabelStore(store_url, timeout=5)
    yield s
    s.close()


@pytest.fixture
def other(tmp_path):
    s = LabelStore(tmp_path / "other.sqlite", timeout=5)
    yield s
    s.close()


def one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value) and isinstance(e.value, FclipError), str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------- 4: formula-safe CSV exports
def test_csv_escape_is_exactly_reversible():
    rng = random.Random(0)
    alphabet = ["'", "=", "+", "-", "@", " ", "\t", "\r", "a", "1"]
    samples = FORMULAS + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(3000)]
    for v in samples:
        cell = csv_escape(v)
        assert csv_unescape(cell) == v, (v, cell)
        assert not cell.startswith(textrules.FORMULA_START) and not cell.lstrip().startswith(textrules.FORMULA_START)
        assert cell == v or cell == "'" + v, (v, cell)
    assert csv_escape(None) is None and csv_escape(3.5) == 3.5


def test_evaluate_uses_the_shared_escaping():
    import fclip_workbench.analysis.evaluate as evaluate

    assert evaluate.csv_escape is textrules.csv_escape and not hasattr(evaluate, "_csv_safe")


def _cells(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [c for row in csv.reader(f) for c in row]


def test_export_neutralises_every_text_cell_and_imports_back(store, other, tmp_path):
    for k, v in enumerate(FORMULAS):
        store.set(f"-{k}", "=field", v, annotator="@ana")  # item ids, field and annotator are text cells too
    store.set("p1", "plain", "Tshirts", annotator="+bob")
    for history in (False, True):
        path = store.export(tmp_path / f"out{history}.csv", history=history)
        for cell in _cells(path):
            assert not cell.startswith(textrules.FORMULA_START), cell
            assert not cell.lstrip().startswith(textrules.FORMULA_START), cell
    rep = other.import_(tmp_path / "outFalse.csv", annotator="cy")
    assert rep.ok and len(rep.applied) == len(FORMULAS) + 1
    assert other.labels("=field").set_index("item_id")["value"].to_dict() == {
        f"-{k}": v.strip() for k, v in enumerate(FORMULAS)}
    assert other.get("p1", "plain") == "Tshirts"
    rep2 = store.import_(tmp_path / "outFalse.csv", annotator="cy")  # into itself: nothing changes
    assert rep2.ok and rep2.unchanged == len(FORMULAS) + 1 and not rep2.applied


def test_parquet_export_keeps_values_exact(store, other, tmp_path):
    store.set("p1", "size", "-XL", annotator="ana")
    store.set("p2", "size", "'=x", annotator="ana")
    path = store.export(tmp_path / "out.parquet")
    assert pd.read_parquet(path)["value"].tolist() == ["-XL", "'=x"]
    assert other.import_(path, annotator="bo").ok and other.get("p2", "size") == "'=x"


# ----------------------------------------------------------------------------- 5: taxonomies read as written
@pytest.mark.parametrize("text,want", [
    ("country: [NO, SE, DK]", ["NO", "SE", "DK"]),
    ("size: ['010', 010, 0x1F, 1e3, .inf, 1_000]", ["010", "0x1F", "1e3", ".inf", "1_000"]),
    ("time: [12:30, 1:02:03]", ["12:30", "1:02:03"]),
    ("b: [yes, No, on, OFF, y, n, true, False]", ["yes", "No", "on", "OFF", "y", "n", "true", "False"]),
    ("n: [~, null, Null]", ["~", "null"]),
    ("d: [2024-01-02, 1.50]", ["2024-01-02", "1.50"]),
])
def test_yaml_values_are_strings_as_written(tmp_path, text, want):
    (tmp_path / "t.yaml").write_text(text)
    assert Taxonomy.from_file(tmp_path / "t.yaml").values == want  # repeats by case collapse to the first


def test_yaml_keys_and_json_numbers_as_written(tmp_path):
    (tmp_path / "k.yaml").write_text("NO: [a]\n010: [b]\n")
    assert Taxonomy.from_file(tmp_path / "k.yaml", field="010").values == ["b"]
    assert Taxonomy.from_file(tmp_path / "k.yaml", field="NO").field == "NO"
    (tmp_path / "j.json").write_text('{"size": [1.50, 2, 1e3, true, false, "010"]}')
    assert Taxonomy.from_file(tmp_path / "j.json").values == ["1.50", "2", "1e3", "true", "false", "010"]
    (tmp_path / "s.yaml").write_text("' colour ': [red]")
    assert Taxonomy.from_file(tmp_path / "s.yaml", field="colour").field == "colour"


@pytest.mark.parametrize("name,text", [
    ("a.yaml", "colour: []"), ("b.yaml", "[]"), ("c.json", "[]"), ("d.json", '{"colour": []}'),
    ("e.yaml", "colour: []\nfit: [slim]"),
])
def test_empty_taxonomy_list_is_an_error(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(TaxonomyError) as e:
        Taxonomy.from_file(tmp_path / name, field="colour" if "colour" in text else None)
    assert "empty" in one_line(e)


def test_empty_taxonomy_never_makes_a_free_field(store):
    with pytest.raises(TaxonomyError):
        Taxonomy.from_values("colour", [])
    with pytest.raises(TaxonomyError) as e:
        store.set_taxonomy("colour", Taxonomy("colour", []))
    assert "no values" in one_line(e) and store.taxonomy("colour") is None


# ----------------------------------------------------------------------------- 5: NFC and invisible characters
def test_nfc_makes_one_value(store):
    store.set_taxonomy("colour", Taxonomy("colour", ["Cafe\u0301", "navy blue"]))
    assert store.taxonomy("colour").values == ["Café", "navy blue"]
    ev = store.set("Re\u0301sume\u0301", "colour", "CAFÉ", annotator="Zoe\u0308")
    assert (ev.item_id, ev.new_value, ev.annotator) == ("Résumé", "Café", "Zoë")
    assert store.get("R\u00e9sum\u00e9", "colour") == "Café"
    assert store.set("p2", "colour", "navy\u00a0blue", annotator="ana").new_value == "navy blue"  # no-break space
    assert store.set("p3", "colour", "navy\u2003blue", annotator="ana").new_value == "navy blue"  # em space
    with pytest.raises(LabelValueError):
        store.set("p4", "colour", "navy\u200bblue", annotator="ana")


def test_known_ids_compare_canonically(tmp_path):
    with LabelStore(tmp_path / "l.sqlite", known_ids=["Cafe\u0301", " 42 ", 7]) as s:
        assert s.set("Caf\u00e9", "c", "x", annotator="ana").item_id == "Café"
        assert s.set(42, "c", "x", annotator="ana").item_id == "42" and s.set("7", "c", "x", annotator="a")
        with pytest.raises(UnknownItemError):
            s.set("Cafe", "c", "x", annotator="ana")


@pytest.mark.parametrize("ch", INVISIBLE)
def test_invisible_characters_refused_everywhere(store, ch):
    for kwargs, err in [
        (dict(item_id=f"p{ch}1", field="colour", value="red", annotator="ana"), InvalidArgumentError),
        (dict(item_id="p1", field=f"col{ch}our", value="red", annotator="ana"), InvalidArgumentError),
        (dict(item_id="p1", field="colour", value=f"r{ch}ed", annotator="ana"), LabelValueError),
        (dict(item_id="p1", field="colour", value="red", annotator=f"an{ch}a"), InvalidArgumentError),
    ]:
        with pytest.raises(err) as e:
            store.set(**kwargs)
        assert f"U+{ord(ch):04X}" in one_line(e)
    with pytest.raises(InvalidArgumentError):
        store.set_many([("p1", "red")], "colour", annotator="ana", batch_id=f"b{ch}x")
    for read in (lambda: store.get(f"p{ch}1", "colour"), lambda: store.labels(f"c{ch}1"),
                 lambda: store.history(item_id=f"p{ch}1"), lambda: store.history(field=f"c{ch}1"),
                 lambda: store.stats(f"c{ch}1"), lambda: store.taxonomy(f"c{ch}1"),
                 lambda: store.current_events("colour", [f"p{ch}1"]), lambda: store.undo(f"a{ch}1")):
        with pytest.raises(InvalidArgumentError) as e:
            read()
        one_line(e)
    with pytest.raises(TaxonomyError) as e:
        Taxonomy("colour", ["red", f"bl{ch}ue"])
    one_line(e)
    with pytest.raises(InvalidArgumentError):
        check_annotator_name(f"a{ch}na")
    assert store.history().empty


def test_nul_bytes_in_an_import_file_are_row_problems(store, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("item_id,field,value\np1,colour,red\np2,colour,bl\x00ue\np\u200b3,colour,red\n", encoding="utf-8")
    rep = store.import_(path, annotator="ana")
    assert [p.row for p in rep.problems] == [2, 3] and not rep.applied and "U+0000" in rep.problems[0].reason
    rep = store.import_(path, annotator="ana", partial=True)
    assert len(rep.applied) == 1 and store.get("p1", "colour") == "red"


def test_stored_taxonomy_with_old_bad_value_still_loads(store):
    store.set_taxonomy("colour", Taxonomy("colour", ["red"]))
    from fclip_workbench.labelling.labels import taxonomies_t
    with store.engine.begin() as conn:  # as an older version could have written it
        conn.execute(taxonomies_t.insert(), [{"field": "colour", "key": "b\u200blue", "value": "b\u200blue",
                                              "position": 9, "source": "old", "added_by": None,
                                              "time": pd.Timestamp.now(tz="UTC").to_pydatetime()}])
    assert store.taxonomy("colour", refresh=True).values == ["red"]


# ----------------------------------------------------------------------------- 5: field names with spaces
def test_field_with_spaces_is_one_field_on_every_path(store, other, tmp_path):
    store.set_taxonomy("  colour ", Taxonomy(" colour", ["red", "blue"]))
    ev = store.set("p1", " colour", "RED", annotator="ana")
    assert ev.field == "colour" and ev.new_value == "red"
    store.set("p2", "colour ", "blue", annotator="ana")
    for name in ("colour", " colour", "colour  ", "\tcolour\n"):
        assert store.get("p1", name) == "red"
        assert store.labels(name)["item_id"].tolist() == ["p1", "p2"]
        assert len(store.history(field=name)) == 2
        assert store.stats(name).labelled == 2
        assert store.taxonomy(name).values == ["red", "blue"]
        assert store.current_events(name, ["p1"])["p1"] == ("red", ev.id)
    assert store.fields() == ["colour"]
    path = store.export(tmp_path / "c.csv", field=" colour ")
    assert pd.read_csv(path)["field"].tolist() == ["colour", "colour"]
    rep = other.import_(path, field=" colour", annotator="bo")
    assert rep.ok and other.labels("colour")["value"].tolist() == ["red", "blue"]
    assert store.undo("ana", field="  colour").item_id == "p2"


# ----------------------------------------------------------------------------- 5: length limits and round trips
def test_value_length_limit_stated_and_round_trips(store, other, tmp_path):
    limit = MAX_CHARS["label value"]
    longest = "é" * limit
    store.set("p1", "note", longest, annotator="ana")
    with pytest.raises(LabelValueError) as e:
        store.set("p2", "note", "x" * (limit + 1), annotator="ana")
    assert f"at most {limit}" in one_line(e) and len(str(e.value)) < 300
    with pytest.raises(InvalidArgumentError, match="at most"):
        store.set("p" * (MAX_CHARS["item id"] + 1), "note", "x", annotator="ana")
    with pytest.raises(InvalidArgumentError, match="at most"):
        check_annotator_name("a" * (MAX_CHARS["annotator name"] + 1))
    for suffix in (".csv", ".parquet"):
        path = store.export(tmp_path / f"long{suffix}")
        assert other.import_(path, annotator="bo").ok and other.get("p1", "note") == longest


def test_huge_cell_in_an_import_file_is_one_row_problem(store, tmp_path):
    csv.field_size_limit(131072)  # Python's default, whatever ran before
    path = tmp_path / "big.csv"
    path.write_text("item_id,field,value\np1,note," + "x" * 300_000 + "\np2,note,ok\n", encoding="utf-8")
    rep = store.import_(path, annotator="ana", partial=True)
    assert [p.row for p in rep.problems] == [1] and "at most" in rep.problems[0].reason
    assert len(str(rep).splitlines()[1]) < 400 and store.get("p2", "note") == "ok"


@pytest.mark.parametrize("text", ["\u0301red", "red \u0301x"])
def test_a_combining_mark_on_no_letter_is_refused(text):
    with pytest.raises(LabelValueError, match="combining mark U\\+0301 .* on no letter"):
        canonical_text(text, "label value", LabelValueError)
    assert canonical_text("Cafe\u0301", "label value") == "Café"  # on its letter: composed, kept
