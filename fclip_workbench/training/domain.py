"""Domain augmentation toward what users bring (fclip-mini v2): multi-scale crops, greyscale, low
resolution, Fashion-MNIST-like silhouettes and new backgrounds, on batches of normalised pixels.

Every draw comes from the epoch's generator (on the CPU), so a run is repeatable,
and the pixel work runs on the batch's own device (a GPU run augments on the GPU).
Shapes and the letterboxed aspect are kept: every transform maps (b, 3, S, S) to
(b, 3, S, S) and the affine crop zooms both axes alike. `domain_views` also says
which views lost their colour (greyscale, silhouette), so the loop can give
those a caption without colour words.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    >>> domain_augment(torch.zeros(4, 3, 32, 32), g, mean, std).shape
    torch.Size([4, 3, 32, 32])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DomainMix:
    """Per-image probabilities and ranges of the v2 augmentation."""

    zoom: tuple[float, float] = (0.55, 1.0)  # crop side as a share of the image (several scales)
    flip: float = 0.5  # horizontal flip
    grey: float = 0.15  # greyscale, as drawn
    silhouette: float = 0.15  # Fashion-MNIST-like: greyscale, background to black (light-on-dark) or white
    light_on_dark: float = 0.7  # share of silhouettes drawn light garment on black
    low_res: float = 0.2  # down to a side in `low_res_sides`, back up (blur of a small photo)
    low_res_sides: tuple[int, int] = (28, 56)
    background: float = 0.15  # near-white background (packshots) -> a random colour or gradient
    white: float = 0.92  # a pixel is background when all channels are above this (in [0, 1])


def _background_mask(raw: torch.Tensor, white: float, fill: torch.Tensor | None) -> torch.Tensor:
    """(b, 1, h, w) bool: near-white pixels, plus pixels of the letterbox fill colour when given."""
    bg = (raw > white).all(dim=1, keepdim=True)
    if fill is not None:
        bg |= ((raw - fill).abs() < 0.02).all(dim=1, keepdim=True)
    return bg


def domain_augment(x: torch.Tensor, g: torch.Generator, mean: torch.Tensor, std: torch.Tensor,
                   mix: DomainMix = DomainMix(), fill: tuple[float, float, float] | None = None) -> torch.Tensor:
    """Augment normalised pixels x: (b, 3, S, S) -> (b, 3, S, S); `fill` is the letterbox colour in [0, 1]."""
    return domain_views(x, g, mean, std, mix, fill)[0]


def domain_views(x: torch.Tensor, g: torch.Generator, mean: torch.Tensor, std: torch.Tensor,
                 mix: DomainMix = DomainMix(), fill: tuple[float, float, float] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(augmented x: (b, 3, S, S), (b,) bool CPU mask of the views drawn without colour)."""
    b, _, h, w = x.shape
    dev = x.device
    mean, std = mean.to(dev), std.to(dev)
    # 1. crop at several scales (zoom both axes alike: the aspect stays), shift, flip
    lo, hi = mix.zoom
    scale = lo + (hi - lo) * torch.rand(b, generator=g)
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * (1 - scale)[:, None]
    flip = torch.where(torch.rand(b, generator=g) < mix.flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(dev), [b, 3, h, w], align_corners=False)
    raw = F.grid_sample(x * std + mean, grid.to(x.dtype), padding_mode="border", align_corners=False)
    raw = raw.clamp(0, 1)  # (b, 3, h, w) in [0, 1]
    fill_t = torch.tensor(fill, dtype=raw.dtype, device=dev).view(1, 3, 1, 1) if fill is not None else None
    u = torch.rand(b, 5, generator=g)  # one draw per transform and image, always drawn (repeatable)
    colour = torch.rand(b, 2, 3, generator=g)  # background: two colours of a vertical gradient
    sides = torch.randint(mix.low_res_sides[0], mix.low_res_sides[1] + 1, (b,), generator=g)
    # 2. new backgrounds behind packshots
    pick = u[:, 0] < mix.background
    if pick.any():
        sel = pick.to(dev)
        bg = _background_mask(raw[sel], mix.white, fill_t)
        ramp = torch.linspace(0, 1, h, device=dev).view(1, 1, h, 1)
        c0, c1 = colour[pick, 0].view(-1, 3, 1, 1).to(dev), colour[pick, 1].view(-1, 3, 1, 1).to(dev)
        paint = c0 * (1 - ramp) + c1 * ramp  # (p, 3, h, 1)
        raw[sel] = torch.where(bg, paint.expand(-1, -1, -1, w), raw[sel])
    # 3. silhouettes (greyscale, background black or white) and plain greyscale
    lum = (0.299 * raw[:, 0] + 0.587 * raw[:, 1] + 0.114 * raw[:, 2])[:, None]  # (b, 1, h, w)
    sil = u[:, 1] < mix.silhouette
    if sil.any():
        sel = sil.to(dev)
        bg = _background_mask(raw[sel], mix.white, fill_t)
        dark = (u[sil, 2] < mix.light_on_dark).view(-1, 1, 1, 1).to(dev)
        s = torch.where(bg, torch.ones_like(lum[sel]), lum[sel])  # garment as drawn, background white
        raw[sel] = torch.where(dark, 1.0 - s, s).expand(-1, 3, -1, -1)
    grey = (u[:, 3] < mix.grey) & ~sil
    if grey.any():
        sel = grey.to(dev)
        raw[sel] = lum[sel].expand(-1, 3, -1, -1)
    # 4. low resolution: down to a small side, back up (bilinear)
    low = u[:, 4] < mix.low_res
    for i in torch.nonzero(low).flatten().tolist():
        k = int(sides[i])
        small = F.interpolate(raw[i:i + 1], size=(k, k), mode="area")
        raw[i:i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return (raw - mean) / std, sil | grey
