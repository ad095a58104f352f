import numpy as np
import pytest

from fclip_workbench.search.index import ExactIndex, FaissIndex, blend, build_index, normalize
from fclip_workbench.search.saved import load_index, save_index
from fclip_workbench.embedding.space import EmbeddingSpace


def space(dim: int, weights: str = "a") -> EmbeddingSpace:
    return EmbeddingSpace(weights * 32, "fp32", "b" * 16, dim, model=f"test-{weights}")


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return normalize(rng.normal(size=(500, 32))), [f"i{j}" for j in range(500)]


def test_exact_and_faiss_agree(data):
    vecs, ids = data
    q = vecs[:5] + 0.01
    s1, r1 = ExactIndex(vecs, ids).search(q, k=7)
    s2, r2 = FaissIndex(vecs, ids).search(q, k=7)
    assert r1 == r2
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert [r[0] for r in r1] == ids[:5]
    assert np.all(np.diff(s1, axis=1) <= 1e-7)  # best first


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_save_load_roundtrip(data, tmp_path, kind):
    vecs, ids = data
    idx = build_index(vecs, ids, kind, space=space(32))
    again = load_index(save_index(idx, tmp_path / kind))
    assert again.search(vecs[:3], 4)[1] == idx.search(vecs[:3], 4)[1]
    assert again.space == space(32) and again.image_weight == 1.0


def test_k_larger_than_index(data):
    vecs, ids = data
    scores, res = ExactIndex(vecs[:3], ids[:3]).search(vecs[:1], k=10)
    assert len(res[0]) == 3


def test_blend():
    img, txt = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(blend(img, txt, 1.0), img)
    np.testing.assert_allclose(np.linalg.norm(blend(img, txt, 0.3), axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError):
        blend(img, txt, 1.5)


def test_unknown_kind(data):
    with pytest.raises(ValueError, match="exact"):
        build_index(*data, kind="annoy")


# ------------------------------------------------------------------ k edge cases, NaN weights, HNSW
@pytest.mark.parametrize("kind", ["exact", "faiss"])
@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_k_below_one_is_refused(data, kind, k):
    """k <= 0 used to return n - 3 rows (exact) or abort inside FAISS; now a one-line FclipError."""
    from fclip_workbench.errors import FclipError

    vecs, ids = data
    with pytest.raises(FclipError, match="k must be") as err:
        build_index(vecs, ids, kind).search(vecs[:1], k=k)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_k_larger_than_index_returns_everything_best_first(data, kind):
    vecs, ids = data
    scores, res = build_index(vecs[:4], ids[:4], kind).search(vecs[:2], k=50)
    assert scores.shape == (2, 4) and [len(r) for r in res] == [4, 4]
    assert sorted(res[0]) == ids[:4] and res[0][0] == ids[0] and res[1][0] == ids[1]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_empty_index_returns_no_results(kind):
    scores, res = build_index(np.zeros((0, 8), np.float32), [], kind).search(np.ones((1, 8), np.float32), k=5)
    assert scores.shape == (1, 0) and res == [[]]


def test_blend_rejects_nan_and_bad_weights():
    from fclip_workbench.errors import FclipError

    img, txt = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    for bad in (float("nan"), -0.1, 5, "half"):
        with pytest.raises(FclipError, match="image_weight"):
            blend(img, txt, bad)
    np.testing.assert_allclose(blend(img, txt, 0.0), txt)


@pytest.fixture(scope="module")
def unit_2000():
    rng = np.random.default_rng(1)
    vecs = normalize(rng.normal(size=(2000, 64)))  # (2000, 64)
    queries = normalize(rng.normal(size=(100, 64)))  # (100, 64)
    return vecs, [f"v{j}" for j in range(2000)], queries


def _recall_at_10(approx: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


def test_hnsw_recall_against_exact(unit_2000):
    """FAISS's default efSearch (16) gives poor recall on this set; the index sets a wider beam."""
    vecs, ids, queries = unit_2000
    _, exact = ExactIndex(vecs, ids).search(queries, k=10)
    _, approx = FaissIndex(vecs, ids, method="hnsw").search(queries, k=10)
    assert _recall_at_10(approx, exact) >= 0.95


def test_hnsw_save_load_roundtrip_keeps_recall(unit_2000, tmp_path):
    vecs, ids, queries = unit_2000
    idx = FaissIndex(vecs, ids, method="hnsw", space=space(64))
    again = load_index(save_index(idx, tmp_path / "hnsw"))
    assert isinstance(again, FaissIndex) and again.method == "hnsw" and len(again) == 2000
    s1, r1 = idx.search(queries, k=10)
    s2, r2 = again.search(queries, k=10)
    assert r1 == r2
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    _, exact = ExactIndex(vecs, ids).search(queries, k=10)
    assert _recall_at_10(r2, exact) >= 0.95
