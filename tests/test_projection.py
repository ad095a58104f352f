"""UMAPProjector: scikit-learn conventions, a map that keeps clusters apart, the on-disk cache."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (check_get_params_invariance, check_no_attributes_set_in_init,
                                            check_parameters_default_constructible, check_set_params)

import json

from fclip_workbench.errors import InvalidArgumentError, SpaceMismatchError
from fclip_workbench.analysis.projection import UMAPProjector
from fclip_workbench.embedding.space import EmbeddingSpace


def space(weights="a", dim=32):
    return EmbeddingSpace(weights * 32, "fp32", "c" * 16, dim, model=f"m-{weights}")


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
    ({"random_state": -1}, np.zeros((5, 4)), "random_state must be"),
    ({"random_state": 1.5}, np.zeros((5, 4)), "random_state must be"),
    ({"space": "fclip-mini"}, np.zeros((5, 4)), "space must be an EmbeddingSpace"),
])
def test_bad_input_is_one_clear_error(kwargs, X, match, tmp_path):
    with pytest.raises(InvalidArgumentError, match=match):
        UMAPProjector(cache_dir=tmp_path, **kwargs).fit(X)


def _near_copy_drift(p, X, rng) -> float:
    """Largest distance from a near-copy (1% noise) of a fitted point to that point, as a share of the map's extent."""
    rows = rng.choice(len(X), 12, replace=False)
    copies = X[rows] + 0.01 * rng.normal(size=X[rows].shape).astype(np.float32) / np.sqrt(X.shape[1])
    placed = p.transform(copies)
    extent = float(np.ptp(p.embedding_, axis=0).max())
    return float(np.linalg.norm(placed - p.embedding_[rows], axis=1).max() / extent)


@pytest.mark.parametrize("random_state", [None, 7])
def test_near_copies_land_near_their_originals_with_or_without_a_seed(tmp_path, random_state):
    """random_state=None used to refit an unseeded UMAP after a cache hit: new near-copies landed on another map
    (10.6 units away on a map 6.5 wide). The seed is now drawn, recorded and reused."""
    X, _ = blobs(n_per=50)
    rng = np.random.default_rng(0)
    fresh = UMAPProjector(n_neighbors=10, pca_components=8, random_state=random_state, cache_dir=tmp_path).fit(X)
    assert isinstance(fresh.seed_, int) and (random_state is None or fresh.seed_ == random_state)
    assert _near_copy_drift(fresh, X, rng) < 0.1
    cached = UMAPProjector(n_neighbors=10, pca_components=8, random_state=random_state, cache_dir=tmp_path).fit(X)
    assert cached.cache_hit_ and cached.seed_ == fresh.seed_ and cached.umap_ is None
    np.testing.assert_array_equal(cached.embedding_, fresh.embedding_)
    assert _near_copy_drift(cached, X, rng) < 0.1


def test_a_rebuilt_map_that_differs_falls_back_to_neighbours_on_the_cached_map(tmp_path, monkeypatch):
    X, _ = blobs(n_per=50)
    UMAPProjector(n_neighbors=10, pca_components=8, cache_dir=tmp_path).fit(X)
    p = UMAPProjector(n_neighbors=10, pca_components=8, cache_dir=tmp_path).fit(X)
    assert p.cache_hit_
    monkeypatch.setattr(p, "seed_", p.seed_ + 1)  # another seed: another layout, as another CPU might give
    assert _near_copy_drift(p, X, np.random.default_rng(1)) < 0.1
    assert p.umap_ is None  # the differing model is not used


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", ["foreign vectors", "other space", "nan", "shape", "params", "old layout",
                                    "truncated"])
def test_a_damaged_or_foreign_cache_is_rebuilt_never_served(tmp_path, damage, caplog):
    X, _ = blobs(n_per=20)
    make = lambda: UMAPProjector(n_neighbors=5, pca_components=8, space=space(), cache_dir=tmp_path)  # noqa: E731
    good = make().fit(X)
    path = good.cache_path(X)
    if damage == "foreign vectors":  # another matrix's map copied under this name
        other = make().fit(X[::-1].copy())
        path.write_bytes(other.cache_path(X[::-1].copy()).read_bytes())
    elif damage == "other space":
        _rewrite(path, space=np.array(json.dumps(space("b").to_dict())))
    elif damage == "nan":
        _rewrite(path, embedding=np.full((60, 2), np.nan, np.float32))
    elif damage == "shape":
        _rewrite(path, embedding=np.zeros((59, 2), np.float32))
    elif damage == "params":
        _rewrite(path, params=np.array(json.dumps({"n_neighbors": 99})))
    elif damage == "old layout":
        with np.load(path) as z:
            np.savez(path, embedding=z["embedding"], params=z["params"])
    else:
        path.write_bytes(path.read_bytes()[:100])
    again = make().fit(X)
    assert again.cache_hit_ is False and np.isfinite(again.embedding_).all() and again.embedding_.shape == (60, 2)
    assert "rebuilding the projection cache" in caplog.text
    assert make().fit(X).cache_hit_  # rewritten with a good one


