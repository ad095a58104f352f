"""Zero-shot classification: class weights from prompt ensembles, then cosine scores.

Labels must be non-empty and unique (after stripping spaces); a bad list is a
`FclipError` naming the offending labels. A label may be described by other
`names` than itself (CLIP's cleaned class names): "trouser" scored as
"trousers", "t-shirt/top" as both "t-shirt" and "top"; its weight is then the
mean over names x prompts, and predictions still return the label.

Example:
    >>> clf = ZeroShotClassifier(model, ["dress", "shirt"])      # doctest: +SKIP
    >>> clf.predict(image_vectors)                               # doctest: +SKIP
    ['dress', ...]
    >>> clf.suggest(image_vectors, top=2)[0]                     # doctest: +SKIP
    [('dress', 0.83), ('shirt', 0.17)]
    >>> ZeroShotClassifier(model, ["trouser", "bag"], names={"trouser": ["trousers"]})   # doctest: +SKIP
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np

from fclip_workbench.errors import FclipError
from fclip_workbench.search.index import normalize
from fclip_workbench.embedding.models import EmbeddingModel
from fclip_workbench.data.prompts import ZERO_SHOT_PROMPTS, fill_prompts


def class_weights(model: EmbeddingModel, labels: Sequence[str], prompts: Sequence[str] = ZERO_SHOT_PROMPTS,
                  names: Mapping[str, Iterable[str]] | None = None, store=None, **cache) -> np.ndarray:
    """(n_labels, dim) unit vectors: the mean of each label's prompt embeddings, renormalised.

    `names` (label -> names to prompt with) replaces a label's own text; labels
    it does not list are prompted as themselves. Bad names: `FclipError` (`check_names`).
    `store` (an `EmbeddingStore`) keeps the prompts' vectors: each is embedded once per model space
    (`cache`: `space=`, `stats=` of `embed.encode_texts_cached`).
    """
    named = check_names(labels, names)
    texts_of = [[t for name in named.get(label, (label,)) for t in fill_prompts(name, prompts)] for label in labels]
    texts = [t for texts in texts_of for t in texts]
    if store is not None:
        from fclip_workbench.embedding.embed import encode_texts_cached

        emb = encode_texts_cached(model, texts, store, **cache)  # (sum of texts, dim)
    else:
        emb = model.encode_texts(texts)  # (sum of texts, dim)
    bounds = np.cumsum([0] + [len(t) for t in texts_of])
    return normalize(np.stack([emb[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]))  # (L, dim)


def _name_list(value: object) -> tuple[str, ...] | None:
    """A label's names as a tuple without repeats (a set sorted, for a fixed order); None when unusable."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or isinstance(value, Mapping):
        return None
    items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
    if not items or not all(isinstance(n, str) and n.strip() for n in items):
        return None
    return tuple(dict.fromkeys(n.strip() for n in items))


