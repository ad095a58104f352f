"""evaluate(): the split it scores (never the model's training products), duplicate ids, safe report files."""
from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

import fclip_workbench.analysis.evaluate as ev
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import FclipError, LeakageError
from fclip_workbench.analysis.evaluate import (ALL_PRODUCTS, EvalSplit, choose_split, default_fields, evaluate,
                                      model_split, plan_eval, split_mask)
from fclip_workbench.embedding.models import load_model
from fclip_workbench.data.splits import ID_RULE, TITLE_RULE, TRAINING_FILE, SplitRecord, ids_digest, write_split
from fclip_workbench.embedding.store import EmbeddingStore
from tests.conftest import SHARED_DATA, make_image

KAGL = SHARED_DATA / "kagl"


@pytest.fixture
def catalog(small_catalog_dir) -> Catalog:
    return Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")


@pytest.fixture
def store(tmp_path) -> EmbeddingStore:
    return EmbeddingStore(tmp_path / "e.sqlite")


@pytest.fixture
def no_embedding(monkeypatch):
    """Fails the test if evaluate() embeds anything (checks must come first)."""
    def boom(*a, **k):
        raise AssertionError("evaluate() embedded before refusing")
    monkeypatch.setattr(ev, "embed_images", boom)
    monkeypatch.setattr(ev, "embed_texts", boom)


def trained_model(tiny_model_dir, folder, catalog: Catalog, rule=ID_RULE, seed=5, val_fraction=0.5,
                  with_ids=True, catalog_name=None):
    """The tiny model copied to `folder` with a training record of a split of `catalog`."""
    shutil.copytree(tiny_model_dir, folder)
    held = split_mask(catalog, rule, seed, val_fraction)
    train_ids = [i for i, h in zip(catalog.ids, held) if not h]
    rec = SplitRecord(rule, seed, val_fraction, catalog_name or catalog.name, len(train_ids),
                      int(held.sum()), ids_digest(train_ids))
    (folder / TRAINING_FILE).write_text(json.dumps({"split": rec.to_dict(), "catalog": rec.catalog}))
    if with_ids:
        write_split(folder, rec, train_ids)
    return load_model(folder, device="cpu"), held


# ------------------------------------------------------------------ split and leakage
def test_default_split_is_the_models_recorded_split(tiny_model_dir, tmp_path, catalog, store):
    model, held = trained_model(tiny_model_dir, tmp_path / "m", catalog)
    assert 2 <= held.sum() < len(catalog)
    report = evaluate(model, catalog, ["colour"], store=store, progress=False)
    assert report.split == EvalSplit(ID_RULE, 5, 0.5)
    assert report.value("text-to-image", "R@1") >= 0  # ran
    assert set(report.table.n) == {int(held.sum())}
    assert set(zip(report.table.split_rule, report.table.split_seed, report.table.val_fraction)) == {(ID_RULE, 5, 0.5)}


def test_other_seed_refuses_before_embedding(tiny_model_dir, tmp_path, catalog, no_embedding):
    model, _ = trained_model(tiny_model_dir, tmp_path / "m", catalog)
    with pytest.raises(LeakageError, match=r"\d+ of the \d+ products to score were in the training set of model .*"
                                           r"split rule id-hash-v1, seed 5, fraction 0.5\); evaluate with seed 5 / "
                                           r"fraction 0.5 / rule id-hash-v1 \(the default\), or on other data"):
        evaluate(model, catalog, ["colour"], seed=1, progress=False)
    with pytest.raises(LeakageError):
        evaluate(model, catalog, ["colour"], val_fraction=0.9, progress=False)
    with pytest.raises(LeakageError):
        evaluate(model, catalog, ["colour"], rule=TITLE_RULE, progress=False)


def test_all_products_refused_for_a_model_trained_on_them(tiny_model_dir, tmp_path, catalog, no_embedding):
    model, held = trained_model(tiny_model_dir, tmp_path / "m", catalog)
    n_train = int((~held).sum())
    with pytest.raises(LeakageError, match=f"^{n_train} of the {len(catalog)} products to score"):
        evaluate(model, catalog, ["colour"], heldout=False, progress=False)


