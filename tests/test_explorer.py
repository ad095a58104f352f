"""Explorer widget at Python level: selection both ways, grid, colouring, tooltips, query, clusters,
the annotator hook, and 1,000,000 points (no browser; tests/test_explorer_browser.py drives the UI)."""
from __future__ import annotations

import resource
import time

import numpy as np
import pandas as pd
import pytest

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.errors import FclipError, InvalidArgumentError
from fclip_workbench.embedding.store import EmbeddingStore
from fclip_workbench.widgets import Explorer
from fclip_workbench.widgets.explorer import PREVIEW


@pytest.fixture
def catalog(small_catalog_dir):
    return Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")


@pytest.fixture
def explorer(catalog):
    xy = np.random.default_rng(0).normal(size=(len(catalog), 2))
    return Explorer(xy, catalog.ids, catalog=catalog)


class FakeModel:
    """encode_texts -> a fixed unit vector per known text: a query whose top-k is known exactly."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode_texts(self, texts, batch_size=256):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def test_select_from_python_shows_grid_and_map(explorer):
    seen = []
    explorer.observe(lambda ch: seen.append(ch["new"]), names="selected_ids")
    explorer.select(["p3", "p0", "p7"])
    assert explorer.selected_ids == ["p0", "p3", "p7"]  # map order
    assert sorted(explorer.map.selection.tolist()) == [0, 3, 7]  # sent to the browser
    sel = explorer.selection
    assert list(sel["item_id"]) == ["p0", "p3", "p7"] and list(sel["title"]) == ["red shirt", "red bag", "green bag"]
    assert {"x", "y", "colour", "garment"} <= set(sel.columns) and PREVIEW not in sel.columns
    assert explorer.grid.value.count("<figure") == 3 and "data:image/png;base64" in explorer.grid.value
    assert "3 selected" in explorer.grid.value and seen == [["p0", "p3", "p7"]]
    assert not explorer.send_button.disabled
    explorer.select([])
    assert explorer.selected_ids == [] and explorer.selection.empty and "<figure" not in explorer.grid.value
    assert explorer.send_button.disabled


def test_the_hint_names_the_gestures_the_map_is_configured_for(explorer):
    """The empty grid's hint says shift+drag lassos: the map's regl-scatterplot key map says so too (jupyter-scatter
    1.0 leaves the lasso key out), long press stays on, and the JupyterLab guard is in the widget."""
    assert "hold Shift and drag" in explorer.grid.value and "press and hold" in explorer.grid.value
    assert explorer.map.regl_scatterplot_options["actionKeyMap"]["lasso"] == "shift"
    assert explorer.map.lasso_on_long_press is True
    assert explorer.gesture_guard in explorer.children and explorer.gesture_guard.root_class == "fclip-explorer"
    assert "fclip-explorer" in explorer._dom_classes


def test_selection_made_in_the_browser_reaches_python(explorer):
    explorer.map.selection = np.array([5, 1], dtype=np.uint32)  # what a lasso in the page sets
    assert explorer.selected_ids == ["p1", "p5"]
    assert list(explorer.selection["garment"]) == ["dress", "dress"]
    assert explorer.grid.value.count("<figure") == 2


def test_grid_is_capped_but_selection_is_not(catalog):
    ex = Explorer(np.random.default_rng(0).normal(size=(12, 2)), catalog.ids, catalog=catalog, grid_limit=4)
    ex.select(catalog.ids)
    assert len(ex.selection) == 12 and ex.grid.value.count("<figure") == 4
    assert "12 selected" in ex.grid.value and "first 4" in ex.grid.value


def test_unknown_ids_and_bad_construction_are_clear_errors(explorer, catalog):
    with pytest.raises(InvalidArgumentError, match=r"ids not on the map: \['nope'\]"):
        explorer.select(["p1", "nope"])
    assert explorer.selected_ids == []  # nothing half-done
    xy = np.zeros((12, 2))
    with pytest.raises(InvalidArgumentError, match="11 ids for 12 map points"):
        Explorer(xy, catalog.ids[:11])
    with pytest.raises(InvalidArgumentError, match=r"repeated: \['p0'\]"):
        Explorer(xy, ["p0"] * 2 + catalog.ids[2:])
    with pytest.raises(InvalidArgumentError, match=r"shape \(12, 3\)"):
        Explorer(np.zeros((12, 3)), catalog.ids)
    with pytest.raises(InvalidArgumentError, match=r"not in catalog .*\['zz'\]"):
        Explorer(xy, catalog.ids[:11] + ["zz"], catalog=catalog)
    with pytest.raises(InvalidArgumentError, match="vectors must be"):
        Explorer(xy, catalog.ids, vectors=np.zeros((3, 4)))


def test_colour_by_column_predictions_labels_and_disagreement(explorer):
    explorer.color_by("garment")
    assert explorer.colour == "garment" and explorer.colour_menu.value == "garment"
    assert explorer.scatter.color()["by"] == "garment"
    with pytest.raises(InvalidArgumentError, match=r"Cannot colour by 'price'; choose one of \['colour', 'garment'\]"):
        explorer.color_by("price")
    with pytest.raises(InvalidArgumentError, match="needs labels and predictions"):
        explorer.color_by("disagreement")
    preds = ["shirt"] * 12
    explorer.set_predictions(preds)
    labels = pd.DataFrame({"item_id": ["p0", "p1", "p1", "p2"], "field": ["garment"] * 4,
                           "label": ["shirt", "shirt", "dress", "dress"]})  # p1 relabelled: the last one counts
    explorer.set_labels(labels, field="garment")
    explorer.color_by("disagreement")
    counts = explorer.table["disagreement"].value_counts()
    assert counts["agree"] == 1 and counts["disagree"] == 2 and counts["unlabelled"] == 9
    assert explorer.table.loc[explorer.table.item_id == "p1", "disagreement"].item() == "disagree"
    assert {"prediction", "label", "disagreement"} <= set(explorer.colour_menu.options)
    explorer.colour_menu.value = "colour"  # the dropdown drives the map
    assert explorer.scatter.color()["by"] == "colour"
    with pytest.raises(InvalidArgumentError, match="3 predictions for 12"):
        explorer.set_predictions(["a"] * 3)
    with pytest.raises(InvalidArgumentError, match="columns 'item_id' and 'label'"):
        explorer.set_labels(pd.DataFrame({"id": [1]}))


def test_many_categories_fold_into_other(catalog):
    ex = Explorer(np.zeros((12, 2)) + np.arange(12)[:, None], catalog.ids, catalog=catalog)
    ex.set_predictions([f"class{i}" for i in range(12)])
    assert len(ex.table["prediction"].cat.categories) == 12
    from fclip_workbench.widgets.explorer import _categorical
    folded = _categorical([f"c{i}" for i in range(30)] + ["c0"] * 5, max_categories=5)
    assert len(folded.categories) == 5 and "other" in folded.categories and (folded == "c0").sum() == 6


def test_hover_answers_with_the_thumbnail(explorer, monkeypatch):
    sent = []
    monkeypatch.setattr(explorer.map, "send", lambda msg, *a, **k: sent.append(msg))
    # what jupyter-scatter's front end sends on hover (its custom message), through its own handler
    explorer.map._handle_custom_msg({"type": "tooltip", "index": 4, "preview": PREVIEW,
                                     "properties": ["title"]}, [])
    msg = sent[-1]
    assert msg["type"] == "tooltip" and msg["index"] == 4
    assert msg["preview"].startswith("data:image/png;base64,") and msg["properties"] == {"title": "green shirt"}
    assert explorer.map.tooltip_preview == PREVIEW and explorer.map.tooltip_preview_type == "image"


def test_query_selects_the_top_k(catalog):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(12, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    q = vectors[[2, 9]].mean(0)
    q /= np.linalg.norm(q)
    ex = Explorer(rng.normal(size=(12, 2)), catalog.ids, catalog=catalog, vectors=vectors,
                  model=FakeModel({"two": q}))
    hits = ex.search("two", k=2)
    assert set(hits["item_id"]) == {"p2", "p9"} and ex.selected_ids == ["p2", "p9"] and ex.query == "two"
    assert (ex.table["query"] == "match").sum() == 2
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        ex.search("  ")
    with pytest.raises(InvalidArgumentError, match="needs vectors= and model="):
        Explorer(np.zeros((12, 2)), catalog.ids).search("red")


def test_query_box_errors_show_in_the_widget(catalog):
    ex = Explorer(np.zeros((12, 2)), catalog.ids, catalog=catalog, vectors=np.eye(12, 8, dtype=np.float32),
                  model=FakeModel({}))
    ex.k.value = 3

    def refuse(text, k=None):
        raise FclipError(f"cannot search {text!r}")

    ex.search = refuse
    ex.query_box.value = "red"
    assert "cannot search &#x27;red&#x27;" in ex.status.value


class FakeZeroShot:
    labels = ["shirt", "shoe"]

    def __init__(self, garments):
        self.garments = garments

    def predict_proba(self, vectors):
        return np.array([[0.8, 0.2] if g == "shirt" else [0.3, 0.7] for g in self.garments])


def test_clusters_are_named_by_zero_shot_labels(catalog):
    garments = ["shirt"] * 6 + ["shoe"] * 6
    vectors = np.r_[np.tile([1.0, 0.0, 0.0], (6, 1)), np.tile([0.0, 1.0, 0.0], (6, 1))].astype(np.float32)
    vectors += np.random.default_rng(0).normal(scale=0.01, size=vectors.shape).astype(np.float32)
    ex = Explorer(np.zeros((12, 2)), catalog.ids, catalog=catalog, vectors=vectors)
    table = ex.clusters(labels=None, n_clusters=2, classifier=FakeZeroShot(garments))
    assert sorted(table["size"]) == [6, 6]
    assert sorted(n.split(" / ")[0] for n in table["name"]) == ["shirt", "shoe"]
    assert ex.colour == "cluster" and ex.table["cluster"].nunique() == 2
    assert ex.table["cluster"].iloc[0].endswith("shirt / shoe") and ex.table["cluster"].iloc[-1].endswith("shoe / shirt")
    with pytest.raises(InvalidArgumentError, match="n_clusters must be"):
        ex.clusters(labels=None, n_clusters=20, classifier=FakeZeroShot(garments))


def test_send_to_annotator_hook(explorer):
    got = []
    explorer.on_send(got.append)
    with pytest.raises(InvalidArgumentError, match="nothing selected"):
        explorer.send()
    explorer.send_button.click()  # disabled in the page; a click with nothing selected shows the reason
    assert "nothing selected" in explorer.status.value and got == []
    explorer.select(["p2", "p4"])
    explorer.send_button.click()
    assert got == [["p2", "p4"]] and "sent 2" in explorer.status.value
    with pytest.raises(InvalidArgumentError, match="needs a function"):
        explorer.on_send("annotator")


def test_build_embeds_projects_and_caches(tiny_model, catalog, tmp_path):
    from fclip_workbench.analysis.projection import UMAPProjector

    proj = UMAPProjector(n_neighbors=5, cache_dir=tmp_path / "maps")
    ex = Explorer.build(tiny_model, catalog, store=EmbeddingStore(tmp_path / "s.sqlite"), projector=proj,
                        progress=False, color_by="colour")
    assert len(ex.table) == 12 and ex.vectors.shape == (12, tiny_model.dim) and ex.colour == "colour"
    assert np.isfinite(ex.table[["x", "y"]].to_numpy()).all() and proj.cache_hit_ is False
    hits = ex.search("red shirt", k=3)
    assert len(hits) == 3 and len(ex.selected_ids) == 3


def test_build_records_the_space_and_refuses_another_space(tiny_model, catalog, tmp_path):
    """The default projector records the model's space; a projector or an audit of another space is one line."""
    from fclip_workbench.analysis.audit import outliers
    from fclip_workbench.errors import SpaceMismatchError
    from fclip_workbench.analysis.projection import UMAPProjector
    from fclip_workbench.embedding.space import EmbeddingSpace

    store = EmbeddingStore(tmp_path / "s.sqlite")
    other = EmbeddingSpace("0" * 32, "fp32", "c" * 16, tiny_model.dim, model="other@1")
    with pytest.raises(SpaceMismatchError, match="projection was made in space other@1") as e:
        Explorer.build(tiny_model, catalog, store=store, progress=False,
                       projector=UMAPProjector(n_neighbors=5, space=other, cache_dir=tmp_path / "maps"))
    assert "\n" not in str(e.value)
    ex = Explorer.build(tiny_model, catalog, store=store, progress=False,
                        projector=UMAPProjector(n_neighbors=5, space=tiny_model.space, cache_dir=tmp_path / "maps"))
    ids = list(ex.table["item_id"])
    assert ex.show_audit(outliers(ex.vectors, ids, k=3, space=tiny_model.space)) == "outlier_score"
    with pytest.raises(SpaceMismatchError, match="audit table was made in space other@1"):
        ex.show_audit(outliers(ex.vectors, ids, k=3, space=other))


