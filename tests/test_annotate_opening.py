"""Opening an AnnotationSession shows the first product before every product's suggestions are computed.

Opening used to compute the suggestions of the whole catalog before the first product (with a per-id
catalog lookup, 78 s on KAGL). Now only the first rows' suggestions are computed (`FIRST_ROWS`); the full
pass runs in the refit thread, from the same suggester state, and refines the queue when it lands. A
suggester whose full pass blocks until the test lets it go tells the two apart without timing anything.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from fclip_workbench.labelling import annotate_suggestions
from tests.test_annotate import (COLOURS, PrototypeSuggester, catalog, embeddings, make_session,  # noqa: F401 (fixtures)
                                 store)


class GatedFullPass(PrototypeSuggester):
    """predict_proba of every product at once waits for `gate`; smaller calls answer at once."""

    def __init__(self, classes, dim, n):
        super().__init__(classes, dim)
        self.n, self.gate, self.calls = n, threading.Event(), []

    def predict_proba(self, vectors):
        self.calls.append(len(vectors))
        if len(vectors) == self.n:
            assert self.gate.wait(10), "the full pass ran before the first product was shown"
        return super().predict_proba(vectors)


class Unfitted(PrototypeSuggester):
    def fit(self, vectors, labels):  # keeps the opening's prototypes
        return self


@pytest.fixture
def gated(monkeypatch, embeddings):
    monkeypatch.setattr(annotate_suggestions, "FIRST_ROWS", 4)  # the small catalog: 4 rows first, then the rest
    sugg = GatedFullPass(COLOURS, embeddings.vectors.shape[1], len(embeddings.ids))
    yield sugg
    sugg.gate.set()


def top3(sugg, embeddings, row):
    p = PrototypeSuggester.predict_proba(sugg, embeddings.vectors[row:row + 1])[0]
    return [(COLOURS[j], pytest.approx(float(p[j]), abs=1e-6)) for j in np.argsort(-p, kind="stable")[:3]]


def test_the_first_product_comes_before_the_full_suggestion_pass(catalog, store, embeddings, gated):
    s = make_session(catalog, store, embeddings, suggester=gated, refit_every=0, background=True)
    try:
        first = s.current
        assert first is not None and not gated.gate.is_set()  # shown while the full pass still waits
        assert len(embeddings.ids) not in gated.calls[:2]  # what was computed before it: a few rows, not all
        assert first.suggestions == top3(gated, embeddings, first.row)  # its own suggestions, not a placeholder
        s.accept(1)  # a decision before the full pass lands moves on without waiting for it
        second = s.current
        assert second.item_id != first.item_id and not gated.gate.is_set()
        assert second.suggestions == top3(gated, embeddings, second.row)
        gated.gate.set()
        s.wait_refit(20)
        # landed: every product's suggestions, the same as the first rows', and the queue in uncertainty order
        for row in range(len(embeddings.ids)):
            assert s.suggestions(row) == top3(gated, embeddings, row)
        inline = make_session(catalog, store, embeddings, suggester=Unfitted(COLOURS, embeddings.vectors.shape[1]),
                              refit_every=0)  # the same probabilities and labels, every one computed first
        assert s.queue() == inline.queue()
    finally:
        gated.gate.set()
        s.close()


def test_what_needs_every_product_waits_for_the_full_pass(catalog, store, embeddings, gated):
    s = make_session(catalog, store, embeddings, suggester=gated, refit_every=0, background=True)
    try:
        threading.Timer(0.2, gated.gate.set).start()
        page = s.batch_candidates(label="red", n=3)  # needs every product's probabilities: waits, never guesses
        assert gated.gate.is_set() and len(page) == 3
        p = PrototypeSuggester.predict_proba(gated, embeddings.vectors)[:, COLOURS.index("red")]  # (n,)
        assert [c.score for c in page] == pytest.approx(sorted(p, reverse=True)[:3], abs=1e-6)
    finally:
        gated.gate.set()
        s.close()


def test_the_label_prompts_are_embedded_once_per_model_space(tiny_model, tmp_path, monkeypatch):
    """A session's opening embeds its label prompts (141 labels x 3 prompts: ~5 s on a CPU) only the first
    time: `Suggester(text_cache=...)` keeps their vectors in the embedding store, keyed by the model's space."""
    from fclip_workbench.labelling.suggest import Suggester

    labels = ["bag", "dress", "shirt", "shoe"]
    cache = tmp_path / "embeddings.sqlite"
    first = Suggester(tiny_model, labels=labels, text_cache=cache).fit()
    calls: list[int] = []
    encode = tiny_model.encode_texts
    monkeypatch.setattr(tiny_model, "encode_texts", lambda texts: calls.append(len(texts)) or encode(texts))
    again = Suggester(tiny_model, labels=labels, text_cache=cache).fit()
    assert calls == []  # every prompt vector from the cache
    np.testing.assert_array_equal(again.text_weights_, first.text_weights_)
    Suggester(tiny_model, labels=[*labels, "scarf"], text_cache=cache).fit()
    assert calls == [3]  # only the new label's prompts
    np.testing.assert_allclose(Suggester(tiny_model, labels=labels).fit().text_weights_, first.text_weights_, atol=1e-6)
