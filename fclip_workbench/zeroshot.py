"""Zero-shot classification: class weights from prompt ensembles, then cosine scores.

Labels must be non-empty and unique (after stripping spaces); a bad list is a
`FclipError` naming the offending labels.

Example:
    >>> clf = ZeroShotClassifier(model, ["dress", "shirt"])      # doctest: +SKIP
    >>> clf.predict(image_vectors)                               # doctest: +SKIP
    ['dress', ...]
    >>> clf.suggest(image_vectors, top=2)[0]                     # doctest: +SKIP
    [('dress', 0.83), ('shirt', 0.17)]
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from .errors import FclipError
from .index import normalize
from .models import EmbeddingModel
from .prompts import ZERO_SHOT_PROMPTS, fill_prompts


def class_weights(model: EmbeddingModel, labels: Sequence[str], prompts: Sequence[str] = ZERO_SHOT_PROMPTS) -> np.ndarray:
    """(n_labels, dim) unit vectors: the mean of each label's prompt embeddings, renormalised."""
    texts = [t for label in labels for t in fill_prompts(label, prompts)]
    emb = model.encode_texts(texts).reshape(len(labels), len(prompts), -1)  # (L, P, dim)
    return normalize(emb.mean(axis=1))


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
                 temperature: float = 100.0) -> None:
        check_labels(labels)
        self.labels = list(labels)
        self.weights = class_weights(model, self.labels, prompts)  # (L, dim)
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