def test_a_million_points_without_ui():
    """1,000,000 random points + ids: construct, select 10,000 from Python and from the 'browser', read back."""
    n = 1_000_000
    rng = np.random.default_rng(0)
    ids = np.char.add("item", np.arange(n).astype(str)).tolist()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    ex = Explorer(rng.normal(size=(n, 2)).astype(np.float32), ids)
    built = time.perf_counter() - t0
    ex.set_predictions(rng.integers(0, 10, n).astype(str))
    ex.color_by("prediction")
    ex.map.selection = rng.choice(n, 10_000, replace=False).astype(np.uint32)
    assert len(ex.selection) == 10_000
    ex.select(ids[:5])
    assert ex.selected_ids == ids[:5]
    total = time.perf_counter() - t0
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"1M points: built in {built:.1f} s, all steps {total:.1f} s, peak RSS grew {grew_mb:.0f} MB")
    assert total < 120 and grew_mb < 2000


def test_batch_button_sends_the_selection_to_the_batch_callbacks_only(explorer):
    review, batch = [], []
    explorer.on_send(review.append).on_send(batch.append, mode="batch")
    assert explorer.send_batch_button.disabled
    explorer.select(["p6", "p1"])
    assert not explorer.send_batch_button.disabled and "fclip-send-batch" in explorer.send_batch_button._dom_classes
    explorer.send_batch_button.click()
    assert batch == [["p1", "p6"]] and review == [] and "sent 2 products to the annotator (batch)" in explorer.status.value
    explorer.send_button.click()
    assert review == [["p1", "p6"]] and len(batch) == 1
    with pytest.raises(InvalidArgumentError, match="unknown send mode 'grid'"):
        explorer.on_send(batch.append, mode="grid")
    with pytest.raises(InvalidArgumentError, match="connect needs an annotator"):
        explorer.connect(object())


