"""UMAPProjector: 2-d maps of embeddings, scikit-learn style, cached on disk.

The map of a matrix is stored under `paths.cache_dir() / "projections"` (one `.npz` per
matrix x parameters x embedding space x umap version), so a notebook rerun on the same vectors
is instant. A cache file is never trusted by its name alone: it records the parameters, the
embedding space (`space`, e.g. `model.space`), the content hash of the vectors it was fitted
on and the seed, and is served only when all of them match and the map has the right shape
and finite values; otherwise it is rebuilt (a warning says why).

Placing new points (`transform`) needs the UMAP model of *this* map. A fresh fit has it; after
a cache hit the model is refitted with the recorded seed (`seed_`: `random_state`, or one drawn
and recorded when `random_state` is None), which rebuilds the same map; if the rebuilt map
differs (another CPU or library), new points are placed from their nearest fitted neighbours
on the cached map instead, so they always land beside the points they resemble.
Optionally the vectors go through PCA (default 50 components) before UMAP: the
neighbour search, UMAP's slowest step, then works in 50 instead of 256-512 dimensions.

Example:
    >>> proj = UMAPProjector(n_neighbors=15, random_state=0)          # doctest: +SKIP
    >>> xy = proj.fit_transform(vectors)        # (n_items, 2); cached   # doctest: +SKIP
    >>> proj.cache_hit_                                                 # doctest: +SKIP
    False
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.paths import cache_dir as default_cache_dir
from fclip_workbench.embedding.space import EmbeddingSpace, space_of

if TYPE_CHECKING:
    import pandas

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the cached file's layout or the projection recipe changes (2: space, digest, seed)
SAME_MAP = 1e-3  # a refitted map equals the cached one when every point is within this share of the map's extent
METRICS = ("cosine", "euclidean", "manhattan", "correlation")


def _umap_version() -> str:
    try:
        from importlib.metadata import version
        return version("umap-learn")
    except Exception:  # not installed: reported when fit needs it
        return "absent"


def _check_matrix(X, what: str = "X", min_rows: int = 3) -> np.ndarray:
    """X as a finite (n, d) float32 array with at least `min_rows` rows (3 to fit a map, 0 to place points on
    one), or a one-line InvalidArgumentError.

    >>> _check_matrix([[0.0, 1.0]], min_rows=1).shape
    (1, 2)
    """
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{what} must be a numeric (n_items, dim) matrix: {' '.join(str(e).split())}") \
            from None
    if arr.ndim != 2:
        raise InvalidArgumentError(f"{what} must be a 2-d (n_items, dim) matrix; got shape {arr.shape}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        need = "a map needs at least 3 items" if min_rows >= 3 else f"need at least {min_rows} item(s)"
        raise InvalidArgumentError(f"{what} has shape {arr.shape}: {need} with 1+ dimensions")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InvalidArgumentError(f"{what} has non-finite values (NaN/inf) in {len(rows)} row(s), first "
                                   f"{rows[:5].tolist()}: drop or re-embed them before projecting")
    return np.ascontiguousarray(arr)


def _no_rows(X: Any) -> bool:
    """True for an empty 1-d input (`[]`, `np.array([])`): no points at all.

    >>> _no_rows([]), _no_rows([[0.0]])
    (True, False)
    """
    try:
        return np.shape(X) == (0,)
    except ValueError:  # ragged: _check_matrix says what it is
        return False


def matrix_digest(X: np.ndarray) -> str:
    """Hash of a matrix's shape, dtype and bytes (the cache key's data part).

    >>> matrix_digest(np.zeros((2, 3), np.float32)) == matrix_digest(np.zeros((2, 3), np.float32))
    True
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{X.shape}:{X.dtype}".encode())
    h.update(np.ascontiguousarray(X).data.cast("B"))
    return h.hexdigest()


