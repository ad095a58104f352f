"""Contrastive losses: CLIP's symmetric InfoNCE and SigLIP's sigmoid loss.

Both accept `group_ids`: items of a batch with the same group (the same text,
e.g. two products both captioned "a black watch") are positives of each other
instead of false negatives. Without duplicates this is exactly open_clip's
`ClipLoss` / `SigLipLoss` (tests/test_losses.py checks it).

Example:
    >>> img = torch.eye(2); txt = torch.eye(2)
    >>> round(float(ContrastiveLoss()(img, txt, torch.tensor(1.0))), 4)
    0.3133
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContrastiveLoss(nn.Module):
    """`kind` "clip" (softmax, both directions) or "siglip" (pairwise sigmoid)."""

    def __init__(self, kind: str = "clip") -> None:
        super().__init__()
        if kind not in ("clip", "siglip"):
            raise ValueError(f"Unknown loss {kind!r}; choose 'clip' or 'siglip'")
        self.kind = kind

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, group_ids: torch.Tensor | None = None) -> torch.Tensor:
        """image_features, text_features: (b, d) L2-normalised; logit_scale: scalar (already exp'd)."""
        logits = logit_scale * image_features @ text_features.T  # (b, b)
        b = logits.shape[0]
        if group_ids is None:
            positives = torch.eye(b, dtype=torch.bool, device=logits.device)
        else:
            positives = group_ids[:, None] == group_ids[None, :]  # (b, b)
        if self.kind == "clip":
            targets = positives.float() / positives.sum(1, keepdim=True)
            return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T))
        if logit_bias is not None:
            logits = logits + logit_bias
        signs = 2.0 * positives.float() - 1.0
        return -F.logsigmoid(signs * logits).sum() / b
