"""Grounding maps: where in a photo does a CLIP model see "red stripes"?

`GroundingExplainer(model, method=...)` has one verb, `attribute(image, text)`, which
returns a float array in the image's OWN pixel coordinates: (H, W) for one text,
(n_texts, H, W) for several. Higher = the region raises the image-text similarity
more. Drawing lives in `widgets/viz.py`; scores against masks in `metrics.py`; the inputs in `inputs.py`,
the methods in `methods.py`.

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

import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.grounding.inputs import (DISPLAY_MAX_SIDE, FITS, OPENAI_MEAN, OPENAI_STD, WORK_MAX_SIDE, Prepared,
                                             Preprocessor, Similarity, check_texts, load_image, open_image)
from fclip_workbench.grounding.methods import (METHOD_NOTES, METHOD_OPTIONS, ablation_map, crops_map, grad_eclip_map,
                                              gradcam_map, integrated_gradients_map, occlusion_map, paper_map, saliency_map)

__all__ = ["GroundingExplainer", "default_method", "DISPLAY_MAX_SIDE", "WORK_MAX_SIDE",
           # re-exported from inputs.py and methods.py:
           "open_image", "load_image", "check_texts", "Prepared", "Preprocessor", "Similarity", "FITS",
           "OPENAI_MEAN", "OPENAI_STD", "METHOD_NOTES", "METHOD_OPTIONS"]


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
            (max(1, round(own[0] * max_side / max(own))), max(1, round(own[1] * max_side / max(own))))
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
