"""Annotator widget: drive the ipywidgets objects from Python (clicks, typed values, key presses)
and check the label store after every action, and that the next item shows only after the write."""
from __future__ import annotations

import ipywidgets as w
import numpy as np
import pytest

from fclip_workbench.labelling.annotate import AnnotationSession
from fclip_workbench.errors import FclipError
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.taxonomy import Taxonomy
from fclip_workbench.widgets import Annotator
from tests.test_annotate import COLOURS, PrototypeSuggester, WordModel, catalog, embeddings  # noqa: F401 (fixtures)

DOM_CLASSES = ["fclip-annotator", "fclip-annotator-image", "fclip-annotator-title", "fclip-annotator-item",
               "fclip-suggestion", "fclip-correct-input", "fclip-correct-save", "fclip-skip", "fclip-undo",
               "fclip-progress", "fclip-status", "fclip-annotator-name", "fclip-mode", "fclip-batch",
               "fclip-batch-item", "fclip-batch-label", "fclip-batch-confirm"]


@pytest.fixture
def store(tmp_path, catalog):  # noqa: F811
    s = LabelStore(tmp_path / "labels.sqlite", catalog=catalog)
    yield s
    s.close()


@pytest.fixture
def widget(catalog, store, embeddings):  # noqa: F811
    session = AnnotationSession(catalog, "colour", store, PrototypeSuggester(COLOURS, embeddings.vectors.shape[1]),
                                embeddings, model=WordModel(embeddings.vectors.shape[1]), annotator="ana",
                                taxonomy=Taxonomy.from_values("colour", COLOURS), background=False)
    a = Annotator(session, batch_size=4)
    yield a
    session.close()
    a.close_all() if hasattr(a, "close_all") else None


