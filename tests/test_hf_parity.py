"""load_model(HF CLIP folder) embeds real KAGL images and titles as transformers' own pipeline does.

A random tiny `CLIPModel` is saved WITH its `CLIPProcessor` (a tiny byte-level BPE
tokenizer built here, and an image processor whose shortest_edge differs from its
crop size), then compared against `CLIPProcessor` + `CLIPModel.get_*_features`.
"""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from fclip_workbench.embedding.models import load_model
from tests.conftest import dataset_path

transformers = pytest.importorskip("transformers")
N_ITEMS = 16


def _byte_chars() -> list[str]:
    """GPT-2 / CLIP byte-level alphabet: one printable character per byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tiny_clip_tokenizer(specials_last: bool = True):
    """A CLIPTokenizer over bytes (+ a few merges): no download.

    Specials last (OpenAI's layout) make <|endoftext|> the highest id; otherwise merged
    tokens such as "men</w>" come after it, and argmax pooling would miss the EOS.
    """
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    merges = [("s", "h"), ("i", "r"), ("sh", "ir"), ("e", "n</w>"), ("m", "en</w>"), ("b", "l")]
    specials = ["<|startoftext|>", "<|endoftext|>"]
    for token in ([a + b for a, b in merges] + specials if specials_last else specials + [a + b for a, b in merges]):
        vocab.setdefault(token, len(vocab))
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def kagl_items() -> tuple[list, list[str]]:
    """The first 16 KAGL products with an image: PIL images and titles (tests carry needs_data("kagl"))."""
    root = dataset_path("kagl")
    images, titles = [], []
    with open(root / "styles.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            path = root / "images" / f"{row['id']}.jpg"
            if path.is_file() and row.get("productDisplayName"):
                images.append(Image.open(path).copy())
                titles.append(row["productDisplayName"])
            if len(images) == N_ITEMS:
                break
    if len(images) < N_ITEMS:
        pytest.fail(f"only {len(images)} KAGL images found in {root / 'images'}")
    return images, titles


VARIANTS = {
    "gelu": dict(hidden_act="gelu"),
    "quick_gelu": dict(hidden_act="quick_gelu"),
    "eps1e-6": dict(hidden_act="quick_gelu", layer_norm_eps=1e-6),
    "eos-not-highest-id": dict(hidden_act="gelu", specials_last=False),  # pooling must look for eos_token_id
    "legacy-eos-2": dict(hidden_act="gelu", legacy_eos=True),  # eos_token_id 2: transformers pools at argmax
}


def _save_hf_clip(folder, hidden_act: str, layer_norm_eps: float = 1e-5, legacy_eos: bool = False,
                  specials_last: bool = True):
    tok = tiny_clip_tokenizer(specials_last)
    common = dict(hidden_act=hidden_act, layer_norm_eps=layer_norm_eps)
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=77, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                         eos_token_id=2 if legacy_eos else tok.eos_token_id, pad_token_id=tok.pad_token_id, **common),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, **common),
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # LayerNorm weights away from 1/0, so the pooling position matters
                p.add_(torch.randn_like(p) * 0.5)
            if "embedding" in name and layer_norm_eps != 1e-5:  # variance ~1e-6: the eps changes the output
                p.mul_(0.05)
    processor = transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 40},
                                                        crop_size={"height": 32, "width": 32}),
        tokenizer=tok)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model


def _features(out) -> torch.Tensor:
    """transformers 5 returns a model output with the projected features as pooler_output; 4.x a tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


def _worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


@pytest.mark.needs_data("kagl")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_load_model_matches_transformers_pipeline_on_kagl(variant, kagl_items, tmp_path):
    images, titles = kagl_items
    hf = _save_hf_clip(tmp_path, **VARIANTS[variant])
    processor = transformers.CLIPProcessor.from_pretrained(tmp_path)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]  # (16, 3, 32, 32)
        text_in = processor(text=titles, padding=True, truncation=True, max_length=77, return_tensors="pt")
        ref_img = _features(hf.get_image_features(pixel_values=pixels)).numpy()  # (16, 24)
        ref_txt = _features(hf.get_text_features(**text_in)).numpy()  # (16, 24)

    ours = load_model(tmp_path, device="cpu")
    assert ours.image_size == 32 and ours.preprocess_cfg["resize_size"] == 40
    img = ours.encode_pil(images)  # (16, 24)
    txt = ours.encode_texts(titles)  # (16, 24)
    assert img.shape == txt.shape == (N_ITEMS, 24)
    assert _worst_cosine(img, ref_img) >= 0.9999, variant
    assert _worst_cosine(txt, ref_txt) >= 0.9999, variant


@pytest.mark.needs_data("kagl")
def test_preprocessing_and_tokenizer_are_the_processors(kagl_items, tmp_path):
    """Same pixels and token ids as CLIPProcessor (shortest edge 40 -> crop 32), not open_clip's defaults."""
    images, titles = kagl_items
    _save_hf_clip(tmp_path, "quick_gelu")
    processor = transformers.CLIPProcessor.from_pretrained(tmp_path)
    ours = load_model(tmp_path, device="cpu")
    ref = processor(images=images[:4], return_tensors="pt")["pixel_values"]
    got = torch.stack([ours.preprocess(im) for im in images[:4]])
    assert got.shape == ref.shape == (4, 3, 32, 32)
    assert (got - ref).abs().max() < 1e-4
    ids = processor(text=titles[:4], padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
    assert torch.equal(ours.tokenizer(titles[:4]), ids)


def test_tokenizer_and_resize_are_in_the_fingerprint(tmp_path):
    """Same weights, another vocabulary or another resize: another fingerprint (no stale cached embeddings)."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (a, b, c):
        _save_hf_clip(folder, "quick_gelu")
    tok = tiny_clip_tokenizer()
    extra = transformers.CLIPTokenizer(vocab={**tok.get_vocab(), "zz": len(tok)}, merges=[("z", "z")])
    extra.save_pretrained(b)
    ip = transformers.CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 32, "width": 32})
    transformers.CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(c)
    fa, fb, fc = (load_model(f, device="cpu").fingerprint for f in (a, b, c))
    assert fa == load_model(a, device="cpu").fingerprint
    assert len({fa, fb, fc}) == 3


@pytest.mark.needs_data("kagl")
def test_converted_model_saved_in_open_clip_format_keeps_tokenizer_and_preprocessing(kagl_items, tmp_path):
    """What training does with a converted model (save_model_folder) loads back identical, same fingerprint."""
    from fclip_workbench.embedding.models import save_model_folder

    images, titles = kagl_items
    _save_hf_clip(tmp_path / "hf", "gelu", specials_last=False)
    a = load_model(tmp_path / "hf", device="cpu")
    save_model_folder(a.model, a.model_cfg, a.preprocess_cfg, tmp_path / "oc", tokenizer=a.tokenizer)
    b = load_model(tmp_path / "oc", device="cpu")
    assert b.fingerprint == a.fingerprint
    np.testing.assert_allclose(b.encode_texts(titles[:4]), a.encode_texts(titles[:4]), atol=1e-6)
    np.testing.assert_allclose(b.encode_pil(images[:4]), a.encode_pil(images[:4]), atol=1e-6)