def test_batch_button_without_a_batch_annotator_says_how_to_connect(explorer):
    explorer.on_send(lambda ids: None)  # review only
    explorer.select(["p2"])
    explorer.send_batch_button.click()
    assert "no annotator connected for batch" in explorer.status.value and "connect(annotator)" in explorer.status.value


@pytest.fixture
def audit_explorer(catalog):
    """12 products in 3 tight colour clusters (4 each) plus one far product; vectors as the audits see them."""
    rng = np.random.default_rng(0)
    centres = np.eye(3, 6)
    colours = list(catalog.table["colour"])
    vectors = np.stack([centres[["red", "green", "blue"].index(c)] for c in colours]) + rng.normal(0, 0.05, (12, 6))
    vectors[11] = np.r_[0, 0, 0, 0, 0, 1.0]  # the outlier
    vectors[4] = vectors[0] + 1e-4  # a near-duplicate pair
    ex = Explorer(rng.normal(size=(12, 2)), catalog.ids, catalog=catalog, vectors=vectors.astype(np.float32))
    return ex, colours


def test_show_audit_label_issues_colours_by_score_by_position(audit_explorer):
    from fclip_workbench.analysis.audit import find_label_issues

    ex, colours = audit_explorer
    labels = np.array(colours, dtype=object)
    labels[[0, 1, 2, 3]] = ["red", "red", "red", "red"]  # a real dataset's labels: the audit says what it says
    issues = find_label_issues(ex.vectors, labels, cv=2)
    layer = ex.show_audit(issues, select=3)
    assert layer == "label_issue_score" and ex.colour == "label_issue_score"
    assert ex.scatter.color()["by"] == "label_issue_score"
    by_item = dict(zip(ex.table["item_id"], ex.table["label_issue_score"]))
    for pos, score in zip(issues["position"], issues["score"]):  # position -> the map point of that vector
        assert by_item[ex.table["item_id"].iat[pos]] == pytest.approx(score)
    assert set(ex.table["label_issue"]) <= {"issue", "ok"} and (ex.table["label_issue"] == "issue").sum() == issues.is_issue.sum()
    assert ex.selected_ids == sorted(ex.table["item_id"].iloc[issues.position[:3]], key=ex.table["item_id"].tolist().index)
    assert {"label_issue_score", "label_issue"} <= set(ex.colour_menu.options)


