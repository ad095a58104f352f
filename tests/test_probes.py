"""LinearProbe: scikit-learn conformance, the C sweep, save/load without pickle, model checks, CV F1, few-shot."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from fclip_workbench.errors import FclipError, InvalidArgumentError, ModelMismatchError, SpaceMismatchError
from fclip_workbench.analysis.probes import DEFAULT_CS, FALLBACK_C, LinearProbe
from fclip_workbench.analysis.probe_eval import (check_vectors_labels, cross_val_f1, few_shot_curve, out_of_fold,
                                                probe_vs_zero_shot)
from fclip_workbench.embedding.space import EmbeddingSpace


def space(weights="a", dim=16, precision="fp32", pipeline="c", model="m@1"):
    return EmbeddingSpace(weights * 32, precision, pipeline * 16, dim, model=model)


@parametrize_with_checks([LinearProbe()])
def test_sklearn_conformance(estimator, check):
    check(estimator)


def blobs(n_per_class=60, n_classes=4, dim=16, spread=1.0, seed=0, labels=None):
    """(n, dim) Gaussian clusters around random centres and their string labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, dim))
    X = np.concatenate([c + rng.normal(0, spread, (n_per_class, dim)) for c in centres])
    names = labels or [f"class-{i}" for i in range(n_classes)]
    y = np.repeat(np.array(names, dtype=object), n_per_class)
    return X.astype(np.float32), y


def test_plain_arrays_and_string_labels():
    X, y = blobs()
    probe = LinearProbe().fit(X, y)
    assert probe.classes_.tolist() == sorted(set(y))
    assert (probe.predict(X) == y).mean() > 0.95
    proba = probe.predict_proba(X[:5])
    assert proba.shape == (5, 4) and np.allclose(proba.sum(1), 1)
    assert probe.decision_function(X[:5]).shape == (5, 4)
    assert probe.n_features_in_ == 16


def test_c_is_swept_on_a_validation_split_and_refit():
    X, y = blobs(spread=3.0)
    probe = LinearProbe().fit(X, y)
    assert sorted(probe.sweep_) == sorted(DEFAULT_CS)
    assert probe.C_ in DEFAULT_CS and probe.sweep_[probe.C_] == max(probe.sweep_.values())
    # the final model is refitted on all the data with C_: the same as a fit with that C fixed
    fixed = LinearProbe(C=probe.C_).fit(X, y)
    assert np.allclose(fixed.coef_, probe.coef_, atol=1e-4)
    assert fixed.sweep_ == {}


