"""Grounding maps: every method finds the one region a model looks at; maps have the image's size;
bad queries and images are refused before any work."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.grounding.maps import GroundingExplainer, Preprocessor, Prepared
from fclip_workbench.grounding.metrics import pointing_game
from fclip_workbench.embedding.models import EmbeddingModel

H, W = 32, 48  # the test photo: wider than tall, so a transposed map cannot pass


class RegionCLIP(torch.nn.Module):
    """A CLIP whose image tower sees only `region` (S x S bool) of its input: the similarity
    depends on that region alone. Its one text ("target") points from the blank image's
    embedding to the test photo's, so the region raises that similarity."""

    def __init__(self, visual: torch.nn.Module, region: torch.Tensor) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("region", region[None, None].float())  # (1, 1, S, S)
        self.register_buffer("table", torch.zeros(2, visual.output_dim))  # row 0: any text, row 1: "target"

    def encode_image(self, pixels: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.visual(pixels * self.region)
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        f = self.table[tokens[:, 0]]
        return F.normalize(f, dim=-1) if normalize else f


def photo() -> np.ndarray:
    """(H, W, 3): flat grey, red and yellow stripes in the top-right quarter (the region)."""
    img = np.full((H, W, 3), 90, np.uint8)
    stripes = np.where((np.arange(H // 2) // 2 % 2 == 0)[:, None, None], (230, 40, 40), (250, 220, 60))
    img[: H // 2, W // 2:] = stripes.astype(np.uint8)
    return img


def region_in_image() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[: H // 2, W // 2:] = True
    return m


def build(tower: str) -> EmbeddingModel:
    import open_clip
    from open_clip.modified_resnet import ModifiedResNet

    torch.manual_seed(0)
    if tower == "vit":
        size = 32
        visual = open_clip.CLIP(embed_dim=16, vision_cfg={"image_size": size, "patch_size": 8, "layers": 2,
                                                           "width": 32, "head_width": 16},
                                text_cfg={"context_length": 4, "vocab_size": 10, "width": 8, "heads": 1,
                                          "layers": 1}).visual
        with torch.no_grad():
            visual.positional_embedding.zero_()  # tokens outside the region are all alike
    else:
        size = 64  # last stage 2 x 2: the region is one of its cells
        visual = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=16, heads=2, image_size=size, width=16)
        with torch.no_grad():
            visual.attnpool.positional_embedding.zero_()
    region = torch.zeros(size, size, dtype=torch.bool)
    region[: size // 2, size // 2:] = True
    clip = RegionCLIP(visual, region).eval()
    cfg = {"size": size, "resize_mode": "squash"}
    x = Preprocessor.for_model(type("M", (), {"preprocess_cfg": cfg})(), "auto")(
        __import__("PIL.Image").Image.fromarray(photo())).x
    with torch.no_grad():
        clip.table[1] = clip.encode_image(x, True)[0] - clip.encode_image(torch.zeros_like(x), True)[0]
    vocab = {"target": 1}
    return EmbeddingModel(model=clip, preprocess=None,
                          tokenizer=lambda texts: torch.tensor([[vocab.get(t, 0)] for t in texts]),
                          name=f"region-{tower}", fingerprint="test", device=torch.device("cpu"),
                          model_cfg={"embed_dim": 16}, preprocess_cfg=cfg)


@pytest.fixture(scope="module", params=["vit", "resnet"])
def region_model(request):
    return request.param, build(request.param)


FAST = {"paper": {"pixel_size": 8, "canvas": 64}, "integrated_gradients": {"n_steps": 8}}


@pytest.mark.parametrize("method", list(GroundingExplainer.methods()))
def test_every_method_peaks_in_the_region_the_model_sees(region_model, method):
    tower, model = region_model
    if method == "gradcam" and tower == "vit":
        with pytest.raises(InvalidArgumentError, match="gradcam.*grad_eclip"):
            GroundingExplainer(model, method=method).attribute(photo(), "target")
        return
    ex = GroundingExplainer(model, method=method, **FAST.get(method, {}))
    m = ex.attribute(photo(), "target")
    assert m.shape == (H, W) and m.dtype == np.float32 and np.isfinite(m).all()
    assert m.max() > m.min(), f"{method} on {tower}: a flat map"
    # every maximal pixel lies inside the region (no tolerance)
    assert pointing_game(m, region_in_image(), tolerance=0) == 1.0, \
        f"{method} on {tower}: peak at {np.unravel_index(m.argmax(), m.shape)}, region is rows <16, cols >=24"
    assert ex.last_seconds_ > 0


def test_multiscale_grad_eclip_and_noise_tunnel_peak_in_the_region(region_model):
    _, model = region_model
    for ex in (GroundingExplainer(model, method="grad_eclip", multiscale=True),
               GroundingExplainer(model, method="integrated_gradients", n_steps=6, noise_tunnel=True, nt_samples=2)):
        m = ex.attribute(photo(), "target")
        assert m.shape == (H, W)
        assert pointing_game(m, region_in_image(), tolerance=0) == 1.0


@pytest.mark.parametrize("method", ["occlusion", "grad_eclip", "paper"])
def test_several_texts_give_one_map_each(region_model, method):
    _, model = region_model
    ex = GroundingExplainer(model, method=method, **FAST.get(method, {}))
    maps = ex.attribute(photo(), ["target", "something else", "target"])
    assert maps.shape == (3, H, W)
    np.testing.assert_allclose(maps[0], maps[2], rtol=1e-3, atol=1e-4)  # batched texts do not mix
    single = ex.attribute(photo(), "target")
    np.testing.assert_allclose(maps[0], single, rtol=1e-3, atol=1e-4)


def test_maps_of_a_real_tiny_clip_have_the_image_size(tiny_model, tmp_path):
    from PIL import Image

    path = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (37, 23, 3), dtype=np.uint8)).save(path)
    for method in ("occlusion", "saliency", "grad_eclip", "ablation"):
        m = GroundingExplainer(tiny_model, method=method).attribute(path, ["a red dress", "shoes"])
        assert m.shape == (2, 37, 23), method


def test_letterbox_maps_back_to_the_image_pixels():
    from PIL import Image

    pre = Preprocessor(size=20, fit="pad")
    prep = pre(Image.new("RGB", (40, 20)))  # 2:1 -> a 20 x 10 band in the middle of the 20 x 20 input
    assert prep.box == (5, 0, 10, 20) and prep.size == (20, 40)
    inp = torch.zeros(1, 20, 20)
    inp[0, 5:10, 10:20] = 1  # top-right quarter of the image part
    back = prep.to_image(inp)[0]
    assert back.shape == (20, 40)
    assert back[:9, 21:].min() > 0.9 and back[11:, :19].max() < 0.1
    assert isinstance(prep, Prepared)


# ------------------------------------------------------------------ bad input: one clear error, before work
@pytest.mark.parametrize("text", ["", "   ", [], ["shoes", " "]])
def test_empty_query_is_refused(tiny_model, text):
    with pytest.raises(InvalidArgumentError, match="query"):
        GroundingExplainer(tiny_model, method="occlusion").attribute(photo(), text)


def test_unreadable_image_is_refused(tiny_model, tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_text("not an image")
    ex = GroundingExplainer(tiny_model, method="saliency")
    with pytest.raises(InvalidArgumentError, match="photo.jpg"):
        ex.attribute(bad, "shoes")
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        ex.attribute(tmp_path / "missing.png", "shoes")
    with pytest.raises(InvalidArgumentError, match=r"\(H, W, 3\)"):
        ex.attribute(np.zeros((4, 4)), "shoes")


def test_unknown_method_and_option_are_named(tiny_model):
    with pytest.raises(InvalidArgumentError, match="'occlusionn'.*known: paper"):
        GroundingExplainer(tiny_model, method="occlusionn")
    with pytest.raises(InvalidArgumentError, match="patch_size.*options: patch, stride"):
        GroundingExplainer(tiny_model, method="occlusion", patch_size=3)
    with pytest.raises(InvalidArgumentError, match="fit"):
        GroundingExplainer(tiny_model, fit="crop")


def test_methods_are_listed_with_a_description():
    methods = GroundingExplainer.methods()
    assert {"paper", "occlusion", "ablation", "integrated_gradients", "saliency", "gradcam", "grad_eclip",
            "crops"} <= set(methods)
    from fclip_workbench.cli import GROUNDING_METHODS

    assert set(GROUNDING_METHODS) == set(methods)  # the CLI offers every method
    assert all(isinstance(v, str) and v for v in methods.values())
    assert GroundingExplainer.DEFAULT == "auto"


def test_auto_picks_grad_eclip_for_vit_and_crops_otherwise(region_model):
    tower, model = region_model
    ex = GroundingExplainer(model)
    assert ex.method == ("grad_eclip" if tower == "vit" else "crops")
    assert pointing_game(ex.attribute(photo(), "target"), region_in_image(), tolerance=0) == 1.0


@pytest.mark.parametrize("options, what", [
    ({"scales": ()}, "scales"), ({"scales": (0.0, 0.3)}, "scales"), ({"scales": (1.0,)}, "scales"),
    ({"scales": "0.3"}, "scales"), ({"scales": (0.3, "0.2")}, "scales"), ({"scales": (None,)}, "scales"),
    ({"scales": iter([0.2])}, "scales"), ({"overlap": 0}, "overlap"), ({"overlap": 1000}, "overlap"),
    ({"grid": 1}, "grid"), ({"grid": 100_000}, "grid"), ({"scales": (0.02,), "overlap": 32}, "windows"),
])
def test_crops_refuses_bad_options_before_scoring(region_model, options, what):
    _, model = region_model
    big = np.full((400, 600, 3), 90, np.uint8)  # 0.02 of it, 32 per axis: 150,000 windows
    with pytest.raises(InvalidArgumentError, match=what):
        GroundingExplainer(model, method="crops", **options).attribute(big, "target")


def test_crops_takes_one_scale_as_a_number_and_keeps_tiny_images(region_model):
    _, model = region_model
    assert GroundingExplainer(model, method="crops", scales=0.5).attribute(photo(), "target").shape == (H, W)
    tiny = GroundingExplainer(model, method="crops").attribute(np.full((1, 2, 3), 200, np.uint8), ["a", "b"])
    assert tiny.shape == (2, 1, 2) and np.isfinite(tiny).all()


def test_the_papers_own_reference_misses_a_region_nothing_distracts_from(region_model):
    """The authors score bands against the intact photo: a band holding the whole region scores like
    the photo and gains nothing, so the map is noise or flat. The default (grey reference) finds it.
    Shown on the ViT region model: on the ResNet one the grey canvas itself shifts the batch-normalised
    features, so whether the intact reference misses the region depends on the random init."""
    tower, model = region_model
    if tower != "vit":
        pytest.skip("the intact-reference defect is shown on the ViT region model (see docstring)")
    intact = GroundingExplainer(model, method="paper", reference="intact", pixel_size=8, canvas=64)
    m = intact.attribute(photo(), "target")
    assert m.max() == m.min() or pointing_game(m, region_in_image(), tolerance=0) < 1.0
    with pytest.raises(InvalidArgumentError, match="reference"):
        GroundingExplainer(model, method="paper", reference="black").attribute(photo(), "target")


# ------------------------------------------------------------------ CLI and widget
def test_cli_ground_writes_a_png_and_refuses_bad_input(tiny_model_dir, tmp_path, capsys):
    from PIL import Image

    from fclip_workbench.cli import main

    path = tmp_path / "p.png"
    Image.fromarray(photo()).save(path)
    out = tmp_path / "map.png"
    rc = main(["ground", str(path), "red stripes", "shoes", "--method", "saliency", "grad_eclip",
               "--model", str(tiny_model_dir), "--device", "cpu", "-o", str(out), "--save-maps", str(tmp_path / "m.npy")])
    assert rc == 0 and out.is_file()
    assert np.load(tmp_path / "m.npy").shape == (2, 2, H, W)
    assert "saliency:" in capsys.readouterr().out
    assert main(["ground", str(path), "  ", "--model", str(tiny_model_dir)]) == 2
    assert "empty query" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    assert main(["ground", str(bad), "shoes", "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "bad.jpg" in err and len(err.strip().splitlines()) == 1
    assert main(["ground", str(path), "shoes", "-o", str(tmp_path / "map.txt"), "--model", str(tiny_model_dir)]) == 2


def test_grounding_panel_shows_maps_and_errors(tiny_model, small_catalog_dir):
    from fclip_workbench.data.catalog import Catalog
    from fclip_workbench.widgets import GroundingPanel

    cat = Catalog.from_csv(small_catalog_dir / "products.csv", image_root=small_catalog_dir / "images")
    panel = GroundingPanel(tiny_model, cat, query="red shirt, bag", methods=("saliency", "grad_eclip"))
    html = [o["data"]["text/html"] for o in panel.out.outputs if "text/html" in o.get("data", {})]
    assert len(html) == 1 and html[0].count("<figure") == 4 and "s per map" in html[0]
    panel.query = " , "
    panel.run()
    assert "query" in "".join(o.get("text", "") for o in panel.out.outputs)
    panel.selection = "upload"
    panel.query = "shoes"
    panel.run()
    assert "no photo uploaded" in "".join(o.get("text", "") for o in panel.out.outputs)