def check_names(labels: Sequence[str], names: Mapping[str, Iterable[str]] | None) -> dict[str, tuple[str, ...]]:
    """`names` checked and normalised (label -> tuple of stripped names, repeats dropped); `{}` for None.

    Refused with one `FclipError` line: a key that is no label (the label of the same
    spelling ignoring case is suggested), names that are not a non-empty list of
    non-blank strings, and two labels left with the same texts (one could never win).

    >>> check_names(["trouser", "bag"], {"trouser": ("trousers", "pants", "trousers")})
    {'trouser': ('trousers', 'pants')}
    >>> check_names(["bag"], {"Bag ": ["handbag"]})
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.FclipError: names describes label(s) ['Bag '] that are not among the labels ['bag'] (did you mean 'bag'?)
    """
    if names is None:
        return {}
    if not isinstance(names, Mapping):
        raise FclipError(f"names must map a label to its names, e.g. {{'trouser': ['trousers']}}; got {names!r}")
    known = set(labels)
    unknown = [k for k in names if k not in known]
    if unknown:
        folded = {str(label).strip().casefold(): label for label in labels}
        hints = [folded[str(k).strip().casefold()] for k in unknown if str(k).strip().casefold() in folded]
        shown = list(labels)[:20]
        raise FclipError(f"names describes label(s) {unknown!r} that are not among the labels {shown!r}"
                         + (" ..." if len(labels) > 20 else "")
                         + (f" (did you mean {', '.join(repr(h) for h in hints)}?)" if hints else ""))
    out, bad = {}, []
    for k, v in names.items():
        got = _name_list(v)
        if got is None:
            bad.append(k)
        else:
            out[k] = got
    if bad:
        raise FclipError(f"names of label(s) {bad!r} must be a non-empty list of non-blank strings, "
                         f"e.g. ['trousers', 'pants']; got {[names[k] for k in bad]!r}")
    texts_of: dict[frozenset, list[str]] = {}
    for label in labels:
        texts_of.setdefault(frozenset(n.casefold() for n in out.get(label, (str(label).strip(),))), []).append(label)
    same = [group for group in texts_of.values() if len(group) > 1]
    if same:
        raise FclipError(f"names leave labels {same[0]!r} with the same texts, so only the first could ever be "
                         "predicted; give each label names of its own")
    return out


def check_labels(labels: Sequence[str]) -> None:
    """Raise `FclipError` unless `labels` is a non-empty list of distinct, non-blank strings.

    >>> check_labels(["dress", "Dress "])
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.FclipError: Zero-shot labels must be unique; repeated: ['dress', 'Dress '] (compared without case and surrounding spaces)
    """
    if isinstance(labels, str):
        raise FclipError(f"Zero-shot labels must be a list of strings, not the string {labels!r}")
    if len(labels) == 0:
        raise FclipError("ZeroShotClassifier needs at least one label; got an empty list")
    blank = [i for i, label in enumerate(labels) if not isinstance(label, str) or not label.strip()]
    if blank:
        raise FclipError(f"Zero-shot labels must be non-empty strings; label(s) at position(s) {blank} are "
                         f"{[labels[i] for i in blank]!r}")
    counts = Counter(label.strip().casefold() for label in labels)
    repeated = [label for label in labels if counts[label.strip().casefold()] > 1]
    if repeated:
        raise FclipError(f"Zero-shot labels must be unique; repeated: {repeated!r} "
                         "(compared without case and surrounding spaces)")


class ZeroShotClassifier:
    """Scores images against label prompts; `suggest` gives ranked labels with probabilities."""

    def __init__(self, model: EmbeddingModel, labels: Sequence[str], prompts: Sequence[str] = ZERO_SHOT_PROMPTS,
                 temperature: float = 100.0, names: Mapping[str, Iterable[str]] | None = None) -> None:
        check_labels(labels)
        self.labels = list(labels)
        self.weights = class_weights(model, self.labels, prompts, names)  # (L, dim); names checked before embedding
        self.temperature = temperature

    def scores(self, image_vectors: np.ndarray) -> np.ndarray:
        """(n, L) cosine similarities."""
        return normalize(image_vectors) @ self.weights.T

    def predict_proba(self, image_vectors: np.ndarray) -> np.ndarray:
        z = self.temperature * self.scores(image_vectors)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, image_vectors: np.ndarray) -> list[str]:
        return [self.labels[i] for i in self.scores(image_vectors).argmax(axis=1)]

    def suggest(self, image_vectors: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]]:
        """For each image the `top` labels (at most all labels) with their probabilities, best first."""
        if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
            raise FclipError(f"top must be a whole number >= 1, got {top!r}")
        p = self.predict_proba(image_vectors)  # (n, L)
        order = np.argsort(-p, axis=1, kind="stable")[:, :top]  # (n, min(top, L)), ties keep label order
        return [[(self.labels[j], float(p[i, j])) for j in row] for i, row in enumerate(order)]