def test_sweep_prefers_strong_regularisation_on_noise():
    """Pure noise: the validation score cannot reward a weak penalty more than chance; the grid's
    scores differ, so the sweep is doing something measurable."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(300, 64)), rng.integers(0, 3, 300)
    probe = LinearProbe(scoring="f1_weighted").fit(X, y)
    assert len(set(probe.sweep_.values())) > 1
    assert max(probe.sweep_.values()) < 0.6


def test_one_shot_falls_back_to_a_fixed_c():
    X, y = blobs(n_per_class=1)
    probe = LinearProbe().fit(X, y)
    assert probe.C_ == FALLBACK_C and probe.sweep_ == {}


@pytest.mark.parametrize("params, word", [({"C": -1.0}, "C must be"), ({"Cs": []}, "Cs must be"),
                                          ({"scoring": "auc"}, "Unknown scoring 'auc'"),
                                          ({"val_fraction": 1.5}, "val_fraction"), ({"max_iter": 0}, "max_iter"),
                                          ({"space": "a" * 64}, "space must be an EmbeddingSpace")])
def test_bad_parameters_are_one_line_errors(params, word):
    X, y = blobs()
    with pytest.raises(InvalidArgumentError, match=word) as e:
        LinearProbe(**params).fit(X, y)
    assert "\n" not in str(e.value)


def test_unfitted_and_single_class():
    with pytest.raises(NotFittedError):
        LinearProbe().predict(np.zeros((1, 3)))
    with pytest.raises(InvalidArgumentError, match="1 class: \\['a'\\]"):
        LinearProbe().fit(np.zeros((4, 3)), ["a"] * 4)


def test_save_load_round_trip_without_pickle(tmp_path):
    X, y = blobs()
    probe = LinearProbe(space=space("f")).fit(X, y)
    path = probe.save(tmp_path / "probe")
    assert path.suffix == ".npz"
    with zipfile.ZipFile(path) as z:  # plain arrays only: loadable with allow_pickle=False
        assert sorted(z.namelist()) == ["classes.npy", "coef.npy", "intercept.npy", "meta.npy"]
    np.load(path, allow_pickle=False)["classes"]
    loaded = LinearProbe.load(path)
    assert loaded.space == space("f") and loaded.space.model == "m@1" and loaded.C_ == probe.C_ and loaded.sweep_ == probe.sweep_
    assert loaded.classes_.tolist() == probe.classes_.tolist()
    np.testing.assert_allclose(loaded.predict_proba(X), probe.predict_proba(X))
    assert (loaded.predict(X) == probe.predict(X)).all()
    int_probe = LinearProbe(C=1.0, space=space("f")).fit(X, (y == "class-0").astype(int))
    assert LinearProbe.load(int_probe.save(tmp_path / "int.npz")).classes_.tolist() == [0, 1]


def test_load_refuses_other_files(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InvalidArgumentError, match="not a saved LinearProbe"):
        LinearProbe.load(bad)
    with pytest.raises(InvalidArgumentError, match="No saved probe"):
        LinearProbe.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", coef=np.zeros(2), intercept=np.zeros(1), classes=np.zeros(2),
             meta=np.array('{"format": "something-else"}'))
    with pytest.raises(InvalidArgumentError, match="not a LinearProbe file"):
        LinearProbe.load(tmp_path / "other.npz")


def _rewrite_meta(path, out, edit):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    edit(meta, arrays)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)
    return out


def test_old_probe_files_are_refused_with_one_line(tmp_path):
    """Format 1 kept a bare fingerprint: it cannot say precision, pipeline or width, so it is refused, not guessed."""
    X, y = blobs()
    path = LinearProbe(space=space()).fit(X, y).save(tmp_path / "p.npz")

    def to_v1(meta, arrays):
        meta["version"] = 1
        meta.pop("space")
        meta["params"]["fingerprint"] = "a" * 64
    old = _rewrite_meta(path, tmp_path / "old.npz", to_v1)
    with pytest.raises(SpaceMismatchError, match="format 1 .*refit it") as e:
        LinearProbe.load(old)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("edit, word", [
    (lambda m, a: m["space"].update(weights="not hex"), "damaged embedding space"),
    (lambda m, a: m["space"].pop("dim"), "lacks dim"),
    (lambda m, a: m.update(space="fclip-mini"), "records no embedding space"),
    (lambda m, a: m["space"].update(dim=8), "damaged LinearProbe file"),
    (lambda m, a: m.pop("C_"), "damaged LinearProbe file"),
    (lambda m, a: m["params"].update(C="strong"), "C must be"),
    (lambda m, a: m.update(version=99), "version 99"),
    (lambda m, a: a.update(coef=a["coef"][:, :3]), "damaged LinearProbe file"),
    (lambda m, a: a.update(coef=np.full_like(a["coef"], np.nan)), "damaged LinearProbe file"),
    (lambda m, a: a.update(classes=a["classes"][:1]), "damaged LinearProbe file"),
    (lambda m, a: a.update(classes=a["classes"][::-1]), "classes out of order"),  # rows would name wrong labels
    (lambda m, a: a.update(classes=np.repeat(a["classes"][:1], len(a["classes"]))), "out of order"),
])
def test_damaged_probe_files_are_one_line(tmp_path, edit, word):
    X, y = blobs()
    path = LinearProbe(space=space()).fit(X, y).save(tmp_path / "p.npz")
    bad = _rewrite_meta(path, tmp_path / "bad.npz", edit)
    with pytest.raises(FclipError, match=word) as e:
        LinearProbe.load(bad)
    assert "\n" not in str(e.value)


def test_refuses_another_space_and_another_width(tmp_path):
    X, y = blobs()
    probe = LinearProbe(space=space()).fit(X, y)
    probe.check_compatible(space())
    loaded = LinearProbe.load(probe.save(tmp_path / "p.npz"))
    for other, what in [(space("b", model="m@2"), "weights"), (space(precision="onnx-int8"), "precision"),
                        (space(pipeline="d"), "image pipeline")]:
        with pytest.raises(SpaceMismatchError, match=r"linear probe was made in space m@1 \[aaaaaaaaaaaa fp32 16-d\], "
                                                     r"not in") as e:
            loaded.check_compatible(other)
        assert "\n" not in str(e.value), what
    with pytest.raises(InvalidArgumentError, match="bare fingerprint"):
        loaded.check_compatible("a" * 64)
    with pytest.raises(ModelMismatchError, match="X has 8 features, but LinearProbe is expecting 16") as e:
        probe.predict(X[:, :8])
    assert isinstance(e.value, FclipError) and "\n" not in str(e.value)
    with pytest.raises(ModelMismatchError, match="probe's space .* is 32-d"):
        LinearProbe(space=space(dim=32)).fit(X, y)


def test_check_compatible_with_a_model(tiny_model):
    X, y = blobs(dim=tiny_model.dim)
    probe = LinearProbe(space=tiny_model.space).fit(X, y)
    probe.check_compatible(tiny_model)
    other = LinearProbe(space=space("0", dim=tiny_model.dim)).fit(X, y)
    with pytest.raises(SpaceMismatchError, match=tiny_model.space.describe().replace("[", r"\[").replace("]", r"\]")):
        other.check_compatible(tiny_model)
    narrow = LinearProbe().fit(X[:, :3], y)
    with pytest.raises(ModelMismatchError, match=f"gives {tiny_model.dim}-d embeddings"):
        narrow.check_compatible(tiny_model)


NAN_ROW = np.r_[np.full((1, 16), np.nan), np.zeros((239, 16))]


@pytest.mark.parametrize("vectors, labels, word", [
    (np.zeros((240, 16)), ["a", "b"] * 60, "240 vectors but 120 labels"),
    (np.zeros((240, 16)), ["a"] * 240, "at least 2 classes, got 1"),
    (NAN_ROW, ["a", "b"] * 120, "1 row\\(s\\) hold NaN/inf, first \\[0\\]"),
    (np.zeros((0, 16)), [], "non-empty"),
    (np.zeros(16), ["a"] * 16, "non-empty \\(n, dim\\)"),
    (np.zeros((240, 16)), None, "list of 240 labels"),
    (np.zeros((240, 16)), "shirt", "list of 240 labels"),
    (np.zeros((240, 16)), np.zeros((240, 2)), "list of 240 labels"),
    (np.zeros((240, 16)), ["a", None] * 120, "120 labels are missing"),
    (np.zeros((240, 16)), ["a", float("nan")] * 120, "120 labels are missing"),
    (np.zeros((240, 16)), ["a", " "] * 120, "120 labels are missing"),
    (np.zeros((240, 16)), ["a", 1] * 120, "strings or all integers"),
    (np.full((240, 16), "x"), ["a", "b"] * 120, "must be numbers"),
    ([[0.0, 1.0], [1.0]], ["a", "b"], "numeric \\(n, dim\\) array"),
])
@pytest.mark.parametrize("call", ["check", "out_of_fold", "cross_val_f1", "few_shot_curve"])
def test_hostile_inputs_are_one_line_before_any_work(vectors, labels, word, call):
    fn = {"check": check_vectors_labels, "out_of_fold": out_of_fold, "cross_val_f1": cross_val_f1,
          "few_shot_curve": few_shot_curve}[call]
    with pytest.raises(InvalidArgumentError, match=word) as e:
        fn(vectors, labels)
    assert "\n" not in str(e.value)


def test_cross_val_f1_separates_signal_from_noise():
    X, y = blobs(spread=2.0)
    assert cross_val_f1(X, y, cv=5) > 0.9
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(y)
    assert cross_val_f1(X, shuffled, cv=5) < 0.45  # 4 classes: chance is 0.25
    with pytest.raises(InvalidArgumentError, match="cv must be"):
        cross_val_f1(X, y, cv=1)
    with pytest.raises(InvalidArgumentError, match="240 vectors but 3 labels"):
        cross_val_f1(X, y[:3])


def test_few_shot_curve_rises_with_k():
    X, y = blobs(n_per_class=120, spread=4.0, dim=32)
    curve = few_shot_curve(X, y, ks=(1, 5, 50), seeds=(0, 1, 2))
    assert list(curve.columns) == ["k", "seed", "n_train", "weighted_f1", "accuracy", "C"]
    assert len(curve) == 9
    assert curve.groupby("k").n_train.first().tolist() == [4, 20, 200]
    mean = curve.groupby("k").weighted_f1.mean()
    assert mean[1] < mean[5] < mean[50]
    # an explicit test set is used as given
    Xte, yte = blobs(n_per_class=10, spread=4.0, dim=32, seed=0)
    fixed = few_shot_curve(X, y, ks=(5,), seeds=(0,), test_vectors=Xte, test_labels=yte)
    assert len(fixed) == 1
    with pytest.raises(ModelMismatchError, match="same model"):
        few_shot_curve(X, y, ks=(5,), test_vectors=Xte[:, :4], test_labels=yte)
    with pytest.raises(InvalidArgumentError, match="ks must be"):
        few_shot_curve(X, y, ks=(0,))


def test_probe_vs_zero_shot_table(tiny_model):
    names = ["red dress", "blue shirt", "green trousers"]
    X, y = blobs(n_per_class=30, n_classes=3, dim=tiny_model.dim, labels=names)
    y = y.copy()
    y[0] = ""  # an unlabelled item is counted, not used
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:60], idx[60:]
    table = probe_vs_zero_shot(tiny_model, X[tr], {"garment": y[tr]}, X[te], {"garment": y[te]})
    row = table.iloc[0]
    assert list(table.columns) == ["field", "n_classes", "n_train", "n_test", "n_unlabelled", "zero_shot_f1",
                                   "probe_f1", "probe_C"]
    assert row.field == "garment" and row.n_classes == 3 and row.n_unlabelled == 1
    assert row.n_train + row.n_test == 89
    assert row.probe_f1 > 0.9  # separable clusters; zero-shot of a random tiny model knows nothing of them
    with pytest.raises(ModelMismatchError, match="embed them with this model"):
        probe_vs_zero_shot(tiny_model, X[tr, :5], {"garment": y[tr]}, X[te, :5], {"garment": y[te]})
    with pytest.raises(InvalidArgumentError, match="same non-empty fields"):
        probe_vs_zero_shot(tiny_model, X[tr], {"garment": y[tr]}, X[te], {"colour": y[te]})
