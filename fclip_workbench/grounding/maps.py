"""Grounding maps: where in a photo does a CLIP model see "red stripes"?

`GroundingExplainer(model, method=...)` has one verb, `attribute(image, text)`, which
returns a float array in the image's OWN pixel coordinates: (H, W) for one text,
(n_texts, H, W) for several. Higher = the region raises the image-text similarity
more. Drawing lives in `viz.py`; scores against masks in `grounding_metrics.py`.

Methods (`GroundingExplainer.methods()`):
- `paper`: the FashionCLIP paper's band occlusion (authors' `attention_map.py`), with
  its defects fixed (see `paper_map`);
- `occlusion`: Captum `Occlusion`, a grey square slid over a patch grid;
- `ablation`: Captum `FeatureAblation` over SLIC superpixels (scikit-image; a square
  grid of superpixels when it is not installed);
- `integrated_gradients`: Captum `IntegratedGradients` from the mean-colour image
  (`noise_tunnel=True` wraps it in a SmoothGrad `NoiseTunnel`);
- `saliency`: Captum `Saliency` (|d similarity / d pixel|, max over colour channels);
- `gradcam`: Captum `LayerGradCam` on the last convolutional stage (ResNet towers);
- `grad_eclip`: gradient-weighted value tokens of the last attention step (Grad-ECLIP
  style), for ViT towers (last block, via forward hooks) and ResNet attention pools;
  `multiscale=True` adds four overlapping 2/3-size crops for a twice finer grid;
- `crops`: sliding windows of the photo at several scales, each cut out, scaled to the
  model's input and scored against the texts (suits models trained on garment crops,
  such as fclip-mini v2).

Perturbation methods run their masked images `batch_size` at a time, all texts at once.
The model sees the image as its preprocessing would (`fit="auto"`: squashed for
squash-trained models, else letterboxed on the mean colour so nothing is cropped away).

Example:
    >>> ex = GroundingExplainer(load_model("fclip-mini"), method="occlusion")   # doctest: +SKIP
    >>> ex.attribute("shirt.jpg", "red stripes").shape                          # doctest: +SKIP
    (80, 60)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fclip_workbench.errors import InvalidArgumentError

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FITS = ("auto", "squash", "pad")

METHOD_NOTES = {
    "paper": "FashionCLIP paper: keep one grey-filled band, average positive similarity gains (defects fixed)",
    "occlusion": "Captum Occlusion: grey square slid over a patch grid",
    "ablation": "Captum FeatureAblation over SLIC superpixels",
    "integrated_gradients": "Captum IntegratedGradients from the mean-colour image (optional NoiseTunnel)",
    "saliency": "Captum Saliency: |gradient| per pixel",
    "gradcam": "Captum LayerGradCam on the last convolutional stage (ResNet towers)",
    "grad_eclip": "gradient-weighted value tokens of the last attention step (ViT or ResNet attention pool)",
    "crops": "multi-scale sliding windows cut out of the photo, each scored against the text",
}
# keyword options each method accepts (anything else is refused by name)
METHOD_OPTIONS = {
    "paper": {"pixel_size", "iterations", "canvas", "reference"},
    "occlusion": {"patch", "stride"},
    "ablation": {"n_segments", "compactness"},
    "integrated_gradients": {"n_steps", "noise_tunnel", "nt_samples", "stdev"},
    "saliency": set(),
    "gradcam": {"layer"},
    "crops": {"scales", "overlap", "grid"},
    "grad_eclip": {"multiscale"},
}


# ------------------------------------------------------------------ inputs
WORK_MAX_SIDE = 1024  # px: maps are computed on the photo scaled down to at most this (or 5 x the model's input)
DISPLAY_MAX_SIDE = 1024  # px: `fclip ground` draws and saves maps at most this size


def _bounded(img: Image.Image, max_side: int | None) -> Image.Image:
    """`img` scaled down (aspect kept) so its longer side is at most `max_side`; smaller ones unchanged."""
    if max_side is None or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    factor = max(1, min(img.width // size[0], img.height // size[1]) // 2)
    if factor > 1:  # integer box reduction first: fast, and no full-size float copy
        img = img.reduce(factor)
    return img.resize(size, Image.Resampling.LANCZOS)


def open_image(image, max_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB PIL image with its longer side at most `max_side`, the photo's own (H, W)).

    A JPEG is decoded at a reduced scale (PIL `draft`), so a 10000 x 10000 photo never sits in
    memory at full size. Missing, folder, not an image, truncated, or larger than PIL's
    `Image.MAX_IMAGE_PIXELS` allows (a decompression bomb): one `InvalidArgumentError` line.

    >>> img, size = open_image(np.zeros((40, 60, 3), np.uint8), max_side=30)
    >>> img.size, size
    ((30, 20), (40, 60))
    """
    import warnings

    from PIL import ImageOps, UnidentifiedImageError

    from fclip_workbench.embedding.images import to_rgb

    if not isinstance(image, (str, Path)) or max_side is None:
        img = load_image(image)
        return _bounded(img, max_side), (img.height, img.width)
    path = Path(image)
    if not path.exists():
        raise InvalidArgumentError(f"query image {path} does not exist")
    if path.is_dir():
        raise InvalidArgumentError(f"query image {path} is a folder; give an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decoded reduced, below
            with Image.open(path) as im:
                orientation = im.getexif().get(0x0112, 1)
                w, h = im.size
                if im.format == "JPEG":
                    im.draft("RGB", (max_side, max_side))  # DCT scaling: at least max_side, up to 8x smaller
                im.load()
                im = ImageOps.exif_transpose(im)
                img = _bounded(to_rgb(im), max_side)
    except Image.DecompressionBombError as e:
        raise InvalidArgumentError(f"query image {path} is too large to decode safely: {e}") from e
    except UnidentifiedImageError as e:
        raise InvalidArgumentError(f"cannot use query image: not an image PIL can read: {path}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidArgumentError(f"cannot use query image: corrupt or truncated image {path}: {e}") from e
    own = (w, h) if orientation in (5, 6, 7, 8) else (h, w)  # EXIF rotations by 90 degrees swap the sides
    return img, own


def load_image(image, max_side: int | None = None) -> Image.Image:
    """A path, PIL image or (H, W, 3) uint8 array as an RGB PIL image; a bad one -> InvalidArgumentError.

    `max_side`: scaled down so the longer side is at most that (a JPEG is decoded reduced).

    >>> load_image(np.zeros((4, 6, 3), np.uint8)).size
    (6, 4)
    """
    from fclip_workbench.search.searcher import load_query_image

    if max_side is not None:
        return open_image(image, max_side)[0]
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            raise InvalidArgumentError(f"image array must be (H, W, 3), got shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image).astype(np.uint8), "RGB")
    if isinstance(image, (str, Path, Image.Image)):
        return load_query_image(image)
    raise InvalidArgumentError(f"image must be a file path, a PIL image or an (H, W, 3) array, got {type(image).__name__}")


def check_texts(text: str | Sequence[str]) -> list[str]:
    """The query (or queries) as a list; empty or blank ones -> InvalidArgumentError.

    >>> check_texts("red dress")
    ['red dress']
    """
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise InvalidArgumentError("no query given; pass a text such as 'red stripes'")
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise InvalidArgumentError(f"empty query {t!r}; give a non-empty text such as 'red stripes'")
    return texts


@dataclass
class Prepared:
    """An image as the model sees it, and where it sits in the model's square input."""

    x: torch.Tensor  # (1, 3, S, S) normalised pixels
    box: tuple[int, int, int, int]  # top, left, height, width of the image inside the S x S input
    size: tuple[int, int]  # (H, W) of the original image

    def to_image(self, maps: torch.Tensor) -> np.ndarray:
        """(n, S, S) input-space maps -> (n, H, W) float32 in the image's own pixels."""
        top, left, h, w = self.box
        crop = maps[:, top:top + h, left:left + w].float()  # (n, h, w)
        out = F.interpolate(crop[:, None], size=self.size, mode="bilinear", align_corners=False)[:, 0]
        return out.detach().cpu().numpy().astype(np.float32)

    def to_input(self, image_map: np.ndarray) -> torch.Tensor:
        """(H, W) image-space map -> (S, S) input-space map (outside the image: -inf)."""
        top, left, h, w = self.box
        s = self.x.shape[-1]
        t = torch.as_tensor(np.asarray(image_map, np.float32))[None, None]
        inner = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        out = torch.full((s, s), float("-inf"))
        out[top:top + h, left:left + w] = inner
        return out


class Preprocessor:
    """PIL image -> `Prepared`, with the model's size, mean, std and interpolation.

    >>> p = Preprocessor(size=8, fit="pad")
    >>> p(Image.new("RGB", (16, 8))).box
    (2, 0, 4, 8)
    """

    def __init__(self, size: int, mean=OPENAI_MEAN, std=OPENAI_STD, fit: str = "pad",
                 interpolation: str = "bicubic") -> None:
        self.size, self.fit = int(size), fit
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.resample = Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC

    @classmethod
    def for_model(cls, model, fit: str = "auto") -> "Preprocessor":
        cfg = getattr(model, "preprocess_cfg", None) or {}
        size = cfg.get("size", 224)
        size = size[0] if isinstance(size, (tuple, list)) else size
        if fit == "auto":
            fit = "squash" if cfg.get("resize_mode") == "squash" else "pad"
        return cls(size, cfg.get("mean", OPENAI_MEAN), cfg.get("std", OPENAI_STD), fit,
                   cfg.get("interpolation", "bicubic"))

    @property
    def fill(self) -> tuple[int, int, int]:
        """The mean colour (uint8 RGB): normalised, it is 0 (the perturbation baseline)."""
        return tuple(int(round(float(m) * 255)) for m in self.mean.flatten())

    def normalise(self, img: Image.Image) -> torch.Tensor:
        arr = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S)
        return (arr - self.mean) / self.std

    def __call__(self, img: Image.Image) -> Prepared:
        s, (w, h) = self.size, img.size
        if self.fit == "squash":
            canvas, box = img.resize((s, s), self.resample), (0, 0, s, s)
        else:  # letterbox: the whole image, aspect kept, on the mean colour
            scale = s / max(w, h)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            canvas = Image.new("RGB", (s, s), self.fill)
            top, left = (s - nh) // 2, (s - nw) // 2
            canvas.paste(img.resize((nw, nh), self.resample), (left, top))
            box = (top, left, nh, nw)
        return Prepared(self.normalise(canvas)[None], box, (h, w))


# ------------------------------------------------------------------ the similarity being explained
class Similarity(torch.nn.Module):
    """pixels (n, 3, S, S) -> cosine similarity with each text (n, n_texts)."""

    def __init__(self, clip: torch.nn.Module, text_emb: torch.Tensor) -> None:
        super().__init__()
        self.clip = clip
        self.register_buffer("text_emb", text_emb)  # (n_texts, dim), L2-normalised

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        img = self.clip.encode_image(pixels, normalize=True)  # (n, dim)
        return img.float() @ self.text_emb.T  # (n, n_texts)


# ------------------------------------------------------------------ methods (all in input space)
def paper_map(sim: Similarity, prep: Prepared, img: Image.Image, pre: Preprocessor, pixel_size: int = 15,
              iterations: int = 5, canvas: int = 224, reference: str = "grey",
              batch_size: int = 32) -> tuple[torch.Tensor, Prepared]:
    """The FashionCLIP paper's band occlusion (`attention_map.py` + `FashionCLIP._get_heatmap`).

    As the authors: the image is letterboxed on grey (128) into a `canvas` square (squashed
    instead for models trained on squashed images, as their preprocessing does); for every
    band of rows (then of columns) between two grid lines `pixel_size` apart, everything
    but the band is filled grey; each band's similarity gain, clipped at 0, is credited to
    its pixels and averaged over all bands; then `iterations` rounds of "subtract the mean,
    clip at 0" and a min-max scaling.
    The gain is measured over the all-grey canvas (what the band alone brings) by default:
    the authors measure it over the intact image (`reference="intact"`), so a band that
    holds the whole garment gains nothing (it scores like the photo), and where no band
    beats the intact photo the map is noise or flat (the tests show it).
    Also fixed: the grid includes the top band and the bottom/right remainder (the
    original's horizontal loop starts at 1, and `n // pixel_size` drops the last strip, so
    those rows were never kept); the gain counts only inside the band (the original's
    `sim * m - sim0` credited |sim0| to every pixel outside it when sim0 < 0); a flat map
    no longer divides by zero; Pillow 10 resampling (`Image.ANTIALIAS` is gone); the map
    comes back in the image's own pixels (the original returned the padded square).
    Returns (canvas, canvas) map and the canvas geometry.
    """
    w, h = img.size
    if pre.fit == "squash":  # a squash-trained model sees the whole canvas as the image
        nw = nh = canvas
    else:
        scale = canvas / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    square = Image.new("RGB", (canvas, canvas), (128, 128, 128))
    top, left = (canvas - nh) // 2, (canvas - nw) // 2
    square.paste(img.resize((nw, nh), Image.Resampling.LANCZOS), (left, top))
    arr = np.asarray(square, np.uint8)
    edges = sorted(set(list(range(0, canvas, pixel_size)) + [canvas]))  # grid lines incl. 0 and the far edge
    bands = [(a, b) for i, a in enumerate(edges) for b in edges[i + 1:] if (a, b) != (0, canvas)]
    masks = []  # (axis, start, stop)
    for a, b in bands:
        masks.append((0, a, b))
    for a, b in bands:
        masks.append((1, a, b))

    def render(m) -> Image.Image:
        axis, a, b = m
        out = np.full_like(arr, 128)
        if axis == 0:
            out[a:b] = arr[a:b]
        else:
            out[:, a:b] = arr[:, a:b]
        return Image.fromarray(out)

    def model_input(im: Image.Image) -> torch.Tensor:
        return pre.normalise(im.resize((pre.size, pre.size), pre.resample))  # square -> the model's size

    if reference not in ("grey", "intact"):
        raise InvalidArgumentError(f"paper reference must be 'grey' or 'intact', got {reference!r}")
    ref = square if reference == "intact" else Image.new("RGB", (canvas, canvas), (128, 128, 128))
    with torch.no_grad():
        s0 = sim(model_input(ref)[None])[0]  # (n_texts,)
        gains = torch.zeros(s0.shape[0], canvas, canvas)
        for i in range(0, len(masks), batch_size):
            chunk = masks[i:i + batch_size]
            s = sim(torch.stack([model_input(render(m)) for m in chunk]))  # (b, n_texts)
            g = (s - s0).clamp(min=0)  # (b, n_texts)
            for m, gi in zip(chunk, g):
                axis, a, b = m
                if axis == 0:
                    gains[:, a:b, :] += gi[:, None, None]
                else:
                    gains[:, :, a:b] += gi[:, None, None]
    score = gains / (len(masks) + 1)  # the authors average over every crop, the intact image included
    for _ in range(iterations):
        score = (score - score.mean(dim=(1, 2), keepdim=True)).clamp(min=0)
    lo = score.amin(dim=(1, 2), keepdim=True)
    span = score.amax(dim=(1, 2), keepdim=True) - lo
    score = torch.where(span > 0, (score - lo) / span.clamp(min=1e-12), torch.zeros_like(score))
    return score, Prepared(torch.empty(1, 3, canvas, canvas), (top, left, nh, nw), (h, w))


def occlusion_map(sim: Similarity, prep: Prepared, patch: int | None = None, stride: int | None = None,
                  batch_size: int = 32) -> torch.Tensor:
    """Captum Occlusion: a mean-colour square of `patch` px (default S/7) slid by `stride` (patch/2)."""
    from captum.attr import Occlusion

    s = prep.x.shape[-1]
    patch = patch or max(2, round(s / 7))
    stride = stride or max(1, patch // 2)
    attr = Occlusion(sim).attribute(prep.x, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
                                    baselines=0.0, perturbations_per_eval=batch_size)  # (n_texts, 3, S, S)
    return attr[:, 0]  # every channel of a window carries the same value


def superpixels(img: Image.Image, prep: Prepared, n_segments: int = 60, compactness: float = 10.0,
                max_side: int = 256) -> torch.Tensor:
    """(S, S) long labels: SLIC superpixels of the photo (at up to `max_side` px, so they follow its
    real edges), placed where the image sits in the input; the padding is one more segment.

    Without scikit-image: a square grid of about `n_segments` cells.
    """
    s = prep.x.shape[-1]
    top, left, h, w = prep.box
    scale = min(1.0, max_side / max(img.size))
    small = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                       Image.Resampling.BILINEAR) if scale < 1 else img
    rgb = np.asarray(small, np.float32) / 255.0  # (h', w', 3)
    try:
        from skimage.segmentation import slic
        seg = slic(rgb, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1)
    except ImportError:
        log.warning("scikit-image is not installed: superpixels are a square grid (pip install scikit-image)")
        hh, ww = rgb.shape[:2]
        cell = max(1, int(round(np.sqrt(hh * ww / n_segments))))
        yy, xx = np.mgrid[0:hh, 0:ww]
        seg = (yy // cell) * (ww // cell + 1) + xx // cell
    _, seg = np.unique(seg, return_inverse=True)  # 0..k-1
    seg = seg.reshape(rgb.shape[:2])
    inner = F.interpolate(torch.from_numpy(seg)[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
    labels = torch.full((s, s), int(seg.max()) + 1, dtype=torch.long)
    labels[top:top + h, left:left + w] = inner
    return labels


def ablation_map(sim: Similarity, prep: Prepared, img: Image.Image, n_segments: int = 60,
                 compactness: float = 10.0, batch_size: int = 32) -> torch.Tensor:
    """Captum FeatureAblation: each superpixel in turn set to the mean colour."""
    from captum.attr import FeatureAblation

    labels = superpixels(img, prep, n_segments, compactness)  # (S, S)
    mask = labels[None, None].expand(1, 3, -1, -1)
    attr = FeatureAblation(sim).attribute(prep.x, baselines=0.0, feature_mask=mask,
                                          perturbations_per_eval=batch_size)  # (n_texts, 3, S, S)
    return attr[:, 0]  # every channel of a superpixel carries the same value


def integrated_gradients_map(sim: Similarity, prep: Prepared, n_steps: int = 24, noise_tunnel: bool = False,
                             nt_samples: int = 4, stdev: float = 0.15, batch_size: int = 32) -> torch.Tensor:
    """Captum IntegratedGradients from the mean-colour image, summed over colour channels (signed)."""
    from captum.attr import IntegratedGradients, NoiseTunnel

    ig = IntegratedGradients(sim)
    out = []
    for k in range(sim.text_emb.shape[0]):
        if noise_tunnel:
            a = NoiseTunnel(ig).attribute(prep.x, nt_type="smoothgrad", nt_samples=nt_samples, stdevs=stdev,
                                          nt_samples_batch_size=1, target=k, baselines=0.0, n_steps=n_steps,
                                          internal_batch_size=batch_size)
        else:
            a = ig.attribute(prep.x, baselines=0.0, target=k, n_steps=n_steps, internal_batch_size=batch_size)
        out.append(a[0].sum(dim=0))
    return torch.stack(out)  # (n_texts, S, S)


def saliency_map(sim: Similarity, prep: Prepared) -> torch.Tensor:
    """Captum Saliency: |gradient|, max over colour channels."""
    from captum.attr import Saliency

    sal = Saliency(sim)
    return torch.stack([sal.attribute(prep.x.clone().requires_grad_(), target=k, abs=True)[0].amax(dim=0)
                        for k in range(sim.text_emb.shape[0])])


def _conv_stage(visual: torch.nn.Module, layer: str | None) -> torch.nn.Module:
    if layer is not None:
        mod = dict(visual.named_modules()).get(layer)
        if mod is None:
            raise InvalidArgumentError(f"gradcam layer {layer!r} is not in the image tower; try 'layer4' or 'layer3'")
        return mod
    if hasattr(visual, "layer4"):  # open_clip ModifiedResNet, torchvision-style ResNets
        return visual.layer4
    raise InvalidArgumentError("method 'gradcam' needs a convolutional image tower (ResNet: visual.layer4); this "
                               "model's tower is a " + type(visual).__name__ + ": use 'grad_eclip' or 'occlusion'")


def gradcam_map(sim: Similarity, prep: Prepared, layer: str | None = None) -> torch.Tensor:
    """Captum LayerGradCam on the last conv stage (ReLU of channel-weighted activations), upsampled."""
    from captum.attr import LayerGradCam, LayerAttribution

    stage = _conv_stage(sim.clip.visual, layer)
    cam = LayerGradCam(sim, stage)
    s = prep.x.shape[-1]
    out = [LayerAttribution.interpolate(cam.attribute(prep.x, target=k, relu_attributions=True), (s, s),
                                        interpolate_mode="bilinear")[0, 0]
           for k in range(sim.text_emb.shape[0])]
    return torch.stack(out)


def _token_relevance(sim: Similarity, x: torch.Tensor) -> torch.Tensor:
    """Grad-ECLIP-style relevance of the last attention step's spatial tokens: (n_texts, gh, gw).

    Relevance of token i = ReLU(sum over heads h of lambda_i^h * sum_{c in h} g_c v_ic), with v the
    value vectors, g the gradient of the similarity w.r.t. the attention output of the pooled
    (class / mean) token before its output projection, and lambda the "loosened" attention
    of that token's query to token i (q.k min-max scaled per head, no softmax).
    """
    visual = sim.clip.visual
    grabbed: dict[str, torch.Tensor] = {}
    if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):  # open_clip ViT
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise InvalidArgumentError("method 'grad_eclip' needs a class-token ViT; this tower pools otherwise: "
                                       "use 'occlusion' or 'integrated_gradients'")
        attn = visual.transformer.resblocks[-1].attn
        hooks = [attn.register_forward_pre_hook(lambda m, a: grabbed.__setitem__("in", a[0])),
                 attn.register_forward_hook(lambda m, a, o: grabbed.__setitem__("out", o[0]))]
        w_in, b_in = attn.in_proj_weight, attn.in_proj_bias
        d = w_in.shape[1]
        wq, wk, wv = w_in[:d], w_in[d:2 * d], w_in[2 * d:]
        bq, bk, bv = (b_in[:d], b_in[d:2 * d], b_in[2 * d:]) if b_in is not None else (None,) * 3
        w_out, heads, batch_first, prefix = attn.out_proj.weight, attn.num_heads, attn.batch_first, 1
    elif getattr(visual, "attnpool", None) is not None:  # open_clip ModifiedResNet: attention pooling
        pool = visual.attnpool

        def grab_tokens(m, a):
            f = a[0]  # (n, C, h, w)
            grabbed["grid"] = f.shape[-2:]
            t = f.flatten(2).permute(0, 2, 1)  # (n, hw, C)
            grabbed["in"] = torch.cat([t.mean(dim=1, keepdim=True), t], dim=1) + m.positional_embedding[None]

        hooks = [pool.register_forward_pre_hook(grab_tokens),
                 pool.register_forward_hook(lambda m, a, o: grabbed.__setitem__("out", o))]
        wq, wk, wv = pool.q_proj.weight, pool.k_proj.weight, pool.v_proj.weight
        bq, bk, bv = pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias
        w_out, heads, batch_first, prefix = pool.c_proj.weight, pool.num_heads, True, 1
    else:
        raise InvalidArgumentError(f"method 'grad_eclip' needs a ViT or an attention-pooled ResNet tower, not a "
                                   f"{type(visual).__name__}: use 'occlusion' or 'integrated_gradients'")
    try:
        with torch.enable_grad():
            scores = sim(x)  # (1, n_texts)
    finally:
        for h in hooks:
            h.remove()
    tokens, out = grabbed["in"], grabbed["out"]
    if not batch_first:
        tokens = tokens.transpose(0, 1)
    tokens = tokens[0].detach()  # (L, d)
    with torch.no_grad():
        q = F.linear(tokens[:1], wq, bq)  # (1, d): the pooled token's query
        k = F.linear(tokens, wk, bk)  # (L, d)
        v = F.linear(tokens, wv, bv)  # (L, d)
        L, d = k.shape
        dh = d // heads
        logits = (q.view(heads, dh)[:, None, :] * k.view(L, heads, dh).permute(1, 0, 2)).sum(-1)  # (heads, L)
        logits = logits[:, prefix:]
        lo, hi = logits.amin(dim=1, keepdim=True), logits.amax(dim=1, keepdim=True)
        lam = (logits - lo) / (hi - lo).clamp(min=1e-12)  # (heads, L - prefix)
    maps = []
    for t in range(scores.shape[1]):
        g_out, = torch.autograd.grad(scores[0, t], out, retain_graph=t + 1 < scores.shape[1])
        g_out = g_out if out.dim() == 2 else (g_out[0, 0] if batch_first else g_out[0, 0])
        g = (g_out.reshape(-1, w_out.shape[0])[0] @ w_out).detach()  # (d,): before the output projection
        contrib = (v[prefix:] * g).view(L - prefix, heads, dh).sum(-1).T  # (heads, L - prefix)
        signed = (lam * contrib).sum(0)  # (L - prefix,)
        # ReLU as Grad-ECLIP; when no token raises the similarity, the signed values (else a flat map)
        maps.append(torch.relu(signed) if (signed > 0).any() else signed)
    rel = torch.stack(maps)  # (n_texts, L - prefix)
    if "grid" in grabbed:
        gh, gw = grabbed["grid"]
    else:
        gh = gw = int(round((L - prefix) ** 0.5))
    return rel.view(-1, gh, gw)


def grad_eclip_map(sim: Similarity, prep: Prepared, multiscale: bool = False) -> torch.Tensor:
    """Token relevance upsampled to the input; `multiscale` averages in four 2/3-size corner crops."""
    s = prep.x.shape[-1]
    x = prep.x.detach()
    total = F.interpolate(_token_relevance(sim, x)[:, None], size=(s, s), mode="bilinear",
                          align_corners=False)[:, 0]  # (n_texts, S, S)
    if not multiscale:
        return total
    weight = torch.ones(s, s)
    c = round(2 * s / 3)
    for top in (0, s - c):
        for left in (0, s - c):
            crop = F.interpolate(x[:, :, top:top + c, left:left + c], size=(s, s), mode="bicubic", align_corners=False)
            rel = F.interpolate(_token_relevance(sim, crop)[:, None], size=(c, c), mode="bilinear",
                                align_corners=False)[:, 0]
            total[:, top:top + c, left:left + c] += rel
            weight[top:top + c, left:left + c] += 1
    return total / weight


MAX_CROP_WINDOWS = 5000  # a typo in scales/overlap must not mean hours of work
MAX_CROP_GRID = 1024


def _crop_scales(scales) -> tuple[float, ...]:
    """`scales` as a non-empty tuple of shares in (0, 1); anything else -> InvalidArgumentError.

    >>> _crop_scales([0.2, 0.3])
    (0.2, 0.3)
    """
    if isinstance(scales, (int, float, np.number)) and not isinstance(scales, bool):
        scales = (scales,)
    if isinstance(scales, (str, bytes)) or not isinstance(scales, (list, tuple, np.ndarray)):
        raise InvalidArgumentError(f"crops scales must be a list of shares of the photo in (0, 1), got {scales!r}")
    out = tuple(scales.tolist() if isinstance(scales, np.ndarray) else scales)
    ok = bool(out) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in out)
    if not ok:
        raise InvalidArgumentError(f"crops scales must be shares of the photo in (0, 1), e.g. (0.2, 0.3); got {scales!r}")
    return tuple(float(v) for v in out)


def _crop_boxes(h: int, w: int, scale: float, overlap: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(window height, width, [(top, left)]) of one scale: `overlap` windows over each point per axis."""
    wh, ww = max(1, round(scale * h)), max(1, round(scale * w))
    ys = sorted(set(range(0, h - wh + 1, max(1, wh // overlap))) | {h - wh})
    xs = sorted(set(range(0, w - ww + 1, max(1, ww // overlap))) | {w - ww})
    return wh, ww, [(y, x) for y in ys for x in xs]


def crops_map(sim: Similarity, img: Image.Image, pre: Preprocessor, scales: Sequence[float] = (0.2, 0.3),
              overlap: int = 3, grid: int = 64, batch_size: int = 32) -> tuple[torch.Tensor, Prepared]:
    """Sliding-window crop scoring: windows of `scales` x the photo's height and width, `overlap`
    windows over each point per axis, are cut out of the photo at full resolution, prepared as
    the model prepares any image, and scored against every text. Per scale, window scores are
    standardised (z-scores over that scale's windows) and each pixel gets the mean of the
    windows holding it; the scales' maps are averaged. Returns a (n_texts, gh, gw) map on a
    grid of `grid` cells along the longer side, and its geometry. Bad options (scales outside
    (0, 1), more than MAX_CROP_WINDOWS windows, ...) are refused before any window is scored.
    """
    scales = _crop_scales(scales)
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 1 <= overlap <= 32:
        raise InvalidArgumentError(f"crops overlap must be a whole number in 1..32, got {overlap!r}")
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or not 2 <= grid <= MAX_CROP_GRID:
        raise InvalidArgumentError(f"crops grid must be a whole number in 2..{MAX_CROP_GRID}, got {grid!r}")
    w, h = img.size
    gh, gw = (grid, max(1, round(grid * w / h))) if h >= w else (max(1, round(grid * h / w)), grid)
    layout = [_crop_boxes(h, w, sc, overlap) for sc in scales]
    n_windows = sum(len(boxes) for _, _, boxes in layout)
    if n_windows > MAX_CROP_WINDOWS:
        raise InvalidArgumentError(f"crops would score {n_windows} windows (at most {MAX_CROP_WINDOWS}); "
                                   f"use larger scales or a smaller overlap")
    overlap, grid = int(overlap), int(grid)
    device = sim.text_emb.device
    per_scale = []
    for wh, ww, boxes in layout:
        scores = []
        with torch.no_grad():
            for i in range(0, len(boxes), batch_size):
                x = torch.cat([pre(img.crop((bx, by, bx + ww, by + wh))).x for by, bx in boxes[i:i + batch_size]])
                scores.append(sim(x.to(device)).float().cpu())  # (b, n_texts)
        z = torch.cat(scores)  # (n_boxes, n_texts)
        z = (z - z.mean(0)) / z.std(0, unbiased=False).clamp(min=1e-6) if len(boxes) > 1 else torch.zeros_like(z)
        total, count = torch.zeros(z.shape[1], gh, gw), torch.zeros(gh, gw)
        for (by, bx), zi in zip(boxes, z):
            y0, y1 = int(by * gh / h), max(int(by * gh / h) + 1, round((by + wh) * gh / h))
            x0, x1 = int(bx * gw / w), max(int(bx * gw / w) + 1, round((bx + ww) * gw / w))
            total[:, y0:y1, x0:x1] += zi[:, None, None]
            count[y0:y1, x0:x1] += 1
        per_scale.append(total / count.clamp(min=1))
    return torch.stack(per_scale).mean(0), Prepared(torch.empty(1, 3, gh, gw), (0, 0, gh, gw), (h, w))


# ------------------------------------------------------------------ the explainer
def default_method(model) -> str:
    """The method `method="auto"` picks: `grad_eclip` for ViT towers (the only method within 2 s per
    map for ViT-B/32 on a 2-core CPU), `crops` otherwise (on fclip-mini's ResNet towers it points
    better than every other method, within 2 s per map; see the README's tables)."""
    visual = getattr(getattr(model, "model", None), "visual", None)
    is_vit = hasattr(visual, "transformer") and getattr(visual, "attn_pool", None) is None \
        and getattr(visual, "pool_type", "tok") == "tok"
    return "grad_eclip" if is_vit else "crops"


class GroundingExplainer:
    """Grounding maps of text queries on an image, by one of `methods()` (default "auto": `default_method`).

    `__init__` stores the model and settings (method options as keywords, e.g.
    `patch=16` for occlusion); `attribute` does the work. Timing of the last call is in
    `last_seconds_`.

    >>> ex = GroundingExplainer(model, method="grad_eclip", multiscale=True)   # doctest: +SKIP
    >>> ex.attribute(img, ["shoes", "bag"]).shape                              # doctest: +SKIP
    (2, 832, 550)
    """

    DEFAULT = "auto"  # grad_eclip for ViT towers, crops otherwise: chosen by benchmarks/bench_grounding.py

    def __init__(self, model, method: str | None = None, batch_size: int = 32, fit: str = "auto",
                 **options) -> None:
        method = self.DEFAULT if method is None else method
        if method == "auto":
            method = default_method(model)
        if method not in METHOD_NOTES:
            raise InvalidArgumentError(f"Unknown grounding method {method!r}; known: {', '.join(METHOD_NOTES)}")
        unknown = set(options) - METHOD_OPTIONS[method]
        if unknown:
            allowed = ", ".join(sorted(METHOD_OPTIONS[method])) or "none"
            raise InvalidArgumentError(f"method {method!r} takes no option(s) {', '.join(sorted(unknown))}; "
                                       f"its options: {allowed}")
        if fit not in FITS:
            raise InvalidArgumentError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.model, self.method, self.batch_size, self.fit, self.options = model, method, batch_size, fit, options

    @staticmethod
    def methods() -> dict[str, str]:
        """Method name -> one-line description.

        >>> "paper" in GroundingExplainer.methods()
        True
        """
        return dict(METHOD_NOTES)

    def preprocessor(self) -> Preprocessor:
        return Preprocessor.for_model(self.model, self.fit)

    def similarity_module(self, texts: Sequence[str]) -> Similarity:
        """The explained function: pixels -> cosine similarity with each text."""
        emb = torch.as_tensor(self.model.encode_texts(list(texts)), dtype=torch.float32)
        emb = F.normalize(emb, dim=-1)
        clip = self.model.model
        clip.eval()
        return Similarity(clip, emb.to(next(clip.parameters()).device))

    def work_side(self) -> int:
        """Longer side (px) of the photo the maps are computed on: WORK_MAX_SIDE, or 5 x the model's input
        (so a 20 % crop still has the model's resolution)."""
        return max(WORK_MAX_SIDE, 5 * self.preprocessor().size)

    def attribute(self, image, text: str | Sequence[str], max_side: int | None = None) -> np.ndarray:
        """(H, W) map for one text, (n_texts, H, W) for a list, in the image's own pixels (`max_side`: scaled
        down so the longer side is at most that). Maps are computed on the photo scaled down to `work_side()`."""
        texts = check_texts(text)  # cheap checks first
        if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
            raise InvalidArgumentError(f"max_side must be a whole number of pixels >= 1, got {max_side!r}")
        pre = self.preprocessor()
        img, own = open_image(image, self.work_side())  # a huge JPEG is decoded reduced, never at full size
        out_size = own if max_side is None or max(own) <= max_side else \
            tuple(max(1, round(v * max_side / max(own))) for v in own)
        t0 = time.perf_counter()
        prep = pre(img)
        sim = self.similarity_module(texts)
        device = sim.text_emb.device
        prep.x = prep.x.to(device)
        opts, bs = self.options, self.batch_size
        if self.method == "paper":
            m, prep = paper_map(sim, prep, img, pre, batch_size=bs, **opts)
        elif self.method == "occlusion":
            m = occlusion_map(sim, prep, batch_size=bs, **opts)
        elif self.method == "ablation":
            m = ablation_map(sim, prep, img, batch_size=bs, **opts)
        elif self.method == "integrated_gradients":
            m = integrated_gradients_map(sim, prep, batch_size=bs, **opts)
        elif self.method == "saliency":
            m = saliency_map(sim, prep)
        elif self.method == "gradcam":
            m = gradcam_map(sim, prep, **opts)
        elif self.method == "crops":
            m, prep = crops_map(sim, img, pre, batch_size=bs, **opts)
        else:
            m = grad_eclip_map(sim, prep, **opts)
        prep.size = out_size  # the maps go back to the photo's own pixels (or max_side), not the working copy's
        maps = prep.to_image(m.detach().cpu())  # (n_texts, H, W)
        self.last_seconds_ = time.perf_counter() - t0
        return maps[0] if isinstance(text, str) else maps

    def scorer(self, text: str) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
        """images ((H, W, 3) uint8 arrays) -> similarity with `text` (n,): for deletion curves."""
        pre = self.preprocessor()
        sim = self.similarity_module(check_texts(text))
        device = sim.text_emb.device

        def score(images: Sequence[np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                x = torch.cat([pre(Image.fromarray(np.asarray(a, np.uint8))).x for a in images]).to(device)
                return sim(x)[:, 0].float().cpu().numpy()

        return score

    @property
    def fill(self) -> tuple[int, int, int]:
        """The perturbation colour (the model's mean colour)."""
        return self.preprocessor().fill
