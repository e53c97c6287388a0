"""Attention modules (DESIGN §3): exact identities with SA and with literal formulas, the DCS gate, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dcsnas.attention import (
    CSAKernel,
    CSALRKernel,
    DCSAttention,
    DeepSupervisionHead,
    attention_options,
    create_attention,
)
from dcsnas.attention.landmarks import landmark_grid, pool_landmarks
from dcsnas.errors import ConfigError

SPECS = [
    ("sa", {}),
    ("sa", {"explicit": True}),
    ("csa", {"landmarks": 4}),
    ("csalr", {"landmarks": 4}),
    ("dcs", {"backend": "sa"}),
    ("dcs", {"backend": "csa", "landmarks": 4}),
    ("dcs", {"backend": "csalr", "landmarks": (2, 2)}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in opts.items())}" for name, opts in SPECS]


def _randomized(name, channels=16, seed=0, **options):
    """A module with random weights and gamma = 1 (so that the attention contributes to the output)."""
    torch.manual_seed(seed)
    module = create_attention(name, channels, **options)
    with torch.no_grad():
        for param_name, param in module.named_parameters():
            if not param_name.startswith("gate."):
                param.normal_(0, 0.3)
        module.gamma.fill_(1.0)
    return module


def _attention_branch(module, x):
    """The module's attention output fuse(attn(x)) (gamma = 1 in ``_randomized``)."""
    return module(x) - x


@pytest.mark.parametrize("groups", [1, 2])
def test_csalr_with_one_landmark_per_position_equals_sa(groups):
    sa = _randomized("sa", groups=groups, explicit=True)
    csalr = create_attention("csalr", 16, groups=groups, landmarks=(4, 3))
    csalr.load_state_dict(sa.state_dict())
    x = torch.randn(2, 16, 4, 3)
    y_sa, a_sa = sa(x, return_attention=True)
    y_lr, a_lr = csalr(x, return_attention=True)
    assert torch.allclose(y_lr, y_sa, atol=1e-5)
    assert torch.allclose(a_lr, a_sa, atol=1e-5)


