"""Taxonomy: ordered unique values, case-insensitive lookup, completion, and its four sources."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import FclipError, TaxonomyError
from fclip_workbench.labelling.taxonomy import Taxonomy


def test_order_unique_canonical_add():
    tx = Taxonomy("articleType", ["Tshirts", "Shirts", "tshirts", " Jeans "], source="typed")
    assert tx.values == ["Tshirts", "Shirts", "Jeans"] and len(tx) == 3
    assert "SHIRTS" in tx and "shirt" not in tx and None not in tx and 3 not in tx
    assert tx.canonical(" jeans") == "Jeans" and tx.canonical("boots") is None
    assert tx.add("JEANS") == "Jeans" and len(tx) == 3  # present: no change, canonical spelling back
    assert tx.add("Boots") == "Boots" and tx.values[-1] == "Boots"
    with pytest.raises(TaxonomyError, match="empty value"):
        tx.add("  ")
    with pytest.raises(TaxonomyError, match="field name"):
        Taxonomy("", ["a"])
    assert tx == Taxonomy("articleType", ["Tshirts", "Shirts", "Jeans", "Boots"]) and "4 values" in repr(tx)


def test_complete_prefix_then_substring():
    tx = Taxonomy("t", ["Casual Shoes", "Shoe Accessories", "Sports Shoes", "Shirts", "Shorts", "Flip Flops"])
    assert tx.complete("shoe") == ["Shoe Accessories", "Casual Shoes", "Sports Shoes"]
    assert tx.complete("SH") == ["Shoe Accessories", "Shirts", "Shorts", "Casual Shoes", "Sports Shoes"]
    assert tx.complete("sh", limit=2) == ["Shoe Accessories", "Shirts"]
    assert tx.complete("") == tx.values and tx.complete("zzz") == []
    assert tx.complete("flop") == ["Flip Flops"]
    with pytest.raises(TaxonomyError, match="limit"):
        tx.complete("s", limit=0)


def test_describe_lists_up_to_limit():
    tx = Taxonomy("n", [f"v{i}" for i in range(25)])
    assert tx.describe(20).endswith("v19 ... and 5 more") and "v20" not in tx.describe(20)
    assert Taxonomy("n", ["a", "b"]).describe() == "a, b"


def test_from_catalog(small_catalog_dir):
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    tx = Taxonomy.from_catalog(cat, "colour")
    assert tx.values == ["red", "green", "blue"] and tx.field == "colour" and tx.source.startswith("catalog:")
    df = pd.DataFrame({"item_id": ["1", "2", "3", "4"], "fit": ["slim", None, "", "Slim"]})
    assert Taxonomy.from_catalog(df, "fit").values == ["slim"]
    with pytest.raises(TaxonomyError, match="no column 'size'.*colour, garment"):
        Taxonomy.from_catalog(cat, "size")
    with pytest.raises(TaxonomyError, match="no non-empty values"):
        Taxonomy.from_catalog(pd.DataFrame({"x": [None, ""]}), "x")


def test_from_file_yaml_json(tmp_path):
    (tmp_path / "t.yaml").write_text("colour: [red, Blue, blue]\nfit:\n  - slim\n  - loose\n")
    with pytest.raises(TaxonomyError, match="several fields \\(colour, fit\\)"):
        Taxonomy.from_file(tmp_path / "t.yaml")
    tx = Taxonomy.from_file(tmp_path / "t.yaml", field="colour")
    assert tx.values == ["red", "Blue"] and tx.source == "file:t.yaml"
    with pytest.raises(TaxonomyError, match="no field 'size'; it has: colour, fit"):
        Taxonomy.from_file(tmp_path / "t.yaml", field="size")
    (tmp_path / "fit.json").write_text(json.dumps(["slim", "regular"]))
    assert Taxonomy.from_file(tmp_path / "fit.json").field == "fit"
    assert Taxonomy.from_file(tmp_path / "fit.json", field="cut").values == ["slim", "regular"]
    (tmp_path / "one.yml").write_text("season: [summer, winter]")
    assert Taxonomy.from_file(tmp_path / "one.yml").field == "season"


@pytest.mark.parametrize("name, text, match", [
    ("bad.json", "{colour: [red", "not valid JSON"),
    ("bad.yaml", "colour: [red, blue", "not valid YAML"),
    ("bad.txt", "red\nblue", "suffix '.txt'"),
    ("num.json", "42", "must hold"),
    ("str.yaml", "colour: red", "must be a list"),
    ("empty.yaml", "colour: [red, '']", "empty value"),
    ("nested.json", '{"colour": [["red"]]}', "not a text value"),
])
def test_from_file_bad_files_one_line(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(TaxonomyError, match=match) as e:
        Taxonomy.from_file(tmp_path / name)
    assert "\n" not in str(e.value) and isinstance(e.value, FclipError)


def test_from_file_missing(tmp_path):
    with pytest.raises(TaxonomyError, match="does not exist"):
        Taxonomy.from_file(tmp_path / "nope.yaml")


def test_from_values():
    assert Taxonomy.from_values("fit", ["slim", "regular"]).values == ["slim", "regular"]
    assert Taxonomy.from_values("fit", "slim, regular ,loose").values == ["slim", "regular", "loose"]
    with pytest.raises(TaxonomyError, match="empty"):
        Taxonomy.from_values("fit", ["slim", ""])


@pytest.mark.needs_data("fashionpedia")
def test_from_fashionpedia():
    cats = Taxonomy.from_fashionpedia()
    assert len(cats) == 46 and cats.field == "category" and cats.values[0] == "shirt, blouse"
    attrs = Taxonomy.from_fashionpedia(kind="attributes")
    assert len(attrs) == 294 and attrs.field == "attribute"
    necks = Taxonomy.from_fashionpedia(kind="attributes", supercategory="neckline type", field="neckline")
    assert len(necks) == 25 and necks.field == "neckline" and "v-neck" in necks
    assert necks.complete("v")[0].lower().startswith("v")
    upper = Taxonomy.from_fashionpedia(kind="categories", supercategory="upperbody")
    assert len(upper) == 6 and "jacket" in upper
    with pytest.raises(TaxonomyError, match="no supercategory 'hats'.*upperbody"):
        Taxonomy.from_fashionpedia(supercategory="hats")
    with pytest.raises(TaxonomyError, match="kind 'colours'"):
        Taxonomy.from_fashionpedia(kind="colours")


def test_fashionpedia_missing_or_bad_file(tmp_path):
    with pytest.raises(TaxonomyError, match="does not exist"):
        Taxonomy.from_fashionpedia(tmp_path)
    bad = tmp_path / "category_attributes_descriptions.json"
    bad.write_text('{"categories": 3}')
    with pytest.raises(TaxonomyError, match="not the Fashionpedia ontology"):
        Taxonomy.from_fashionpedia(tmp_path)


def test_docstring_examples_run():
    import doctest

    import fclip_workbench.labelling.taxonomy as mod

    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 8 and res.failed == 0


def test_a_second_spelling_of_a_value_is_merged_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="fclip_workbench.labelling.taxonomy"):
        tx = Taxonomy("street", ["Straße", "STRASSE", "Gasse"])
    assert tx.values == ["Straße", "Gasse"]
    assert "'STRASSE' is the value 'Straße' ignoring case" in caplog.text