class UMAPProjector(TransformerMixin, BaseEstimator):
    """UMAP to 2-d with an on-disk cache; fit/transform/fit_transform like scikit-learn.

    Parameters are only stored by `__init__`; fitted attributes end in `_`:
    `embedding_` (n_items, n_components) float32, `n_features_in_`, `cache_key_`,
    `cache_hit_` (True when `fit` read the map from disk), `fit_seconds_`,
    `pca_` (sklearn PCA or None), `umap_` (the umap.UMAP model; None after a cache hit until
    `transform` needs it for new points), `seed_` (the seed the map was made with), `space_`
    (the `EmbeddingSpace` recorded, or None), `fit_digest_` (content hash of the fitted vectors).

    >>> UMAPProjector().transform(np.zeros((4, 2)))
    Traceback (most recent call last):
    ...
    sklearn.exceptions.NotFittedError: This UMAPProjector instance is not fitted yet. Call 'fit' with appropriate arguments before using this estimator.
    """

    def __init__(self, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
                 n_components: int = 2, pca_components: int | None = 50, random_state: int | None = 0,
                 cache_dir: str | Path | None = None, use_cache: bool = True,
                 space: EmbeddingSpace | None = None) -> None:
        self.n_neighbors = n_neighbors  # neighbours per point: larger = more global structure
        self.min_dist = min_dist  # how tightly points pack in the map (0..1)
        self.metric = metric  # distance in the (PCA-reduced) embedding space
        self.n_components = n_components  # 2 for a map
        self.pca_components = pca_components  # PCA to this many dims first (None: no PCA)
        self.random_state = random_state  # fixed seed: same map every run (None: a seed is drawn and recorded)
        self.cache_dir = cache_dir  # None: paths.cache_dir() / "projections"
        self.use_cache = use_cache  # False: always recompute, never write
        self.space = space  # EmbeddingSpace of the vectors (model.space): recorded in the cache and checked

    # ------------------------------------------------------------ checks and keys
    def _check_params(self) -> None:
        if isinstance(self.n_neighbors, bool) or not isinstance(self.n_neighbors, (int, np.integer)) \
                or self.n_neighbors < 2:
            raise InvalidArgumentError(f"n_neighbors must be a whole number >= 2, got {self.n_neighbors!r}")
        if not isinstance(self.min_dist, (int, float)) or not 0.0 <= float(self.min_dist) <= 1.0:
            raise InvalidArgumentError(f"min_dist must be between 0 and 1, got {self.min_dist!r}")
        if self.metric not in METRICS:
            raise InvalidArgumentError(f"Unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if isinstance(self.n_components, bool) or not isinstance(self.n_components, (int, np.integer)) \
                or self.n_components < 1:
            raise InvalidArgumentError(f"n_components must be a whole number >= 1, got {self.n_components!r}")
        if self.pca_components is not None and (isinstance(self.pca_components, bool) or not isinstance(
                self.pca_components, (int, np.integer)) or self.pca_components < self.n_components):
            raise InvalidArgumentError(f"pca_components must be None or a whole number >= n_components "
                                       f"({self.n_components}), got {self.pca_components!r}")
        if self.random_state is not None and (isinstance(self.random_state, bool) or not isinstance(
                self.random_state, (int, np.integer)) or not 0 <= self.random_state < 2 ** 32):
            raise InvalidArgumentError(f"random_state must be None or a whole number in [0, 2**32), "
                                       f"got {self.random_state!r}")
        if self.space is not None and not isinstance(self.space, EmbeddingSpace):
            raise InvalidArgumentError(f"space must be an EmbeddingSpace (model.space) or None, got "
                                       f"{type(self.space).__name__}")

    def check_space(self, model_or_space) -> None:
        """Raise `SpaceMismatchError` (one line, both spaces) unless this map's space is `model_or_space`'s.

        A projector without a recorded space (`space=None`) is not checked.
        """
        if self.space is not None:
            self.space.check(space_of(model_or_space), "projection")

    def _params_key(self) -> dict:
        return {"n_neighbors": int(self.n_neighbors), "min_dist": float(self.min_dist), "metric": self.metric,
                "n_components": int(self.n_components),
                "pca_components": None if self.pca_components is None else int(self.pca_components),
                "random_state": None if self.random_state is None else int(self.random_state),
                "space": None if self.space is None else self.space.key, "umap": _umap_version(), "v": CACHE_VERSION}

    def _folder(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir() / "projections"

    def cache_path(self, X) -> Path:
        """Where the map of `X` with these parameters is (or would be) cached."""
        X = _check_matrix(X)
        return self._folder() / f"umap-{self._key(X)}.npz"

    def _key(self, X: np.ndarray) -> str:
        params = json.dumps(self._params_key(), sort_keys=True)
        return hashlib.blake2b((matrix_digest(X) + params).encode(), digest_size=16).hexdigest()

    # ------------------------------------------------------------ cache
    def _read(self, path: Path, X: np.ndarray, digest: str) -> tuple[np.ndarray, int] | None:
        """(map, seed) from the cache file, or None (absent, unreadable, or not the map of `X` here)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                emb, params, space = z["embedding"], json.loads(str(z["params"])), json.loads(str(z["space"]))
                recorded_digest, seed = str(z["digest"]), int(z["seed"])
        except Exception as e:  # truncated, foreign or older file: rebuilt, never served
            log.warning("rebuilding the projection cache %s: unreadable or of an older layout (%s)", path, e)
            return None
        expected = (len(X), int(self.n_components))
        problem = ("its parameters differ" if params != json.loads(json.dumps(self._params_key())) else
                   "it was fitted on other vectors" if recorded_digest != digest else
                   "it records another embedding space" if space != (None if self.space is None
                                                                      else self.space.to_dict()) else
                   f"its map has shape {emb.shape}, not {expected}" if emb.shape != expected else
                   "its map has non-finite values" if not np.isfinite(emb).all() else "")
        if problem:
            log.warning("rebuilding the projection cache %s: %s", path, problem)
            return None
        return emb.astype(np.float32, copy=False), seed

    def _write(self, path: Path, emb: np.ndarray) -> None:
        """Atomic write (temporary file + rename); a cache that cannot be written is a warning, not a loss."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, embedding=emb, params=json.dumps(self._params_key()), digest=self.fit_digest_,
                             space=json.dumps(None if self.space is None else self.space.to_dict()),
                             seed=np.int64(self.seed_))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            log.warning("could not cache the projection in %s (%s); the map is still returned", path.parent, e)

    # ------------------------------------------------------------ estimator API
    def fit(self, X, y=None) -> "UMAPProjector":
        """Project `X` (n_items, dim); read the map from the cache when it is there and is the map of `X`."""
        self._check_params()
        X = _check_matrix(X)
        if self.space is not None:
            self.space.check_vectors(X, "projection input")
        self.n_features_in_ = X.shape[1]
        self.space_ = self.space
        self.fit_digest_ = matrix_digest(X)
        self.cache_key_ = self._key(X)
        path = self._folder() / f"umap-{self.cache_key_}.npz"
        t0 = time.perf_counter()
        found = self._read(path, X, self.fit_digest_) if self.use_cache else None
        self.cache_hit_ = found is not None
        self.pca_, self.umap_ = None, None
        self._X = X  # kept to fit the model lazily when a cache hit is followed by transform(new points)
        if found is None:
            self.seed_ = int(self.random_state) if self.random_state is not None \
                else int(cast(int, np.random.SeedSequence().entropy) % (2 ** 31))  # drawn from the OS: an int  # recorded: the map can be rebuilt
            emb = self._compute(X)
            if self.use_cache:
                self._write(path, emb)
        else:
            emb, self.seed_ = found
        self.embedding_ = emb  # (n_items, n_components)
        self.fit_seconds_ = time.perf_counter() - t0
        log.info("UMAP of %s: %.1f s (%s)", X.shape, self.fit_seconds_, "cache" if self.cache_hit_ else "computed")
        return self

    def _reduce(self, X: np.ndarray) -> np.ndarray:
        return X if self.pca_ is None else self.pca_.transform(X).astype(np.float32)

    def _compute(self, X: np.ndarray) -> np.ndarray:
        try:
            import umap
        except ImportError as e:
            from fclip_workbench.errors import MissingExtraError
            raise MissingExtraError("UMAP maps need umap-learn: pip install 'fclip-workbench[maps]' "
                                    "(or pip install umap-learn)") from e
        n = len(X)
        if self.pca_components is not None and X.shape[1] > self.pca_components:
            from sklearn.decomposition import PCA
            self.pca_ = PCA(n_components=min(int(self.pca_components), n), random_state=self.seed_).fit(X)
        Z = self._reduce(X)  # (n, pca_components) or (n, dim)
        k = min(int(self.n_neighbors), n - 1)
        if k < self.n_neighbors:
            log.info("n_neighbors %d > n_items - 1; using %d", self.n_neighbors, k)
        self.umap_ = reducer = umap.UMAP(n_neighbors=k, min_dist=float(self.min_dist), metric=self.metric,
                               n_components=int(self.n_components), random_state=self.seed_,
                               n_jobs=1,  # a seed means one thread (umap-learn); the seed makes the map rebuildable
                               init="spectral" if n > self.n_components + 1 else "random")
        return np.asarray(reducer.fit_transform(Z), dtype=np.float32)

    def transform(self, X) -> np.ndarray:
        """Map coordinates (n, n_components): the fitted map for the fitted matrix, else new points placed on it.

        New points go through UMAP's own transform on the model of this very map (after a cache hit,
        refitted with the recorded seed and checked to rebuild the cached map), or, when the
        rebuilt map differs, at the similarity-weighted mean of their nearest fitted points. Any
        number of new points can be placed, one or two as well as many (against the fitted points,
        which do not move); none (shape (0, dim), or `[]`) gives an empty (0, n_components) array.

        >>> proj = UMAPProjector().fit(vectors)                         # doctest: +SKIP
        >>> proj.transform(vectors[:1] + 0.01).shape, proj.transform([]).shape  # doctest: +SKIP
        ((1, 2), (0, 2))
        """
        check_is_fitted(self, "embedding_")
        if _no_rows(X):  # `[]`: no points, whatever the width
            return np.zeros((0, self.embedding_.shape[1]), np.float32)
        X = _check_matrix(X, min_rows=0)
        if X.shape[1] != self.n_features_in_:
            raise InvalidArgumentError(f"X has {X.shape[1]} dimensions; this projector was fitted on "
                                       f"{self.n_features_in_}")
        if len(X) == 0:
            return np.zeros((0, self.embedding_.shape[1]), np.float32)
        if matrix_digest(X) == self.fit_digest_:
            return self.embedding_.copy()
        if self.umap_ is None and not getattr(self, "_rebuild_failed", False):  # fitted from the cache
            log.info("refitting the UMAP model with the recorded seed %d to place new points", self.seed_)
            rebuilt = self._compute(self._X)
            extent = float(np.ptp(self.embedding_, axis=0).max()) or 1.0
            if np.abs(rebuilt - self.embedding_).max() > SAME_MAP * extent:
                log.warning("the refitted UMAP map differs from the cached one (another CPU or library?); "
                            "placing new points by their nearest fitted neighbours on the cached map")
                self.umap_, self._rebuild_failed = None, True
        if self.umap_ is None:
            return self._place_by_neighbours(X)
        return np.asarray(self.umap_.transform(self._reduce(X)), dtype=np.float32)

    def _place_by_neighbours(self, X: np.ndarray) -> np.ndarray:
        """(n, n_components): each new point at the similarity-weighted mean of its k nearest fitted points."""
        k = min(int(self.n_neighbors), len(self._X))
        F = self._X / np.maximum(np.linalg.norm(self._X, axis=1, keepdims=True), 1e-12)
        out = np.empty((len(X), self.embedding_.shape[1]), np.float32)
        for start in range(0, len(X), 1024):
            Q = X[start:start + 1024]
            S = (Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)) @ F.T  # (b, n_fit) cosine
            nb = np.argpartition(-S, k - 1, axis=1)[:, :k]  # (b, k)
            w = np.exp((np.take_along_axis(S, nb, 1) - 1.0) / 0.05)  # closer neighbours weigh more
            out[start:start + len(Q)] = (w[..., None] * self.embedding_[nb]).sum(1) / w.sum(1, keepdims=True)
        return out

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        return self.fit(X).embedding_.copy()

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "embedding_")


