"""NASWOT and synflow against hand computations on a two-layer network written here, and their side effects."""

import math

import pytest
import torch
from torch import nn

from dcsnas.models.builder import create_model
from dcsnas.nas.proxies import naswot_score, synflow_score


def two_layer(w1, b1, w2, b2) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1)), net[0].bias.copy_(torch.tensor(b1))
        net[2].weight.copy_(torch.tensor(w2)), net[2].bias.copy_(torch.tensor(b2))
    return net


W1 = [[1.0, -1.0], [0.5, 2.0], [-1.0, -0.5]]
B1 = [0.0, -1.0, 0.5]
W2 = [[2.0, -3.0, 0.5]]
B2 = [0.25]


def test_naswot_equals_the_hand_log_determinant():
    net = two_layer(W1, B1, W2, B2)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    # pre-activations W1 x + b1 per image: (1, -0.5, -0.5), (-1, 1, 0), (0, -3.5, 2)
    # active units (> 0): 100, 010, 001; N_A = 3; K = N_A - Hamming = [[3,1,1],[1,3,1],[1,1,3]]
    # det = 3(9-1) - 1(3-1) + 1(1-3) = 20
    assert naswot_score(net, x) == pytest.approx(math.log(20), abs=1e-12)


def test_naswot_of_identical_codes_is_singular():
    net = two_layer(W1, B1, W2, B2)
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # the same code twice: K = [[3,3],[3,3]], det 0
    assert naswot_score(net, x) == -math.inf


def test_synflow_equals_the_hand_flow():
    net = two_layer(W1, B1, W2, B2)
    # |θ|, input ones: h = |W1| 1 + |b1| = (2, 3.5, 2); R = |W2| h + |b2|
    # Σ |θ ⊙ dR/dθ| over weights = Σ_j |W2_j| h_j + Σ_jk |W1_jk| |W2_j|
    #   = (4 + 10.5 + 1) + (2·2 + 3·2.5 + 0.5·1.5) = 15.5 + 12.25
    assert synflow_score(net, (1, 2)) == pytest.approx(27.75, abs=1e-12)


def test_synflow_ignores_normalisation_layers():
    net = two_layer(W1, B1, W2, B2)
    with_bn = nn.Sequential(net[0], nn.BatchNorm1d(3), net[1], net[2])
    with torch.no_grad():
        with_bn[1].running_var.fill_(4.0)
    assert synflow_score(with_bn, (1, 2)) == pytest.approx(27.75, abs=1e-12)


def test_synflow_is_not_cut_by_relu6():
    net = two_layer(W1, B1, W2, B2)
    net[1] = nn.ReLU6()  # h = (2, 3.5, 2) < 6; scaled by 4 it would clip at 6 without the identity
    with torch.no_grad():
        net[0].weight.mul_(4), net[0].bias.mul_(4)
    # h = 4·(2, 3.5, 2) = (8, 14, 8): Σ_j |W2_j| h_j + Σ_jk 4|W1_jk| |W2_j| = 4 · 27.75
    assert synflow_score(net, (1, 2)) == pytest.approx(4 * 27.75, abs=1e-12)


def test_scores_leave_the_model_and_the_random_state_alone():
    torch.manual_seed(0)
    model = create_model("mobilenetv2", 5, width_mult=0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(4, 3, 64, 32)
    state = torch.random.get_rng_state()
    naswot = naswot_score(model, images)
    synflow = synflow_score(model, (1, 3, 64, 32))
    assert math.isfinite(naswot) and synflow > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), state)
