"""A tiny random transformers CLIPModel, converted to open_clip, embeds identically."""
import numpy as np
import pytest
import torch

from fclip_workbench.errors import CheckpointError
from fclip_workbench.embedding.hf_convert import hf_state_dict_to_open_clip
from fclip_workbench.embedding.models import load_model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=77, vocab_size=49408),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           image_size=64, patch_size=16),
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    folder = tmp_path_factory.mktemp("hf-clip")
    model.save_pretrained(folder)
    return folder, model


def test_converted_embeddings_match_transformers(hf_clip_dir):
    folder, hf = hf_clip_dir
    ours = load_model(folder, device="cpu")
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 64, 64)
    tokens = ours.tokenizer(["a red dress", "navy blue shirt for men", "shoe"])  # (3, 77)
    with torch.no_grad():
        out = hf(input_ids=tokens, pixel_values=pixels)  # image_embeds / text_embeds are L2-normalised
        ref_img, ref_txt = out.image_embeds, out.text_embeds
    img = ours.encode_images(pixels)
    txt = ours.encode_texts(["a red dress", "navy blue shirt for men", "shoe"])
    assert img.shape == (3, 24) and txt.shape == (3, 24)
    assert np.abs(img - ref_img.numpy()).max() <= 1e-4
    assert np.abs(txt - ref_txt.numpy()).max() <= 1e-4


def test_wrong_state_dict_is_a_clear_error():
    with pytest.raises(CheckpointError, match="missing"):
        hf_state_dict_to_open_clip({"foo": torch.zeros(1)}, {"vision_cfg": {"layers": 1}, "text_cfg": {"layers": 1}})
