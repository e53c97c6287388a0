"""FLOPs of the attention modules (DESIGN §3): each against a hand formula written here from the papers'
products (2 FLOPs per multiply-add, an m x m LU solve with r right-hand sides 2m^3/3 + 2m^2 r, elementwise
work free), the same on CPU and ``meta``; bad shapes; the cost table and its cache."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import dcsnas.attention.sa as sa_module
from dcsnas.attention import CSALRKernel, create_attention
from dcsnas.errors import ConfigError
from dcsnas.nas import cost as cost_module
from dcsnas.nas.cost import cached_costs, measure_costs
from dcsnas.nas.space import load_space
from dcsnas.utils.flops import count_flops

DEVICES = ["cpu", "meta"]


def _conv(c_in, c_out, n, groups=1):
    """A 1x1 conv: one multiply-add per (output channel, input channel of its group, position)."""
    return 2 * c_out * (c_in // groups) * n


def _hand(name, channels, size, groups=1, qk_ratio=8, landmarks=None, backend=None):
    """Batch-1 FLOPs of an attention block, written out product by product."""
    n = size[0] * size[1]
    c = channels // groups  # V channels per group
    cq = int(c / qk_ratio)  # Q/K channels per group
    qk = cq * groups
    total = _conv(channels, qk, n, groups) * 2 + _conv(channels, channels, n, groups)  # Q, K, V
    if groups > 1:
        total += _conv(channels, channels, n)  # fusion
    kind = backend if name == "dcs" else name
    if name == "dcs":
        total += _conv(channels, qk, n)  # gate logits Theta
    if kind == "sa":
        per_group = 2 * n * n * cq + 2 * n * n * c  # Q^T K, then V A^T
    elif kind == "csa":
        m = landmarks[0] * landmarks[1]
        per_group = 2 * m * n * cq + 2 * n * m * cq + 2 * c * n * m + 2 * c * m * n  # b^T K, Q^T b, V a^T, o S^T
    else:
        m = landmarks[0] * landmarks[1]
        per_group = (2 * m * n * cq + 2 * n * m * cq + 2 * m * m * cq  # Q'^T K, Q^T K', Q'^T K'
                     + 2 * m * n * c  # E = B V^T
                     + round(2 * m ** 3 / 3) + 2 * m * m * c  # LU of A_mm, c right-hand sides
                     + 2 * n * m * c)  # A_nm Z
    return total + groups * per_group


CASES = [
    ("sa", {}, None),
    ("sa", {"explicit": True}, None),
    ("sa", {"groups": 2, "qk_ratio": 4}, None),
    ("csa", {"landmarks": (3, 2)}, (3, 2)),
    ("csa", {"landmarks": 6, "groups": 2}, (3, 2)),
    ("csalr", {"landmarks": (3, 2), "groups": 1}, (3, 2)),
    ("csalr", {"landmarks": (4, 2)}, (4, 2)),
    ("dcs", {"backend": "sa", "groups": 2}, None),
    ("dcs", {"backend": "csalr", "landmarks": (3, 2), "groups": 2}, (3, 2)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, options, grid", CASES, ids=[f"{n}-{o}" for n, o, _ in CASES])
def test_each_block_counts_its_hand_formula_on_cpu_and_meta(name, options, grid, device):
    size = (7, 5) if name != "csalr" or grid == (3, 2) else (8, 4)  # 7x5: adaptive (non-divisible) landmarks
    with torch.device(device):
        module = create_attention(name, 32, **options)
    groups = options.get("groups", 2 if name == "csalr" else 1)
    expected = _hand(name, 32, size, groups, options.get("qk_ratio", 8), grid, options.get("backend"))
    assert count_flops(module, (1, 32, *size), device) == expected
    assert module.flops((1, 32, *size)) == expected
    assert count_flops(module, (3, 32, *size), device) == 3 * expected


@pytest.mark.parametrize("device", DEVICES)
def test_sa_256_channels_on_32x16_is_235_mflops_on_cpu_and_meta(device):
    with torch.device(device):
        module = create_attention("sa", 256)
    # n = 512, C' = 32: Q and K 2*256*32*n each, V 2*256*256*n, Q^T K 2*n^2*32, A V 2*n^2*256
    assert count_flops(module, (1, 256, 32, 16), device) == 234_881_024


def test_sa_attends_q_and_k_at_their_own_width(monkeypatch):
    """Padding Q, K (C' = C/8) to V's width would do 8x the Q^T K work; on the CPU SA runs query-chunked."""
    seen = []
    real = sa_module.query_chunked_attention

    def recording(q, k, v, *args, **kwargs):
        seen.append((q.shape[1], k.shape[1], v.shape[1]))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(sa_module, "query_chunked_attention", recording)
    monkeypatch.setattr(sa_module.F, "scaled_dot_product_attention", None)  # not called on the CPU
    module = create_attention("sa", 64)
    with torch.no_grad():
        module.gamma.fill_(1.0)
        module(torch.randn(1, 64, 4, 4))
    assert seen == [(8, 8, 64)]


def test_the_attention_map_adds_its_products():
    n, m, c, cq, size = 6 * 4, 3 * 2, 8, 2, (6, 4)
    lu = round(2 * m ** 3 / 3)
    without = CSALRKernel((3, 2)).forward_flops((1, cq, n), (1, cq, n), (1, c, n), size)
    with_map = CSALRKernel((3, 2)).forward_flops((1, cq, n), (1, cq, n), (1, c, n), size, need_weights=True)
    assert with_map - without == lu + 2 * m * m * n + 2 * n * n * m  # A_mm^-1 B, then S_nm (A_mm^-1 B)
    shown = create_attention("csalr", 32, landmarks=(3, 2), return_attention=True)  # 2 groups
    plain = create_attention("csalr", 32, landmarks=(3, 2))
    assert count_flops(shown, (1, 32, *size)) - count_flops(plain, (1, 32, *size)) == 2 * (with_map - without)


@pytest.mark.parametrize("call, message", [
    (lambda: CSALRKernel((5, 2)).forward_flops((1, 2, 16), (1, 2, 16), (1, 8, 16), (4, 4)),
     r"CSALRKernel FLOPs on a 4x4 map: .*'landmarks' = \[5, 2\]: the grid is larger than the 4x4 feature map"),
    (lambda: CSALRKernel(7).forward_flops((1, 2, 16), (1, 2, 16), (1, 8, 16), (4, 4)),
     r"CSALRKernel FLOPs on a 4x4 map: .*need H' <= 4, W' <= 4"),
    (lambda: CSALRKernel(4).forward_flops((1, 2, 16), (1, 2, 16), (1, 8, 12), (4, 4)),
     r"CSALRKernel FLOPs: shapes q \[1, 2, 16\], k \[1, 2, 16\], v \[1, 8, 12\] on a map \[4, 4\]: expected"),
    (lambda: create_attention("sa", 16).flops((1, 8, 4, 4)),
     r"SelfAttention FLOPs: input shape \[1, 8, 4, 4\] has 8 channels, the module expects 16"),
    (lambda: count_flops(create_attention("csalr", 16, landmarks=(5, 2)), (1, 16, 4, 4), "meta"),
     r"CSALRKernel FLOPs on a 4x4 map"),
])
def test_a_formula_for_an_unsupported_shape_is_a_config_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


@pytest.fixture(scope="module")
def sa_space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "name": "sa_vs_csalr", "skeleton": "mobilenetv2",
                                    "stem_channels": 8, "stem_stride": 2, "head_channels": 32, "stages": [
                                        {"name": "s1", "widths": [16], "blocks": 1, "stride": 2,
                                         "ops": ["ir_k3_e3"],
                                         "attention": {"types": ["none", "sa", "csalr"], "groups": [1],
                                                       "options": {"landmarks": 8, "qk_ratio": 2}}}]}))
    return load_space(path)


def test_the_cost_table_charges_sa_more_than_csalr_where_n_exceeds_m(sa_space):
    costs = measure_costs(sa_space, (64, 32))  # s1 map 16x8: n = 128 > m = 8
    table = next(t for t in costs.terms if t.name == "s1/attention").flops
    n, m, c, cq = 128, 8, 16, 8
    projections = 2 * 16 * (2 * cq + c) * n
    sa = projections + 2 * n * n * (cq + c)
    csalr = projections + (4 * m * n * cq + 2 * m * m * cq + 2 * m * n * c + round(2 * m ** 3 / 3) + 2 * m * m * c
                           + 2 * n * m * c)
    assert table.flatten().tolist() == [0, sa, csalr]
    assert sa > csalr


class _Marker:
    """Unpickling this object would create ``path`` (what a crafted file could run)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _measure_counter(monkeypatch):
    calls = []
    real = cost_module.measure_costs
    monkeypatch.setattr(cost_module, "measure_costs", lambda *a: calls.append(a) or real(*a))
    return calls


def test_the_cost_cache_is_plain_data_and_is_reused(sa_space, tmp_path, monkeypatch):
    calls = _measure_counter(monkeypatch)
    path = tmp_path / "cost_table.pt"
    first = cached_costs(sa_space, (64, 32), path)
    torch.load(path, weights_only=True)  # plain tensors, strings and lists only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = cached_costs(sa_space, (64, 32), path)
    assert len(calls) == 1
    assert [t.flops.tolist() for t in second.terms] == [t.flops.tolist() for t in first.terms]
    cached_costs(sa_space, (32, 16), path)  # another input size: measured again, silently
    assert len(calls) == 2


@pytest.mark.parametrize("content", ["crafted", "garbage", "wrong-structure"])
def test_a_bad_cost_cache_runs_no_code_and_is_measured_again_with_a_warning(sa_space, tmp_path, monkeypatch,
                                                                            content):
    calls = _measure_counter(monkeypatch)
    path, marker = tmp_path / "cost_table.pt", tmp_path / "marker"
    if content == "crafted":
        torch.save({"key": _Marker(str(marker)), "terms": []}, path)
        pickle.loads(pickle.dumps(_Marker(str(tmp_path / "check"))))
        assert (tmp_path / "check").exists()  # the payload works when unpickled without weights_only
    elif content == "garbage":
        path.write_bytes(b"\x00not a cost table" * 10)
    else:
        torch.save({"key": "k", "terms": "t"}, path)
    with pytest.warns(UserWarning, match="is not a readable cost table"):
        costs = cached_costs(sa_space, (64, 32), path)
    assert not marker.exists()
    assert len(calls) == 1 and costs.exact({c.key: 0 for c in sa_space.choices()}) > 0
    assert cached_costs(sa_space, (64, 32), path).terms[0].name == costs.terms[0].name  # rewritten: valid
