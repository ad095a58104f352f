import numpy as np
import pytest

from fclip_workbench.index import ExactIndex, FaissIndex, blend, build_index, load_index, normalize


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
    idx = build_index(vecs, ids, kind)
    again = load_index(idx.save(tmp_path / kind))
    assert again.search(vecs[:3], 4)[1] == idx.search(vecs[:3], 4)[1]


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
