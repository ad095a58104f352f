"""UMAPProjector: scikit-learn conventions, a map that keeps clusters apart, the on-disk cache."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (check_get_params_invariance, check_no_attributes_set_in_init,
                                            check_parameters_default_constructible, check_set_params)

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.projection import UMAPProjector


def blobs(n_per=60, dim=32, k=3, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated unit-vector clusters: (n_per*k, dim) vectors and their cluster of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 4
    X = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_get_params_invariance,
                                   check_set_params, check_parameters_default_constructible])
def test_sklearn_conventions(check):
    check("UMAPProjector", UMAPProjector())


def test_not_fitted_before_fit(tmp_path):
    with pytest.raises(NotFittedError):
        UMAPProjector(cache_dir=tmp_path).transform(np.zeros((5, 4)))


def test_map_keeps_clusters_apart_and_caches(tmp_path):
    X, y = blobs()
    p = UMAPProjector(n_neighbors=10, random_state=0, pca_components=8, cache_dir=tmp_path)
    xy = p.fit_transform(X)
    assert xy.shape == (len(X), 2) and xy.dtype == np.float32
    assert p.cache_hit_ is False and p.n_features_in_ == 32 and p.pca_ is not None
    # every point's nearest map neighbour is in its own cluster
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.97
    files = list(tmp_path.glob("umap-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))

    again = UMAPProjector(n_neighbors=10, random_state=0, pca_components=8, cache_dir=tmp_path).fit(X)
    assert again.cache_hit_ is True and again.umap_ is None
    np.testing.assert_array_equal(again.embedding_, xy)
    # other parameters or other data -> another cache entry
    UMAPProjector(n_neighbors=11, random_state=0, pca_components=8, cache_dir=tmp_path).fit(X)
    X2 = X.copy()
    X2[0, 0] += 1e-3
    assert UMAPProjector(n_neighbors=10, random_state=0, pca_components=8, cache_dir=tmp_path).fit(X2).cache_hit_ is False
    assert len(list(tmp_path.glob("umap-*.npz"))) == 3


def test_transform_new_points_after_cache_hit(tmp_path):
    X, y = blobs()
    UMAPProjector(n_neighbors=10, pca_components=None, cache_dir=tmp_path).fit(X)
    p = UMAPProjector(n_neighbors=10, pca_components=None, cache_dir=tmp_path).fit(X)
    assert p.cache_hit_
    np.testing.assert_array_equal(p.transform(X), p.embedding_)
    new = p.transform(X[:5] + 0.01)  # near cluster 0: lands near cluster 0's points
    assert new.shape == (5, 2)
    centres = np.stack([p.embedding_[y == c].mean(0) for c in range(3)])
    assert (((new[:, None] - centres[None]) ** 2).sum(-1).argmin(1) == 0).all()
    with pytest.raises(InvalidArgumentError, match="dimensions"):
        p.transform(np.zeros((4, 3)))


def test_damaged_cache_is_recomputed(tmp_path):
    X, _ = blobs(n_per=20)
    p = UMAPProjector(n_neighbors=5, cache_dir=tmp_path)
    path = p.cache_path(X)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an npz")
    p.fit(X)
    assert p.cache_hit_ is False and p.embedding_.shape == (60, 2)
    assert UMAPProjector(n_neighbors=5, cache_dir=tmp_path).fit(X).cache_hit_  # overwritten with a good one


def test_unwritable_cache_still_returns_the_map(tmp_path, caplog):
    X, _ = blobs(n_per=20)
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache folder should be
    xy = UMAPProjector(n_neighbors=5, cache_dir=blocker / "sub").fit_transform(X)
    assert xy.shape == (60, 2)
    assert "could not cache" in caplog.text


def test_clone_and_default_cache_under_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FCLIP_CACHE", str(tmp_path))
    X, _ = blobs(n_per=10)
    p = clone(UMAPProjector(n_neighbors=4))
    assert p.cache_path(X).parent == tmp_path / "projections"
    p.fit(X)
    assert (tmp_path / "projections").is_dir()


@pytest.mark.parametrize("kwargs, X, match", [
    ({}, np.zeros((2, 4)), "at least 3 items"),
    ({}, np.zeros(5), "2-d"),
    ({}, np.array([[0.0, np.nan]] * 5), r"non-finite .* first \[0, 1, 2, 3, 4\]"),
    ({}, [["a", "b"]] * 4, "numeric"),
    ({"n_neighbors": 1}, np.zeros((5, 4)), "n_neighbors must be"),
    ({"min_dist": 2.0}, np.zeros((5, 4)), "min_dist must be"),
    ({"metric": "cosin"}, np.zeros((5, 4)), "Unknown metric 'cosin'; known: cosine"),
    ({"pca_components": 1}, np.zeros((5, 4)), "pca_components must be"),
])
def test_bad_input_is_one_clear_error(kwargs, X, match, tmp_path):
    with pytest.raises(InvalidArgumentError, match=match):
        UMAPProjector(cache_dir=tmp_path, **kwargs).fit(X)
