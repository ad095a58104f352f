"""AnnotationSession: decisions reach the label store before the next item, queue orders, batch mode, refits.

Embeddings are synthetic (known uncertainty per product), the suggester a small nearest-prototype
estimator whose refits are counted; the label store is the real SQLite `LabelStore`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fclip_workbench.labelling.annotate import ACCEPTED, BATCH, CORRECTED, AnnotationSession
from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.embed import EmbeddingResult
from fclip_workbench.errors import FclipError, InvalidArgumentError, LabelValueError
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.taxonomy import Taxonomy

COLOURS = ["red", "green", "blue"]


class PrototypeSuggester:
    """Softmax over similarity to one prototype per class; `fit` moves prototypes to the labelled means."""

    def __init__(self, classes, dim):
        self.classes_ = np.array(classes)
        self.prototypes = np.eye(len(classes), dim, dtype=np.float32)  # (n_classes, dim)
        self.fits: list[int] = []  # number of labels at each fit

    def fit(self, vectors, labels):
        self.fits.append(len(labels))
        for j, c in enumerate(self.classes_):
            rows = [i for i, v in enumerate(labels) if v == c]
            if rows:
                self.prototypes[j] = vectors[rows].mean(axis=0)
        return self

    def predict_proba(self, vectors):
        z = 10.0 * vectors @ self.prototypes.T  # (n, n_classes)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def unsure(self, vectors):
        return self.predict_proba(vectors).max(axis=1) < 0.5


class WordModel:
    """encode_texts: a colour word -> that colour's axis (what a real model does, roughly)."""

    def __init__(self, dim):
        self.dim = dim

    def encode_texts(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for j, c in enumerate(COLOURS):
                if c in t:
                    out[i, j] = 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture
def catalog(small_catalog_dir):
    return Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")


@pytest.fixture
def embeddings(catalog):
    """Each product near its colour's axis, with a different strength: a known uncertainty order."""
    rng = np.random.default_rng(0)
    dim = 6
    vecs = []
    for k, colour in enumerate(catalog.table["colour"]):
        v = rng.normal(0, 0.05, dim)
        v[COLOURS.index(colour)] += 0.2 + 0.08 * k  # later products: more confident
        vecs.append(v / np.linalg.norm(v))
    return EmbeddingResult(list(catalog.ids), np.asarray(vecs, np.float32))


@pytest.fixture
def store(tmp_path, catalog):
    s = LabelStore(tmp_path / "labels.sqlite", catalog=catalog)
    yield s
    s.close()


def make_session(catalog, store, embeddings, **kw):
    kw.setdefault("annotator", "ana")
    kw.setdefault("background", False)
    kw.setdefault("taxonomy", Taxonomy.from_values("colour", COLOURS))
    sugg = kw.pop("suggester", None) or PrototypeSuggester(COLOURS, embeddings.vectors.shape[1])
    return AnnotationSession(catalog, "colour", store, sugg, embeddings, model=WordModel(embeddings.vectors.shape[1]),
                             **kw)


def sources(store, field="colour") -> list[str]:
    return list(store.history(field=field)["source"])


# ------------------------------------------------------------------ decisions
def test_accept_writes_suggestion_accepted_and_moves_on(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    first = s.current
    top = first.suggestions[0][0]
    d = s.accept(1)
    assert d.item_ids == [first.item_id] and d.value == top and d.status == f"saved: {first.item_id} colour = {top}"
    assert store.get(first.item_id, "colour") == top
    assert sources(store) == [ACCEPTED]
    assert s.current.item_id != first.item_id
    second = s.current
    s.accept(2)
    assert store.get(second.item_id, "colour") == second.suggestions[1][0]


def test_correct_writes_corrected_in_the_taxonomy_spelling(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    item = s.current.item_id
    d = s.correct("  BLUE ")
    assert d.value == "blue" and store.get(item, "colour") == "blue" and sources(store) == [CORRECTED]
    assert s.progress()["corrected"] == 1 and s.progress()["labelled"] == 1


def test_value_outside_the_taxonomy_is_refused_with_the_valid_values_and_nothing_written(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    item = s.current.item_id
    with pytest.raises(LabelValueError, match=r"'mauve' is not a valid colour; valid values: red, green, blue"):
        s.correct("mauve")
    assert s.current.item_id == item and store.get(item, "colour") is None
    assert store.history(field="colour").empty
    s.add_to_taxonomy("mauve")  # the annotator's explicit choice
    assert "mauve" in store.taxonomy("colour", refresh=True), "the added value is durable in the store"
    assert s.correct("Mauve").value == "mauve" and store.get(item, "colour") == "mauve"


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_blank_correction_refused(catalog, store, embeddings, bad):
    s = make_session(catalog, store, embeddings)
    with pytest.raises(FclipError, match="type a label for colour"):
        s.correct(bad)


def test_no_annotator_name_refused_before_writing(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings, annotator=" ")
    with pytest.raises(InvalidArgumentError, match="type your name"):
        s.accept(1)
    assert store.history(field="colour").empty


@pytest.mark.parametrize("k", [0, 4, "1"])
def test_bad_suggestion_number(catalog, store, embeddings, k):
    s = make_session(catalog, store, embeddings)
    with pytest.raises(InvalidArgumentError, match=r"suggestion number must be 1\.\.3"):
        s.accept(k)


def test_failed_write_keeps_the_item(catalog, store, embeddings, monkeypatch):
    s = make_session(catalog, store, embeddings)
    item = s.current.item_id

    def busy(*a, **k):
        raise FclipError("label store is locked by another process")

    monkeypatch.setattr(store, "set", busy)
    with pytest.raises(FclipError, match="locked"):
        s.accept(1)
    assert s.current.item_id == item and s.progress()["labelled"] == 0


def test_skip_brings_the_item_back_after_the_rest(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    skipped = s.current.item_id
    s.skip()
    assert s.current.item_id != skipped and store.history(field="colour").empty
    assert s.queue()[-1] == skipped
    for _ in range(len(catalog) - 1):
        s.accept(1)
    assert s.current.item_id == skipped
    s.accept(1)
    assert s.current is None and s.progress()["labelled"] == len(catalog)


def test_undo_reverts_the_store_and_shows_the_item_again(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    first = s.current.item_id
    s.accept(1)
    second = s.current.item_id
    d = s.undo()
    assert d.item_ids == [first] and d.status.startswith(f"undone: {first} colour")
    assert store.get(first, "colour") is None
    assert s.current.item_id == first and s.progress()["labelled"] == 0
    s.correct("green")
    assert store.get(first, "colour") == "green" and s.current.item_id == second


def test_undo_only_undoes_ones_own_decision(catalog, store, embeddings):
    ana = make_session(catalog, store, embeddings)
    bob = make_session(catalog, store, embeddings, annotator="bob")
    item = ana.current.item_id
    ana.correct("red")
    assert bob.undo() is None
    assert store.get(item, "colour") == "red"


# ------------------------------------------------------------------ queue orders
def test_uncertainty_order_is_by_uncertainty_with_one_calibration_item_in_five(catalog, store, embeddings):
    from fclip_workbench.labelling.suggest import CAL_EVERY, calibration_items

    s = make_session(catalog, store, embeddings)
    unc = 1 - s.suggester.predict_proba(embeddings.vectors).max(axis=1)
    cal = calibration_items(embeddings.ids)
    assert 0 < cal.sum() < len(cal)
    queue = s.queue()
    assert sorted(queue) == sorted(embeddings.ids)  # every product, once
    slots = [i for i in queue[CAL_EVERY - 1::CAL_EVERY][:int(cal.sum())]]
    assert all(cal[embeddings.ids.index(i)] for i in slots)  # every 5th product: a calibration item
    rest = [i for i in queue if not cal[embeddings.ids.index(i)]]
    assert rest == [embeddings.ids[i] for i in np.argsort(-unc, kind="stable") if not cal[i]]  # the others: by uncertainty
    assert s.current.item_id == queue[0]
    assert unc[embeddings.ids.index(queue[0])] == unc[~cal].max()


def test_refits_fit_the_temperature_on_the_calibration_items(catalog, store, embeddings):
    from fclip_workbench.labelling.suggest import Suggester, calibration_items

    sugg = Suggester(labels=COLOURS, text_weights=np.eye(3, embeddings.vectors.shape[1], dtype=np.float32))
    s = make_session(catalog, store, embeddings, suggester=sugg)
    for item_id in embeddings.ids:
        store.set(item_id, "colour", catalog.table.set_index("item_id").loc[item_id, "colour"], annotator="ana")
    s.refit(wait=True)
    state = s.suggester.snapshot()
    labelled = list(store.labels("colour")["item_id"])
    assert state.held is not None and state.held.tolist() == calibration_items(labelled).tolist()


def test_query_order_is_by_similarity(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    s.set_order("query", query="something blue")
    sim = embeddings.vectors[:, COLOURS.index("blue")]
    expected = [embeddings.ids[i] for i in np.argsort(-sim, kind="stable")]
    assert s.queue() == expected and s.current.item_id == expected[0]
    assert set(s.queue()[:4]) == set(catalog.table.item_id[catalog.table.colour == "blue"])


def test_query_order_needs_a_query(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    with pytest.raises(InvalidArgumentError, match="type a text query"):
        s.set_order("query", query="  ")
    with pytest.raises(InvalidArgumentError, match="unknown queue order 'size'"):
        s.set_order("size")


def test_cluster_order_shows_one_cluster_most_typical_first(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings, n_clusters=3)
    clusters = s.clusters()
    assert sum(n for _, n, _ in clusters) == len(catalog)
    s.set_order("cluster", cluster=0)
    km = s._kmeans
    members = [embeddings.ids[i] for i in np.flatnonzero(km.labels_ == 0)]
    assert sorted(s.queue()) == sorted(members)
    dist = [np.linalg.norm(embeddings.vectors[embeddings.ids.index(i)] - km.cluster_centers_[0]) for i in s.queue()]
    assert dist == sorted(dist)
    with pytest.raises(InvalidArgumentError, match=r"cluster must be 0\.\.2"):
        s.set_order("cluster", cluster=7)


def test_random_order_is_a_seeded_permutation(catalog, store, embeddings):
    a = make_session(catalog, store, embeddings, order="random", seed=3).queue()
    b = make_session(catalog, store, embeddings, order="random", seed=3).queue()
    assert a == b and sorted(a) == sorted(embeddings.ids) and a != list(embeddings.ids)


def test_items_labelled_before_the_session_are_not_queued(catalog, store, embeddings):
    store.set("p0", "colour", "red", annotator="bob", source="corrected")
    s = make_session(catalog, store, embeddings)
    assert "p0" not in s.queue() and s.progress()["labelled"] == 1


def test_review_queues_exactly_the_given_ids_in_order(catalog, store, embeddings):
    """A label-issue list (or a map selection) becomes the queue: those products, in that order."""
    from fclip_workbench.errors import InvalidArgumentError

    ids = list(embeddings.ids)
    store.set(ids[9], "colour", "red", annotator="bob", source="corrected")  # labelled: shown, with its label
    s = make_session(catalog, store, embeddings)
    wanted = [ids[5], ids[2], ids[9], ids[2]]
    assert s.review(wanted).item_id == ids[5]
    assert s.queue() == [ids[5], ids[2], ids[9]]
    s.accept(1)
    assert s.current.item_id == ids[2]
    s.accept(1)
    assert (s.current.item_id, s.current.current) == (ids[9], "red")
    s.correct("red")  # confirmed as it is
    assert s.current is None and s.queue() == []  # the review is done: nothing else sneaks in
    with pytest.raises(InvalidArgumentError, match="1 of the 2 ids to review are not in this session"):
        s.review([ids[0], "no-such-id"])
    with pytest.raises(InvalidArgumentError, match="nothing to review"):
        s.review([])


# ------------------------------------------------------------------ batch
def test_batch_candidates_are_the_most_confident_for_the_label(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    page = s.batch_candidates(label="green", n=3)
    p = s.suggester.predict_proba(embeddings.vectors)[:, 1]
    expected = [embeddings.ids[i] for i in np.argsort(-p)[:3]]
    assert [c.item_id for c in page] == expected
    assert [c.score for c in page] == sorted((c.score for c in page), reverse=True)


def test_batch_confirm_writes_the_ticked_ones_in_one_set_many(catalog, store, embeddings, monkeypatch):
    s = make_session(catalog, store, embeddings)
    calls = []
    real = store.set_many
    monkeypatch.setattr(store, "set_many", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    page = s.batch_candidates(label="red", n=4)
    ticked = [c.item_id for c in page[:3]]
    d = s.confirm_batch(ticked, "red")
    assert len(calls) == 1 and calls[0][1]["source"] == BATCH and calls[0][1]["annotator"] == "ana"
    assert d.status == "saved: 3 labels"
    assert all(store.get(i, "colour") == "red" for i in ticked) and store.get(page[3].item_id, "colour") is None
    assert sources(store) == [BATCH] * 3
    nxt = [c.item_id for c in s.batch_candidates(label="red", n=12)]
    assert not set(nxt) & {c.item_id for c in page}, "confirmed and unticked products come back"
    assert s.progress()["batch"] == 3 and s.progress()["labelled"] == 3


def test_batch_by_query_and_bad_batch_input(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    page = s.batch_candidates(query="blue", n=4)
    assert set(c.item_id for c in page) == set(catalog.table.item_id[catalog.table.colour == "blue"])
    with pytest.raises(LabelValueError, match="'pink' is not a label the suggester knows"):
        s.batch_candidates(label="pink")
    with pytest.raises(InvalidArgumentError, match="batch size"):
        s.batch_candidates(label="red", n=0)
    with pytest.raises(LabelValueError, match="'pink' is not a valid colour"):
        s.confirm_batch([page[0].item_id], "pink")
    with pytest.raises(InvalidArgumentError, match=r"unknown item ids in the batch: \['nope'\]"):
        s.confirm_batch(["nope"], "red")
    assert store.history(field="colour").empty


# ------------------------------------------------------------------ refits and progress
def test_refit_every_n_labels_on_the_store_labels(catalog, store, embeddings):
    sugg = PrototypeSuggester(COLOURS, embeddings.vectors.shape[1])
    s = make_session(catalog, store, embeddings, suggester=sugg, refit_every=3)
    assert sugg.fits == [] and s.n_refits == 1  # no labels yet: zero-shot
    s.accept(1)
    s.accept(1)
    assert sugg.fits == []
    s.correct("blue")
    assert sugg.fits == [3]
    s.confirm_batch([c.item_id for c in s.batch_candidates(label="red", n=3)], "red")
    assert sugg.fits == [3, 6]


def test_background_refit_does_not_block_decisions(catalog, store, embeddings):
    import threading

    gate = threading.Event()

    class Slow(PrototypeSuggester):
        def fit(self, vectors, labels):
            gate.wait(10)
            return super().fit(vectors, labels)

    sugg = Slow(COLOURS, embeddings.vectors.shape[1])
    s = make_session(catalog, store, embeddings, suggester=sugg, refit_every=1, background=True)
    s.accept(1)  # schedules a refit that waits on the gate
    assert s.refitting
    s.accept(1)  # not blocked by the running refit
    assert s.progress()["labelled"] == 2
    gate.set()
    s.wait_refit(10)
    s.close()
    assert sugg.fits and s.n_refits == 2 and s.refit_error is None


def test_refit_failure_is_reported_and_old_suggestions_kept(catalog, store, embeddings):
    class Broken(PrototypeSuggester):
        def fit(self, vectors, labels):
            raise ValueError("needs two classes")

    s = make_session(catalog, store, embeddings, suggester=Broken(COLOURS, embeddings.vectors.shape[1]),
                     refit_every=1)
    before = s.current.suggestions
    s.accept(1)
    assert s.refit_error == "suggestions not updated: needs two classes"
    assert s.current.suggestions and before


def test_progress_and_acceptance_rate(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    s.accept(1)
    s.accept(1)
    s.accept(1)
    s.correct("red")
    s.skip()
    p = s.progress()
    assert (p["labelled"], p["total"], p["accepted"], p["corrected"], p["skipped"]) == (4, 12, 3, 1, 1)
    assert p["acceptance_rate"] == pytest.approx(0.75)


def test_products_without_embeddings_are_reported(catalog, store, embeddings):
    from fclip_workbench.data.catalog import Problem

    part = EmbeddingResult(embeddings.ids[1:], embeddings.vectors[1:], failures=[catalog.problem(0, "image", "bad")])
    s = make_session(catalog, store, part)
    assert "p0" not in s.queue() and s.progress()["not_embedded"] == 1 and s.progress()["total"] == 11
    assert isinstance(s.not_embedded[0], Problem)


def test_bad_session_arguments(catalog, store, embeddings):
    with pytest.raises(InvalidArgumentError, match="refit_every"):
        make_session(catalog, store, embeddings, refit_every=-1)
    with pytest.raises(InvalidArgumentError, match="unknown queue order 'best'"):
        make_session(catalog, store, embeddings, order="best")
    with pytest.raises(InvalidArgumentError, match="nothing to label"):
        make_session(catalog, store, EmbeddingResult([], np.zeros((0, 6), np.float32)))


def test_undo_of_a_batch_requeues_its_items(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    page = [c.item_id for c in s.batch_candidates(label="blue", n=3)]
    s.confirm_batch(page, "blue")
    assert not set(page) & set(s.queue())
    d = s.undo()
    assert d.source == "undo" and all(store.get(i, "colour") is None for i in page)
    assert set(page) <= set(s.queue()) and s.progress()["labelled"] == 0


def test_with_the_real_suggester_zero_shot_then_refit(catalog, store, embeddings):
    from fclip_workbench.labelling.suggest import Suggester

    sugg = Suggester(labels=COLOURS, text_weights=np.eye(3, embeddings.vectors.shape[1], dtype=np.float32))
    s = make_session(catalog, store, embeddings, suggester=sugg, refit_every=4)
    assert [lab for lab, _ in s.current.suggestions] and s.classes == COLOURS
    for _ in range(4):
        s.correct(catalog.table.colour[catalog.row_of(s.current.item_id)])
    assert sugg.n_labelled_ == 4 and s.n_refits == 2
    truth = dict(zip(catalog.ids, catalog.table.colour))
    assert all(s.item(r).suggestions[0][0] == truth[s.ids[r]] for r in range(len(s.ids)))


# ------------------------------------------------------------------ selection batches (a map selection)
def test_selection_batch_shows_the_given_products_with_label_and_suggestion(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    ids = ["p5", "p0", "p9", "p0"]  # map order, one repeated
    store.set("p9", "colour", "green", annotator="bob")
    page = s.selection_batch(ids)
    assert [c.item_id for c in page] == ["p5", "p0", "p9"]
    assert [c.current for c in page] == [None, None, "green"]
    for c in page:
        best = s.suggestions(s.ids.index(c.item_id), top=1)[0]
        assert c.suggestion == best and c.score == best[1] and c.title == catalog.texts[catalog.row_of(c.item_id)]
        assert c.image == catalog.image_path(catalog.row_of(c.item_id))
    with pytest.raises(InvalidArgumentError, match=r"1 of the 2 ids to show in a batch are not in this session"):
        s.selection_batch(["p1", "nope"])
    with pytest.raises(InvalidArgumentError, match="nothing to show in a batch"):
        s.selection_batch([])


def test_apply_batch_writes_one_batch_and_never_replaces_a_label_unasked(catalog, store, embeddings, monkeypatch):
    s = make_session(catalog, store, embeddings)
    store.set("p2", "colour", "green", annotator="bob")  # labelled otherwise
    store.set("p3", "colour", "red", annotator="bob")  # already the value
    calls = []
    real = store.set_many
    monkeypatch.setattr(store, "set_many", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    with pytest.raises(LabelValueError, match=r"1 of the 4 products already have another colour: p2 \(green\)"):
        s.apply_batch(["p0", "p1", "p2", "p3"], "red")
    assert calls == [] and store.get("p0", "colour") is None and store.get("p2", "colour") == "green"
    d = s.apply_batch(["p0", "p1", "p3"], "Red")  # taxonomy spelling; p3 already red: not written again
    assert len(calls) == 1 and calls[0][1]["source"] == BATCH and d.item_ids == ["p0", "p1"]
    assert d.unchanged == ["p3"] and d.status == "saved: 2 labels, 1 already red"
    d2 = s.apply_batch(["p2", "p4"], "red", replace=["p2"])  # the change is explicit
    assert d2.replaced == {"p2": "green"} and d2.status == "saved: 2 labels (1 changed from another label)"
    hist = store.history(field="colour")
    batch = hist[hist.source == BATCH]
    assert len(batch) == 4 and batch.batch_id.nunique() == 2
    assert batch.set_index("item_id").loc["p2", "old_value"] == "green"  # the old label is in the log
    assert s.progress()["batch"] == 4 and not {"p0", "p1", "p2", "p3", "p4"} & set(s.queue())


def test_apply_batch_is_undone_as_a_whole_restoring_replaced_labels(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    store.set("p2", "colour", "green", annotator="bob")
    s.apply_batch(["p0", "p1", "p2"], "blue", replace=True)
    d = s.undo()
    assert d.item_ids == ["p0", "p1", "p2"] and d.status == "undone: a batch of 3 colour labels"
    assert [store.get(i, "colour") for i in ("p0", "p1", "p2")] == [None, None, "green"]
    assert {"p0", "p1"} <= set(s.queue())


def test_apply_batch_refuses_when_a_label_changed_since_shown(catalog, store, embeddings):
    s = make_session(catalog, store, embeddings)
    shown = {c.item_id: c.current for c in s.selection_batch(["p0", "p1"])}
    store.set("p1", "colour", "green", annotator="bob")  # another annotator, meanwhile
    with pytest.raises(LabelValueError, match=r"1 labels changed since the grid was shown: p1 \(unlabelled -> green\)"):
        s.apply_batch(["p0", "p1"], "red", replace=True, expected=shown)
    assert store.get("p0", "colour") is None and store.get("p1", "colour") == "green"
    with pytest.raises(LabelValueError, match="'pink' is not a valid colour"):
        s.apply_batch(["p0"], "pink")
    s.annotator = ""
    with pytest.raises(InvalidArgumentError, match="type your name"):
        s.apply_batch(["p0"], "red")


def test_audit_item_ids_maps_positions_and_item_ids():
    import pandas as pd

    from fclip_workbench.labelling.annotate import audit_item_ids
    from fclip_workbench.analysis.audit import find_label_issues, outliers

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal([5, 0, 0, 0], 1, (30, 4)), rng.normal([0, 5, 0, 0], 1, (30, 4))]  # directions, as embeddings
    y = ["a"] * 30 + ["b"] * 30
    y[4] = "b"
    ids = [f"i{k}" for k in range(60)]
    issues = find_label_issues(X, y, cv=3)
    assert audit_item_ids(issues, ids)[0] == "i4" and len(audit_item_ids(issues, ids)) == 60
    assert audit_item_ids(issues, ids, flagged_only=True) == [ids[p] for p in issues.position[issues.is_issue]]
    assert audit_item_ids(outliers(X, ids, k=3), limit=2) == outliers(X, ids, k=3).item_id[:2].tolist()
    with pytest.raises(InvalidArgumentError, match="pass ids="):
        audit_item_ids(issues)
    with pytest.raises(InvalidArgumentError, match=r"outside the 3 ids"):
        audit_item_ids(issues, ids[:3])
    with pytest.raises(InvalidArgumentError, match="'item_id' or a 'position'"):
        audit_item_ids(pd.DataFrame({"x": [1]}))


def test_an_undo_during_a_background_refit_stays_undone(catalog, store, embeddings):
    """The refit used to mark what was labelled when it STARTED: an undo meanwhile was marked again."""
    import threading

    class SlowSuggester(PrototypeSuggester):
        def __init__(self, *a):
            super().__init__(*a)
            self.started, self.go = threading.Event(), threading.Event()

        def fit(self, vectors, labels):
            self.started.set()
            assert self.go.wait(30)
            return super().fit(vectors, labels)

    sugg = SlowSuggester(COLOURS, embeddings.vectors.shape[1])
    s = make_session(catalog, store, embeddings, suggester=sugg, refit_every=1, background=True)
    try:
        first = s.current.item_id
        s.correct("red")  # starts a background refit, which waits in fit
        assert sugg.started.wait(30)
        s.undo()  # while the refit waits
        sugg.go.set()
        s.wait_refit()
        assert store.get(first, "colour") is None
        assert s.progress()["labelled"] == 0 and first in s.queue()
    finally:
        sugg.go.set()
        s.wait_refit()


# ------------------------------------------------------------------ ids in one canonical form
def test_ids_that_differ_only_by_spaces_or_composition_are_one_product(small_catalog_dir, tmp_path):
    table = pd.read_csv(small_catalog_dir / "products.csv")
    table.loc[0, "item_id"], table.loc[1, "item_id"] = "Café", "Cafe\u0301"  # NFC and NFD spellings
    table.loc[2, "item_id"], table.loc[3, "item_id"] = "p2", " p2 "
    table.to_csv(tmp_path / "odd.csv", index=False)
    cat = Catalog.from_csv(tmp_path / "odd.csv", image_root=small_catalog_dir / "images")
    dups = {p.row: p.reason for p in cat.problems if p.field == "item_id"}
    assert set(dups) == {1, 3} and all("duplicate id" in r for r in dups.values())
    assert cat.ids[1] == "Café" and cat.ids[3] == "p2"  # stored as the label store spells them
    usable = [cat.ids[r] for r in cat.usable_rows("text")]
    assert len(usable) == len(set(usable)) == 10
    rng = np.random.default_rng(0)
    emb = EmbeddingResult(usable, (rng.normal(size=(10, 6)) / 3).astype(np.float32))
    with LabelStore(tmp_path / "labels.sqlite", catalog=cat) as store:
        s = make_session(cat, store, emb)
        while s.current.item_id != "Café":
            s.skip()
        s.correct("red")
        assert store.get("Cafe\u0301", "colour") == "red"  # the NFD spelling names the same product
        assert len(store.history(field="colour")) == 1
        assert s.progress()["labelled"] == 1