def _reference_csalr(q, k, v, size, grid):
    """Seed 001 eqs. 11-17 literally (float64, explicit inverse, indicator by loops) for one [c, n] map."""
    (height, width), (gh, gw) = size, grid
    q, k, v = q.double(), k.double(), v.double()
    q_land = F.adaptive_avg_pool2d(q.view(-1, height, width), grid).flatten(1)
    k_land = F.adaptive_avg_pool2d(k.view(-1, height, width), grid).flatten(1)
    m = gh * gw
    indicator = torch.zeros(height * width, m, dtype=torch.float64)
    for r in range(height):
        for c in range(width):
            indicator[r * width + c, (r * gh // height) * gw + c * gw // width] = 1
    a_nm = torch.softmax(q.t() @ k_land, 1) + indicator  # eq. 15
    a_mm = torch.softmax(q_land.t() @ k_land, 1) + torch.eye(m, dtype=torch.float64)  # eq. 16
    b = torch.softmax(q_land.t() @ k, 1)  # eq. 13
    w = a_nm @ torch.linalg.inv(a_mm)  # eq. 14
    return (w @ b @ v.t()).t(), w @ b  # eq. 17


@pytest.mark.parametrize("size, grid", [((6, 4), (3, 2)), ((7, 5), (3, 2))])
def test_csalr_kernel_matches_the_paper_equations(size, grid):
    torch.manual_seed(1)
    n = size[0] * size[1]
    q, k, v = torch.randn(3, 4, n), torch.randn(3, 4, n), torch.randn(3, 8, n)
    y, attn = CSALRKernel(grid)(q, k, v, size, need_weights=True)
    for i in range(3):
        y_ref, attn_ref = _reference_csalr(q[i], k[i], v[i], size, grid)
        assert torch.allclose(y[i].double(), y_ref, atol=1e-4)
        assert torch.allclose(attn[i].double(), attn_ref, atol=1e-5)


def test_csalr_pooling_is_the_kernel_equals_stride_average_when_divisible():
    torch.manual_seed(2)
    q = torch.randn(1, 2, 6 * 4)
    pooled = pool_landmarks(q, (6, 4), (3, 2))
    expected = F.avg_pool2d(q.view(1, 2, 6, 4), kernel_size=(2, 2), stride=(2, 2)).flatten(2)
    assert torch.allclose(pooled, expected)


def test_csa_kernel_matches_its_formulas():
    torch.manual_seed(3)
    size, grid = (5, 4), (2, 2)
    q, k, v = torch.randn(1, 3, 20), torch.randn(1, 3, 20), torch.randn(1, 6, 20)
    y, attn = CSAKernel(grid)(q, k, v, size, need_weights=True)
    base = F.adaptive_avg_pool2d(k.view(1, 3, 5, 4), grid).flatten(2)[0]  # b_m: [c', M]
    expected = torch.zeros(6, 20)
    for i in range(20):
        weights = torch.softmax(q[0, :, i] @ base, 0)  # softmax_m(Q_i^T b_m)
        for mi in range(4):
            alpha = torch.softmax(base[:, mi] @ k[0], 0)  # alpha_m(j)
            expected[:, i] += weights[mi] * (v[0] * alpha).sum(1)  # o_m = sum_j alpha_m(j) V_j
    assert torch.allclose(y[0], expected, atol=1e-5)
    assert torch.allclose(attn[0] @ v[0].t(), expected.t(), atol=1e-5)


@pytest.mark.parametrize("scale", ["1", "sqrt"])
@pytest.mark.parametrize("groups", [1, 2])
def test_sa_through_sdpa_equals_explicit_sa_with_gradients(scale, groups):
    explicit = _randomized("sa", groups=groups, scale=scale, explicit=True)
    fused = create_attention("sa", 16, groups=groups, scale=scale)
    fused.load_state_dict(explicit.state_dict())
    x = torch.randn(2, 16, 5, 3)
    y_e, y_f = explicit(x), fused(x)
    assert torch.allclose(y_e, y_f, atol=1e-5)
    y_e.square().sum().backward()
    y_f.square().sum().backward()
    for (name, p_e), p_f in zip(explicit.named_parameters(), fused.parameters()):
        assert torch.allclose(p_e.grad, p_f.grad, atol=1e-4), name


@pytest.mark.parametrize("name, options", SPECS, ids=IDS)
@pytest.mark.parametrize("train", [True, False])
def test_every_module_is_the_identity_at_initialisation(name, options, train):
    module = create_attention(name, 16, groups=2, **options).train(train)
    x = torch.randn(2, 16, 6, 4)
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("name, options", SPECS, ids=IDS)
def test_groups_shapes_and_attention_rows_sum_to_one(name, options):
    module = _randomized(name, groups=2, **options).eval()
    x = torch.randn(3, 16, 6, 4)
    y, attn = module(x, return_attention=True)
    assert y.shape == x.shape and attn.shape == (3, 2, 24, 24)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 2, 24), atol=1e-5)
    assert torch.allclose(module(x), y, atol=1e-5)


def test_non_divisible_map_uses_adaptive_landmarks():
    module = _randomized("csalr", groups=1, landmarks=(3, 2))
    x = torch.randn(2, 16, 7, 5)
    y, attn = module(x, return_attention=True)
    assert y.shape == x.shape and attn.shape == (2, 1, 35, 35)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 1, 35), atol=1e-5)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("count, size, grid", [(96, (64, 32), (12, 8)), (96, (96, 32), (12, 8)),
                                               (64, (96, 32), (16, 4)), (6, (7, 5), (3, 2)), (35, (7, 5), (7, 5))])
def test_landmark_count_is_fitted_to_the_map(count, size, grid):
    assert landmark_grid(count, size) == grid