def test_recorded_split_refuses_when_train_ids_cover_heldout_products(tiny_model_dir, tmp_path, catalog,
                                                                      no_embedding):
    """The ids file wins over the rule: products listed as trained on are never scored."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    rec = SplitRecord(ID_RULE, 5, 0.5, "products", len(catalog), 0, ids_digest(catalog.ids))
    (folder / TRAINING_FILE).write_text(json.dumps({"split": rec.to_dict()}))
    write_split(folder, rec, catalog.ids)
    with pytest.raises(LeakageError, match="evaluate on other data"):
        evaluate(load_model(folder, device="cpu"), catalog, ["colour"], progress=False)


def test_recorded_split_is_recomputed_without_train_ids(tiny_model_dir, tmp_path, catalog, no_embedding):
    model, _ = trained_model(tiny_model_dir, tmp_path / "m", catalog, with_ids=False)
    assert model_split(model)[1] is None
    with pytest.raises(LeakageError, match="trained on catalog 'products'"):
        evaluate(model, catalog, ["colour"], seed=2, progress=False)


def test_other_data_with_any_split_is_allowed(tiny_model_dir, tmp_path, catalog, store):
    """Trained on another catalog (no id in common): every product may be scored."""
    other = Catalog(catalog.table.assign(item_id=[f"q{i}" for i in range(len(catalog))]), catalog.image_root,
                    name="other")
    model, _ = trained_model(tiny_model_dir, tmp_path / "m", other)
    report = evaluate(model, catalog, ["colour"], heldout=False, store=store, progress=False)
    assert report.split == EvalSplit(ALL_PRODUCTS, None, None)
    assert report.value("zero-shot colour (3 classes)", "accuracy") >= 0
    assert "all products" in report.to_markdown()


def test_models_without_record_use_title_group_seed0_5pct(tiny_model):
    assert model_split(tiny_model) is None
    assert choose_split(None) == EvalSplit(TITLE_RULE, 0, 0.05)
    assert choose_split(None, seed=3, val_fraction=0.2) == EvalSplit(TITLE_RULE, 3, 0.2)
    with pytest.raises(FclipError, match="Unknown split rule 'by-colour'"):
        choose_split(None, rule="by-colour")
    with pytest.raises(FclipError, match="val_fraction must be between 0 and 1"):
        choose_split(None, val_fraction=1.5)


def test_title_group_split_keeps_same_titled_products_together(tiny_model, small_catalog_dir, store):
    table = pd.read_csv(small_catalog_dir / "products.csv")
    table["text"] = [f"title {i // 2}" for i in range(len(table))]  # pairs share a title
    cat = Catalog(table, small_catalog_dir / "images", name="pairs")
    report = evaluate(tiny_model, cat, ["colour"], val_fraction=0.5, retrieval=False, store=store, progress=False)
    held = split_mask(cat, TITLE_RULE, 0, 0.5)
    assert (held[0::2] == held[1::2]).all()
    assert report.table.n.iloc[0] == held.sum()


@pytest.mark.skipif(not (KAGL / "styles.csv").is_file(), reason=f"KAGL not found at {KAGL}")
def test_fclip_mini_on_kagl_with_another_seed_refuses(no_embedding):
    from fclip_workbench.data.datasets import load_kagl

    mini = load_model("fclip-mini@1", device="cpu")
    record, _ = model_split(mini)
    assert (record.rule, record.seed, record.val_fraction, record.catalog) == (ID_RULE, 0, 0.05, "kagl")
    kagl = load_kagl(KAGL, check_images=False)
    sub = kagl.subset(np.arange(3000))  # keeps the name "kagl"
    with pytest.raises(LeakageError, match=r"model 'fclip-mini@1' \(trained on catalog 'kagl' with split rule "
                                           r"id-hash-v1, seed 0, fraction 0.05\); evaluate with seed 0 / fraction 0.05"):
        evaluate(mini, sub, ["articleType"], seed=1, progress=False)
    with pytest.raises(LeakageError):
        evaluate(mini, sub, ["articleType"], heldout=False, progress=False)
    # the default is the recorded split: the README's held-out set
    assert choose_split(record) == EvalSplit(ID_RULE, 0, 0.05)


# ------------------------------------------------------------------ bad input, checked before embedding
def test_too_few_heldout_products_is_an_error_not_zero(tiny_model, catalog, no_embedding):
    for fraction in (0.001, 0.05, 0.1, 0.2):
        n = int(split_mask(catalog, TITLE_RULE, 0, fraction).sum())
        if n <= 1:
            break
    assert n <= 1
    with pytest.raises(FclipError, match=f"Only {n} held-out products .*use --all-items"):
        evaluate(tiny_model, catalog, ["colour"], retrieval=False, val_fraction=fraction, progress=False)


def test_single_product_catalog_is_an_error(tiny_model, catalog, no_embedding):
    one = catalog.subset([0])
    with pytest.raises(FclipError, match="Only 1 products"):
        evaluate(tiny_model, one, ["colour"], heldout=False, progress=False)


def test_unknown_label_field_lists_valid_ones(tiny_model, catalog, no_embedding):
    with pytest.raises(FclipError, match=r"Unknown label field\(s\) \['colur'\].*valid fields: colour, garment"):
        evaluate(tiny_model, catalog, ["colur"], progress=False)
    with pytest.raises(FclipError, match="Unknown label field"):
        evaluate(tiny_model, catalog, ["text"], progress=False)  # a core column, not a label


def test_field_without_labels_among_scored_products(tiny_model, catalog, no_embedding):
    cat = Catalog(catalog.table.assign(colour=""), catalog.image_root, name="nolabels")
    with pytest.raises(FclipError, match="Label field 'colour' has no labelled products"):
        evaluate(tiny_model, cat, ["colour"], heldout=False, progress=False)


# ------------------------------------------------------------------ duplicate ids
def test_duplicate_ids_do_not_crash(tiny_model, small_catalog_dir, store):
    csv_path = small_catalog_dir / "products.csv"
    table = pd.read_csv(csv_path)
    dup = table.iloc[[3]].assign(colour="blue", image="p0.jpg")
    pd.concat([table, dup]).to_csv(csv_path, index=False)
    cat = Catalog.from_csv(csv_path, image_root=small_catalog_dir / "images")
    assert any("duplicate id" in p.reason for p in cat.problems)
    report = evaluate(tiny_model, cat, ["colour", "garment"], heldout=False, store=store, progress=False)
    assert set(report.table.n) == {12}  # each product once


# ------------------------------------------------------------------ report files
def test_report_files_escape_formulas_and_pipes(tiny_model, small_catalog_dir, store, tmp_path):
    table = pd.read_csv(small_catalog_dir / "products.csv").rename(columns={"colour": "@colour"})
    cat = Catalog(table, small_catalog_dir / "images", name="=HYPERLINK(\"http://x\")|a")
    report = evaluate(tiny_model, cat, ["@colour"], heldout=False, store=store, progress=False)
    report.table.loc[0, "model"] = "-2+3\nnext|line"
    csv_path, md_path = report.save(tmp_path / "out")

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    cells = [v for r in rows for v in r.values()]
    assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in cells)
    assert rows[0]["data"].startswith("'=HYPERLINK(")
    assert rows[0]["model"].startswith("'-2+3")
    assert float(rows[0]["value"]) == pytest.approx(report.table.value.iloc[0])

    lines = md_path.read_text().splitlines()
    assert len(lines) == 2 + len(report.table)
    n_cols = len(report.table.columns)
    for line in lines:
        unescaped = line.replace("\\|", "")
        assert unescaped.count("|") == n_cols + 1, line
    assert "next\\|line" in lines[2] and "=HYPERLINK(\"http://x\")\\|a" in lines[2]


# ------------------------------------------------------------------ what `fclip eval` scores
def test_plan_eval_defaults(catalog):
    assert default_fields(catalog) == ["garment", "colour"]
    plan = plan_eval(catalog)
    assert plan.kwargs() == {"label_fields": ["garment", "colour"], "heldout": True, "retrieval": True,
                             "label_names": None}
    assert plan_eval(catalog, all_items=True, retrieval=False).kwargs() == {
        "label_fields": ["garment", "colour"], "heldout": False, "retrieval": False, "label_names": None}


def test_plan_eval_fmnist_scores_every_product_without_retrieval(tmp_path):
    make_image(tmp_path / "a.png")
    table = pd.DataFrame({"item_id": ["test-00000"], "image": ["a.png"], "text": ["dress"],
                          "label": ["dress"]})
    fm = Catalog(table, tmp_path, name="fmnist-test")
    assert default_fields(fm) == ["label"]
    plan = plan_eval(fm)
    assert plan.fields == ("label",) and not plan.heldout and not plan.retrieval and plan.notes


def test_plan_eval_fmnist_also_scores_common_names_of_the_classes_present(tmp_path, tiny_model):
    for i in range(4):
        make_image(tmp_path / f"{i}.png", color=(40 * i, 80, 200 - 40 * i))
    labels = ["trouser", "bag", "trouser", "ankle boot"]
    fm = Catalog(pd.DataFrame({"item_id": [f"test-{i:05d}" for i in range(4)], "image": [f"{i}.png" for i in range(4)],
                               "text": labels, "label": labels}), tmp_path, name="fmnist-test")
    plan = plan_eval(fm)
    assert plan.kwargs()["label_names"] == {"label": {"trouser": ("trousers",), "bag": ("bag",),
                                                      "ankle boot": ("boots",)}}
    report = evaluate(tiny_model, fm, **plan.kwargs(), store=EmbeddingStore(tmp_path / "s.sqlite"), progress=False)
    tasks = sorted(set(report.table.task))
    assert tasks == ["zero-shot label (3 classes)", "zero-shot label (3 classes, common names)"]
    assert (report.table.n == 4).all()


def test_label_names_must_name_scored_fields_and_known_labels(tiny_model, catalog, no_embedding):
    with pytest.raises(FclipError, match=r"label_names describes field\(s\) \['garment'\] that are not scored"):
        evaluate(tiny_model, catalog, ["colour"], label_names={"garment": {"shirt": ["tee"]}}, progress=False)
    with pytest.raises(FclipError, match=r"names describes label\(s\) \['blouse'\] that are not among the labels"):
        evaluate(tiny_model, catalog, ["garment"], label_names={"garment": {"blouse": ["top"]}}, heldout=False,
                 progress=False)


def test_backslash_pipes_and_spaced_formulas_are_escaped(tmp_path):
    """`a\\|b` used to become `a\\\\|b` (an extra column); " =1+1" was not formula-quoted."""
    from fclip_workbench.analysis.evaluate import EvalReport

    table = pd.DataFrame([{"model": "a\\|b", "data": " =1+1", "task": "t|u\\", "n": 3, "metric": "m", "value": 0.5}])
    csv_path, md_path = EvalReport(table).save(tmp_path / "out")
    line = md_path.read_text().splitlines()[2]
    cells = [c for c in re.split(r"(?<!\\)\|", line.replace("\\\\", ""))[1:-1]]
    assert len(cells) == len(table.columns), line
    with open(csv_path, newline="") as f:
        row = next(csv.DictReader(f))
    assert row["data"] == "' =1+1"


@pytest.mark.parametrize("label_names, pattern", [
    (["colour"], "label_names must map a label field"),
    ({"colour": {}}, r"label_names of field\(s\) \['colour'\] must be a non-empty mapping"),
    ({"colour": None}, "non-empty mapping"),
])
def test_bad_label_names_are_one_line_errors(tiny_model, catalog, no_embedding, label_names, pattern):
    with pytest.raises(FclipError, match=pattern):
        evaluate(tiny_model, catalog, ["colour"], label_names=label_names, heldout=False, progress=False)


def test_plan_eval_adds_no_common_names_when_no_class_has_one(tmp_path):
    make_image(tmp_path / "a.png")
    table = pd.DataFrame({"item_id": ["test-00000"], "image": ["a.png"], "text": ["x"], "label": ["Trouser"]})
    plan = plan_eval(Catalog(table, tmp_path, name="fmnist-mine"))
    assert plan.kwargs()["label_names"] is None and not any("common names" in n for n in plan.notes)
