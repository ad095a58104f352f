"""Zero-shot classification: class weights from prompt ensembles, then cosine scores.

Example:
    >>> clf = ZeroShotClassifier(model, ["dress", "shirt"])      # doctest: +SKIP
    >>> clf.predict(image_vectors)                               # doctest: +SKIP
    ['dress', ...]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .index import normalize
from .models import EmbeddingModel
from .prompts import ZERO_SHOT_PROMPTS, fill_prompts


def class_weights(model: EmbeddingModel, labels: Sequence[str], prompts: Sequence[str] = ZERO_SHOT_PROMPTS) -> np.ndarray:
    """(n_labels, dim) unit vectors: the mean of each label's prompt embeddings, renormalised."""
    texts = [t for label in labels for t in fill_prompts(label, prompts)]
    emb = model.encode_texts(texts).reshape(len(labels), len(prompts), -1)  # (L, P, dim)
    return normalize(emb.mean(axis=1))


class ZeroShotClassifier:
    """Scores images against label prompts; `suggest` gives ranked labels with probabilities."""

    def __init__(self, model: EmbeddingModel, labels: Sequence[str], prompts: Sequence[str] = ZERO_SHOT_PROMPTS,
                 temperature: float = 100.0) -> None:
        if len(labels) == 0:
            raise ValueError("ZeroShotClassifier needs at least one label")
        if len(set(labels)) != len(labels):
            raise ValueError("Labels must be unique")
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
        """For each image the `top` labels with their probabilities, best first."""
        p = self.predict_proba(image_vectors)
        order = np.argsort(-p, axis=1)[:, :top]
        return [[(self.labels[j], float(p[i, j])) for j in row] for i, row in enumerate(order)]