@pytest.mark.parametrize("name, options", SPECS, ids=IDS)
def test_autocast_bf16_on_cpu(name, options):
    module = _randomized(name, groups=2, **options)
    x = torch.randn(2, 16, 6, 4)
    reference = _attention_branch(module.eval(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.allclose(y - x, reference, atol=0.1 * reference.abs().max().item())
    module.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def _dcs(backend="sa", **options):
    """DCS with random gate weights, so that some channels are dropped."""
    module = _randomized("dcs", backend=backend, **options)
    with torch.no_grad():
        module.gate.weight.normal_(0, 0.5)
        module.gate.bias.zero_()
    return module


@pytest.mark.parametrize("backend", ["sa", "csa", "csalr"])
def test_gradients_reach_the_dcs_gate_through_the_straight_through_mask(backend):
    module = _dcs(backend, landmarks=4) if backend != "sa" else _dcs()
    module.train()
    x = torch.randn(2, 16, 6, 4)
    mask = module.channel_mask(x)
    assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}  # hard in the forward pass
    module(x).square().sum().backward()
    assert module.gate.weight.grad.abs().sum() > 0 and module.gate.bias.grad.abs().sum() > 0


def test_dcs_eval_is_deterministic_and_its_mask_is_theta_positive():
    module = _dcs("csalr", landmarks=4).eval()
    x = torch.randn(2, 16, 6, 4)
    mask = module.channel_mask(x)
    assert torch.equal(mask, (module.gate(x) > 0).float())
    assert 0 < mask.mean() < 1
    assert torch.equal(module(x), module(x))
    assert float(module.kept_ratio) == pytest.approx(float(mask.mean()))


def test_dcs_mask_gates_q_and_k_but_not_v():
    module = _dcs("sa").eval()
    x = torch.randn(1, 16, 4, 3)
    with torch.no_grad():
        module.gate.bias.fill_(-100.0)  # drop every query/key channel: uniform attention over positions
        module.gate.weight.zero_()
    y = _attention_branch(module, x)
    v = module.value(x).flatten(2)
    assert torch.allclose(y.flatten(2), v.mean(-1, keepdim=True).expand_as(v), atol=1e-5)
    assert float(module.kept_ratio) == 0.0


def test_dcs_initial_gate_keeps_every_channel_and_tau_is_settable():
    module = create_attention("dcs", 16, backend="csalr", landmarks=4).eval()
    module(torch.randn(1, 16, 4, 4))
    assert float(module.kept_ratio) == 1.0
    module.tau = 0.1
    assert module.tau == 0.1
    with pytest.raises(ConfigError, match=r"'tau' = 0"):
        module.tau = 0


def test_deep_supervision_multiplies_the_input_with_the_attention_output_before_the_residual():
    module = _randomized("csalr", groups=2, landmarks=4, keep_output=True)
    with torch.no_grad():
        module.gamma.fill_(0.5)
    head = DeepSupervisionHead(16, num_classes=5)
    x = torch.randn(2, 16, 6, 4)
    out = module(x)
    attn_out = (out - x) / 0.5
    assert torch.allclose(module.last_output, attn_out, atol=1e-5)
    logits = head(x, module.last_output)
    assert torch.allclose(logits, head.fc((x * attn_out).mean(dim=(2, 3))), atol=1e-5)


def test_options_of_each_name():
    assert {"landmarks", "groups"} <= attention_options("csalr")
    assert "landmarks" not in attention_options("sa") and "scale" in attention_options("sa")
    assert {"tau", "backend", "landmarks"} <= attention_options("dcs", "csalr")
    assert isinstance(create_attention("dcs", 16, backend="csa", landmarks=4), DCSAttention)


@pytest.mark.parametrize("call, message", [
    (lambda: create_attention("nonlocal", 16), r"'name' = 'nonlocal': expected one of 'sa', 'csa'"),
    (lambda: create_attention("sa", 16, groups=3), r"'groups' = 3: expected a positive int that divides channels = 16"),
    (lambda: create_attention("sa", 16, groups=2, qk_ratio=16), r"'qk_ratio' = 16: .*C' >= 1"),
    (lambda: create_attention("sa", 16, landmarks=4), r"'landmarks' = 4: no such option for 'sa'; allowed: "),
    (lambda: create_attention("sa", 16, scale="2"), r"'scale' = '2': expected '1' .* or 'sqrt'"),
    (lambda: create_attention("csalr", 16, landmarks=0), r"'landmarks' = 0: expected a positive int"),
    (lambda: create_attention("dcs", 16, backend="nystrom"), r"'backend' = 'nystrom': expected one of 'sa', 'csa'"),
    (lambda: create_attention("dcs", 16, backend="sa", landmarks=4),
     r"'landmarks' = 4: no such option for 'dcs' with backend 'sa'; allowed: backend, explicit"),
    (lambda: create_attention("csalr", 16, landmarks=(5, 2))(torch.randn(1, 16, 4, 4)),
     r"'landmarks' = \[5, 2\]: the grid is larger than the 4x4 feature map"),
    (lambda: create_attention("csa", 16, landmarks=7)(torch.randn(1, 16, 4, 4)),
     r"'landmarks' = 7: no grid H' x W' = 7 fits in the 4x4 feature map"),
])
def test_bad_options_raise_config_error_naming_the_option(call, message):
    with pytest.raises(ConfigError, match=message):
        call()
