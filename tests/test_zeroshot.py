"""ZeroShotClassifier: ranked suggestions, label checks; prompt templates."""
from __future__ import annotations

import numpy as np
import pytest

from fclip_workbench.errors import FclipError
from fclip_workbench.data.prompts import ZERO_SHOT_PROMPTS, check_prompts, fill_prompts
from fclip_workbench.analysis.zeroshot import ZeroShotClassifier, check_labels, class_weights

LABELS = ["dress", "shirt", "shoe", "bag", "jeans"]


@pytest.fixture(scope="module")
def clf(tiny_model):
    return ZeroShotClassifier(tiny_model, LABELS)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32)  # (n, dim) unnormalised


def test_suggest_is_ranked_and_consistent_with_predict(clf, images):
    p = clf.predict_proba(images)  # (6, 5)
    assert p.shape == (6, len(LABELS))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    out = clf.suggest(images, top=3)
    assert len(out) == len(images)
    for i, row in enumerate(out):
        assert len(row) == 3
        probs = [pr for _, pr in row]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1.0 + 1e-6
        assert [lab for lab, _ in row] == [LABELS[j] for j in np.argsort(-p[i], kind="stable")[:3]]
        assert row[0][0] == clf.predict(images)[i]


def test_suggest_top_is_clipped_to_the_number_of_labels(clf, images):
    out = clf.suggest(images, top=50)
    assert all(len(row) == len(LABELS) for row in out)
    assert all(sorted(lab for lab, _ in row) == sorted(LABELS) for row in out)
    assert all(sum(pr for _, pr in row) == pytest.approx(1.0, abs=1e-5) for row in out)


@pytest.mark.parametrize("top", [0, -1, 1.5, True, "3"])
def test_suggest_rejects_top_below_one_or_not_whole(clf, images, top):
    with pytest.raises(FclipError, match="top must be a whole number >= 1"):
        clf.suggest(images, top=top)


def test_suggest_top_one(clf, images):
    assert [row[0][0] for row in clf.suggest(images, top=1)] == clf.predict(images)


@pytest.mark.parametrize("labels, pattern", [
    ([], "at least one label"),
    (["dress", "dress"], r"repeated: \['dress', 'dress'\]"),
    (["Dress", "dress "], "repeated"),
    (["dress", ""], r"non-empty strings; label\(s\) at position\(s\) \[1\]"),
    (["   ", "shirt"], "non-empty"),
    ("dress", "list of strings"),
])
def test_bad_labels_are_refused(tiny_model, labels, pattern):
    with pytest.raises(FclipError, match=pattern):
        ZeroShotClassifier(tiny_model, labels)


def test_check_labels_accepts_distinct_labels():
    check_labels(["Dress", "T-shirt", "dress shirt"])  # no error


def test_prompts_must_use_only_label():
    assert fill_prompts("bag", ("a {label}", "{label} photo")) == ["a bag", "bag photo"]
    assert fill_prompts("{x}", ("a {label}",)) == ["a {x}"]  # braces in a label are text
    with pytest.raises(FclipError, match=r"has field\(s\) \['colour'\]"):
        check_prompts(["a {colour} {label}"])
    with pytest.raises(FclipError, match="has no {label} field"):
        check_prompts(["a photo"])
    with pytest.raises(FclipError, match="not a valid template"):
        check_prompts(["a {label"])
    with pytest.raises(FclipError, match="Give a list"):
        check_prompts([])


def test_names_replace_a_labels_text_and_predictions_keep_the_label(tiny_model, images):
    named = ZeroShotClassifier(tiny_model, ["trouser", "bag"], names={"trouser": ["trousers", "pants"]})
    texts = [p.format(label=n) for n in ("trousers", "pants") for p in ZERO_SHOT_PROMPTS]
    mean = tiny_model.encode_texts(texts).mean(axis=0)  # every name x prompt, averaged
    np.testing.assert_allclose(named.weights[0], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(named.weights[1], class_weights(tiny_model, ["bag"])[0], atol=1e-6)  # as itself
    assert not np.allclose(named.weights[0], class_weights(tiny_model, ["trouser"])[0], atol=1e-3)
    assert set(named.predict(images)) <= {"trouser", "bag"}


@pytest.mark.parametrize("names, pattern", [
    ({"trousers": ["pants"]}, r"label\(s\) \['trousers'\] that are not among the labels"),
    ({"trouser": []}, "non-empty list of non-blank strings"),
    ({"trouser": "trousers"}, "non-empty list of non-blank strings"),
    ({"trouser": ["trousers", " "]}, "non-empty list"),
    (["trouser"], "names must map a label to its names"),
])
def test_bad_names_are_refused_before_any_text_is_embedded(tiny_model, names, pattern):
    with pytest.raises(FclipError, match=pattern):
        ZeroShotClassifier(tiny_model, ["trouser", "bag"], names=names)


def test_names_are_read_once_and_normalised(tiny_model):
    """Iterators, arrays and sets work (read once, before any text is embedded); repeats count once."""
    from fclip_workbench.analysis.zeroshot import check_names

    want = ZeroShotClassifier(tiny_model, ["trouser", "bag"], names={"trouser": ["trousers", "pants"]}).weights
    for given in ((n for n in ["trousers", "pants"]), np.array(["trousers", "pants"]), ["trousers", "pants", "pants"],
                  ("trousers ", "pants")):
        got = ZeroShotClassifier(tiny_model, ["trouser", "bag"], names={"trouser": given}).weights
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert check_names(["a", "b"], {"a": {"y", "x"}}) == {"a": ("x", "y")}  # a set in a fixed order


@pytest.mark.parametrize("names, pattern", [
    ({"trouser": ["bag"]}, r"leave labels \['trouser', 'bag'\] with the same texts"),
    ({"Trouser": ["trousers"]}, "did you mean 'trouser'"),
    ({"trouser": np.array([], dtype=str)}, "non-empty list"),
    ({"trouser": iter([])}, "non-empty list"),
])
def test_names_that_would_silently_mislead_are_refused(tiny_model, names, pattern):
    with pytest.raises(FclipError, match=pattern):
        class_weights(tiny_model, ["trouser", "bag"], names=names)
