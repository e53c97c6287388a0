from __future__ import annotations

import pytest
import torch

from dcsnas.config import from_dict
from dcsnas.engine.config import TrainConfig
from dcsnas.errors import ConfigError
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
    expected = brute_force_batch_hard(feats, labels, 0.3).float()
    assert torch.allclose(TripletLoss(0.3)(feats, labels), expected, atol=1e-5)


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


def test_cosine_triplet_matches_hand_values_and_ignores_scale():
    feats = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    c = 2 ** -0.5  # cos 45°
    # anchor 0: d_ap = 1 - c, d_an = min(1 - 0, 1 + c) = 1; anchor 1: d_ap = 1 - c, d_an = 1 - c;
    # anchor 2: d_ap = 1 - c, d_an = 1 - c; anchor 3: d_ap = 1 - c, d_an = min(1 + c, 1 - 0) = 1
    d = [(1 - c) - 1, 0.0, 0.0, (1 - c) - 1]
    expected = torch.relu(torch.tensor(d) + 0.3).mean()
    loss = TripletLoss(0.3, distance="cosine")
    assert torch.allclose(loss(feats, labels), expected, atol=1e-6)
    # shrinking every feature changes nothing: no collapse direction. The Euclidean loss of shrunk features
    # tends to its margin, which is below its value on a hard batch (hardest positive beyond the hardest negative)
    assert torch.allclose(loss(feats * 1e-3, labels), expected, atol=1e-5)
    euclidean, hard = TripletLoss(0.3), torch.tensor([0, 1, 1, 0])
    shrunk = euclidean(feats * 1e-3, hard).item()
    assert shrunk == pytest.approx(0.3, abs=1e-2) and shrunk < euclidean(feats, hard).item()


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


@pytest.mark.parametrize("loss, epochs, start", [
    ({}, 120, 36),                                   # the authors' default: 30 % of the epochs
    ({}, 10, 3),
    ({}, 2, 0),
    ({"ib_warmup_ratio": 0.5}, 9, 4),                # floor(0.5 * 9)
    ({"ib_warmup_epochs": 5}, 120, 5),               # an epoch count, when given, is used as is
    ({"ib_warmup_epochs": 0}, 120, 0),
])
def test_ib_warm_up_from_epochs_or_ratio(loss, epochs, start):
    assert LossConfig(**loss).ib_start_epoch(epochs) == start


@pytest.mark.parametrize("data, message", [
    ({"loss": {"ib_warmup_epochs": 3, "ib_warmup_ratio": 0.3}}, "set ib_warmup_epochs \\(3\\) or ib_warmup_ratio"),
    ({"loss": {"ib_warmup_ratio": 1.0}}, "ib_warmup_ratio must be in \\[0, 1\\), got 1.0"),
    ({"loss": {"ib_warmup_epochs": -1}}, "'loss.ib_warmup_epochs' = -1: expected an int"),
    ({"loss": {"ib_ixf": "mine"}}, "config key 'loss.ib_ixf': expected one of 'authors', 'batch_mi'"),
    ({"loss": {"ib_weight": 0.1, "ib_warmup_epochs": 4}, "optim": {"epochs": 4}},
     "loss.ib_warmup_epochs = 4 is not before optim.epochs = 4"),
    ({"schedule": {"rpp_start_epoch": 1}},
     "schedule.rpp_start_epoch = 1 needs model.head: pcb .*got model.head = 'bnneck'"),
    ({"schedule": {"rpp_start_epoch": 5}, "model": {"head": "pcb"}, "optim": {"epochs": 5}},
     "schedule.rpp_start_epoch = 5 is not before optim.epochs = 5"),
    ({"eval": {"protocol": "duke"}}, "config key 'eval.protocol': expected one of 'market', 'cuhk03'"),
    ({"loss": {"triplet_margin": 0.0}}, "triplet_margin must be > 0 .or set triplet_soft_margin"),
    ({"loss": {"triplet_weight": float("nan")}}, "'loss.triplet_weight' = nan: expected a finite number"),
    ({"loss": {"triplet_distance": "manhattan"}}, "config key 'loss.triplet_distance': expected one of"),
    ({"optim": {"min_factor": 1.5}}, r"config key 'optim.min_factor' = 1.5: expected a number in \[0, 1\]"),
])
def test_bad_loss_schedule_and_eval_keys_are_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, data)


def test_cosine_schedule_follows_the_half_cosine_after_warmup():
    from dcsnas.engine.optim import OptimConfig, lr_factor

    cfg = OptimConfig(epochs=6, warmup_epochs=1, warmup_factor=0.1, schedule="cosine", min_factor=0.0)
    # after the warm-up epoch, t = 0, 1/4, 1/2, 3/4, 1 over epochs 1..5: 0.5·(1 + cos πt)
    expected = [0.1, 1.0, (1 + 2 ** -0.5) / 2, 0.5, (1 - 2 ** -0.5) / 2, 0.0]
    assert [lr_factor(e, cfg) for e in range(6)] == pytest.approx(expected)
    step = OptimConfig(epochs=6, warmup_epochs=0, milestones=[3], gamma=0.5)
    assert [lr_factor(e, step) for e in range(6)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("on", ["features", "embedding"])
def test_triplet_reads_the_configured_output(on):
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1])
    outputs = {"logits": [torch.zeros(4, 2)], "features": torch.randn(4, 3), "embedding": torch.randn(4, 3)}
    cfg = LossConfig(ce_weight=0.0, triplet_on=on, triplet_distance="cosine")
    terms = ReIDCriterion(cfg, 2, 3)(outputs, labels)
    assert torch.equal(terms["triplet"], TripletLoss(0.3, distance="cosine")(outputs[on], labels))


def test_bnneck_training_embedding_is_the_batch_normalised_feature():
    from dcsnas.models.heads import BNNeck

    head = BNNeck(3, 5).train()
    fmap = torch.randn(6, 3, 2, 2, dtype=torch.float64)
    head = head.double()
    out = head(fmap)
    pooled = fmap.mean(dim=(2, 3))
    by_hand = (pooled - pooled.mean(0)) / torch.sqrt(pooled.var(0, unbiased=False) + head.bn.eps)
    assert torch.allclose(out["embedding"], by_hand, atol=1e-12)
    assert torch.allclose(out["features"], pooled, atol=1e-12)
