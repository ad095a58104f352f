"""The "diversity" and "activelab" queue orders (fclip_workbench/labelling/queue_orders.py) in real sessions."""
from __future__ import annotations

import numpy as np
import pytest

from fclip_workbench.embedding.embed import EmbeddingResult
from fclip_workbench.errors import ConflictError, InvalidArgumentError
from fclip_workbench.labelling.queue_orders import activelab_order, activelab_scores, kcenter_greedy
from fclip_workbench.labelling.suggest import calibration_items
from tests.test_annotate import COLOURS, PrototypeSuggester, catalog, embeddings, make_session, store  # noqa: F401

N_CLUSTERS = 4


class ZeroShot(PrototypeSuggester):
    """Never moves its prototypes: a product labelled against the model stays doubtful after a refit."""

    def fit(self, vectors, labels):
        self.fits.append(len(labels))
        return self


@pytest.fixture
def clustered(catalog):  # noqa: F811
    """Products in 4 tight clusters (one axis each), the non-calibration ones dealt round-robin; all equally
    uncertain, so only the k-center decides. Returns (embeddings, {item_id: cluster})."""
    ids = list(catalog.ids)
    cal = calibration_items(ids)
    cluster, k = {}, 0
    for i, c in zip(ids, cal):
        cluster[i] = (k % N_CLUSTERS) if not c else int(np.random.default_rng(len(cluster)).integers(N_CLUSTERS))
        k += not c
    rng = np.random.default_rng(1)
    vecs = []
    for i in ids:
        v = rng.normal(0, 0.02, 8)
        v[3 + cluster[i]] += 1.0  # axes 3..6: away from the colour axes the suggester uses
        vecs.append(v / np.linalg.norm(v))
    return EmbeddingResult(ids, np.asarray(vecs, np.float32)), cluster


def main_queue(session) -> list[str]:
    """The queue without its calibration items (those come at random, every CAL_EVERY-th place)."""
    cal = calibration_items(session.ids)
    return [i for i in session.queue() if not cal[session._row[i]]]


def test_diversity_covers_every_cluster_before_repeating_one(catalog, store, clustered):  # noqa: F811
    emb, cluster = clustered
    s = make_session(catalog, store, emb, order="diversity")
    first = main_queue(s)[:N_CLUSTERS]
    assert len({cluster[i] for i in first}) == N_CLUSTERS
    assert s.current.item_id == s.queue()[0] == first[0]
    assert sorted(s.queue()) == sorted(emb.ids)  # every product, once


def test_diversity_is_deterministic_per_seed(catalog, store, clustered):  # noqa: F811
    emb, _ = clustered
    a = make_session(catalog, store, emb, order="diversity", seed=3).queue()
    assert make_session(catalog, store, emb, order="diversity", seed=3).queue() == a
    others = {tuple(make_session(catalog, store, emb, order="diversity", seed=s).queue()) for s in range(6)}
    assert len(others) > 1  # the seed picks the first product when nothing is labelled


def test_diversity_skips_labelled_products_and_keeps_away_from_their_cluster(catalog, store, clustered):  # noqa: F811
    emb, cluster = clustered
    cal = calibration_items(emb.ids)
    done = [i for i, c in zip(emb.ids, cal) if cluster[i] == 0 and not c]
    for i in done:
        store.set(i, "colour", "red", annotator="bob")
    s = make_session(catalog, store, emb, order="diversity")
    queue = s.queue()
    assert not set(done) & set(queue)
    first = main_queue(s)[:N_CLUSTERS - 1]
    assert {cluster[i] for i in first} == set(range(1, N_CLUSTERS))  # cluster 0 is covered by the labels
    s.correct("red")
    assert s.current.item_id != first[0] and first[0] not in s.queue()


def test_kcenter_greedy_picks_the_farthest_and_refuses_bad_input():
    x = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]  # (4, 3): rows 0 and 1 identical
    assert kcenter_greedy(x, np.arange(4), np.array([0]), k=2).tolist() in ([2, 3], [3, 2])
    assert kcenter_greedy(x, np.arange(4), np.array([], int), k=9).tolist().count(0) <= 1
    for bad, match in [(dict(k=-1), "k must be"), (dict(candidates=np.array([7])), "candidates must be row"),
                       (dict(vectors=np.zeros(3)), "vectors must be")]:
        kw = {**dict(vectors=x, candidates=np.arange(4), centres=np.array([], int), k=2), **bad}
        with pytest.raises(InvalidArgumentError, match=match) as e:
            kcenter_greedy(**kw)
        assert "\n" not in str(e.value)


