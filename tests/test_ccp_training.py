"""fclip-mini v2's data and recipe: CCP crops from a fixed photo split, domain augmentation, presets."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.data.datasets.ccp import ccp_is_heldout, ccp_training_rows, garment_boxes
from fclip_workbench.errors import CatalogError
from fclip_workbench.training import RECIPES, TrainConfig, get_recipe
from fclip_workbench.training.data import colour_free_templates, pick_captions
from fclip_workbench.training.domain import DomainMix, domain_augment, domain_views
from fclip_workbench.training.mix import V2_CAPTIONS, kagl_alias, v2_catalog

LABELS = ["null", "skin", "hair", "shoes", "dress", "bag"]
MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


def make_ccp(root, n=20):
    """A CCP-shaped folder: n photos 60 x 90, a dress (rows 10-50) and shoes (rows 70-85) in each mask."""
    (root / "photos").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "label_list.json").write_text(json.dumps(LABELS))
    for i in range(n):
        arr = np.full((90, 60, 3), 200, np.uint8)
        mask = np.zeros((90, 60), np.uint8)
        mask[10:50, 15:45], arr[10:50, 15:45] = 4, (180, 20, 20)  # dress
        mask[70:85, 20:40], arr[70:85, 20:40] = 3, (20, 20, 20)  # shoes
        mask[0:8, 25:35] = 2  # hair: never a garment
        Image.fromarray(arr).save(root / "photos" / f"{i:04d}.jpg")
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")
    return root


def test_heldout_split_is_a_fixed_hash_of_the_photo_id():
    ids = [f"{i:04d}" for i in range(699)]
    held = ccp_is_heldout(ids, 0.3)
    assert 0.25 < held.mean() < 0.35
    assert (ccp_is_heldout(list(reversed(ids)), 0.3) == held[::-1]).all()  # per id, not per position
    assert not ccp_is_heldout(ids, 0.0).any()
    with pytest.raises(CatalogError, match="fraction"):
        ccp_is_heldout(ids, 1.5)


def test_garment_boxes_skip_skin_hair_and_small_regions():
    mask = np.zeros((100, 100), np.uint8)
    mask[10:60, 20:70] = 4
    mask[90:92, 0:5] = 5  # 0.1 % of the image: below min_share
    mask[0:30, 0:30] = 2  # hair
    assert garment_boxes(mask, LABELS) == [("dress", (20, 10, 70, 60))]


def test_crops_come_only_from_training_photos(tmp_path):
    root = make_ccp(tmp_path / "ccp")
    rows, split = ccp_training_rows(root, tmp_path / "crops", fraction=0.3)
    held = set(split["heldout_photo_ids"])
    assert held and len(held) < 20 and split["rule"] == "ccp-photo-hash-v1"
    photos = {i.split(":")[1] for i in rows["item_id"]}
    assert photos == {f"{i:04d}" for i in range(20)} - held  # every training photo, no held-out one
    written = {p.name.split("-")[0].split(".")[0] for p in (tmp_path / "crops").iterdir()}
    assert not written & held  # held-out photos are not even written
    crops = rows[rows["garment"] != ""]
    assert set(crops["garment"]) == {"dress", "shoes"} and set(crops["text"]) == {"dress", "shoes"}
    whole = rows[rows["garment"] == ""]
    assert set(whole["text"]) == {"a person wearing shoes and dress"}
    w, h = Image.open(crops[crops["garment"] == "shoes"]["image"].iloc[0]).size  # box 20 x 15 plus 10 % margin
    assert (w, h) == (24, 17)


def test_v2_catalog_keeps_kagl_first_and_repeats_ccp(tmp_path):
    root = make_ccp(tmp_path / "ccp", n=6)
    (tmp_path / "img").mkdir()
    for i in range(4):
        Image.new("RGB", (60, 80), (255, 255, 255)).save(tmp_path / "img" / f"{i}.jpg")
    kagl = Catalog(pd.DataFrame({"item_id": [str(i) for i in range(4)], "image": [f"{i}.jpg" for i in range(4)],
                                 "text": ["red tee", "blue jeans", "black bag", "pink dress"],
                                 "articleType": ["Tshirts", "Jeans", "Handbags", "Dresses"],
                                 "baseColour": ["Red", "Blue", "Black", "Pink"]}), image_root=tmp_path / "img",
                   name="kagl")
    cat, record = v2_catalog(kagl, root, tmp_path / "crops", heldout=0.3, repeat=2,
                             keep=np.array([True, False, True, True]))
    assert cat.ids[:3] == ["0", "2", "3"] and record["kagl_rows_dropped"] == 1
    n_ccp = record["ccp_rows"]
    assert len(cat) == 3 + 2 * n_ccp and sum(i.endswith("#2") for i in cat.ids) == n_ccp
    assert not cat.problems  # every image path resolves
    assert cat.table["alias"].tolist()[:3] == ["t-shirt", "bag", "dress"]
    with pytest.raises(CatalogError, match="articleType"):
        v2_catalog(Catalog(kagl.table.drop(columns="articleType"), image_root=tmp_path / "img"), root, tmp_path / "c2")


def test_aliases_and_captions():
    assert kagl_alias("Casual Shoes") == "sneakers" and kagl_alias("Perfume and Body Mist") == ""
    assert "a photo of {garment}" in V2_CAPTIONS and V2_CAPTIONS[0] == "{title}"


def test_domain_augment_keeps_shape_and_is_repeatable():
    x = (torch.rand(16, 3, 64, 64) - MEAN) / STD
    a = domain_augment(x.clone(), torch.Generator().manual_seed(3), MEAN, STD, fill=(0.48, 0.48, 0.48))
    b = domain_augment(x.clone(), torch.Generator().manual_seed(3), MEAN, STD, fill=(0.48, 0.48, 0.48))
    c = domain_augment(x.clone(), torch.Generator().manual_seed(4), MEAN, STD, fill=(0.48, 0.48, 0.48))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    raw = a * STD + MEAN
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_silhouettes_are_light_on_black_like_fashion_mnist():
    """A dark garment on white becomes a light garment on black, grey, the white ground black."""
    raw = torch.ones(2, 3, 32, 32)
    raw[:, :, 8:24, 10:22] = torch.tensor([0.6, 0.1, 0.1]).view(1, 3, 1, 1)  # red garment
    mix = DomainMix(zoom=(1.0, 1.0), flip=0.0, silhouette=1.0, light_on_dark=1.0, low_res=0.0, background=0.0)
    out = domain_augment((raw - MEAN) / STD, torch.Generator().manual_seed(0), MEAN, STD, mix) * STD + MEAN
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5) and torch.allclose(out[:, 1], out[:, 2], atol=1e-5)
    assert out[:, :, 0, 0].max() < 0.02  # ground: black
    assert out[:, 0, 16, 16].min() > 0.6  # garment: light (1 - its luminance 0.24)


def test_low_resolution_blurs_to_the_drawn_side():
    x = (torch.rand(4, 3, 64, 64) - MEAN) / STD
    mix = DomainMix(zoom=(1.0, 1.0), flip=0.0, grey=0.0, silhouette=0.0, low_res=1.0, low_res_sides=(28, 28),
                    background=0.0)
    out = domain_augment(x, torch.Generator().manual_seed(0), MEAN, STD, mix) * STD + MEAN
    small = torch.nn.functional.interpolate(out, size=(28, 28), mode="area")
    back = torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    assert (out - back).abs().mean() < 0.05  # no detail beyond 28 px left
    assert (x * STD + MEAN - out).abs().mean() > 0.1


def test_recipe_mini_v2_is_registered_and_keeps_the_aspect():
    r = get_recipe("mini-v2")
    assert r.name in RECIPES and r.init is None  # trained from scratch
    assert r.train.split_rule == "id-hash-v1" and (r.train.seed, r.train.val_fraction) == (0, 0.05)  # v1's split
    assert r.preprocess_cfg["resize_mode"] == "longest"  # letterboxed, not squashed
    assert r.train.domain_augment and r.train.ccp_heldout == 0.3 and r.train.colour_free_captions


def test_colourless_views_are_reported_and_get_colour_free_captions():
    x = (torch.rand(64, 3, 32, 32) - MEAN) / STD
    g = torch.Generator().manual_seed(0)
    _, none = domain_views(x, g, MEAN, STD, DomainMix(grey=0.0, silhouette=0.0))
    _, every = domain_views(x, g, MEAN, STD, DomainMix(grey=1.0, silhouette=0.0))
    _, some = domain_views(x, g, MEAN, STD, DomainMix(grey=0.3, silhouette=0.3))
    assert not none.any() and every.all() and 0 < some.sum() < 64
    assert colour_free_templates(V2_CAPTIONS) == ("{articleType}", "a photo of a {articleType}",
                                                   "{usage} {articleType}", "{alias}", "a photo of a {alias}",
                                                   "a photo of {garment}", "a person wearing {garment}")
    table, n = torch.tensor([[0, 1], [2, -1], [3, -1]]), torch.tensor([2, 1, 1])  # ordinary captions
    plain, plain_n = torch.tensor([[10, 11], [12, -1], [-1, -1]]), torch.tensor([2, 1, 0])  # colour-free ones
    batch = torch.tensor([0, 1, 2] * 50)
    ids = pick_captions(batch, table, n, torch.Generator().manual_seed(1), torch.ones(150, dtype=torch.bool), plain, plain_n)
    assert set(ids[batch == 0].tolist()) == {10, 11} and set(ids[batch == 1].tolist()) == {12}
    assert set(ids[batch == 2].tolist()) == {3}  # no colour-free caption: the ordinary one stays
    coloured = pick_captions(batch, table, n, torch.Generator().manual_seed(1), torch.zeros(150, dtype=torch.bool),
                             plain, plain_n)
    assert set(coloured[batch == 0].tolist()) == {0, 1}


def test_colour_free_captions_need_the_domain_augmentation():
    with pytest.raises(Exception, match="colour_free_captions"):
        TrainConfig(colour_free_captions=True)


def test_train_share_needs_the_ccp_data():
    with pytest.raises(Exception, match="train_share"):
        TrainConfig(train_share=0.5)
    with pytest.raises(Exception, match="ccp_repeat"):
        TrainConfig(ccp_heldout=0.3, ccp_repeat=0)


def test_new_v2_model_letterboxes_at_96_px():
    from fclip_workbench.training import new_model

    v2 = new_model("mini-v2", device="cpu")
    pixels = v2.preprocess(Image.new("RGB", (60, 80), (255, 255, 255)))  # a KAGL-sized white image
    raw = pixels * STD[0] + MEAN[0]  # (3, 96, 96)
    assert raw.shape == (3, 96, 96)
    assert torch.allclose(raw[:, :, :10], torch.full_like(raw[:, :, :10], 122 / 255), atol=0.02)  # side bars
    assert raw[:, :, 14:82].min() > 0.97  # the image itself: 72 x 96, aspect 3:4 kept


def test_versioned_presets_load_distinct_weights():
    from fclip_workbench.embedding.models import PRESETS, WEIGHTS_DIR, load_model

    assert {"fclip-mini", "fclip-mini@1", "fclip-mini@2"} <= set(PRESETS)
    v1 = load_model("fclip-mini@1", device="cpu", progress=False)
    assert v1.preprocess_cfg["resize_mode"] == "squash"
    if not (WEIGHTS_DIR / "fclip-mini-v2" / "open_clip_config.json").is_file():
        pytest.skip("fclip-mini v2 weights not shipped in this checkout")
    v2 = load_model("fclip-mini@2", device="cpu", progress=False)
    assert v2.fingerprint != v1.fingerprint and v2.preprocess_cfg["resize_mode"] == "longest"
    assert (WEIGHTS_DIR / "fclip-mini-v2" / "open_clip_model.safetensors").stat().st_size <= 30e6
    default = load_model("fclip-mini", device="cpu", progress=False)
    assert default.fingerprint == v2.fingerprint  # the best shipped version


def test_training_with_ccp_never_sees_heldout_photos(tmp_path, monkeypatch):
    """A real (tiny) run with CCP data: training.json records the split; no held-out photo is trained on."""
    from fclip_workbench.data.splits import ID_RULE
    from fclip_workbench.embedding.store import EmbeddingStore
    from fclip_workbench.training import train

    make_ccp(tmp_path / "data" / "ccp", n=20)
    monkeypatch.setenv("FCLIP_DATA", str(tmp_path / "data"))
    (tmp_path / "img").mkdir()
    types = ["Tshirts", "Jeans", "Handbags", "Dresses"]
    for i in range(24):
        Image.new("RGB", (60, 80), (40 * (i % 6), 90, 200)).save(tmp_path / "img" / f"{i}.jpg")
    kagl = Catalog(pd.DataFrame({"item_id": [str(i) for i in range(24)], "image": [f"{i}.jpg" for i in range(24)],
                                 "text": [f"product {i}" for i in range(24)],
                                 "articleType": [types[i % 4] for i in range(24)],
                                 "baseColour": ["Blue"] * 24}), image_root=tmp_path / "img", name="kagl")
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, warmup_steps=1, val_fraction=0.1, split_rule=ID_RULE,
                      captions=V2_CAPTIONS, domain_augment=True, ccp_heldout=0.3, ccp_repeat=2, max_steps=2,
                      colour_free_captions=True)
    res = train(kagl, cfg, tmp_path / "run", recipe="tiny-teaching", store=EmbeddingStore(tmp_path / "e.sqlite"),
                num_workers=0, progress=False)
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    held = set(summary["data"]["ccp_split"]["heldout_photo_ids"])
    assert held == {f"{i:04d}" for i, h in enumerate(ccp_is_heldout([f"{i:04d}" for i in range(20)], 0.3)) if h}
    trained = (tmp_path / "run" / "train_ids.txt").read_text().split()
    assert any(t.startswith("ccp:") for t in trained)
    assert not {t.split(":")[1].split("#")[0] for t in trained if t.startswith("ccp:")} & held
    assert res.n_train == len(trained) and summary["config"]["domain_augment"] is True
