"""Behaviour follows what the data is, never the catalog's name (issue 17, item 9).

A renamed teaching catalog gets the teaching model, a renamed Fashion-MNIST the test-set plan;
another catalog called "teaching" or "fmnist-x" gets neither.
"""
from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fclip_workbench import workshop
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.data.datasets import catalog_kind, load_fashion_mnist, make_teaching_catalog, open_catalog
from fclip_workbench.analysis.evaluate import plan_eval

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def teaching(tmp_path_factory) -> Catalog:
    return make_teaching_catalog(tmp_path_factory.mktemp("teach") / "teaching", n=24)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """An IDX file of uint8 `arr` (magic 0x08, then its dimensions), gzipped."""
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory) -> Catalog:
    """Fashion-MNIST's test split through its own loader, from 20 small IDX images (every class twice)."""
    root = tmp_path_factory.mktemp("fmnist-idx")
    rng = np.random.default_rng(0)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    return load_fashion_mnist(root, split="test", cache_dir=tmp_path_factory.mktemp("fmnist-png"))


def _unrelated(tmp_path: Path, name: str, **cols) -> Catalog:
    table = pd.DataFrame({"item_id": ["a", "b", "c"], "image": ["", "", ""],
                          "text": ["navy shirt", "red dress", "black watch"], **cols})
    return Catalog(table, image_root=tmp_path, name=name)


def _model_choice(monkeypatch, catalog) -> str:
    """What `resolve_model("auto", catalog)` loads, without training or loading anything."""
    monkeypatch.setattr(workshop, "teaching_model", lambda device=None: "tiny-teaching")
    monkeypatch.setattr(workshop, "load_model", lambda spec, device=None, progress=True: spec)
    return workshop.resolve_model("auto", catalog)


# ----------------------------------------------------------------------------- teaching
def test_the_teaching_catalog_is_teaching(teaching):
    assert teaching.name == "teaching" and catalog_kind(teaching) == "teaching"


def test_renamed_teaching_catalogs_are_still_teaching(teaching, tmp_path):
    renamed = [
        Catalog(teaching.table, image_root=teaching.image_root, name="my-set"),
        teaching.subset(range(10), name="first-ten"),
    ]
    # a copied folder without its teaching.json opens as a plain CSV catalog, named after the file
    copy = tmp_path / "copied"
    shutil.copytree(teaching.image_root / "images", copy / "images")
    shutil.copy(teaching.image_root / "catalog.csv", copy / "catalog.csv")
    from_copy = open_catalog(copy)
    assert from_copy.name != "teaching"
    renamed.append(from_copy)
    # the same rows as Parquet, somewhere else
    teaching.table.to_parquet(tmp_path / "shop.parquet")
    renamed.append(open_catalog(tmp_path / "shop.parquet", image_root=teaching.image_root))
    for cat in renamed:
        assert catalog_kind(cat) == "teaching", cat.name


def test_renamed_teaching_gets_the_teaching_model(teaching, monkeypatch):
    renamed = Catalog(teaching.table, image_root=teaching.image_root, name="workshop-2026")
    assert _model_choice(monkeypatch, teaching) == _model_choice(monkeypatch, renamed) == "tiny-teaching"


def test_a_catalog_named_teaching_is_not_teaching(tmp_path, monkeypatch):
    other = _unrelated(tmp_path, "teaching", articleType=["Shirts", "Dresses", "Watches"])
    assert catalog_kind(other) == "other"
    assert _model_choice(monkeypatch, other) == "fclip-mini"


def test_teaching_columns_with_other_titles_are_not_teaching(teaching, tmp_path, monkeypatch):
    """The teaching vocabularies alone are not enough: its titles are made from them."""
    table = teaching.table.copy()
    table.loc[table.index[0], "text"] = "a lovely summer dress"
    edited = Catalog(table, image_root=teaching.image_root, name="teaching")
    assert catalog_kind(edited) == "other"
    assert _model_choice(monkeypatch, edited) == "fclip-mini"
    # a colour outside the vocabulary, title made the same way
    table = teaching.table.copy()
    table["colour"] = "teal"
    table["text"] = [f"teal {p} {g}" if p != "plain" else f"teal {g}"
                     for p, g in zip(table["pattern"], table["garment"])]
    assert catalog_kind(Catalog(table, image_root=teaching.image_root, name="teaching")) == "other"