def test_show_audit_near_duplicates_and_outliers_by_item_id(audit_explorer):
    from fclip_workbench.analysis.audit import near_duplicates, outliers

    ex, _ = audit_explorer
    dups = near_duplicates(ex.vectors, ex.table["item_id"], threshold=0.999)
    assert set(dups["item_id"]) >= {"p0", "p4"}
    assert ex.show_audit(dups) == "duplicate_group"
    g = dict(zip(ex.table["item_id"], ex.table["duplicate_group"].astype(str)))
    assert g["p0"] == g["p4"] and g["p0"].startswith("group 0") and g["p11"] == "(none)"
    assert ex.table.loc[ex.table.item_id == "p4", "duplicate_similarity"].item() > 0.999
    out = outliers(ex.vectors, ex.table["item_id"], k=3)
    assert ex.show_audit(out, select=1) == "outlier_score" and ex.selected_ids == ["p11"]
    assert ex.table["outlier_score"].idxmax() == ex.table.index[ex.table.item_id == "p11"][0]
    assert ex.scatter.color()["by"] == "outlier_score"


def test_show_audit_bad_input_is_a_clear_error(audit_explorer):
    from fclip_workbench.analysis.audit import find_label_issues

    ex, colours = audit_explorer
    part = find_label_issues(ex.vectors[:8], colours[:8], cv=2)  # audited on 8 vectors only
    with pytest.raises(InvalidArgumentError, match="positions for 8 items, the map has 12 points: pass ids="):
        ex.show_audit(part)
    assert ex.show_audit(part, ids=ex.table["item_id"][:8]) == "label_issue_score"
    assert (ex.table["label_issue"] == "(not audited)").sum() == 4
    with pytest.raises(InvalidArgumentError, match="not an audit table"):
        ex.show_audit(pd.DataFrame({"item_id": ["p0"], "colour": ["red"]}))
    with pytest.raises(InvalidArgumentError, match=r"audit items not on the map: \['zz'\]"):
        ex.show_audit(pd.DataFrame({"item_id": ["zz"], "score": [0.1], "rank": [1], "position": [0]}))
    with pytest.raises(InvalidArgumentError, match="needs an audit DataFrame"):
        ex.show_audit([1, 2])
