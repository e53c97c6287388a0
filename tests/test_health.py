"""Training health: the batch figures against hand formulas, the collapse detector on a network trained to a
constant embedding and on a healthy one, and the trainer recording both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from dcsnas.cli import main
from dcsnas.engine.health import HealthMonitor, batch_health, head_health

TINY = Path(__file__).resolve().parents[1] / "experiments" / "cpu" / "tiny_test.yaml"


def test_batch_figures_equal_hand_formulas():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([0, 0, 2])
    stats = batch_health(f, logits, labels, num_classes=3)
    # cosines: (1,0)·(0,1) = 0; (1,0)·(.6,.8) = .6; (0,1)·(.6,.8) = .8 -> mean over 6 ordered pairs = 1.4/3
    assert stats["health/fcos"].item() == pytest.approx(1.4 / 3)
    std0 = math.sqrt(((1 - 4 / 3) ** 2 + (4 / 3) ** 2 + (3 - 4 / 3) ** 2) / 3)
    std1 = math.sqrt(((0 - 2) ** 2 + 0 + (4 - 2) ** 2) / 3)
    assert stats["health/fstd"].item() == pytest.approx((std0 + std1) / 2)
    rms = math.sqrt((1 + 4 + 9 + 16) / 6)
    assert stats["health/fspread"].item() == pytest.approx((std0 + std1) / 2 / rms)
    ce = (math.log(3) + (math.log(2 + 2) - math.log(2)) + (math.log(math.e + math.e ** 2 + math.e ** 3) - 3)) / 3
    assert stats["health/ce_ratio"].item() == pytest.approx(ce / math.log(3), rel=1e-6)
    assert stats["health/logit_rms"].item() == pytest.approx(math.sqrt((math.log(2) ** 2 + 1 + 4 + 9) / 9), rel=1e-6)


def _train_embedding(target: str, steps: int = 300) -> nn.Module:
    """A two-layer network trained (Adam) either to map every input to one constant vector, or to keep the
    input's identity information (regress a fixed random projection of it)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    projection = torch.randn(16, 8)
    constant = torch.randn(8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        x = torch.randn(64, 16)
        goal = constant.expand(64, 8) if target == "constant" else x @ projection
        loss = (net(x) - goal).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@pytest.mark.parametrize("target, fires", [("constant", True), ("identity", False)])
def test_collapse_detector_fires_on_a_constant_embedding_only(target, fires):
    net = _train_embedding(target)
    with torch.no_grad():
        x = torch.randn(64, 16)
        features = net(x)
    labels = torch.arange(64) // 4
    stats = {k: float(v) for k, v in batch_health(features, None, labels, 16).items()}
    monitor = HealthMonitor(warmup_epochs=1)
    assert monitor.check(0, stats) == []  # never during the warm-up
    if fires:
        with pytest.warns(UserWarning, match="the embedding collapsed by epoch 2: mean pairwise cosine 1.000"):
            assert len(monitor.check(1, stats)) == 1
        assert monitor.events == {"collapse": 2}
        assert monitor.check(2, stats) == []  # once
    else:
        assert monitor.check(1, stats) == [] and monitor.events == {}


def test_ce_that_stays_at_uniform_after_warmup_warns_once():
    monitor = HealthMonitor(warmup_epochs=2, patience=2)
    assert monitor.check(1, {"health/ce_ratio": 1.2}) == []  # warm-up
    assert monitor.check(2, {"health/ce_ratio": 1.05}) == []  # one epoch: a transient
    assert monitor.check(3, {"health/ce_ratio": 0.9}) == []  # recovered: the count restarts
    assert monitor.check(4, {"health/ce_ratio": 1.0}) == []
    with pytest.warns(UserWarning, match=r"stayed at or above uniform for 2 epochs after the warm-up \(epoch 6: 1.10"):
        monitor.check(5, {"health/ce_ratio": 1.1})
    assert monitor.check(6, {"health/ce_ratio": 1.3}) == [] and monitor.events == {"ce_uniform": 6}


def test_head_health_reads_the_bnneck_gamma():
    model = nn.Module()
    model.head = nn.Module()
    model.head.bn = nn.BatchNorm1d(4)
    with torch.no_grad():
        model.head.bn.weight.copy_(torch.tensor([0.5, -1.5, 1.0, 1.0]))
    assert head_health(model) == {"health/bnneck_gamma": pytest.approx(1.0)}
    assert head_health(nn.Linear(2, 2)) == {}


def test_trainer_logs_health_per_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", str(TINY), "--set", f"data.root={tiny_data}", "--set", "optim.epochs=2",
                 "--set", "eval.every=0", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for record in metrics["history"]:
        train = record["train"]
        assert {"health/fcos", "health/fstd", "health/fspread", "health/ce_ratio", "health/logit_rms",
                "health/bnneck_gamma"} <= set(train)
        assert -1 <= train["health/fcos"] <= 1 and train["health/fstd"] >= 0
    assert isinstance(metrics["health"], dict)
