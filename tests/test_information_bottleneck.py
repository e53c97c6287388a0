"""The IB bound (DESIGN §4) against literal evaluations of its formula, and the per-epoch refresh."""

from __future__ import annotations

import math

import pytest
import torch

from dcsnas.losses import InformationBottleneck, kmeans


def _phi(v, centroids, beta=1.0):
    """phi(v, a) = softmax_a(-beta ||v/||v|| - c_a||^2), with Python loops."""
    norm = math.sqrt(sum(x * x for x in v))
    u = [x / norm for x in v]
    scores = [math.exp(-beta * sum((ui - ci) ** 2 for ui, ci in zip(u, c))) for c in centroids]
    return [s / sum(scores) for s in scores]


def _hand_built():
    ib = InformationBottleneck()
    ib.feature_centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, -0.8]])
    ib.input_centroids = torch.tensor([[0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    ib.log_q = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]).log()
    features_f = torch.tensor([[2.0, 0.5], [-1.0, 3.0], [0.3, -0.2]])
    features_x = torch.tensor([[1.0, 2.0, 0.5], [0.1, 0.0, 4.0], [3.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    return ib, features_f, features_x, labels


def test_loss_equals_a_literal_evaluation_of_the_formula():
    ib, features_f, features_x, labels = _hand_built()
    terms = ib(features_f, features_x, labels)
    q = ib.log_q.exp().tolist()
    ixf = iyf = 0.0
    for f, x, y in zip(features_f.tolist(), features_x.tolist(), labels.tolist()):
        phi_f = _phi(f, ib.feature_centroids.tolist())
        phi_x = _phi(x, ib.input_centroids.tolist())
        ixf += sum(phi_f[a] * phi_x[b] * math.log(phi_x[b]) for a in range(3) for b in range(2))
        iyf -= sum(phi_f[a] * math.log(q[y][a]) for a in range(3))
    assert terms["ixf"].item() == pytest.approx(ixf / 3, rel=1e-5)
    assert terms["iyf"].item() == pytest.approx(iyf / 3, rel=1e-5)
    assert terms["total"].item() == pytest.approx((ixf + iyf) / 3, rel=1e-5)


def test_batch_mi_equals_a_literal_evaluation_of_the_plug_in_mutual_information():
    ib, features_f, features_x, labels = _hand_built()
    ib.ixf = "batch_mi"
    terms = ib(features_f, features_x, labels)
    phis_f = [_phi(f, ib.feature_centroids.tolist()) for f in features_f.tolist()]
    phis_x = [_phi(x, ib.input_centroids.tolist()) for x in features_x.tolist()]
    joint = [[sum(pf[a] * px[b] for pf, px in zip(phis_f, phis_x)) / 3 for b in range(2)] for a in range(3)]
    p_a = [sum(joint[a][b] for b in range(2)) for a in range(3)]
    p_b = [sum(joint[a][b] for a in range(3)) for b in range(2)]
    mi = sum(joint[a][b] * math.log(joint[a][b] / (p_a[a] * p_b[b])) for a in range(3) for b in range(2))
    q = ib.log_q.exp().tolist()
    iyf = -sum(sum(pf[a] * math.log(q[y][a]) for a in range(3)) for pf, y in zip(phis_f, labels.tolist())) / 3
    assert mi > 1e-3  # the example is not degenerate
    assert terms["ixf"].item() == pytest.approx(mi, rel=1e-5)
    assert terms["iyf"].item() == pytest.approx(iyf, rel=1e-5)
    assert terms["total"].item() == pytest.approx(mi + iyf, rel=1e-5)


def test_batch_mi_is_zero_for_independent_and_log_k_for_identical_one_hot_clusters():
    ib = InformationBottleneck(ixf="batch_mi")
    one_hot = torch.eye(3)
    assert ib.batch_mutual_information(one_hot, one_hot).item() == pytest.approx(math.log(3), rel=1e-6)
    uniform = torch.full((3, 2), 0.5)
    assert ib.batch_mutual_information(one_hot, uniform).item() == pytest.approx(0.0, abs=1e-7)


def test_first_term_has_no_gradient_to_f_for_authors_and_some_for_batch_mi():
    grads = {}
    for mode in ("authors", "batch_mi"):
        ib, features_f, features_x, labels = _hand_built()
        ib.ixf = mode
        features_f.requires_grad_(True)
        ib(features_f, features_x, labels)["ixf"].backward()
        grads[mode] = features_f.grad.norm().item()
    assert grads["authors"] < 1e-7  # sum_a phi(F, a) = 1: the first term is -H(phi(X, .)), constant in F
    assert grads["batch_mi"] > 1e-3


def test_gradient_flows_to_the_features():
    ib, features_f, features_x, labels = _hand_built()
    features_f.requires_grad_(True)
    ib(features_f, features_x, labels)["total"].backward()
    assert features_f.grad.abs().sum() > 0


def test_unknown_first_term_is_refused():
    with pytest.raises(ValueError, match="ixf must be one of authors, batch_mi"):
        InformationBottleneck(ixf="mine")


def _clustered(seed=0):
    """30 features around three directions, identity y = direction index; inputs around two directions."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.arange(30) % 3
    features_f = 5 * directions[labels] + 0.1 * torch.randn(30, 3, generator=g)
    features_x = torch.stack([torch.tensor([1.0, 1.0]), torch.tensor([1.0, -1.0])])[labels % 2]
    return features_f, features_x + 0.05 * torch.randn(30, 2, generator=g), labels


def test_refresh_finds_the_clusters_and_computes_q_of_a_given_y():
    features_f, features_x, labels = _clustered()
    ib = InformationBottleneck()
    ib.refresh(features_f, features_x, labels, num_classes=3)
    assert ib.feature_centroids.shape == (3, 3) and ib.input_centroids.shape == (3, 2)
    normalised = torch.nn.functional.normalize(features_f, dim=1)
    for a in range(3):  # each centroid is the mean of one direction's normalised features
        assert min((normalised[labels == y].mean(0) - ib.feature_centroids[a]).norm() for y in range(3)) < 1e-5
    q = ib.log_q.exp()
    for y in range(3):
        members = [i for i in range(30) if labels[i] == y]
        for a in range(3):
            phis = [_phi(features_f[i].tolist(), ib.feature_centroids.tolist())[a] for i in members]
            expected = sum(phis) / len(members)
            assert q[y, a].item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(q.sum(1), torch.ones(3))


def test_input_centroids_are_computed_once_and_survive_a_state_dict_round_trip():
    features_f, features_x, labels = _clustered()
    ib = InformationBottleneck(num_feature_clusters=3, num_input_clusters=2)
    ib.refresh(features_f, features_x, labels)
    inputs = ib.input_centroids.clone()
    ib.refresh(features_f * 2, features_x + 10, labels)
    assert torch.equal(ib.input_centroids, inputs)
    restored = InformationBottleneck(num_feature_clusters=3, num_input_clusters=2)
    restored.load_state_dict(ib.state_dict())
    batch = (features_f[:5], features_x[:5], labels[:5])
    assert all(torch.equal(restored(*batch)[k], ib(*batch)[k]) for k in ("ixf", "iyf", "total"))


def test_empty_cluster_of_an_identity_is_clamped_not_infinite():
    features_f, features_x, labels = _clustered()
    ib = InformationBottleneck(beta=1e4)  # phi is one-hot up to underflow: Q(a|y) = 0 for foreign clusters
    ib.refresh(features_f, features_x, labels, num_classes=3)
    assert (ib.log_q == math.log(ib.eps)).sum() == 6
    terms = ib(features_f, features_x, (labels + 1) % 3)  # every sample against another identity's Q
    assert torch.isfinite(terms["total"]) and terms["iyf"].item() == pytest.approx(-math.log(ib.eps), rel=1e-4)


def test_loss_before_refresh_is_an_error():
    with pytest.raises(RuntimeError, match="call refresh"):
        InformationBottleneck()(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]))


def test_kmeans_is_seeded_and_validates_k():
    x = torch.randn(50, 4)
    a = kmeans(x, 5, generator=torch.Generator().manual_seed(1))
    b = kmeans(x, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (5, 4)
    with pytest.raises(ValueError, match="1 <= k <= number of points"):
        kmeans(x, 51)
