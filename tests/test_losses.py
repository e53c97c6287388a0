from __future__ import annotations

import torch

from dcsnas.losses.center import CenterLoss
from dcsnas.losses.criterion import LossConfig, ReIDCriterion
from dcsnas.losses.triplet import TripletLoss


def brute_force_batch_hard(features, labels, margin):
    losses = []
    for a in range(len(labels)):
        pos = [torch.dist(features[a], features[p]) for p in range(len(labels)) if labels[p] == labels[a]]
        neg = [torch.dist(features[a], features[n]) for n in range(len(labels)) if labels[n] != labels[a]]
        losses.append(torch.relu(max(pos) - min(neg) + margin))
    return torch.stack(losses).mean()


def test_batch_hard_triplet_matches_brute_force():
    torch.manual_seed(0)
    feats = torch.randn(8, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert torch.allclose(TripletLoss(0.3)(feats, labels), brute_force_batch_hard(feats, labels, 0.3).float(), atol=1e-5)


def test_soft_margin_and_gradient():
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 3.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: d_ap = 1, d_an = 2 ; anchor 1: d_ap = 1, d_an = sqrt(5) ; anchor 2: d_ap = 1, d_an = 2 ;
    # anchor 3: d_ap = 1, d_an = 3
    expected = torch.nn.functional.softplus(torch.tensor([1 - 2, 1 - 5 ** 0.5, 1 - 2, 1 - 3.0])).mean()
    loss = TripletLoss(soft_margin=True)(feats, labels)
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert feats.grad.abs().sum() > 0


def test_center_loss_value():
    center = CenterLoss(2, 2)
    with torch.no_grad():
        center.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    feats = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    assert torch.isclose(center(feats, torch.tensor([0, 1])), torch.tensor(0.5 * (1 + 4) / 2))


def test_criterion_returns_every_weighted_term():
    torch.manual_seed(0)
    cfg = LossConfig(center_weight=0.0005, deep_supervision_weight=0.5)
    crit = ReIDCriterion(cfg, num_classes=3, feature_dim=4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    outputs = {"logits": [torch.randn(6, 3)], "features": torch.randn(6, 4), "aux_logits": [torch.randn(6, 3)] * 2}
    terms = crit(outputs, labels)
    assert set(terms) == {"ce", "triplet", "center", "deep_supervision", "total"}
    ce = torch.nn.functional.cross_entropy(outputs["logits"][0], labels, label_smoothing=0.1)
    assert torch.isclose(terms["ce"], ce)
    ds = 2 * torch.nn.functional.cross_entropy(outputs["aux_logits"][0], labels, label_smoothing=0.1)
    assert torch.isclose(terms["deep_supervision"], 0.5 * ds)
    assert torch.isclose(terms["total"], sum(v for k, v in terms.items() if k != "total"))
    assert "center" not in ReIDCriterion(LossConfig(), 3, 4)(outputs, labels)


def test_triplet_without_negatives_is_zero():
    feats = torch.randn(4, 3, requires_grad=True)
    assert TripletLoss()(feats, torch.zeros(4, dtype=torch.long)).item() == 0.0
