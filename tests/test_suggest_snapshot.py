"""Suggester state as one snapshot: a refit in one thread and a label-set change in another never mix, and
text weights are tied to the embedding space they were computed in.

The orderings are forced with events (no sleeps): the refit is held inside the text model while the
other thread acts, or the other thread acts first.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from fclip_workbench.labelling.annotate import AnnotationSession
from fclip_workbench.errors import SpaceMismatchError
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.embedding.space import EmbeddingSpace
from fclip_workbench.labelling.suggest import Suggester
from fclip_workbench.labelling.taxonomy import Taxonomy
from tests.test_annotate import COLOURS, WordModel, catalog, embeddings  # noqa: F401 (fixtures)

DIM = 6


def space(weights: str) -> EmbeddingSpace:
    return EmbeddingSpace(weights=weights * 16, precision="fp32", image_pipeline="a" * 16, dim=DIM, model="words")


class GatedWords(WordModel):
    """A text model with an embedding space; `hold()` makes the next `encode_texts` wait for `release()`."""

    def __init__(self):
        super().__init__(DIM)
        self.space = space("1")
        self.calls = 0
        self._hold = False
        self.entered, self.go = threading.Event(), threading.Event()

    def hold(self) -> None:
        self._hold = True
        self.entered.clear()
        self.go.clear()

    def encode_texts(self, texts):
        self.calls += 1
        if self._hold:
            self._hold = False
            self.entered.set()
            assert self.go.wait(10), "the test never released the text model"
        out = super().encode_texts(texts)
        out[:, 5] += 0.5  # 'mauve' and friends: not all-zero rows
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def consistent(s: Suggester) -> tuple[int, int, int]:
    st = s.snapshot()
    p = st.predict_proba(np.eye(2, DIM, dtype=np.float32))
    assert len(st.labels) == st.text_weights.shape[0] == p.shape[1] == len(s.classes_)
    return len(st.labels), st.text_weights.shape[0], p.shape[1]


def run_in_thread(fn) -> tuple[threading.Thread, list]:
    errors: list = []

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    return t, errors


def test_labels_replaced_while_a_refit_embeds_the_prompts():
    """Ordering 1: the refit read 4 labels and is inside the text model when the UI adds a 5th."""
    model = GatedWords()
    s = Suggester(model, list(COLOURS), prompts=["{label}"]).fit()
    x = np.eye(3, DIM, dtype=np.float32)
    s.labels = [*COLOURS, "teal"]  # the next fit embeds the prompts again
    model.hold()
    t, errors = run_in_thread(lambda: s.fit(x, ["red", "green", "teal"]))
    assert model.entered.wait(10)
    s.labels = [*COLOURS, "teal", "mauve"]  # the UI thread, meanwhile
    assert consistent(s) == (3, 3, 3), "readers keep the previous state while the refit runs"
    model.go.set()
    t.join(10)
    assert not errors
    assert consistent(s) == (4, 4, 4), "the refit finishes with the labels it started from"
    s.fit(x, ["red", "green", "mauve"])
    assert consistent(s) == (5, 5, 5) and s.classes_[-1] == "mauve"


def test_labels_replaced_before_the_refit_reads_them():
    """Ordering 2: the UI adds the label first; the refit then uses 4 labels throughout."""
    model = GatedWords()
    s = Suggester(model, list(COLOURS), prompts=["{label}"]).fit()
    started = threading.Event()
    s.labels = [*COLOURS, "mauve"]
    t, errors = run_in_thread(lambda: (started.set(), s.fit(np.eye(2, DIM, dtype=np.float32), ["red", "mauve"])))
    assert started.wait(10)
    t.join(10)
    assert not errors and consistent(s) == (4, 4, 4)


def test_a_reader_during_the_swap_sees_one_whole_state():
    """Every predict reads one snapshot: labels, weight rows and columns always agree, whatever is swapped in."""
    s = Suggester(labels=list(COLOURS), text_weights=np.eye(3, DIM, dtype=np.float32)).fit()
    old = s.snapshot()
    s.labels = [*COLOURS, "mauve"]
    s.text_weights = np.eye(4, DIM, dtype=np.float32)
    s.fit()
    assert s.snapshot() is not old and len(old.labels) == 3 and old.text_weights.shape == (3, DIM)
    assert old.predict_proba(np.eye(1, DIM, dtype=np.float32)).shape == (1, 3), "an old snapshot stays whole"
    with pytest.raises(ValueError):
        old.text_weights[0, 0] = 2.0  # read-only


def test_session_refit_in_the_background_while_the_ui_adds_a_label(catalog, embeddings, tmp_path):  # noqa: F811
    """The annotator case: the background refit is held inside the text model while the annotator adds a value
    to the taxonomy; the session's suggestions stay whole (classes == probability columns) at every step."""
    model = GatedWords()
    sugg = Suggester(model, list(COLOURS), prompts=["{label}"])
    store = LabelStore(tmp_path / "labels.sqlite", catalog=catalog)
    vectors = np.eye(len(embeddings.ids), DIM, k=0, dtype=np.float32) + 0.1
    emb = type(embeddings)(embeddings.ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    s = AnnotationSession(catalog, "colour", store, sugg, emb, annotator="ana", refit_every=1,
                          taxonomy=Taxonomy.from_values("colour", COLOURS), background=True)
    try:
        model.space = space("3")
        model.hold()
        s.accept(1)  # schedules the refit, which waits in the text model
        assert model.entered.wait(10)
        s.add_to_taxonomy("mauve")  # the UI thread replaces suggester.labels meanwhile
        view = s._view
        assert len(view.classes) == view.proba.shape[1] == 3
        s.current.suggestions  # noqa: B018 - reading is fine meanwhile
        model.go.set()
        s.wait_refit(10)
        assert s.refit_error is None
        view = s._view
        assert len(view.classes) == view.proba.shape[1] == 3, "the running refit kept its 3 labels"
        s.refit(wait=True)
        view = s._view
        assert view.classes[-1] == "mauve" and len(view.classes) == view.proba.shape[1] == 4
        assert s.correct("mauve").value == "mauve"
    finally:
        s.close()
        store.close()


# ------------------------------------------------------------------ the embedding space of the text weights
def test_text_weights_record_the_space_and_follow_the_model():
    model = GatedWords()
    s = Suggester(model, list(COLOURS), prompts=["{label}"]).fit()
    assert s.space_ == space("1") and model.calls == 1
    s.fit()
    assert model.calls == 1, "same labels, prompts and space: the text vectors are reused"
    model.space = space("2")  # fine-tuned in place
    with pytest.raises(SpaceMismatchError, match=r"made in space words \[111111111111 fp32 6-d\], not in the model's "
                                                 r"words \[222222222222 fp32 6-d\].*fit again"):
        s.predict_proba(np.eye(1, DIM, dtype=np.float32))
    s.partial_fit(np.eye(1, DIM, dtype=np.float32), ["red"])  # a full refit in the new space
    assert model.calls == 2 and s.space_ == space("2") and s.n_labelled_ == 1
    s.predict_proba(np.eye(1, DIM, dtype=np.float32))


def test_space_recorded_before_embedding_catches_weights_changed_during_it():
    """The weights change while the prompts are embedded: the vectors are not filed under the new space."""
    model = GatedWords()
    spaces = iter([space("1"), space("2"), space("2"), space("2")])
    type(model).space = property(lambda self: next(spaces), lambda self, v: None)
    try:
        s = Suggester(model, list(COLOURS), prompts=["{label}"]).fit()
        assert model.calls == 2 and s.space_ == space("2"), "embedded again in the space it ended in"
    finally:
        del type(model).space


def test_a_space_that_keeps_moving_is_refused_in_one_line():
    model = GatedWords()
    n = iter(range(100))
    type(model).space = property(lambda self: space(str(next(n) % 10)), lambda self, v: None)
    try:
        with pytest.raises(SpaceMismatchError, match="kept changing while the label prompts were embedded"):
            Suggester(model, list(COLOURS), prompts=["{label}"]).fit()
    finally:
        del type(model).space
