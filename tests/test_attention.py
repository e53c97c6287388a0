"""Attention modules (DESIGN §3): exact identities with SA and with literal formulas, the DCS gate, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import dcsnas.attention.base as base_module
import dcsnas.attention.csalr as csalr_module
import dcsnas.attention.dcs as dcs_module
from dcsnas.attention import (
    CSAKernel,
    CSALRKernel,
    DCSAttention,
    DeepSupervisionHead,
    SAKernel,
    attention_options,
    create_attention,
)
from dcsnas.attention.chunked import query_chunked_attention
from dcsnas.attention.landmarks import landmark_grid, pool_landmarks, spread_to_patches
from dcsnas.errors import ConfigError
from dcsnas.models.builder import create_model

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
    return module(x)[0] - x


@pytest.mark.parametrize("groups", [1, 2])
def test_csalr_with_one_landmark_per_position_equals_sa(groups):
    sa = _randomized("sa", groups=groups, explicit=True)
    csalr = create_attention("csalr", 16, groups=groups, landmarks=(4, 3))
    csalr.load_state_dict(sa.state_dict())
    x = torch.randn(2, 16, 4, 3)
    y_sa, a_sa = sa(x, need_weights=True)
    y_lr, a_lr = csalr(x, need_weights=True)
    assert torch.allclose(y_lr, y_sa, atol=1e-5)
    assert torch.allclose(a_lr, a_sa, atol=1e-5)


@pytest.mark.parametrize("size", [(4, 3), (5, 2)])
def test_float64_csalr_with_one_landmark_per_position_equals_sa_to_rounding(size):
    torch.manual_seed(4)
    n = size[0] * size[1]
    q, k, v = (torch.randn(3, c, n, dtype=torch.float64) for c in (4, 4, 8))
    y_sa, a_sa = SAKernel(explicit=True)(q, k, v, size, need_weights=True)
    y_lr, a_lr = CSALRKernel(size)(q, k, v, size, need_weights=True)
    assert y_lr.dtype == a_lr.dtype == torch.float64
    assert (y_lr - y_sa).abs().max() < 1e-12 and (a_lr - a_sa).abs().max() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grid, size", [((2, 1), (2, 1)), ((2, 1), (4, 1))])
def test_saturated_logits_make_a_singular_a_mm_but_no_nan(dtype, grid, size):
    """Logits +-2500 (scale 1): S = [[0, 1], [1, 0]] in floating point, A_mm = S + I = [[1, 1], [1, 1]]."""
    rows = size[0] // grid[0]
    q = torch.tensor([50.0] * rows + [-50.0] * rows, dtype=dtype).view(1, 1, -1).requires_grad_()
    k = (-q.detach()).requires_grad_()
    v = torch.randn(1, 3, q.shape[-1], dtype=dtype, requires_grad=True)
    q_land = pool_landmarks(q.detach(), size, grid)
    a_mm = torch.softmax(q_land.transpose(1, 2) @ pool_landmarks(k.detach(), size, grid), -1) + torch.eye(2)
    assert torch.equal(a_mm, torch.ones(1, 2, 2, dtype=dtype))  # singular in floating point
    y, attn = CSALRKernel(grid)(q, k, v, size, need_weights=True)
    assert torch.isfinite(y).all() and torch.isfinite(attn).all()
    (y.square().sum() + attn.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def _two_landmarks(c: float, d: float, dtype):
    """Q = [c + d, c - d, -c - d, -c + d] on a 4 x 1 map (C' = C = 1), K = -Q, V = [1, -1, -1, 1], 2 x 1 grid:
    Q' = [c, -c], K' = [-c, c]. Returns q, k, v and CSALR's output y = A_nm A_mm^-1 B V^T (eqs. 13-17)
    written out: A_mm = S + I with S = [[s, 1 - s], [1 - s, s]], s = 1/(1 + e^(2c^2)) (eigenvalues 2 and 2s)."""
    qs = [c + d, c - d, -c - d, -c + d]
    q = torch.tensor(qs, dtype=torch.float64).view(1, 1, 4)
    v = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    q_land, k_land = [c, -c], [-c, c]

    def softmax(row):
        top = max(row)
        e = [math.exp(x - top) for x in row]
        return [x / sum(e) for x in e]

    b = torch.tensor([softmax([qi * -qp for qp in qs]) for qi in q_land], dtype=torch.float64)  # [2, 4]
    a_nm = torch.tensor([softmax([qp * kj for kj in k_land]) for qp in qs], dtype=torch.float64)
    a_nm += torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    a_mm = torch.tensor([softmax([qi * kj for kj in k_land]) for qi in q_land], dtype=torch.float64) + torch.eye(2)
    (p, r), (t, u) = a_mm.tolist()
    inverse = torch.tensor([[u, -r], [-t, p]], dtype=torch.float64) / (p * u - r * t)
    y = a_nm @ inverse @ (b @ v)
    return q.to(dtype), (-q).to(dtype), v.view(1, 1, 4).to(dtype), y


def test_csalr_output_equals_the_papers_formula_for_a_well_conditioned_a_mm():
    q, k, v, y = _two_landmarks(1.0, 0.5, torch.float64)
    out, _ = CSALRKernel((2, 1))(q, k, v, (4, 1))
    assert torch.allclose(out.flatten(), y, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype, c, d", [(torch.float32, 2.5, 1.0), (torch.float64, 3.5, 1.5)])
def test_a_nearly_singular_a_mm_does_not_blow_up_the_output(dtype, c, d):
    """The exact W = A_nm A_mm^-1 has entries ~ e^(2cd) / 2: the formula multiplies V by e^(2cd) / 2 (74 in
    float32, 1.8e4 in float64 here) while kappa(A_mm) = 1/s = 1 + e^(2c^2) passes 1/sqrt(eps) (the LU still
    succeeds); in a search this multiplied the activations by 1e11 until the softmax overflowed to NaN.
    Beyond kappa = 1/sqrt(eps) the Tikhonov solution bounds |A_mm^-1 E| by |E| / (2 eps^(1/4)) (and A_nm's
    rows sum to 2), so the output stays below that gain times |V|."""
    q, k, v, exact = _two_landmarks(c, d, dtype)
    eps = torch.finfo(dtype).eps
    assert 1 + math.exp(2 * c * c) > eps ** -0.5  # kappa(A_mm)
    gain = 2 / (2 * eps ** 0.25)
    assert exact.abs().max() > gain  # what the formula gives in exact arithmetic
    out, _ = CSALRKernel((2, 1))(q, k, v, (4, 1))
    assert torch.isfinite(out).all() and out.abs().max() <= gain * v.abs().max()


@pytest.mark.parametrize("kernel", [CSAKernel, CSALRKernel])
def test_scale_sqrt_divides_the_logits_by_sqrt_of_the_query_channels(kernel):
    """Every logit is bilinear in (Q, K) (CSA's base vectors are pooled K), so multiplying the logits by
    s = 1/sqrt(C') equals multiplying Q and K by sqrt(s)."""
    torch.manual_seed(5)
    q, k, v = torch.randn(2, 4, 24), torch.randn(2, 4, 24), torch.randn(2, 6, 24)
    y_sqrt, a_sqrt = kernel((3, 2), scale="sqrt")(q, k, v, (6, 4), need_weights=True)
    root = (1 / math.sqrt(4)) ** 0.5
    y_one, a_one = kernel((3, 2), scale="1")(q * root, k * root, v, (6, 4), need_weights=True)
    assert torch.allclose(y_sqrt, y_one, atol=1e-5) and torch.allclose(a_sqrt, a_one, atol=1e-6)
    assert not torch.allclose(y_sqrt, kernel((3, 2))(q, k, v, (6, 4))[0], atol=1e-3)


@pytest.mark.parametrize("backend", ["sa", "csa", "csalr"])
def test_dcs_passes_scale_to_its_backend(backend):
    options = {} if backend == "sa" else {"landmarks": 4}
    dcs = _randomized("dcs", backend=backend, scale="sqrt", **options).eval()  # gate keeps every channel
    plain = create_attention(backend, 16, scale="sqrt", groups=1, **options).eval()
    plain.load_state_dict({k: v for k, v in dcs.state_dict().items() if not k.startswith("gate.")})
    x = torch.randn(2, 16, 6, 4)
    assert dcs.kernel.scale == "sqrt" and torch.allclose(dcs(x)[0], plain(x)[0], atol=1e-6)


@pytest.mark.parametrize("kernel", [CSAKernel(4), CSALRKernel(4), SAKernel(explicit=True)])
def test_half_precision_inputs_get_float32_softmaxes(kernel):
    q, k, v = (torch.randn(1, c, 24).bfloat16() for c in (2, 2, 4))
    y, attn = kernel(q, k, v, (6, 4), need_weights=True)
    assert attn.dtype == torch.float32 and y.dtype == torch.bfloat16 and torch.isfinite(y).all()


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
    y_e, y_f = explicit(x)[0], fused(x)[0]
    assert torch.allclose(y_e, y_f, atol=1e-5)
    y_e.square().sum().backward()
    y_f.square().sum().backward()
    for (name, p_e), p_f in zip(explicit.named_parameters(), fused.parameters()):
        assert torch.allclose(p_e.grad, p_f.grad, atol=1e-4), name


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_the_projection_is_the_grouped_qkv_conv_in_float64_with_gradients(groups):
    module = _randomized("csalr", channels=32, groups=groups, landmarks=4, qk_ratio=2).double()
    x = torch.randn(2, 32, 6, 4, dtype=torch.float64, requires_grad=True)
    conv = F.conv2d(x, module.qkv.weight, module.qkv.bias, groups=groups).reshape(2 * groups, -1, 24)
    qk = module.qk_channels // groups
    for got, want in zip(module.project(x), (conv[:, :qk], conv[:, qk : 2 * qk], conv[:, 2 * qk :])):
        assert torch.allclose(got, want, rtol=0, atol=1e-12)
    weight = torch.randn(conv.shape, dtype=torch.float64)
    params = (x, module.qkv.weight, module.qkv.bias)
    got = torch.autograd.grad((torch.cat(module.project(x), 1) * weight).sum(), params)
    for a, b in zip(got, torch.autograd.grad((conv * weight).sum(), params)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size, grid", [((8, 6), (4, 3)), ((8, 6), (8, 6)), ((8, 6), (1, 1)), ((7, 5), (3, 2))])
@pytest.mark.parametrize("dim", [1, -1])
def test_spread_to_patches_is_the_indicator_product_with_its_gradient(size, grid, dim):
    n, m = size[0] * size[1], grid[0] * grid[1]
    indicator = torch.zeros(n, m, dtype=torch.float64)  # 1(position (r, c) lies in patch (r H'/H, c W'/W))
    for r in range(size[0]):
        for c in range(size[1]):
            indicator[r * size[1] + c, (r * grid[0] // size[0]) * grid[1] + c * grid[1] // size[1]] = 1
    t = torch.randn(2, m, 3, dtype=torch.float64, requires_grad=True) if dim == 1 else \
        torch.randn(2, 3, m, dtype=torch.float64, requires_grad=True)
    got = spread_to_patches(t, dim, size, grid)
    want = indicator @ t if dim == 1 else t @ indicator.T
    assert torch.equal(got, want) and got.data_ptr() != t.data_ptr()
    weight = torch.randn(want.shape, dtype=torch.float64)
    g_got, = torch.autograd.grad((got * weight).sum(), t)
    g_want, = torch.autograd.grad((want * weight).sum(), t)
    assert torch.allclose(g_got, g_want, rtol=0, atol=1e-12)
    base = torch.randn(want.shape, dtype=torch.float64)
    added = spread_to_patches(t, dim, size, grid, add_to=base.clone())
    assert torch.allclose(added, base + want, rtol=0, atol=1e-15)
    g_added, = torch.autograd.grad((added * weight).sum(), t)
    assert torch.allclose(g_added, g_want, rtol=0, atol=1e-12)


def _csalr_whole(q, k, v, size, grid):
    """CSALR's output with every weight tensor formed whole (B [N, m, n], S_nm [N, n, m]), as before the
    kernel formed them in blocks: [N, c, n]."""
    ql, kl = pool_landmarks(q, size, grid), pool_landmarks(k, size, grid)
    b = torch.softmax(ql.transpose(1, 2) @ k, -1)
    s_nm = torch.softmax(q.transpose(1, 2) @ kl, -1)
    a_mm = torch.softmax(ql.transpose(1, 2) @ kl, -1) + torch.eye(ql.shape[2], dtype=q.dtype)
    z_t = torch.linalg.solve(a_mm, b @ v.transpose(1, 2)).transpose(1, 2)
    return z_t @ s_nm.transpose(1, 2) + spread_to_patches(z_t, -1, size, grid)


@pytest.mark.parametrize("min_rows", [1, 7, 1000])  # V's size / 4 (c = 5: blocks not dividing m, n); 7; whole
@pytest.mark.parametrize("size, grid", [((8, 6), (4, 3)), ((7, 5), (3, 2))])
def test_csalr_in_blocks_equals_the_whole_weights_in_float64_with_gradients(min_rows, size, grid, monkeypatch):
    monkeypatch.setattr(base_module, "MIN_CHUNK_ROWS", min_rows)
    torch.manual_seed(min_rows)
    n = size[0] * size[1]
    q, k = (torch.randn(2, 3, n, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 5, n, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 5, n, dtype=torch.float64)
    y, _ = CSALRKernel(grid)(q, k, v, size)
    expected = _csalr_whole(q, k, v, size, grid)
    assert torch.allclose(y, expected, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((y * weight).sum(), (q, k, v))
    for name, got, want in zip("qkv", grads, torch.autograd.grad((expected * weight).sum(), (q, k, v))):
        assert torch.allclose(got, want, rtol=0, atol=1e-12), name


@pytest.mark.parametrize("min_rows", [1, 7, 1000])
def test_csa_in_blocks_equals_the_whole_weights_in_float64_with_gradients(min_rows, monkeypatch):
    monkeypatch.setattr(base_module, "MIN_CHUNK_ROWS", min_rows)
    torch.manual_seed(min_rows)
    size, grid, n = (7, 5), (3, 2), 35
    q, k = (torch.randn(2, 3, n, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 5, n, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 5, n, dtype=torch.float64)
    y, _ = CSAKernel(grid)(q, k, v, size)
    base = pool_landmarks(k, size, grid)
    expected = v @ torch.softmax(base.transpose(1, 2) @ k, -1).transpose(1, 2) \
        @ torch.softmax(q.transpose(1, 2) @ base, -1).transpose(1, 2)
    assert torch.allclose(y, expected, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((y * weight).sum(), (q, k, v))
    for name, got, want in zip("qkv", grads, torch.autograd.grad((expected * weight).sum(), (q, k, v))):
        assert torch.allclose(got, want, rtol=0, atol=1e-12), name


@pytest.mark.parametrize("groups", [1, 4])
def test_csalr_forms_its_n_by_m_weights_a_block_at_a_time(groups, monkeypatch):
    """Every softmax but A_mm's [N, m, m] holds at most a quarter of V's elements per item (c n / 4), whatever
    the groups."""
    size, grid = (8, 6), (4, 3)
    n, m, items, c = 48, 12, 2 * groups, 4
    monkeypatch.setattr(base_module, "MIN_CHUNK_ROWS", 1)
    module = _randomized("csalr", channels=c * groups, groups=groups, landmarks=grid, qk_ratio=2)
    shapes = []
    real_softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda t, *a, **kw: shapes.append(t.shape) or real_softmax(t, *a, **kw))
    with torch.no_grad():
        module(torch.randn(2, c * groups, *size))
    assert (items, m, m) in shapes
    blocks = [s for s in shapes if s != (items, m, m)]
    assert blocks and all(s[0] == items and 4 * s[1] * s[2] <= c * n for s in blocks)
    b_rows = [s[1] for s in blocks if s[2] == n]  # blocks of B's landmark rows, [N, rows, n]
    s_rows = [s[1] for s in blocks if s[2] == m]  # blocks of S_nm's positions, [N, rows, m]
    assert sum(b_rows) == m and sum(s_rows) == n and len(b_rows) + len(s_rows) == len(blocks)


@pytest.mark.parametrize("name", ["csalr", "csa"])
def test_compressed_attention_keeps_no_n_by_m_weights_for_backward(name):
    """Saved for backward: Q, K, V, landmarks and the like, no [N, m, n] weights (they grow with the groups)."""
    n, m, groups = 48, 12, 4
    module = _randomized(name, channels=32, groups=groups, landmarks=(4, 3), qk_ratio=2)
    x = torch.randn(2, 32, 8, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y, _ = module(x)
    y.sum().backward()
    assert not [s for s in saved if len(s) == 3 and sorted(s[1:]) == [m, n]], saved


def _explicit_sa(q, k, v, scale):
    """softmax(s Q^T K) V^T written out: [N, c, n]."""
    return v @ torch.softmax(scale * q.transpose(1, 2) @ k, dim=-1).transpose(1, 2)


@pytest.mark.parametrize("scale", [1.0, 0.3])
@pytest.mark.parametrize("n, chunk", [(24, 1), (24, 6), (24, 8), (24, 24), (24, 5), (24, 7), (23, 10), (24, 100)])
def test_query_chunked_sa_equals_the_whole_map_in_float64_with_gradients(n, chunk, scale):
    """Chunk sizes that divide n, that do not, and larger than n; gradients of Q, K and V included."""
    torch.manual_seed(n + chunk)
    q, k = (torch.randn(3, 4, n, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(3, 5, n, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, n, dtype=torch.float64)
    y = query_chunked_attention(q, k, v, scale, chunk)
    expected = _explicit_sa(q, k, v, scale)
    assert torch.allclose(y, expected, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((y * weight).sum(), (q, k, v))
    expected_grads = torch.autograd.grad((expected * weight).sum(), (q, k, v))
    for name, got, want in zip("qkv", grads, expected_grads):
        assert torch.allclose(got, want, rtol=0, atol=1e-12), name


@pytest.mark.parametrize("needed", ["q", "k", "v", "qv"])
def test_query_chunked_sa_computes_only_the_gradients_asked_for(needed):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, c, 10, dtype=torch.float64) for c in (3, 3, 4))
    leaves = {"q": q, "k": k, "v": v}
    for name in needed:
        leaves[name].requires_grad_(True)
    got = torch.autograd.grad(query_chunked_attention(q, k, v, 1.0, 3).sum(), [leaves[c] for c in needed])
    want = torch.autograd.grad(_explicit_sa(q, k, v, 1.0).sum(), [leaves[c] for c in needed])
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(got, want))


@pytest.mark.parametrize("groups", [1, 2])
def test_sa_keeps_no_n_by_n_map_for_backward_and_holds_a_block_at_a_time(groups, monkeypatch):
    """Saved for backward: at most input-sized tensors; the weights formed at once: [N, rows, n] with at most
    a quarter of V's elements per item (c n / 4)."""
    n, items, c = 48, 2 * groups, 16 // groups
    monkeypatch.setattr(base_module, "MIN_CHUNK_ROWS", 1)
    module = _randomized("sa", channels=16, groups=groups)
    x = torch.randn(2, 16, 8, 6, requires_grad=True)
    saved, softmaxes = [], []
    real_softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda t, *a, **kw: softmaxes.append(t.shape) or real_softmax(t, *a, **kw))
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y, _ = module(x)
    y.sum().backward()
    assert max(saved) <= 2 * 16 * n  # x and its projections; an n x n map would be items * n * n
    assert softmaxes and all(s[0] == items and s[2] == n and 4 * s[1] * s[2] <= c * n for s in softmaxes)
    assert sum(s[1] for s in softmaxes) == 2 * n  # every query row once forward, once backward


@pytest.mark.parametrize("name, options", SPECS, ids=IDS)
@pytest.mark.parametrize("train", [True, False])
def test_every_module_is_the_identity_at_initialisation(name, options, train):
    module = create_attention(name, 16, groups=2, **options).train(train)
    x = torch.randn(2, 16, 6, 4)
    assert torch.equal(module(x)[0], x)


@pytest.mark.parametrize("name, options", SPECS, ids=IDS)
def test_groups_shapes_and_attention_rows_sum_to_one(name, options):
    module = _randomized(name, groups=2, **options).eval()
    x = torch.randn(3, 16, 6, 4)
    y, attn = module(x, need_weights=True)
    assert y.shape == x.shape and attn.shape == (3, 2, 24, 24)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 2, 24), atol=1e-5)
    out, weights = module(x)
    assert torch.allclose(out, y, atol=1e-5) and weights is None


def test_non_divisible_map_uses_adaptive_landmarks():
    module = _randomized("csalr", groups=1, landmarks=(3, 2))
    x = torch.randn(2, 16, 7, 5)
    y, attn = module(x, need_weights=True)
    assert y.shape == x.shape and attn.shape == (2, 1, 35, 35)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 1, 35), atol=1e-5)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("count, size, grid", [(96, (64, 32), (12, 8)), (96, (96, 32), (12, 8)),
                                               (64, (96, 32), (16, 4)), (6, (7, 5), (3, 2)), (35, (7, 5), (7, 5))])
def test_landmark_count_is_fitted_to_the_map(count, size, grid):
    assert landmark_grid(count, size) == grid


# bf16 error bound. Under CPU autocast the 1x1 convs and the matrix products take bf16 operands (fp32 values
# rounded to nearest), accumulate in fp32 and round their output to bf16; softmaxes and the solve run in
# fp32. Each rounding is t -> t (1 + d) with |d| <= U = 2^-8 (bf16 has 8 significant bits). To first order the
# output error is e_i = sum_s J_is d_s, J_is = (dy_i / dt_s) t_s, over all rounded scalars s. The worst case
# sum_s |J_is| U ignores that the d_s have either sign and is 30-100x above the errors seen, too loose to
# catch a wrong kernel; we use the probabilistic model of Higham & Mary (SIAM J. Sci. Comput. 2019): the d_s
# are independent with mean 0, so by Hoeffding's inequality P(|e_i| >= lam U sigma_i) <= 2 exp(-lam^2 / 2)
# with sigma_i = sqrt(sum_s J_is^2). lam = 7 makes the chance that any of the 7 x 768 outputs below exceeds
# its bound under 1e-7. J is computed exactly, by autograd, on an fp64 transcription of the module in which
# every bf16 rounding is an explicit (1 + d) (an SA softmax is rounded twice more, in case SDPA's reference
# path runs it in bf16). fp32 accumulation (2^-24 per term) and second-order terms (U^2) are below 1 % of
# the bound; the tolerance adds 2 % of it.
U, LAM = 2.0 ** -8, 7.0


def _conv1x1(conv, x, rnd, groups):
    """A grouped 1x1 conv of bf16-rounded weight, bias and input x [B, C, n] -> [B, O, n], output rounded."""
    w = rnd(conv.weight.detach().double().flatten(1)).unflatten(0, (groups, -1))  # [G, O/G, C/G]
    y = w @ x.unflatten(1, (groups, -1)) + rnd(conv.bias.detach().double()).view(groups, -1, 1)
    return rnd(y.flatten(1, 2))


def _bf16_transcription(module, x, rnd):
    """The module's eval forward in fp64 with ``rnd`` applied wherever autocast rounds to bf16."""
    batch, channels, height, width = x.shape
    size, n, g, T = (height, width), height * width, module.groups, lambda t: t.transpose(1, 2)
    xb = rnd(x.double().flatten(2))
    qkv, qk = _conv1x1(module.qkv, xb, rnd, g).reshape(batch * g, -1, n), module.qk_channels // g
    q, k, v = qkv[:, :qk], qkv[:, qk:2 * qk], qkv[:, 2 * qk:]  # per group: Q, K, V channels
    kernel = module.kernel
    if isinstance(kernel, SAKernel):
        y = rnd(v @ T(rnd(rnd(rnd(torch.softmax(rnd(T(q) @ k), -1))))))
    elif isinstance(kernel, CSAKernel):
        grid = landmark_grid(kernel.landmarks, size)
        base = rnd(pool_landmarks(k, size, grid))
        alpha, wts = rnd(torch.softmax(rnd(T(base) @ k), -1)), rnd(torch.softmax(rnd(T(q) @ base), -1))
        y = rnd(rnd(v @ T(alpha)) @ T(wts))
    else:
        grid = landmark_grid(kernel.landmarks, size)
        ql, kl = rnd(pool_landmarks(q, size, grid)), rnd(pool_landmarks(k, size, grid))
        b, s_nm = rnd(torch.softmax(rnd(T(ql) @ k), -1)), rnd(torch.softmax(rnd(T(q) @ kl), -1))
        a_mm = torch.softmax(rnd(T(ql) @ kl), -1) + torch.eye(ql.shape[-1], dtype=torch.float64)
        z = rnd(torch.linalg.solve(a_mm, rnd(b @ T(v))))
        y = rnd(T(z) @ T(s_nm) + spread_to_patches(T(z), -1, size, grid))
    y = y.reshape(batch, channels, n)
    if g > 1:
        y = _conv1x1(module.fuse, y, rnd, 1)
    return (x.double().flatten(2) + module.gamma.detach().double() * y).reshape(x.shape)


def _bf16_error_bound(module, x):
    """(fp64 output, LAM U sigma) of the model above."""
    shapes = []
    expected = _bf16_transcription(module, x, lambda t: shapes.append(t.shape) or t)

    def output(*deltas):
        it = iter(deltas)
        return _bf16_transcription(module, x, lambda t: t * (1 + next(it))).flatten()

    zeros = tuple(torch.zeros(shape, dtype=torch.float64) for shape in shapes)
    jacobians = torch.autograd.functional.jacobian(output, zeros, vectorize=True)
    sigma = sum(j.flatten(1).square().sum(1) for j in jacobians).sqrt()
    return expected, LAM * U * sigma.reshape(x.shape)


@pytest.mark.parametrize("name, options", SPECS, ids=IDS)
def test_autocast_bf16_on_cpu_is_within_the_derived_error_bound(name, options):
    module = _randomized(name, groups=2, **options).eval()
    x = torch.randn(2, 16, 6, 4)
    if name == "dcs":
        assert torch.equal(module.channel_mask(x), torch.ones_like(module.channel_mask(x)))  # Theta = 3: kept
    expected, bound = _bf16_error_bound(module, x)
    with torch.no_grad():
        reference = module.double()(x.double())[0]
        module.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, _ = module(x)
    assert torch.allclose(expected, reference, atol=1e-12)  # the bound's fp64 path is the module's
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    error = (y.double() - reference).abs()
    assert (error <= 1.02 * bound).all(), float((error / bound).max())
    module.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module(x)[0].sum().backward()
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
    module(x)[0].square().sum().backward()
    assert module.gate.weight.grad.abs().sum() > 0 and module.gate.bias.grad.abs().sum() > 0


def _gate_module(thetas, tau):
    """DCS whose gate logits are ``thetas`` (one per query/key channel) at every position."""
    module = create_attention("dcs", 8 * len(thetas), backend="sa").train()
    with torch.no_grad():
        module.gate.weight.zero_()
        module.gate.bias.copy_(torch.tensor(thetas))
    module.tau = tau
    return module


THETAS = [-3.0, -1.5, -0.5, 0.0, 0.25, 1.0, 2.0, 4.0]
TAUS = [0.1, 1.0, 5.0]


@pytest.mark.parametrize("tau", TAUS)
def test_dcs_gate_keeps_a_channel_with_probability_sigmoid_theta_at_every_tau(tau):
    """M = 1[sigmoid((Theta + g1 - g2) / tau) > 0.5] = 1[Theta + g1 - g2 > 0], and g1 - g2 is logistic: P(M = 1) =
    sigma(Theta) for every tau. With N independent draws per channel, Hoeffding's inequality gives
    P(|p_hat - p| >= t) <= 2 exp(-2 N t^2); t = sqrt(ln(2 K / delta) / (2 N)) bounds all K = 8 x 3 estimates at
    once with probability >= 1 - delta, delta = 1e-6."""
    torch.manual_seed(6)
    module = _gate_module(THETAS, tau)
    x = torch.zeros(16, module.channels, 40, 32)
    draws = x.shape[0] * x.shape[2] * x.shape[3]
    with torch.no_grad():
        kept = module.channel_mask(x).mean(dim=(0, 2, 3))
    t = math.sqrt(math.log(2 * len(THETAS) * len(TAUS) / 1e-6) / (2 * draws))
    expected = torch.sigmoid(torch.tensor(THETAS))
    assert (kept - expected).abs().max() < t, (kept, expected, t)


def test_dcs_gate_is_straight_through(monkeypatch):
    """Forward: exactly the hard 0/1 mask; backward: the gradient of M~ = sigmoid((Theta + g1 - g2) / tau), i.e.
    dM~/dTheta = M~ (1 - M~) / tau, here summed over positions with weights w for d/d(bias)."""
    torch.manual_seed(7)
    tau, thetas = 0.7, [-1.0, 0.0, 0.5, 2.0]
    module = _gate_module(thetas, tau)
    x = torch.randn(2, module.channels, 5, 3)
    noise = [torch.randn(2, 4, 5, 3), torch.randn(2, 4, 5, 3)]
    draws = iter(noise)
    monkeypatch.setattr(dcs_module, "_gumbel_like", lambda t: next(draws))
    mask = module.channel_mask(x)
    w = torch.randn_like(mask)
    (mask * w).sum().backward()
    theta = torch.tensor(thetas).view(1, 4, 1, 1).expand(2, 4, 5, 3)
    soft = 1 / (1 + torch.exp(-(theta + noise[0] - noise[1]) / tau))  # M~ written out
    assert torch.equal(mask.detach(), (soft > 0.5).float())
    assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}
    expected = (w * soft * (1 - soft) / tau).sum(dim=(0, 2, 3))
    assert torch.allclose(module.gate.bias.grad, expected, rtol=1e-5, atol=1e-7)


def test_dcs_eval_mask_is_strictly_theta_positive():
    module = _gate_module([-1e-3, 0.0, 1e-3, 5.0], tau=1.0).eval()
    mask = module.channel_mask(torch.randn(1, module.channels, 3, 2))
    assert mask.amax(dim=(0, 2, 3)).tolist() == mask.amin(dim=(0, 2, 3)).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_dcs_eval_is_deterministic_and_its_mask_is_theta_positive():
    module = _dcs("csalr", landmarks=4).eval()
    x = torch.randn(2, 16, 6, 4)
    mask = module.channel_mask(x)
    assert torch.equal(mask, (module.gate(x) > 0).float())
    assert 0 < mask.mean() < 1
    assert torch.equal(module(x)[0], module(x)[0])
    assert float(module.attend(x).dcs_kept) == pytest.approx(float(mask.mean()))


def test_dcs_mask_gates_q_and_k_but_not_v():
    module = _dcs("sa").eval()
    x = torch.randn(1, 16, 4, 3)
    with torch.no_grad():
        module.gate.bias.fill_(-100.0)  # drop every query/key channel: uniform attention over positions
        module.gate.weight.zero_()
    y = _attention_branch(module, x)
    qk = 2 * module.qk_channels  # G = 1: the qkv conv's rows are Q, K, then V
    v = F.conv2d(x, module.qkv.weight[qk:], module.qkv.bias[qk:]).flatten(2)
    assert torch.allclose(y.flatten(2), v.mean(-1, keepdim=True).expand_as(v), atol=1e-5)
    assert float(module.attend(x).dcs_kept) == 0.0


def test_dcs_initial_gate_keeps_every_channel_and_tau_is_settable():
    module = create_attention("dcs", 16, backend="csalr", landmarks=4).eval()
    assert float(module.attend(torch.randn(1, 16, 4, 4)).dcs_kept) == 1.0
    module.tau = 0.1
    assert module.tau == 0.1
    with pytest.raises(ConfigError, match=r"'tau' = 0"):
        module.tau = 0


def test_deep_supervision_multiplies_the_input_with_the_attention_output_before_the_residual():
    module = _randomized("csalr", groups=2, landmarks=4)
    with torch.no_grad():
        module.gamma.fill_(0.5)
    head = DeepSupervisionHead(16, num_classes=5)
    x = torch.randn(2, 16, 6, 4)
    out, weights, branch, kept = module.attend(x)
    assert torch.equal(out, module(x)[0]) and weights is None and kept is None
    attn_out = (out - x) / 0.5
    assert torch.allclose(branch, attn_out, atol=1e-5)
    logits = head(x, branch)
    assert torch.allclose(logits, head.fc((x * attn_out).mean(dim=(2, 3))), atol=1e-5)
    out_map, attention_map, branch_map, _ = module.attend(x, need_weights=True)
    assert torch.equal(out_map, out) and torch.equal(branch_map, branch) and attention_map.shape == (2, 2, 24, 24)
    assert not hasattr(module, "last_output")


@pytest.mark.parametrize("name, options", SPECS, ids=IDS)
@pytest.mark.parametrize("need_weights", [False, True])
def test_every_block_returns_out_and_weights_or_none_as_torch_nn_attention(name, options, need_weights):
    """torch.nn.MultiheadAttention's contract: a pair (out, weights or None), whatever is asked, and no
    statistic left on the module by a forward."""
    module = _randomized(name, groups=2, **options).train()
    before = dict(vars(module))
    result = module(torch.randn(2, 16, 6, 4), need_weights=need_weights)
    assert isinstance(result, tuple) and len(result) == 2
    out, weights = result
    assert out.shape == (2, 16, 6, 4)
    assert (weights is None) != need_weights and (not need_weights or weights.shape == (2, 2, 24, 24))
    assert vars(module).keys() == before.keys() and all(vars(module)[k] is v for k, v in before.items())


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


def test_the_bf16_bound_rejects_a_csalr_kernel_without_the_indicator(monkeypatch):
    """The bound above is tight enough to fail a wrong kernel (A_nm without eq. 15's indicator) run in fp32."""
    module = _randomized("csalr", groups=2, landmarks=4).eval()
    x = torch.randn(2, 16, 6, 4)
    _, bound = _bf16_error_bound(module, x)
    with torch.no_grad():
        reference = module.double()(x.double())[0]
        module.float()
        real = csalr_module.spread_to_patches
        monkeypatch.setattr(csalr_module, "spread_to_patches", lambda t, *args, add_to=None: real(0 * t, *args,
                                                                                                      add_to=add_to))
        wrong, _ = module(x)
    assert ((wrong.double() - reference).abs() > bound).float().mean() > 0.5


OLD_LAYOUT_SPECS = [("sa", {}), ("csa", {"landmarks": 4}), ("csalr", {"landmarks": 4}),
                    ("dcs", {"backend": "sa"}), ("dcs", {"backend": "csalr", "landmarks": 4})]


def _old_layout_state_dict(module, seed=0):
    """A state dict of ``module`` in the former layout: separate ``query``, ``key``, ``value`` grouped 1x1
    convs (random values), random fusion conv / gate, gamma = 0.7."""
    gen = torch.Generator().manual_seed(seed)
    c, qk, g = module.channels, module.qk_channels, module.groups
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.3  # noqa: E731
    state = {"query.weight": rand(qk, c // g, 1, 1), "query.bias": rand(qk),
             "key.weight": rand(qk, c // g, 1, 1), "key.bias": rand(qk),
             "value.weight": rand(c, c // g, 1, 1), "value.bias": rand(c), "gamma": torch.full((1,), 0.7,
                                                                                                dtype=torch.float64)}
    if g > 1:
        state.update({"fuse.weight": rand(c, c, 1, 1), "fuse.bias": rand(c)})
    if hasattr(module, "gate"):  # DCS: a gate that drops some channels (logits of either sign)
        state.update({"gate.weight": rand(qk, c, 1, 1) * 3, "gate.bias": rand(qk)})
    return state


def _old_layout_forward(module, state, x):
    """The block's evaluation forward written from the former layout's tensors: three separate grouped
    convs, the DCS mask 1[gate(x) > 0] on Q and K, the kernel, the fusion conv, x + gamma * y. SA's kernel
    is written out (softmax over keys, scale 1); CSA/CSALR use the module's kernel (tested above)."""
    batch, channels, height, width = x.shape
    g, n = module.groups, height * width
    q, k, v = (F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], groups=g).reshape(batch * g, -1, n)
               for name in ("query", "key", "value"))
    if "gate.weight" in state:
        mask = (F.conv2d(x, state["gate.weight"], state["gate.bias"]) > 0).double().reshape(q.shape)
        assert 0 < float(mask.mean()) < 1
        q, k = q * mask, k * mask
    if isinstance(module.kernel, SAKernel):
        y = v @ torch.softmax(q.transpose(1, 2) @ k, dim=-1).transpose(1, 2)
    else:
        y = module.kernel(q, k, v, (height, width))[0]
    y = y.reshape(batch, channels, height, width)
    if g > 1:
        y = F.conv2d(y, state["fuse.weight"], state["fuse.bias"])
    return x + state["gamma"] * y


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("name, options", OLD_LAYOUT_SPECS, ids=[f"{n}-{o.get('backend', '')}" for n, o in
                                                                 OLD_LAYOUT_SPECS])
def test_a_state_dict_of_the_former_qkv_layout_loads_and_computes_the_same(name, options, groups):
    module = create_attention(name, 16, groups=groups, qk_ratio=2, **options).double().eval()
    state = _old_layout_state_dict(module)
    result = module.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert "query.weight" in state  # the caller's dict is not consumed
    x = torch.randn(2, 16, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(module(x)[0], _old_layout_forward(module, state, x), rtol=1e-10, atol=1e-10)


def test_a_model_checkpoint_of_the_former_layout_loads_under_its_prefix():
    model = create_model("mobilenetv2", 5, width_mult=0.5, attention=[
        {"stage": "stage3", "name": "csalr", "options": {"landmarks": 4, "groups": 2}}]).eval()
    attention = model.attentions["stage3"]
    with torch.no_grad():
        attention.gamma.fill_(0.5)
    old = {}
    qk, g = attention.qk_channels // attention.groups, attention.groups
    for key, value in model.state_dict().items():  # split the fused rows by hand: per group Q, K, V
        if ".qkv." not in key:
            old[key] = value
            continue
        prefix, kind = key.split(".qkv.")
        per_group = value.unflatten(0, (g, -1))
        for part, rows in (("query", slice(0, qk)), ("key", slice(qk, 2 * qk)), ("value", slice(2 * qk, None))):
            old[f"{prefix}.{part}.{kind}"] = per_group[:, rows].flatten(0, 1)
    assert "attentions.stage3.query.weight" in old and "attentions.stage3.qkv.weight" not in old
    fresh = create_model("mobilenetv2", 5, width_mult=0.5, attention=[
        {"stage": "stage3", "name": "csalr", "options": {"landmarks": 4, "groups": 2}}]).eval()
    fresh.load_state_dict(old)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_a_seed_gives_the_initial_weights_of_the_former_three_convs():
    """The fused conv is initialised with the values of query, key, value convs built in that order (and
    the next draw, the fusion conv, is unchanged), so seeded runs start from the same weights."""
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(16, n, 1, groups=2) for n in (4, 4, 16)]  # C' = 16 / qk_ratio 4
    fuse = torch.nn.Conv2d(16, 16, 1)
    torch.manual_seed(0)
    module = create_attention("sa", 16, groups=2, qk_ratio=4)
    weight, bias = module.qkv.weight, module.qkv.bias
    for group in range(2):  # rows of group g: its 2 Q, 2 K, then 8 V channels
        base = group * 12
        for conv, start, size in zip(convs, (0, 2, 4), (2, 2, 8)):
            rows = slice(group * size, (group + 1) * size)
            assert torch.equal(weight[base + start:base + start + size], conv.weight[rows])
            assert torch.equal(bias[base + start:base + start + size], conv.bias[rows])
    assert torch.equal(module.fuse.weight, fuse.weight)
