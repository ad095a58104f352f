"""load_model: specs, fingerprints, offline errors, untrusted checkpoints."""
import os
import pickle
import time

import numpy as np
import pytest
import torch

from fclip_workbench.errors import CheckpointError, UnknownModelError, WeightsNotFoundError
from fclip_workbench.models import list_models, load_model, save_model_folder


def test_presets_are_listed():
    names = [p.name for p in list_models()]
    for want in ("fclip-mini", "fashion-clip", "marqo-fashionclip", "marqo-fashionsiglip"):
        assert want in names


def test_tiny_model_embeds_normalised(tiny_model):
    txt = tiny_model.encode_texts(["red dress", "blue shirt"])
    img = tiny_model.encode_images(torch.randn(3, 3, 32, 32))
    assert txt.shape == (2, 16) and img.shape == (3, 16) and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)


def test_fingerprint_is_stable_and_sensitive(tiny_model_dir, tmp_path):
    a, b = load_model(tiny_model_dir, device="cpu"), load_model(tiny_model_dir, device="cpu")
    assert a.fingerprint == b.fingerprint
    with torch.no_grad():
        a.model.logit_scale.add_(1e-3)
    changed = save_model_folder(a.model, a.model_cfg, a.preprocess_cfg, tmp_path / "changed")
    assert load_model(changed, device="cpu").fingerprint != b.fingerprint


def test_weights_file_beside_config_loads(tiny_model_dir, tiny_model):
    m = load_model(tiny_model_dir / "open_clip_model.safetensors", device="cpu")
    assert m.fingerprint == tiny_model.fingerprint


def test_unknown_model_lists_presets():
    with pytest.raises(UnknownModelError, match="Known presets: .*fashion-clip"):
        load_model("fashion-clp")


def test_offline_hub_spec_fails_at_once_with_where_and_how(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    t = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e:
        load_model("marqo-fashionclip")
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    assert "Marqo/marqo-fashionCLIP" in msg and "cache" in msg and "huggingface-cli download" in msg


def test_pickled_code_in_checkpoint_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text((tiny_model_dir / "open_clip_config.json").read_text())

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with open(folder / "open_clip_pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Boom()}, f)
    with pytest.raises(CheckpointError, match="safely"):
        load_model(folder)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_from_elsewhere_is_a_clear_error(tiny_model_dir, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text((tiny_model_dir / "open_clip_config.json").read_text())
    from safetensors.torch import save_file
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(folder / "open_clip_model.safetensors"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(folder)


def test_bare_file_and_unknown_folder(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="bare weights file"):
        load_model(tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="neither"):
        load_model(tmp_path)
