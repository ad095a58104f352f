"""LinearProbe, hostile pass 2 (issue 17 item 1): a probe without a space is never saved or passed, and
damaged files, bad labels and NaN vectors are one `InvalidArgumentError` line (a ValueError), never a traceback."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fclip_workbench.errors import FclipError, InvalidArgumentError, ModelMismatchError, SpaceMismatchError
from fclip_workbench.analysis.probes import LinearProbe
from fclip_workbench.embedding.space import EmbeddingSpace

A = EmbeddingSpace("a" * 32, "fp32", "c" * 16, 8, model="m@1")
B = EmbeddingSpace("b" * 32, "fp32", "c" * 16, 8, model="m@2")  # same width, other weights


def data():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (30, 8)), rng.normal(2, 1, (30, 8))].astype(np.float32)  # (60, 8)
    return X, ["a"] * 30 + ["b"] * 30


def one_line(exc: pytest.ExceptionInfo) -> str:
    assert isinstance(exc.value, FclipError) and isinstance(exc.value, ValueError)
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_a_probe_without_a_space_is_not_saved(tmp_path):
    X, y = data()
    with pytest.raises(InvalidArgumentError, match="must record the embedding space") as e:
        LinearProbe().fit(X, y).save(tmp_path / "p.npz")
    one_line(e)
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_saved_file_without_a_space_is_refused(tmp_path):
    """Files written before this check (format 2, "space": null) could pass any model of their width."""
    X, y = data()
    path = LinearProbe(space=A).fit(X, y).save(tmp_path / "p.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["space"] = None
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "nospace.npz", **arrays)
    with pytest.raises(SpaceMismatchError, match="saved without an embedding space.*refit") as e:
        LinearProbe.load(tmp_path / "nospace.npz")
    one_line(e)


def test_check_compatible_never_passes_an_unknown_space():
    X, y = data()
    probe = LinearProbe().fit(X, y)
    for other in (A, B):
        with pytest.raises(SpaceMismatchError, match=r"records no embedding space.*m@\d") as e:
            probe.check_compatible(other)
        one_line(e)
    wide = EmbeddingSpace("a" * 32, "fp32", "c" * 16, 16, model="m@3")
    with pytest.raises(ModelMismatchError, match="gives 16-d embeddings"):  # the width is still said first
        probe.check_compatible(wide)
    LinearProbe(space=A).fit(X, y).check_compatible(A)  # a recorded, equal space passes
    with pytest.raises(SpaceMismatchError, match="m@1.*m@2"):
        LinearProbe(space=A).fit(X, y).check_compatible(B)


@pytest.mark.parametrize("cut", [0, 10, 300, -20])
def test_truncated_probe_file_is_one_line(tmp_path, cut):
    X, y = data()
    path = LinearProbe(space=A).fit(X, y).save(tmp_path / "p.npz")
    raw = path.read_bytes()
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    with pytest.raises(InvalidArgumentError, match="trunc.npz") as e:
        LinearProbe.load(bad)
    one_line(e)


@pytest.mark.parametrize("labels, word", [
    (lambda y: y[:-1], "59 labels for 60 vectors"),
    (lambda y: y + ["a"], "61 labels for 60 vectors"),
    (lambda y: [None] * 5 + y[5:], "5 of 60 labels are None or NaN"),
    (lambda y: y[:-1] + [float("nan")], "first at position 59"),
    (lambda y: np.array(y[:-1] + [None], dtype=object), "labels are None or NaN"),
    (lambda y: [1] * 30 + y[30:], "mix strings"),
    (lambda y: None, "target y is None"),
])
def test_bad_labels_are_one_line(labels, word):
    X, y = data()
    with pytest.raises(InvalidArgumentError, match=word) as e:
        LinearProbe().fit(X, labels(list(y)))
    one_line(e)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_vectors_are_one_line(bad):
    X, y = data()
    probe = LinearProbe(space=A).fit(X, y)
    Z = X[:2].copy()
    Z[1, 3] = bad
    for call in (probe.predict, probe.predict_proba, probe.decision_function):
        with pytest.raises(InvalidArgumentError, match="Input X contains") as e:
            call(Z)
        one_line(e)
    with pytest.raises(InvalidArgumentError, match="Input X contains") as e:
        LinearProbe().fit(np.r_[X[:-1], Z[1:]], y)
    one_line(e)


# ---------------------------------------------------------------- predict checks the space of what it is given
class Embeddings:
    """Stand-in for an `EmbeddingResult` that records its space: `.ids`, `.vectors`, `.space`."""

    def __init__(self, vectors, space):
        self.ids, self.vectors, self.space = [f"p{i}" for i in range(len(vectors))], vectors, space


class SpacedArray(np.ndarray):
    """An array that carries its space."""


def spaced(X, space):
    arr = np.asarray(X).view(SpacedArray)
    arr.space = space
    return arr


def scoring_calls(probe, y):
    return {"predict": probe.predict, "predict_proba": probe.predict_proba,
            "decision_function": probe.decision_function, "predict_log_proba": probe.predict_log_proba,
            "score": lambda X: probe.score(X, y[:2])}


@pytest.mark.parametrize("wrap", [Embeddings, spaced])
def test_a_loaded_probe_refuses_embeddings_of_another_space_in_every_scoring_call(tmp_path, wrap):
    X, y = data()
    probe = LinearProbe.load(LinearProbe(space=A).fit(X, y).save(tmp_path / "p.npz"))
    others = [B, EmbeddingSpace("a" * 32, "onnx-int8", "c" * 16, 8, model="m@1"),  # another precision
              EmbeddingSpace("a" * 32, "fp32", "d" * 16, 8, model="m@1")]  # another image pipeline
    for name, call in scoring_calls(probe, y).items():
        np.testing.assert_array_equal(np.asarray(call(wrap(X[:2], A))), np.asarray(call(X[:2])))  # same space: as bare
        for other in others:
            with pytest.raises(SpaceMismatchError, match=r"^linear probe was made in space m@1 \[aaaaaaaaaaaa fp32 8-d\], "
                                                         rf"not in {other.describe().replace('[', '.').replace(']', '.')}") as e:
                call(wrap(X[:2], other))
            assert isinstance(e.value, FclipError) and "\n" not in str(e.value), name


def test_the_space_check_is_the_shared_helper():
    """The message is `EmbeddingSpace.check`'s, word for word (the one indexes and projections use)."""
    X, y = data()
    probe = LinearProbe(space=A).fit(X, y)
    with pytest.raises(SpaceMismatchError) as want:
        A.check(B, "linear probe")
    with pytest.raises(SpaceMismatchError) as got:
        probe.predict(Embeddings(X[:2], B))
    assert str(got.value) == str(want.value)