def test_the_map_records_its_space_and_refuses_another(tmp_path):
    X, _ = blobs(n_per=20)
    p = UMAPProjector(n_neighbors=5, pca_components=8, space=space(), cache_dir=tmp_path).fit(X)
    assert p.space_ == space()
    p.check_space(space())
    with pytest.raises(SpaceMismatchError, match=r"projection was made in space m-a .* not in m-b") as e:
        p.check_space(space("b"))
    assert "\n" not in str(e.value)
    with pytest.raises(SpaceMismatchError, match=r"shape \(60, 32\), but its space .* is 16-d"):
        UMAPProjector(space=space(dim=16), cache_dir=tmp_path).fit(X)
    # the same numbers in another space are another cache entry, not a collision
    UMAPProjector(n_neighbors=5, pca_components=8, space=space("b"), cache_dir=tmp_path).fit(X)
    assert len(list(tmp_path.glob("umap-*.npz"))) == 2


def _place_few(p, X, y, rows, rng) -> tuple[float, bool]:
    """Near-copies (1% noise) of fitted rows `rows`, placed together: the largest distance to those rows' map
    points as a share of the map's extent, and whether each landed in its original's cluster (nearest map point)."""
    copies = X[rows] + 0.01 * rng.normal(size=X[rows].shape).astype(np.float32) / np.sqrt(X.shape[1])
    placed = p.transform(copies)
    assert placed.shape == (len(rows), 2) and placed.dtype == np.float32 and np.isfinite(placed).all()
    extent = float(np.ptp(p.embedding_, axis=0).max())
    nearest = ((placed[:, None] - p.embedding_[None]) ** 2).sum(-1).argmin(1)
    drift = float(np.linalg.norm(placed - p.embedding_[rows], axis=1).max() / extent)
    return drift, bool((y[nearest] == y[rows]).all())


@pytest.mark.parametrize("how", ["fresh", "cache hit", "rebuilt map differs"])
def test_one_or_two_new_points_are_placed_beside_their_originals(tmp_path, monkeypatch, how):
    """transform used to refuse fewer than 3 points ("a map needs at least 3 items"); placing 1 or 2 needs no refit
    of the map: UMAP's transform (or the neighbour placement) puts each against the fitted points. Measured when
    written: at most 7% of the extent (1.6 on a map 21 wide, its three clusters ~10 apart, each of radius 0.8)."""
    X, y = blobs(n_per=50)
    p = UMAPProjector(n_neighbors=10, pca_components=8, random_state=3, cache_dir=tmp_path).fit(X)
    if how != "fresh":
        p = UMAPProjector(n_neighbors=10, pca_components=8, random_state=3, cache_dir=tmp_path).fit(X)
        assert p.cache_hit_ and p.umap_ is None
    if how == "rebuilt map differs":
        monkeypatch.setattr(p, "seed_", p.seed_ + 1)
    rng = np.random.default_rng(0)
    for rows in ([17], [75], [149], [3, 140], [60, 61]):
        drift, same_cluster = _place_few(p, X, y, rows, rng)
        assert drift < 0.1 and same_cluster, (rows, drift)
    assert (p.umap_ is None) == (how == "rebuilt map differs")
    one = X[[17]] + 1e-3
    np.testing.assert_array_equal(p.transform(one), p.transform(one))  # deterministic


def test_no_new_points_is_an_empty_map_and_bad_few_points_are_one_line(tmp_path):
    X, _ = blobs(n_per=20)
    p = UMAPProjector(n_neighbors=5, pca_components=None, cache_dir=tmp_path).fit(X)
    for empty in (np.zeros((0, X.shape[1]), np.float32), [], np.array([])):
        out = p.transform(empty)
        assert out.shape == (0, 2) and out.dtype == np.float32
    for bad, word in [(np.zeros((0, 3)), "3 dimensions"), (np.zeros((1, 3)), "3 dimensions"),
                      (np.full((1, X.shape[1]), np.nan), r"non-finite .* in 1 row\(s\), first \[0\]"),
                      (np.r_[X[:1], np.full((1, X.shape[1]), np.inf)], r"in 1 row\(s\), first \[1\]"),
                      (X[0], "2-d"), ([["a"] * X.shape[1]], "numeric"), ([[0.0], [0.0, 1.0]], "numeric")]:
        with pytest.raises(InvalidArgumentError, match=word) as e:
            p.transform(bad)
        assert "\n" not in str(e.value)