# ---------------------------------------------------------------- clusters named by zero-shot labels
def cluster_items(vectors, n_clusters: int = 8, random_state: int | None = 0) -> np.ndarray:
    """Cluster id of each row of `vectors` (n_items, dim): k-means on the unit vectors (cosine).

    MiniBatchKMeans above 20,000 items (seconds, not minutes, on 40k x 256).

    >>> X = np.r_[np.tile([1.0, 0.0], (5, 1)), np.tile([0.0, 1.0], (5, 1))]
    >>> ids = cluster_items(X, n_clusters=2); bool(ids[0] != ids[-1]) and len(set(ids[:5])) == 1
    True
    """
    X = _check_matrix(vectors, "vectors")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not 2 <= n_clusters <= len(X):
        raise InvalidArgumentError(f"n_clusters must be a whole number from 2 to the number of items "
                                   f"({len(X)}), got {n_clusters!r}")
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    from sklearn.cluster import KMeans, MiniBatchKMeans
    if len(X) > 20_000:
        km = MiniBatchKMeans(n_clusters=int(n_clusters), random_state=random_state, n_init=3, batch_size=4096)
    else:
        km = KMeans(n_clusters=int(n_clusters), random_state=random_state, n_init=3)
    return km.fit_predict(X).astype(np.int32)  # (n_items,)