def test_an_empty_catalog_is_other(teaching):
    assert catalog_kind(teaching.subset([], name="teaching")) == "other"


# ----------------------------------------------------------------------------- Fashion-MNIST
def test_fashion_mnist_is_fmnist_and_a_test_set(fmnist):
    assert fmnist.name == "fmnist-test" and catalog_kind(fmnist) == "fmnist"
    plan = plan_eval(fmnist)
    assert plan.fields == ("label",) and not plan.heldout and not plan.retrieval
    assert plan.label_names["label"]["ankle boot"] == ("boots",)


@pytest.mark.parametrize("make", [
    lambda c: Catalog(c.table, image_root=c.image_root, name="my-set"),
    lambda c: c.subset(range(10), name="first-ten"),  # every class once
    lambda c: Catalog(c.table, image_root=c.image_root, name="teaching"),
], ids=["renamed", "subset", "named-teaching"])
def test_renamed_fashion_mnist_gets_the_same_plan(fmnist, make):
    renamed = make(fmnist)
    assert catalog_kind(renamed) == "fmnist"
    want, got = plan_eval(fmnist).kwargs(), plan_eval(renamed).kwargs()
    assert got == want


def test_common_names_only_for_the_classes_present(fmnist):
    part = fmnist.subset(range(0, 20, 2), name="evens")  # classes 0, 2, 4, 6, 8
    assert set(plan_eval(part).label_names["label"]) == set(part.table["label"]) and len(part.table["label"].unique()) == 5


def test_a_catalog_named_fmnist_is_not_fashion_mnist(tmp_path):
    for name in ("fmnist-x", "fmnist-test"):
        # a `label` field of its own classes: held-out products, no Fashion-MNIST names
        other = _unrelated(tmp_path, name, label=["shirt", "dress", "watch"])
        assert catalog_kind(other) == "other"
        plan = plan_eval(other)
        assert plan.heldout and plan.label_names == {}
        assert not any("test set" in n for n in plan.notes)
        # KAGL-like fields: the ordinary plan, retrieval on
        plan = plan_eval(_unrelated(tmp_path, name, articleType=["Shirts", "Dresses", "Watches"]))
        assert plan.heldout and plan.retrieval and plan.label_names == {}


def test_fashion_mnist_labels_with_product_titles_are_not_fashion_mnist(fmnist):
    """Class names in `label` alone are not enough: Fashion-MNIST's titles are its labels."""
    table = fmnist.table.assign(text=[f"a {v} from our shop" for v in fmnist.table["label"]])
    cat = Catalog(table, image_root=fmnist.image_root, name="fmnist-test")
    assert catalog_kind(cat) == "other" and plan_eval(cat).heldout


def test_all_items_still_wins_and_fields_can_be_chosen(fmnist):
    renamed = Catalog(fmnist.table, image_root=fmnist.image_root, name="shop")
    assert plan_eval(renamed, all_items=True).kwargs() == plan_eval(fmnist, all_items=True).kwargs()


# ----------------------------------------------------------------------------- no name-keyed decisions left
NAME_DECISION = re.compile(r"\b(catalog|cat)\.name\s*(==|!=|\bin\b|\.startswith|\.endswith)")


def test_no_decision_reads_a_catalog_name():
    """Package and notebooks decide by `catalog_kind`, never by comparing a catalog's name."""
    sources = [*sorted((ROOT / "fclip_workbench").rglob("*.py")), *sorted((ROOT / "notebooks").glob("*.py"))]
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sources
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if NAME_DECISION.search(line) and not line.lstrip().startswith(("#", ">>>"))]
    assert not found, "decide by the data (datasets.catalog_kind), not the name:\n" + "\n".join(found)
