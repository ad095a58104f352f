"""Losses against hand-computed values and open_clip's reference implementations."""
import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

from fclip_workbench.losses import ContrastiveLoss


def test_clip_loss_known_value():
    # identical unit pairs, logit scale 1: each row is softmax over [1, 0] -> -log(e/(e+1))
    img = txt = torch.eye(2)
    expected = math.log(1 + math.exp(-1))
    assert float(ContrastiveLoss("clip")(img, txt, torch.tensor(1.0))) == pytest.approx(expected, abs=1e-6)


def test_siglip_loss_known_value():
    img = txt = torch.eye(2)
    # logits = 10 * I - 5: positives 5, negatives -5; loss = -(2 log s(5) + 2 log s(5)) / 2
    expected = -2 * math.log(1 / (1 + math.exp(-5)))
    got = ContrastiveLoss("siglip")(img, txt, torch.tensor(10.0), torch.tensor(-5.0))
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_matches_open_clip_without_duplicates():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    scale, bias = torch.tensor(14.3), torch.tensor(-3.0)
    assert float(ContrastiveLoss("clip")(img, txt, scale)) == pytest.approx(float(ClipLoss()(img, txt, scale)), abs=1e-5)
    ref = SigLipLoss()(img, txt, scale, bias)
    assert float(ContrastiveLoss("siglip")(img, txt, scale, bias)) == pytest.approx(float(ref), abs=1e-5)


def test_duplicate_texts_are_not_negatives():
    # items 0 and 1 share a caption: with groups, swapping their images costs nothing
    torch.manual_seed(0)
    txt = F.normalize(torch.randn(3, 8), dim=-1)
    txt[1] = txt[0]
    img = txt[[1, 0, 2]]
    groups = torch.tensor([7, 7, 9])
    loss = ContrastiveLoss("clip")
    assert float(loss(img, txt, torch.tensor(10.0), group_ids=groups)) < float(loss(img, txt, torch.tensor(10.0))) + 1e-6


def test_unknown_loss():
    with pytest.raises(ValueError, match="clip"):
        ContrastiveLoss("triplet")
