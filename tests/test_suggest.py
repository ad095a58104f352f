"""Suggester: zero-shot parity, learning from labels, calibration, scikit-learn conventions, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from fclip_workbench.errors import FclipError, InvalidArgumentError
from fclip_workbench.analysis.metrics import expected_calibration_error, top_k_accuracy
from fclip_workbench.labelling.suggest import Suggester, fit_temperature
from fclip_workbench.analysis.zeroshot import ZeroShotClassifier

LABELS = ["dress", "shirt", "shoe", "bag", "jeans", "coat"]
DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def world():
    """Text vectors for 6 labels; images of class c lie around a centre that, for classes 0-2,
    is the text vector of the NEXT class (zero-shot is wrong there), and its own text vector for 3-5."""
    rng = np.random.default_rng(0)
    text = unit(rng.normal(size=(len(LABELS), DIM)))  # (6, 16)
    centre = text.copy()
    centre[[0, 1, 2]] = text[[1, 2, 0]]

    def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        y = r.integers(0, len(LABELS), n)
        x = unit(centre[y] + 0.25 * r.normal(size=(n, DIM)))  # (n, 16)
        return x.astype(np.float32), y

    return text.astype(np.float32), sample


def names(y: np.ndarray) -> list[str]:
    return [LABELS[i] for i in y]


def test_zero_shot_matches_zero_shot_classifier(tiny_model):
    x = np.random.default_rng(1).normal(size=(20, DIM)).astype(np.float32)
    zs = ZeroShotClassifier(tiny_model, LABELS)
    s = Suggester(tiny_model, LABELS).fit()
    np.testing.assert_allclose(s.predict_proba(x), zs.predict_proba(x), rtol=1e-4, atol=1e-6)
    assert list(s.predict(x)) == zs.predict(x)
    assert [[lab for lab, _ in row] for row in s.suggest(x, top=3)] == \
           [[lab for lab, _ in row] for row in zs.suggest(x, top=3)]
    assert list(s.classes_) == LABELS


def test_labels_fix_what_zero_shot_gets_wrong(world):
    text, sample = world
    x_train, y_train = sample(300, 1)
    x_test, y_test = sample(600, 2)
    zero = Suggester(text_weights=text, labels=LABELS).fit()
    fitted = Suggester(text_weights=text, labels=LABELS).fit(x_train, names(y_train))
    acc_zero = top_k_accuracy(zero.predict_proba(x_test), y_test, k=1)
    acc_fit = top_k_accuracy(fitted.predict_proba(x_test), y_test, k=1)
    assert acc_zero < 0.6  # half the classes point at the wrong text
    assert acc_fit > 0.9
    assert acc_fit > acc_zero + 0.3
    assert fitted.score(x_test, names(y_test)) == pytest.approx(acc_fit)


def test_calibration_lowers_ece_on_held_out_data(world):
    text, sample = world
    x_train, y_train = sample(400, 3)
    x_test, y_test = sample(2000, 4)
    raw = Suggester(text_weights=text, labels=LABELS, calibrate=False).fit(x_train, names(y_train))
    cal = Suggester(text_weights=text, labels=LABELS).fit(x_train, names(y_train))
    ece_raw = expected_calibration_error(raw.predict_proba(x_test), y_test)
    ece_cal = expected_calibration_error(cal.predict_proba(x_test), y_test)
    assert ece_cal < ece_raw
    assert ece_cal < 0.05
    assert cal.temperature_ != 1.0 and cal.zero_shot_scale_ != 100.0
    assert raw.temperature_ == 1.0 and raw.zero_shot_scale_ == 100.0
    # zero-shot alone at CLIP's scale 100 is far from calibrated on these images
    zero = Suggester(text_weights=text, labels=LABELS).fit()
    assert expected_calibration_error(zero.predict_proba(x_test), y_test) > ece_cal + 0.1


def test_labels_for_some_classes_leave_the_others_zero_shot(world):
    text, sample = world
    x, y = sample(400, 5)
    keep = y >= 3  # only classes 3-5 (where zero-shot is right) are labelled
    s = Suggester(text_weights=text, labels=LABELS).fit(x[keep], names(y[keep]))
    assert s.class_counts_[:3].tolist() == [0, 0, 0] and (s.class_counts_[3:] > 0).all()
    p = s.predict_proba(x)  # (n, 6)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert (p[:, :3] > 0).all()  # unlabelled classes still suggested
    pred, zero = s.predict(x), Suggester(text_weights=text, labels=LABELS).fit().predict(x)
    # images of unlabelled classes are not pushed into the labelled ones: as often in classes 0-2 as zero-shot says
    assert np.isin(pred[~keep], LABELS[:3]).mean() >= np.isin(zero[~keep], LABELS[:3]).mean() > 0.95
    assert np.mean(pred[keep] == np.array(names(y[keep]), dtype=object)) > 0.9


def test_the_probe_corrects_zero_shot_by_how_much_the_labels_say(world):
    text, sample = world
    x, y = sample(300, 6)
    zero = Suggester(text_weights=text, labels=LABELS, calibrate=False).fit()
    weak = Suggester(text_weights=text, labels=LABELS, C=1e-6, calibrate=False).fit(x, names(y))
    np.testing.assert_allclose(weak.predict_proba(x), zero.predict_proba(x), atol=1e-3)  # C ~ 0: the prior wins
    # zero-shot is wrong on classes 0-2: one label per class barely moves it, many labels per class overrule it
    x_test, y_test = sample(600, 16)
    wrong = y_test < 3

    def right_on_wrong(per_class: int) -> float:
        pick = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(len(LABELS))])
        s = Suggester(text_weights=text, labels=LABELS).fit(x[pick], names(y[pick]))
        return float(np.mean(s.predict(x_test[wrong]) == np.array(names(y_test[wrong]), dtype=object)))

    zero_right = float(np.mean(zero.predict(x_test[wrong]) == np.array(names(y_test[wrong]), dtype=object)))
    assert zero_right < 0.05
    assert right_on_wrong(1) < 0.5 < 0.9 < right_on_wrong(40)
    gated = Suggester(text_weights=text, labels=LABELS, min_per_class=10_000, calibrate=False).fit(x, names(y))
    np.testing.assert_allclose(gated.predict_proba(x), zero.predict_proba(x), atol=1e-6)  # below min_per_class


def test_partial_fit_adds_labels_and_matches_a_full_fit(world):
    text, sample = world
    x, y = sample(200, 7)
    inc = Suggester(text_weights=text, labels=LABELS).fit(x[:150], names(y[:150]))
    t150 = inc.temperature_
    inc.partial_fit(x[150:160], names(y[150:160]))  # +6.7%: temperature kept, probe refitted
    assert inc.temperature_ == t150 and inc.calibrated_on_ == 150 and inc.probe_.coef_.shape == (6, DIM)
    for i in range(160, 200, 10):
        inc.partial_fit(x[i:i + 10], names(y[i:i + 10]))
    assert inc.calibrated_on_ == 190  # recalibrated at 170 (>= 165) and 190 (>= 187)
    full = Suggester(text_weights=text, labels=LABELS).fit(x, names(y))
    assert inc.n_labelled_ == 200 and inc.class_counts_.sum() == 200
    np.testing.assert_allclose(inc.probe_.coef_, full.probe_.coef_, atol=0.05 * np.abs(full.probe_.coef_).max())
    x_test, _ = sample(300, 8)
    np.testing.assert_allclose(inc.predict_proba(x_test), full.predict_proba(x_test), atol=0.05)
    assert np.mean(inc.predict(x_test) == full.predict(x_test)) > 0.98
    first = Suggester(text_weights=text, labels=LABELS).partial_fit(x[:20], names(y[:20]))
    assert first.n_labelled_ == 20


def test_refits_reuse_the_label_text_vectors(tiny_model, world):
    _, sample = world
    calls = []

    class Counting:
        fingerprint = "counting"

        def encode_texts(self, texts):
            calls.append(len(texts))
            return tiny_model.encode_texts(texts)

    s = Suggester(Counting(), LABELS)
    x, y = sample(30, 9)
    s.fit(x, names(y)).partial_fit(x[:5], names(y[:5])).fit(x[:20], names(y[:20]))
    assert calls == [len(LABELS) * 3]


def test_suggest_unsure_and_uncertainty(world):
    text, sample = world
    x, y = sample(200, 10)
    s = Suggester(text_weights=text, labels=LABELS, unsure_below=0.8).fit(x, names(y))
    p = s.predict_proba(x)
    out = s.suggest(x, top=3)
    for i, row in enumerate(out):
        assert [lab for lab, _ in row] == [LABELS[j] for j in np.argsort(-p[i], kind="stable")[:3]]
        assert [pr for _, pr in row] == sorted((pr for _, pr in row), reverse=True)
    assert all(len(row) == len(LABELS) for row in s.suggest(x[:3], top=50))
    np.testing.assert_array_equal(s.unsure(x), p.max(axis=1) < 0.8)
    for kind in ("least-confident", "margin", "entropy"):
        u = s.uncertainty(x, kind=kind)
        assert u.shape == (200,) and (u >= 0).all() and (u <= 1 + 1e-9).all()
    np.testing.assert_allclose(s.uncertainty(x), 1 - p.max(axis=1))
    assert np.argmax(s.uncertainty(x)) == np.argmin(p.max(axis=1))


def test_sklearn_conventions(tiny_model, world):
    text, sample = world
    s = Suggester(tiny_model, LABELS, C=3.0, unsure_below=0.4)
    assert s.get_params()["C"] == 3.0 and s.get_params()["labels"] is LABELS
    assert not any(k.endswith("_") for k in vars(s))  # __init__ only stores parameters
    with pytest.raises(NotFittedError):
        s.predict_proba(np.zeros((1, DIM), np.float32))
    with pytest.raises(NotFittedError):
        s.suggest(np.zeros((1, DIM), np.float32))
    x, y = sample(50, 11)
    s.fit(x, names(y))
    c = clone(s)
    assert c.model is tiny_model  # the frozen model is shared, not deep-copied
    assert c.get_params()["C"] == 3.0 and c.get_params()["labels"] == LABELS
    assert not hasattr(c, "probe_") and not hasattr(c, "classes_")
    c.set_params(C=0.5)
    assert c.C == 0.5 and s.C == 3.0


@pytest.mark.parametrize("bad, pattern", [
    (["dress", "Sweater"], r"outside the label set: \['Sweater'\] \(1 item\(s\)\); valid labels \(6\): 'dress', 'shirt'"),
    (["dress", None], r"outside the label set: \[None\]"),
    (["dress"], "2 vectors but 1 labels"),
    ("dress", "not the string 'dress'"),
])
def test_bad_annotated_labels_are_refused(world, bad, pattern):
    text, _ = world
    s = Suggester(text_weights=text, labels=LABELS)
    with pytest.raises(InvalidArgumentError, match=pattern):
        s.fit(np.ones((2, DIM), np.float32), bad)
    s.fit()
    with pytest.raises(InvalidArgumentError, match=pattern):
        s.partial_fit(np.ones((2, DIM), np.float32), bad)
    assert s.n_labelled_ == 0  # nothing half-applied


@pytest.mark.parametrize("params, pattern", [
    ({"labels": None}, "needs labels"),
    ({"labels": ["a", "a"]}, "repeated"),
    ({"text_weights": None}, "needs a model .* or text_weights"),
    ({"text_weights": np.ones((3, DIM))}, r"shape \(n_labels=6, dim\), got \(3, 16\)"),
    ({"text_weights": np.zeros((6, DIM))}, "all-zero rows"),
    ({"unsure_below": 1.5}, r"unsure_below must be a probability in \[0, 1\], got 1.5"),
    ({"min_per_class": 0}, "min_per_class must be a whole number >= 1"),
    ({"C": -1}, "C must be a number > 0"),
    ({"C": float("nan")}, "C must be a number > 0"),
    ({"prompts": ["a {colour}"]}, "may only use {label}"),
])
def test_bad_parameters_are_refused_at_fit(world, params, pattern):
    text, _ = world
    kw = {"text_weights": text, "labels": LABELS, **params}
    s = Suggester(**kw)  # __init__ accepts anything (scikit-learn rule)
    with pytest.raises(FclipError, match=pattern):
        s.fit()


def test_bad_vectors_and_top_are_refused(world):
    text, _ = world
    s = Suggester(text_weights=text, labels=LABELS).fit()
    with pytest.raises(InvalidArgumentError, match=r"\(n_items, 16\).*got shape \(2, 8\)"):
        s.predict_proba(np.ones((2, 8)))
    with pytest.raises(InvalidArgumentError, match=r"non-finite values in row\(s\) \[1\]"):
        s.predict_proba(np.array([np.ones(DIM), np.full(DIM, np.nan)]))
    with pytest.raises(InvalidArgumentError, match="top must be a whole number >= 1"):
        s.suggest(np.ones((1, DIM)), top=0)
    with pytest.raises(InvalidArgumentError, match="Unknown uncertainty kind 'random'"):
        s.uncertainty(np.ones((1, DIM)), kind="random")
    with pytest.raises(InvalidArgumentError, match="both vectors and labels"):
        Suggester(text_weights=text, labels=LABELS).fit(np.ones((1, DIM)))


def test_fit_temperature_undoes_a_known_scaling():
    rng = np.random.default_rng(12)
    z = rng.normal(size=(5000, 4)) * 2.0  # (n, 4) true logits
    y = np.array([rng.choice(4, p=np.exp(r) / np.exp(r).sum()) for r in z])
    assert fit_temperature(z * 3.0, y) == pytest.approx(3.0, rel=0.1)


def test_a_random_calibration_slice_keeps_a_queue_picked_set_calibrated():
    """Labels picked by uncertainty (as the annotator's queue does) are the hard products: a temperature
    fitted on them states too little confidence for the catalog. Fitted on the random share that the
    queue interleaves (`calibration=`), it holds on random held-out products."""
    rng = np.random.default_rng(0)
    text = unit(rng.normal(size=(len(LABELS), DIM))).astype(np.float32)  # (6, 16)

    def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:  # classes that overlap: hard products exist
        r = np.random.default_rng(seed)
        y = r.integers(0, len(LABELS), n)
        return unit(text[y] + 0.4 * r.normal(size=(n, DIM))).astype(np.float32), y

    pool_x, pool_y = sample(4000, 5)
    x_test, y_test = sample(2000, 6)
    first = Suggester(text_weights=text, labels=LABELS).fit(pool_x[:100], names(pool_y[:100]))
    hard = np.argsort(-first.uncertainty(pool_x[100:]))[:800] + 100  # (800,) the least confident
    rest = np.setdiff1d(np.arange(100, 4000), hard)
    rand = np.random.default_rng(7).choice(rest, 200, replace=False)  # (200,) the random share
    rows = np.r_[hard, rand]
    order = np.random.default_rng(8).permutation(len(rows))  # labelled in an interleaved order
    rows, is_rand = rows[order], np.r_[np.zeros(800, bool), np.ones(200, bool)][order]
    by_position = Suggester(text_weights=text, labels=LABELS).fit(pool_x[rows], names(pool_y[rows]))
    by_random = Suggester(text_weights=text, labels=LABELS).fit(pool_x[rows], names(pool_y[rows]),
                                                                calibration=is_rand)
    ece_position = expected_calibration_error(by_position.predict_proba(x_test), y_test)  # 0.051 when written
    ece_random = expected_calibration_error(by_random.predict_proba(x_test), y_test)  # 0.021
    assert by_random.snapshot().held.tolist() == is_rand.tolist()
    assert ece_random < 0.8 * ece_position, (ece_random, ece_position)


@pytest.mark.parametrize("bad", [np.ones(3, bool), np.ones(10, int), np.zeros((10, 1), bool)])
def test_a_calibration_mask_of_the_wrong_kind_is_refused(world, bad):
    text, sample = world
    x, y = sample(10, 9)
    with pytest.raises(InvalidArgumentError, match="calibration must be 10 booleans"):
        Suggester(text_weights=text, labels=LABELS).fit(x, names(y), calibration=bad)