def walk(widget: w.Widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def with_class(root: w.Widget, name: str) -> list[w.Widget]:
    return [x for x in walk(root) if name in x._dom_classes]


def shown(a: Annotator) -> str:
    return with_class(a, "fclip-annotator-item")[0].value


def status(a: Annotator) -> str:
    return with_class(a, "fclip-status")[0].value


def test_dom_contract_classes_are_all_there(widget):
    widget.set_mode("batch")  # fills the grid
    for name in DOM_CLASSES:
        assert with_class(widget, name), f"no widget with class {name}"
    assert len(with_class(widget, "fclip-suggestion")) == 3
    assert isinstance(with_class(widget, "fclip-annotator-image")[0], w.Image)
    assert isinstance(with_class(widget, "fclip-correct-input")[0], (w.Combobox, w.Text))
    assert all(isinstance(b, w.Checkbox) and b.value for b in with_class(widget, "fclip-batch-item"))
    assert with_class(widget, "fclip-mode")[0].options == ("single", "batch")


def test_item_is_drawn_large_with_its_suggestions(widget, catalog):  # noqa: F811
    item = widget.session.current
    assert shown(widget) == item.item_id and widget.item_id == item.item_id
    img = with_class(widget, "fclip-annotator-image")[0]
    assert img.value == (catalog.image_root / f"{item.item_id}.jpg").read_bytes() and img.format == "jpeg"
    assert catalog.texts[catalog.row_of(item.item_id)] in with_class(widget, "fclip-annotator-title")[0].value
    buttons = with_class(widget, "fclip-suggestion")
    assert [b.description for b in buttons] == [lab for lab, _ in item.suggestions]
    assert [bar.value for bar in widget.suggestion_bars] == pytest.approx([p for _, p in item.suggestions])


def test_click_a_suggestion_saves_before_the_next_item_shows(widget, store, monkeypatch):
    first = shown(widget)
    label = with_class(widget, "fclip-suggestion")[1].description
    seen_during_write = []
    real = store.set

    def spy(*a, **k):
        seen_during_write.append(shown(widget))
        return real(*a, **k)

    monkeypatch.setattr(store, "set", spy)
    with_class(widget, "fclip-suggestion")[1].click()
    assert seen_during_write == [first], "the next item was shown before the write returned"
    assert store.get(first, "colour") == label
    assert store.history(field="colour")["source"].tolist() == ["suggestion-accepted"]
    assert shown(widget) != first
    assert f"saved: {first} colour = {label}" in status(widget)
    assert "1 / 12" in with_class(widget, "fclip-progress")[0].value


def test_keys_1_to_3_accept_but_not_while_typing(widget, store):
    first = shown(widget)
    label = with_class(widget, "fclip-suggestion")[0].description
    widget.shortcuts.press("1", tag="INPUT")  # typed into a text box: ignored
    assert store.get(first, "colour") is None and shown(widget) == first
    widget.shortcuts.press("1")
    assert store.get(first, "colour") == label and shown(widget) != first
    second = shown(widget)
    third_label = with_class(widget, "fclip-suggestion")[2].description
    widget.shortcuts.press("3")
    assert store.get(second, "colour") == third_label
    widget.shortcuts.press("x")
    assert len(store.history(field="colour")) == 2


def test_correct_by_typing_enter_and_save_button(widget, store):
    first = shown(widget)
    box = with_class(widget, "fclip-correct-input")[0]
    assert set(box.options) == set(COLOURS)
    box.value = "Green"
    widget.shortcuts.press("Enter", box="fclip-correct-input", tag="INPUT")
    assert store.get(first, "colour") == "green"
    assert store.history(field="colour")["source"].tolist() == ["corrected"]
    assert box.value == "" and shown(widget) != first
    second = shown(widget)
    box.value = "red"
    with_class(widget, "fclip-correct-save")[0].click()
    assert store.get(second, "colour") == "red" and f"saved: {second} colour = red" in status(widget)


def test_value_outside_taxonomy_shows_the_error_then_add_button_saves(widget, store):
    first = shown(widget)
    box = with_class(widget, "fclip-correct-input")[0]
    add = with_class(widget, "fclip-taxonomy-add")[0]
    assert add.layout.display == "none"
    box.value = "mauve"
    with_class(widget, "fclip-correct-save")[0].click()
    assert "&#x27;mauve&#x27; is not a valid colour; valid values: red, green, blue" in status(widget)
    assert store.get(first, "colour") is None and shown(widget) == first
    assert add.layout.display != "none" and "mauve" in add.description
    add.click()
    assert store.get(first, "colour") == "mauve" and "mauve" in store.taxonomy("colour", refresh=True)
    assert "mauve" in box.options and f"saved: {first} colour = mauve" in status(widget)


def test_skip_and_undo(widget, store):
    first = shown(widget)
    with_class(widget, "fclip-skip")[0].click()
    assert shown(widget) != first and store.history(field="colour").empty
    second = shown(widget)
    with_class(widget, "fclip-suggestion")[0].click()
    assert store.get(second, "colour") is not None
    with_class(widget, "fclip-undo")[0].click()
    assert store.get(second, "colour") is None and shown(widget) == second
    assert status(widget).count(f"undone: {second} colour") == 1
    with_class(widget, "fclip-undo")[0].click()
    assert "nothing to undo" in status(widget)


def test_annotator_name_is_used_and_required(widget, store):
    name = with_class(widget, "fclip-annotator-name")[0]
    name.value = "bob"
    first = shown(widget)
    with_class(widget, "fclip-suggestion")[0].click()
    assert store.labels("colour")["annotator"].tolist() == ["bob"]
    name.value = ""
    second = shown(widget)
    with_class(widget, "fclip-suggestion")[0].click()
    assert "type your name" in status(widget) and shown(widget) == second and store.get(second, "colour") is None
    assert first != second


def test_store_errors_are_shown_in_the_widget(widget, store, monkeypatch):
    def locked(*a, **k):
        raise FclipError("label store is locked by another process for more than 10 s; try again")

    monkeypatch.setattr(store, "set", locked)
    first = shown(widget)
    with_class(widget, "fclip-suggestion")[0].click()
    assert "locked by another process" in status(widget) and shown(widget) == first


def test_queue_order_by_text_query(widget):
    widget.order_dropdown.value = "query"
    assert "type a text query" in status(widget)
    widget.order_query.value = "blue"
    assert widget.session.current.attributes["colour"] == "blue"
    assert shown(widget) == widget.session.current.item_id


def test_queue_order_by_cluster(widget):
    widget.order_dropdown.value = "cluster"
    assert len(widget.order_cluster.options) == 8  # n_clusters, on 12 products
    assert widget.session.order == "cluster" and widget.session.cluster == 0
    assert shown(widget) == widget.session.queue()[0]
    widget.order_cluster.value = 5
    members = {i for i, c in zip(widget.session.ids, widget.session._kmeans.labels_) if c == 5}
    assert widget.session.cluster == 5 and shown(widget) in members and set(widget.session.queue()) == members


def test_batch_untick_and_confirm_in_one_set_many(widget, store, monkeypatch):
    calls = []
    real = store.set_many
    monkeypatch.setattr(store, "set_many", lambda *a, **k: calls.append(k) or real(*a, **k))
    with_class(widget, "fclip-mode")[0].value = "batch"
    with_class(widget, "fclip-batch-label")[0].value = "blue"
    boxes = with_class(widget, "fclip-batch-item")
    assert len(boxes) == 4
    page = [b.description for b in boxes]
    boxes[3].value = False  # the wrong one
    confirm = with_class(widget, "fclip-batch-confirm")[0]
    assert confirm.description == "Confirm 3"
    confirm.click()
    assert len(calls) == 1 and calls[0]["source"] == "batch"
    assert [store.get(i, "colour") for i in page] == ["blue", "blue", "blue", None]
    assert "saved: 3 labels" in status(widget)
    nxt = [b.description for b in with_class(widget, "fclip-batch-item")]
    assert nxt and not set(nxt) & set(page), "the next page shows new products"


def test_from_catalog_builds_store_taxonomy_and_suggester(small_catalog_dir, tiny_model, tmp_path):
    from fclip_workbench.data.catalog import Catalog

    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    a = Annotator.from_catalog(cat, "garment", model=tiny_model, store=tmp_path / "l.sqlite", annotator="ana",
                               progress=False, background=False)
    try:
        assert sorted(a.session.taxonomy.values) == ["bag", "dress", "shirt", "shoe"]
        assert a.session.progress()["total"] == 12
        first = shown(a)
        with_class(a, "fclip-suggestion")[0].click()
        store = LabelStore(tmp_path / "l.sqlite")
        assert store.get(first, "garment") in {"bag", "dress", "shirt", "shoe"}
        store.close()
    finally:
        a.session.close()
        a.session.store.close()
    with pytest.raises(FclipError, match="has no column 'fabric'"):
        Annotator.from_catalog(cat, "fabric", model=tiny_model, store=tmp_path / "l.sqlite", annotator="ana")
    np.testing.assert_equal(len(a.session.vectors), 12)


def test_one_key_press_delivered_twice_decides_one_product(widget, store):
    """A page may hold two listeners for one widget (a re-rendered output): both copies of a key press carry
    the same timeStamp, and the second must not accept a suggestion for the product that follows."""
    first = shown(widget)
    widget.shortcuts.press("1", timeStamp=1234.5)
    widget.shortcuts.press("1", timeStamp=1234.5)
    second = shown(widget)
    assert second != first and store.get(second, "colour") is None
    assert len(store.history(field="colour")) == 1
    widget.shortcuts.press("1", timeStamp=1300.0)  # a new press
    assert store.get(second, "colour") is not None


def test_review_shows_the_given_products_first(widget, store):
    """`explorer.on_send(annotator.review)` / a label-issue list: the annotator shows those products next."""
    ids = widget.session.queue()
    wanted = [ids[-1], ids[-2]]
    widget.review(wanted)
    assert shown(widget) == wanted[0] and "review of 2 products" in with_class(widget, "fclip-status")[0].value
    widget.review(["no-such-id"])
    assert "not in this session" in with_class(widget, "fclip-status")[0].value and shown(widget) == wanted[0]


# ------------------------------------------------------------------ selection batch (explorer -> annotator.batch)
def tiles(a: Annotator) -> dict[str, tuple]:
    """item id -> (tile, caption html, checkbox) of the shown selection grid."""
    grid = with_class(a, "fclip-selection-grid")[0]
    out = {}
    for tile in grid.children:
        box = with_class(tile, "fclip-selection-item")[0]
        cap = [c for c in tile.children if isinstance(c, w.HTML)][0]
        out[box.description] = (tile, cap.value, box)
    return out


def click_tile(a: Annotator, item_id: str) -> None:
    """A click on the tile's thumbnail, as ipyevents delivers it."""
    k = [b.description for b in with_class(a, "fclip-selection-item")].index(item_id)
    ev = a._tile_events[k]
    ev._handle_mouse_msg(ev, {"event": "click", "type": "click", "timeStamp": float(len(a.status) + k), "target": {}}, [])


def test_selection_batch_grid_shows_the_products_labels_and_suggestions(widget, store):
    store.set("p7", "colour", "green", annotator="bob")
    widget.batch(["p3", "p7", "p1"])
    assert widget.mode == "batch" and widget.selection_pane.layout.display == "flex"
    assert widget.model_batch.layout.display == "none"
    shown_tiles = tiles(widget)
    assert list(shown_tiles) == ["p3", "p7", "p1"] and widget.selection_ids == ["p3", "p7", "p1"]
    assert "3 products from the selection" in with_class(widget, "fclip-selection-head")[0].value
    for item_id, (tile, cap, box) in shown_tiles.items():
        row = widget.session.ids.index(item_id)
        label, p = widget.session.suggestions(row, top=1)[0]
        assert f"model: {label} {p:.0%}" in cap and box.value
    assert "now <b>green</b>" in shown_tiles["p7"][1] and "unlabelled" in shown_tiles["p3"][1]
    imgs = with_class(widget, "fclip-selection-image")
    assert all(i.value for i in imgs[:3])  # thumbnails
    apply = with_class(widget, "fclip-selection-apply")[0]
    assert apply.disabled and widget.sel_value.value is None  # no value preselected


def test_selection_batch_apply_with_exclusion_and_explicit_change(widget, store):
    store.set("p7", "colour", "green", annotator="bob")
    widget.batch(["p3", "p7", "p1", "p9"])
    widget.sel_value.value = "red"
    t = tiles(widget)
    assert not t["p7"][2].value and "keeps its label" in t["p7"][1]  # labelled otherwise: out unless confirmed
    apply = with_class(widget, "fclip-selection-apply")[0]
    assert apply.description == "Apply 'red' to 3" and not apply.disabled
    click_tile(widget, "p1")  # exclude by clicking its picture
    t = tiles(widget)
    assert not t["p1"][2].value and "excluded" in t["p1"][1] and apply.description == "Apply 'red' to 2"
    t["p7"][2].value = True  # tick the one labelled green: the change is now explicit
    assert "green</b> &rarr;" in tiles(widget)["p7"][1].replace("now <b>", "")
    assert apply.description == "Apply 'red' to 3 (1 change another label)"
    apply.click()
    assert [store.get(i, "colour") for i in ("p3", "p7", "p1", "p9")] == ["red", "red", None, "red"]
    hist = store.history(field="colour")
    batch = hist[hist.source == "batch"]
    assert len(batch) == 3 and batch.batch_id.nunique() == 1 and batch.annotator.unique().tolist() == ["ana"]
    assert "saved: 3 labels (1 changed from another label)" in status(widget)
    t = tiles(widget)  # redrawn from the store
    assert "now <b>red</b>" in t["p3"][1] and "(already)" in t["p3"][1] and "unlabelled" in t["p1"][1]
    with_class(widget, "fclip-selection-undo")[0].click()
    assert [store.get(i, "colour") for i in ("p3", "p7", "p1", "p9")] == [None, "green", None, None]
    assert "undone: a batch of 3 colour labels" in status(widget) and "now <b>green</b>" in tiles(widget)["p7"][1]


def test_selection_batch_changing_the_value_resets_confirmed_changes(widget, store):
    store.set("p7", "colour", "green", annotator="bob")
    widget.batch(["p7", "p2"])
    widget.sel_value.value = "red"
    click_tile(widget, "p7")  # confirm green -> red
    assert tiles(widget)["p7"][2].value
    widget.sel_value.value = "blue"  # the confirmation was for red
    assert not tiles(widget)["p7"][2].value
    widget.sel_value.value = "green"  # p7 already green: included, not rewritten
    assert tiles(widget)["p7"][2].value and "(already)" in tiles(widget)["p7"][1]
    with_class(widget, "fclip-selection-apply")[0].click()
    assert "saved: 1 labels, 1 already green" in status(widget)
    assert len(store.history(field="colour")) == 2  # bob's label and p2's: nothing rewritten


def test_selection_batch_refuses_labels_changed_since_shown(widget, store):
    widget.batch(["p2", "p5"])
    widget.sel_value.value = "blue"
    store.set("p5", "colour", "red", annotator="bob")  # another annotator, after the grid was drawn
    with_class(widget, "fclip-selection-apply")[0].click()
    assert "1 labels changed since the grid was shown" in status(widget)
    assert store.get("p2", "colour") is None and store.get("p5", "colour") == "red"
    assert "now <b>red</b>" in tiles(widget)["p5"][1] and not tiles(widget)["p5"][2].value  # redrawn: now out


def test_selection_batch_bad_ids_and_back_to_model_batches(widget):
    widget.batch(["p1", "nope"])
    assert "not in this session" in status(widget) and widget.selection_ids == []
    widget.batch(["p1"])
    with_class(widget, "fclip-selection-close")[0].click()
    assert widget.selection_ids == [] and widget.model_batch.layout.display == "flex"
    assert len(with_class(widget, "fclip-batch-item")) == 4  # the model's page is back


def test_explorer_selection_reaches_the_batch_grid(widget, catalog):  # noqa: F811
    from fclip_workbench.widgets import Explorer

    ex = Explorer(np.random.default_rng(0).normal(size=(12, 2)), catalog.ids, catalog=catalog).connect(widget)
    ex.select(["p4", "p8"])
    ex.send_batch_button.click()
    assert list(tiles(widget)) == ["p4", "p8"] and widget.mode == "batch"
    ex.send_button.click()  # review: the single-item queue
    assert widget.mode == "single" and shown(widget) == "p4"


def test_label_issue_table_opens_as_a_review_queue(widget, embeddings):  # noqa: F811
    from fclip_workbench.analysis.audit import find_label_issues

    labels = ["red", "green", "blue"] * 4
    issues = find_label_issues(embeddings.vectors, labels, cv=2)
    widget.review(issues, ids=embeddings.ids, limit=3)
    want = [embeddings.ids[p] for p in issues.position[:3]]
    assert widget.session.queue() == [i for i in want] and shown(widget) == want[0]
    widget.review(issues)  # positions without ids: the reason is shown
    assert "pass ids=" in status(widget)
