"""The grounding methods: one function per method, each returning a map in the model's input space.

Each takes the `Similarity` being explained and the `Prepared` input (inputs.py) and returns a
(n_texts, H, W) tensor; `GroundingExplainer` (maps.py) maps it back to the photo's pixels. The list
and what each does: `METHOD_NOTES`; the options each accepts: `METHOD_OPTIONS`.

Example:
    >>> occlusion_map(sim, prep, patch=8).shape                              # doctest: +SKIP
    torch.Size([1, 96, 96])
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.grounding.inputs import Prepared, Preprocessor, Similarity

log = logging.getLogger(__name__)

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
        return visual.get_submodule("layer4")
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