def test_activelab_scores_are_cleanlabs():
    from cleanlab.multiannotator import get_active_learning_scores

    p = np.random.default_rng(0).dirichlet(np.ones(4), size=9)  # (9, 4)
    lab, unl = activelab_scores(p, np.array([0, 1, 2]), np.array([3, 0, 1]), np.arange(3, 9))
    want = get_active_learning_scores(np.array([[3], [0], [1]], float), p[:3], p[3:])
    np.testing.assert_allclose(lab, want[0])
    np.testing.assert_allclose(unl, want[1])
    # one annotator: a labelled product (2 p(label) + 1/K) / 3, an unlabelled one (max p + 1/K) / 2
    np.testing.assert_allclose(lab, (2 * p[[0, 1, 2], [3, 0, 1]] + 0.25) / 3)
    np.testing.assert_allclose(unl, (p[3:].max(axis=1) + 0.25) / 2)


def doubtful(catalog, store, embeddings):  # noqa: F811
    """A blue product labelled 'red' by bob (the model says blue), the other products unlabelled."""
    truth = dict(zip(catalog.ids, catalog.table["colour"]))
    item = next(i for i in reversed(embeddings.ids) if truth[i] == "blue")  # a confident one
    store.set(item, "colour", "red", annotator="bob")
    return item


def test_activelab_shows_a_doubtful_label_with_its_label_and_relabels_compare_and_set(catalog, store,  # noqa: F811
                                                                                       embeddings):
    item = doubtful(catalog, store, embeddings)
    s = make_session(catalog, store, embeddings, order="activelab", suggester=ZeroShot(COLOURS, 6))
    assert s.current.item_id == item and s.current.current == "red"  # first: its score is the lowest
    assert item in s.queue()
    before = s.current.event_id
    d = s.correct("blue")
    assert d.events[0].id > before and store.get(item, "colour") == "blue"
    assert item not in s.queue() and s.current.item_id != item and s.current.current is None  # then new products
    hist = store.history(item_id=item, field="colour")
    assert list(hist["new_value"]) == ["red", "blue"]

    # compare-and-set: a label changed after the re-label candidate was shown is not overwritten
    store.set(item, "colour", "red", annotator="bob")
    s.set_order("activelab")
    assert (s.current.item_id, s.current.current) == (item, "red")
    store.set(item, "colour", "green", annotator="cy")
    with pytest.raises(ConflictError, match="cy"):
        s.correct("blue")
    assert store.get(item, "colour") == "green" and s.current.current == "green"


def test_activelab_passes_over_confident_labels_and_labels_new_products(catalog, store, embeddings):  # noqa: F811
    truth = dict(zip(catalog.ids, catalog.table["colour"]))
    agreed = embeddings.ids[-1]
    store.set(agreed, "colour", truth[agreed], annotator="bob")  # the model agrees: not worth a re-label
    s = make_session(catalog, store, embeddings, order="activelab", refit_every=0)  # one queue, never rebuilt
    assert agreed not in s.queue() and s.current.current is None
    seen = []
    while s.current is not None:
        seen.append(s.current.item_id)
        s.correct(truth[s.current.item_id])
    assert sorted(seen) == sorted(set(embeddings.ids) - {agreed})  # each new product once


def test_activelab_undo_of_a_relabel_shows_the_old_label_again(catalog, store, embeddings):  # noqa: F811
    item = doubtful(catalog, store, embeddings)
    s = make_session(catalog, store, embeddings, order="activelab", suggester=ZeroShot(COLOURS, 6))
    s.correct("blue")
    s.undo()
    assert (s.current.item_id, s.current.current) == (item, "red")


def test_bad_orders_and_probabilities_are_one_line(catalog, store, embeddings):  # noqa: F811
    s = make_session(catalog, store, embeddings)
    with pytest.raises(InvalidArgumentError, match="choose one of uncertainty, diversity, activelab") as e:
        s.set_order("diverse")
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidArgumentError, match="at least 2 classes") as e:
        activelab_order(np.ones((3, 1)), ["red"], {}, np.zeros(3, bool), np.zeros(3, bool))
    assert "\n" not in str(e.value)


def test_the_widget_names_every_order():
    from fclip_workbench.labelling.annotate_items import QUEUE_ORDERS
    from fclip_workbench.widgets.annotator import ORDER_NAMES

    assert set(QUEUE_ORDERS) <= set(ORDER_NAMES)


def test_activelab_doubts_a_label_its_neighbours_contradict_even_when_the_model_fits_it():
    group = np.repeat([0, 1], 12)  # (24,): two groups of twelve
    x = np.eye(4, dtype=np.float32)[group] + np.random.default_rng(0).normal(0, 0.01, (24, 4)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = group.copy()
    y[3] = 1  # labelled 1 in the group of 0
    proba = np.eye(2)[y] * 0.9 + 0.05  # the model fitted every label, row 3's too
    labels = {r: "ab"[c] for r, c in enumerate(y)}
    none, every = np.zeros(24, bool), np.ones(24, bool)
    order, cand = activelab_order(proba, ["a", "b"], labels, none, every, vectors=x)
    assert np.flatnonzero(cand).tolist() == [3] and order[0] == 3
    _, fitted = activelab_order(proba, ["a", "b"], labels, none, every)
    assert not fitted.any()  # from the model's own probabilities alone, nothing is doubted
