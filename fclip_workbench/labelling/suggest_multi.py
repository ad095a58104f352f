"""Suggestions for a multi-valued field: one calibrated, INDEPENDENT probability per value (a sigmoid each).

Per value v: before labels, the zero-shot score is the cosine of the image with v's prompt vector, turned
into a probability by one pooled Platt scaling `sigmoid(a * cos + b)` fitted on the labelled items (or a
fixed prior scale with none); once v has enough positive and negative labels, a per-value logistic probe on
the image embedding (with the zero-shot cosine as one more feature) replaces it. `calibrate` fits a
Platt scaling of the logits on held-out labelled items. `binary_ece` measures the calibration over all
(item, value) pairs.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> tw = np.eye(3, 8, dtype=np.float32)                          # (V=3, d=8) prompt vectors
    >>> x = rng.normal(size=(200, 8)).astype(np.float32)             # (n, d)
    >>> y = (x[:, :3] > 0).astype(int)                               # (n, V) the sets as 0/1
    >>> s = MultiSuggester(["a", "b", "c"], tw).fit(x[:150], y[:150])
    >>> p = s.predict_proba(x[150:]); p.shape, bool(((p > 0.5) == y[150:]).mean() > 0.9)
    ((50, 3), True)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from fclip_workbench.errors import InvalidArgumentError

MIN_PER_CLASS = 5  # a per-value probe needs this many positive AND negative labels
ZERO_SHOT_SCALE = (20.0, -5.0)  # sigmoid(a * cos + b) before any label: a CLIP-like logit scale, low prior


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def _platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of sigmoid(a * z + b) fitted to 0/1 `y` (pooled over values); identity when one class."""
    z, y = np.ravel(z), np.ravel(y).astype(int)
    if y.min() == y.max():
        return 1.0, 0.0
    lr = LogisticRegression(C=100.0, max_iter=1000).fit(z[:, None], y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def labels_matrix(sets: Sequence[Sequence[str]], values: Sequence[str]) -> np.ndarray:
    """(n, V) 0/1 matrix of item sets over `values`; a value outside `values` is an error.

    >>> labels_matrix([["a"], ["a", "c"], []], ["a", "b", "c"]).tolist()
    [[1, 0, 0], [1, 0, 1], [0, 0, 0]]
    """
    pos = {v: j for j, v in enumerate(values)}
    y = np.zeros((len(sets), len(values)), dtype=np.int64)
    for i, s in enumerate(sets):
        for v in s:
            if v not in pos:
                raise InvalidArgumentError(f"value {v!r} of item {i} is not one of the field's {len(values)} values")
            y[i, pos[v]] = 1
    return y


class MultiSuggester:
    """Independent per-value probabilities for a multi-valued field.

    Args:
        values: the field's values (V,), in display order.
        text_vectors: (V, d) prompt vectors (`analysis.zeroshot.class_weights`), or None (probes only).
    """

    def __init__(self, values: Sequence[str], text_vectors: np.ndarray | None = None) -> None:
        self.values = list(values)
        if not self.values:
            raise InvalidArgumentError("a multi-valued field needs at least one value to suggest")
        self.tw = None if text_vectors is None else _unit(text_vectors)  # (V, d)
        if self.tw is not None and self.tw.shape[0] != len(self.values):
            raise InvalidArgumentError(f"{self.tw.shape[0]} prompt vectors for {len(self.values)} values")
        self.zs = ZERO_SHOT_SCALE
        self.probes: dict[int, LogisticRegression] = {}
        self.cal = (1.0, 0.0)  # Platt scaling of the logits (held-out)

    def _cos(self, x: np.ndarray) -> np.ndarray:
        if self.tw is None:
            return np.zeros((len(x), len(self.values)), dtype=np.float32)
        return _unit(x) @ self.tw.T  # (n, V)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "MultiSuggester":
        """Fit on labelled items: x (n, d) embeddings, y (n, V) 0/1 sets (`labels_matrix`)."""
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
        if y.shape != (len(x), len(self.values)):
            raise InvalidArgumentError(f"labels of shape {y.shape} do not match {len(x)} items x "
                                       f"{len(self.values)} values")
        cos = self._cos(x)
        if self.tw is not None and len(x):
            self.zs = _platt(cos, y)
        self.probes = {}
        feats = np.hstack([_unit(x), cos])  # (n, d + V)
        for j in range(len(self.values)):
            pos = int(y[:, j].sum())
            if pos >= MIN_PER_CLASS and len(y) - pos >= MIN_PER_CLASS:
                self.probes[j] = LogisticRegression(C=1.0, max_iter=500).fit(feats, y[:, j])
        return self

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(n, V) uncalibrated logits: the probe where a value has one, else the zero-shot Platt logit."""
        cos = self._cos(np.asarray(x, dtype=np.float32))
        z = self.zs[0] * cos + self.zs[1]
        if self.probes:
            feats = np.hstack([_unit(x), cos])
            for j, lr in self.probes.items():
                z[:, j] = lr.decision_function(feats)
        return z

    def calibrate(self, x: np.ndarray, y: np.ndarray) -> "MultiSuggester":
        """Platt-scale the logits on held-out labelled items (x (n, d), y (n, V) 0/1)."""
        self.cal = _platt(self.logits(x), np.asarray(y))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, V) independent probabilities that each value is in the item's set."""
        a, b = self.cal
        return _sigmoid(a * self.logits(x) + b).astype(np.float32)

    def suggest(self, x: np.ndarray, threshold: float = 0.5) -> list[list[tuple[str, float]]]:
        """Per item, the values at or above `threshold` with their probabilities, most likely first."""
        p = self.predict_proba(x)
        return [[(self.values[j], float(row[j])) for j in np.argsort(-row) if row[j] >= threshold] for row in p]


def binary_ece(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Calibration error of independent probabilities: every (item, value) pair binned by p into
    `n_bins` equal-width bins; |rate of 1s - mean p| per bin weighted by its share.

    >>> binary_ece(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([[1, 0], [1, 0]]), n_bins=10)
    0.15
    """
    p, y = np.ravel(p).astype(np.float64), np.ravel(y).astype(np.float64)
    if p.shape != y.shape or not len(p):
        raise InvalidArgumentError(f"{p.size} probabilities for {y.size} labels")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    err = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            err += m.mean() * abs(y[m].mean() - p[m].mean())
    return round(float(err), 6)
