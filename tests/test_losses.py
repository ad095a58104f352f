"""Losses against hand-computed values and open_clip's reference implementations."""
import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

from fclip_workbench.training.losses import ContrastiveLoss


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
    # Items 0 and 1 share a caption (group 7); their images are swapped: image 0 shows product 1 and vice versa.
    # logits = s * P with P the permutation matrix of the swap (symmetric, so both directions are equal).
    # Without groups: rows 0 and 1 miss their target -> log(e^s + 2); row 2 hits it -> log(e^s + 2) - s.
    # With groups: rows 0 and 1 target [.5, .5, 0] -> log(e^s + 2) - s/2; row 2 unchanged.
    s = 10.0
    txt = torch.eye(3)                            # (3, 3) unit captions
    img = txt[[1, 0, 2]]                          # (3, 3) images 0 and 1 swapped
    groups = torch.tensor([7, 7, 9])
    lse = math.log(math.exp(s) + 2)
    expected_grouped = lse - 2 * s / 3            # (2 (lse - s/2) + lse - s) / 3
    expected_ungrouped = lse - s / 3              # (2 lse + lse - s) / 3
    loss = ContrastiveLoss("clip")
    grouped = float(loss(img, txt, torch.tensor(s), group_ids=groups))
    ungrouped = float(loss(img, txt, torch.tensor(s)))
    assert grouped == pytest.approx(expected_grouped, abs=1e-6)
    assert ungrouped == pytest.approx(expected_ungrouped, abs=1e-6)
    assert ungrouped - grouped > 3.0              # s / 3: the swap is only punished without groups
    # within a group, which image goes with which caption does not matter
    unswapped = float(loss(txt.clone(), txt, torch.tensor(s), group_ids=groups))
    assert unswapped == pytest.approx(grouped, abs=1e-6)


def test_duplicate_texts_are_not_negatives_siglip():
    # Items 0 and 1 share a caption and look alike: pairs (0, 1) and (1, 0) have logit s + b = 5.
    # With groups they are positives: 5 positive pairs at logit 5, 4 negative pairs at logit b = -5.
    # Without groups (0, 1) and (1, 0) are negatives at logit 5: each costs -log sigmoid(-5) ~ 5.
    s, b = 10.0, -5.0
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])   # (3, 2): img = txt
    groups = torch.tensor([7, 7, 9])

    def log_sig(x: float) -> float:
        return -math.log1p(math.exp(-x))

    expected_grouped = -(5 * log_sig(s + b) + 4 * log_sig(-b)) / 3
    expected_ungrouped = -(3 * log_sig(s + b) + 2 * log_sig(-(s + b)) + 4 * log_sig(-b)) / 3
    loss = ContrastiveLoss("siglip")
    grouped = float(loss(emb, emb, torch.tensor(s), torch.tensor(b), group_ids=groups))
    ungrouped = float(loss(emb, emb, torch.tensor(s), torch.tensor(b)))
    assert grouped == pytest.approx(expected_grouped, abs=1e-6)
    assert ungrouped == pytest.approx(expected_ungrouped, abs=1e-6)
    assert ungrouped - grouped > 3.0


def test_unknown_loss():
    with pytest.raises(ValueError, match="clip"):
        ContrastiveLoss("triplet")