def test_embeddings_that_carry_a_non_space_or_another_width_are_refused():
    X, y = data()
    probe = LinearProbe(space=A).fit(X, y)
    with pytest.raises(SpaceMismatchError, match="expected an EmbeddingModel or an EmbeddingSpace, got str") as e:
        probe.predict(Embeddings(X[:2], "a" * 32))  # a bare fingerprint is not a space
    assert "\n" not in str(e.value)
    wide = EmbeddingSpace("a" * 32, "fp32", "c" * 16, 16, model="m@1")
    with pytest.raises(SpaceMismatchError, match="not in m@1 .* 16-d"):
        probe.predict(Embeddings(np.zeros((2, 16), np.float32), wide))
    with pytest.raises(ModelMismatchError, match="X has 4 features, but LinearProbe is expecting 8") as e:
        probe.predict(Embeddings(X[:2, :4], A))  # recorded space right, vectors cut: the width still counts
    assert "\n" not in str(e.value)


def test_bare_arrays_and_embeddings_without_a_space_get_width_and_finiteness_checks():
    X, y = data()
    probe = LinearProbe(space=A).fit(X, y)
    from fclip_workbench.embedding.embed import EmbeddingResult

    result = EmbeddingResult([f"p{i}" for i in range(4)], X[:4])  # records no space: nothing to compare
    np.testing.assert_array_equal(probe.predict(result), probe.predict(X[:4]))
    assert probe.score(result, y[:4]) == probe.score(X[:4], y[:4])
    Z = X[:3].copy()
    Z[2, 0] = np.nan
    for bad, exc, word in [(X[:2, :5], ModelMismatchError, "X has 5 features"),
                           (Z, InvalidArgumentError, "Input X contains NaN"),
                           (EmbeddingResult(["a", "b", "c"], Z), InvalidArgumentError, "Input X contains NaN"),
                           (Embeddings(Z, A), InvalidArgumentError, "Input X contains NaN"),
                           (X[0], InvalidArgumentError, "Expected 2D array"),
                           (np.zeros((0, 8)), InvalidArgumentError, "0 sample")]:
        with pytest.raises(exc, match=word) as e:
            probe.predict(bad)
        assert isinstance(e.value, FclipError) and "\n" not in str(e.value)
    with pytest.raises(InvalidArgumentError, match="3 labels for 2 vectors") as e:
        probe.score(Embeddings(X[:2], A), y[:3])
    one_line(e)


def test_a_probe_without_a_space_takes_any_space_of_its_width():
    """Like an index built from bare vectors; `check_compatible` is where such a probe is refused."""
    X, y = data()
    probe = LinearProbe().fit(X, y)
    np.testing.assert_array_equal(probe.predict(Embeddings(X[:3], B)), probe.predict(X[:3]))
    with pytest.raises(ModelMismatchError, match="X has 4 features"):
        probe.predict(Embeddings(X[:3, :4], B))


def test_embedding_results_carry_their_space_so_a_probe_refuses_another(tiny_model_dir, small_catalog_dir, tmp_path):
    import torch

    from fclip_workbench.data.catalog import Catalog
    from fclip_workbench.embedding.embed import embed_images
    from fclip_workbench.embedding.models import load_model
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.errors import ModelMismatchError

    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    model = load_model(tiny_model_dir, device="cpu")
    store = EmbeddingStore(tmp_path / "e.sqlite")
    res = embed_images(model, cat, store, progress=False)
    assert res.space == model.space
    y = list(cat.table.set_index("item_id").loc[res.ids, "colour"])
    probe = LinearProbe().fit(res, y)
    assert list(probe.predict(res)) and probe.space == model.space
    with torch.no_grad():
        model.model.visual.proj.add_(0.1)  # fine-tuned: another space
    other = embed_images(model, cat, store, progress=False)
    with pytest.raises(ModelMismatchError) as e:
        probe.predict(other)
    assert "\n" not in str(e.value)
