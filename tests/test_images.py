"""The image pipeline's salt: it changes with anything that changes the pixels a model sees."""
from types import SimpleNamespace

import PIL

from fclip_workbench.embedding import images
from fclip_workbench.embedding.images import image_pipeline_salt


def test_salt_is_stable_and_follows_preprocessing():
    a = SimpleNamespace(preprocess_cfg={"size": 224, "mean": (0.5, 0.5, 0.5)})
    assert image_pipeline_salt(a) == image_pipeline_salt(SimpleNamespace(preprocess_cfg={"mean": (0.5, 0.5, 0.5),
                                                                                        "size": 224}))
    assert image_pipeline_salt(a) != image_pipeline_salt(SimpleNamespace(preprocess_cfg={"size": 256,
                                                                                        "mean": (0.5, 0.5, 0.5)}))
    assert image_pipeline_salt(a) != image_pipeline_salt(SimpleNamespace(preprocess_cfg={"size": 224}))


def test_salt_follows_pipeline_and_library_versions(monkeypatch):
    m = SimpleNamespace(preprocess_cfg={"size": 32})
    base = image_pipeline_salt(m)
    monkeypatch.setattr(images, "IMAGE_PIPELINE_VERSION", images.IMAGE_PIPELINE_VERSION + 1)
    bumped = image_pipeline_salt(m)
    monkeypatch.undo()
    monkeypatch.setattr(PIL, "__version__", "0.0.1")
    assert len({base, bumped, image_pipeline_salt(m)}) == 3
