"""Vectors are keyed by what they came from: the bytes decoded (not an earlier read) and the embedding space."""
import shutil

import numpy as np
import pytest

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.embedding.embed import embed_images, embed_texts, image_model_key
from fclip_workbench.errors import SpaceMismatchError
from fclip_workbench.embedding.images import file_digest, load_rgb
from fclip_workbench.embedding.space import EmbeddingSpace
from fclip_workbench.embedding.store import EmbeddingStore


class RewritingStore(EmbeddingStore):
    """A store whose file hashing is followed, at once, by another process rewriting one image."""

    def __init__(self, path, victim, replacement):
        super().__init__(path)
        self.victim, self.replacement = victim, replacement

    def file_digests(self, paths):
        out = super().file_digests(paths)
        shutil.copyfile(self.replacement, self.victim)  # rewritten between the hash and the decode
        return out


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_file_rewritten_after_hashing_gets_the_vector_of_its_new_bytes(tiny_model, small_catalog_dir, tmp_path,
                                                                         num_workers):
    images = small_catalog_dir / "images"
    victim, other = images / "p0.jpg", images / "p9.jpg"
    old_digest, new_digest = file_digest(victim), file_digest(other)
    store = RewritingStore(tmp_path / "s.sqlite", victim, other)
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=images)
    res = embed_images(tiny_model, cat, store, batch_size=4, num_workers=num_workers, progress=False)
    want = tiny_model.encode_pil([load_rgb(other)])[0]  # the picture now in p0.jpg
    np.testing.assert_allclose(res.vectors[res.ids.index("p0")], want, atol=1e-5)
    key = image_model_key(tiny_model)
    assert old_digest not in store.get_many(key, "image", [old_digest])  # never another picture under its hash
    np.testing.assert_allclose(store.get_many(key, "image", [new_digest])[new_digest], want, atol=1e-5)


def test_store_rows_of_another_width_are_never_served(tiny_model, small_catalog_dir, tmp_path):
    store = EmbeddingStore(tmp_path / "s.sqlite")
    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    digest = file_digest(small_catalog_dir / "images" / "p0.jpg")
    wide = np.ones((1, tiny_model.space.dim + 3), np.float32)
    store.put_many(image_model_key(tiny_model), "image", [digest], wide / np.linalg.norm(wide), normalised=True)
    res = embed_images(tiny_model, cat, store, batch_size=4, num_workers=0, progress=False)
    assert res.vectors.shape[1] == tiny_model.space.dim and res.n_computed == 12
    assert embed_texts(tiny_model, cat, store, progress=False).vectors.shape[1] == tiny_model.space.dim


def test_the_space_follows_the_weights_precision_and_pipeline_and_cannot_be_set(tiny_model_dir):
    import torch

    from fclip_workbench.embedding.models import load_model

    model = load_model(tiny_model_dir, device="cpu")
    before = model.space
    assert isinstance(before, EmbeddingSpace) and before.dim == model.dim and before.precision == "fp32"
    with pytest.raises(AttributeError):
        model.space = before
    with pytest.raises(AttributeError):  # frozen
        before.dim = 3
    with torch.no_grad():
        next(model.model.parameters()).add_(0.01)  # fine-tuning in place
    after = model.space
    assert after != before and after.weights == model.base_fingerprint
    with pytest.raises(SpaceMismatchError, match=r"not in .*\[" + after.weights[:12]):
        before.check(after, "index 'v1'")
    model.preprocess_cfg = {**model.preprocess_cfg, "interpolation": "bilinear"}
    assert model.space.image_pipeline != after.image_pipeline


@pytest.mark.parametrize("record, why", [
    (None, "records no embedding space"),
    ({"weights": "ab" * 16, "precision": "fp32", "image_pipeline": "cd" * 8}, "lacks dim"),
    ({"weights": "not hex", "precision": "fp32", "image_pipeline": "cd" * 8, "dim": 8}, "damaged"),
    ({"weights": "ab" * 16, "precision": "fp32", "image_pipeline": "cd" * 8, "dim": -1}, "damaged"),
    ({"weights": "ab" * 16, "precision": "fp32", "image_pipeline": "cd" * 8, "dim": "8"}, "damaged"),
    ({"weights": "ab" * 16, "precision": "<script>", "image_pipeline": "cd" * 8, "dim": 8}, "damaged"),
    ([1, 2], "records no embedding space"),
])
def test_a_damaged_space_record_is_one_line(record, why):
    with pytest.raises(SpaceMismatchError, match=why) as info:
        EmbeddingSpace.from_dict(record, where="index folder 'v1'")
    assert "\n" not in str(info.value) and "index folder 'v1'" in str(info.value)


def test_vectors_are_checked_against_the_space():
    space = EmbeddingSpace("ab" * 16, "fp32", "cd" * 8, 4, model="m")
    space.check_vectors(np.eye(4, dtype=np.float32), "index")
    with pytest.raises(SpaceMismatchError, match="4-d"):
        space.check_vectors(np.eye(3, dtype=np.float32), "index")
    with pytest.raises(SpaceMismatchError, match="non-finite"):
        space.check_vectors(np.full((2, 4), np.nan, np.float32), "index")