def name_clusters(cluster_ids, label_proba, labels, top: int = 2) -> pandas.DataFrame:  # pandas imported lazily
    """One row per cluster: its size, its `top` most likely labels (mean zero-shot probability) and a name.

    `label_proba` (n_items, n_labels): e.g. `ZeroShotClassifier.predict_proba(vectors)`.

    >>> name_clusters([0, 0, 1], np.array([[.9, .1], [.8, .2], [.3, .7]]), ["dress", "shoe"], top=1)
       cluster  size top_labels top_scores   name
    0        0     2    [dress]     [0.85]  dress
    1        1     1     [shoe]      [0.7]   shoe
    """
    import pandas as pd

    cid = np.asarray(cluster_ids)
    P = np.asarray(label_proba, dtype=np.float64)
    if P.ndim != 2 or len(P) != len(cid) or P.shape[1] != len(labels):
        raise InvalidArgumentError(f"label_proba must be (n_items={len(cid)}, n_labels={len(labels)}); "
                                   f"got shape {P.shape}")
    rows = []
    for c in np.unique(cid):
        mean = P[cid == c].mean(axis=0)  # (n_labels,)
        order = np.argsort(-mean, kind="stable")[:top]
        names = [labels[j] for j in order]
        rows.append({"cluster": int(c), "size": int((cid == c).sum()), "top_labels": names,
                     "top_scores": [round(float(mean[j]), 3) for j in order], "name": " / ".join(names)})
    return pd.DataFrame(rows)


__all__ = ["UMAPProjector", "NotFittedError", "matrix_digest", "cluster_items", "name_clusters"]
