"""The supernet's mixed ops (hard/soft, width masks) and the plain networks rebuilt from arch.json."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
import yaml

from dcsnas.attention import AttentionBlock
from dcsnas.errors import ConfigError
from dcsnas.models.arch import write_arch
from dcsnas.models.blocks import InvertedResidual
from dcsnas.models.builder import ModelConfig, create_model
from dcsnas.nas.arch import derive_arch
from dcsnas.nas.cost import measure_costs
from dcsnas.nas.ops import AttentionAtWidths, MaskedSkip, MixedAttention, MixedBlock
from dcsnas.nas.recalibration import recalibrate_bn
from dcsnas.nas.space import load_space
from dcsnas.nas.supernet import SuperNet
from dcsnas.utils.flops import count_flops, count_params

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
INPUT = (64, 32)


@pytest.fixture(scope="module")
def space():
    return load_space(SPACES / "tiny.yaml")


@pytest.fixture(scope="module")
def costs(space):
    return measure_costs(space, INPUT)


def random_indices(space, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return {c.key: rng.randrange(len(c.options)) for c in space.choices()}


def set_argmax(supernet: SuperNet, indices: dict[str, int]) -> None:
    with torch.no_grad():
        for key, alpha in supernet.arch.alphas.items():
            alpha.zero_()[indices[key]] = 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_retrained_network_has_exactly_the_cost_in_arch_json(space, costs, tmp_path, seed):
    indices = random_indices(space, seed)
    if seed == 0:  # the largest options everywhere, DCS-CSALR attention included
        indices = {c.key: len(c.options) - 1 for c in space.choices()}
    arch = derive_arch(space, indices, costs, {})
    write_arch(tmp_path / "arch.json", arch)
    model = create_model(ModelConfig(backbone="searched", arch=str(tmp_path / "arch.json")), num_classes=12)
    assert count_flops(model, (1, 3, *INPUT)) == arch.flops
    assert count_params(model.backbone) + count_params(model.attentions) == arch.params
    # only the chosen op of each block exists, at the chosen width
    width = arch.stem_channels
    for stage in arch.stages:
        blocks = model.backbone.stages[stage.name]
        assert len(blocks) == len(stage.ops)
        for block, op in zip(blocks, stage.ops):
            if op == "skip":
                assert isinstance(block, torch.nn.Identity)
            else:
                kernel, expansion = (int(p[1:]) for p in op.split("_")[1:])
                assert isinstance(block, InvertedResidual) and block.depthwise[0].kernel_size == (kernel, kernel)
                assert block.depthwise[0].out_channels == expansion * width
                assert block.project[0].out_channels == stage.width
            width = stage.width
    assert not [k for k in model.state_dict() if "candidates" in k or k.startswith("arch.")]
    assert set(model.attentions) == {s.name for s in arch.stages if s.attention is not None}


def test_resnet50_arch_keeps_resnet_and_adds_the_chosen_attention(tmp_path):
    path = tmp_path / "resnet_space.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "name": "r", "skeleton": "resnet50", "stages": [
        {"name": "layer2", "attention": {"types": ["none", "csa"], "options": {"landmarks": 8}}},
        {"name": "layer3", "attention": {"types": ["none", "sa"], "groups": [1, 2]}}]}))
    resnet_space = load_space(path)
    resnet_costs = measure_costs(resnet_space, (128, 64))
    arch = derive_arch(resnet_space, {"layer2/attention": 0, "layer3/attention": 2}, resnet_costs, {})
    write_arch(tmp_path / "arch.json", arch)
    with torch.device("meta"):
        model = create_model(ModelConfig(backbone="searched", arch=str(tmp_path / "arch.json")), num_classes=5)
    assert count_flops(model, (1, 3, 128, 64), "meta") == arch.flops
    assert count_params(model.backbone) + count_params(model.attentions) == arch.params
    assert list(model.attentions) == ["layer3"] and model.attentions["layer3"].groups == 2
    # SA with 2 groups on layer3's 8x4 map (n = 32) of 1024 channels: C' = 128, per group c' = 64, c = 512
    n, c, qk = 32, 1024, 128
    hand = 2 * n * (c // 2) * (2 * qk + c) + 2 * (2 * n * n * (64 + 512)) + 2 * n * c * c  # Q K V, SA, fusion
    assert arch.flops - resnet_costs.exact({"layer2/attention": 0, "layer3/attention": 0}) == hand


# A space with every choice type: ops with skip, two widths per stage, and after s2 every attention type with
# 1 and 2 groups; s3 keeps s2's stride, so its first block is residual when both take width 16.
FAITHFUL_SPACE = {"version": 1, "name": "faithful", "skeleton": "mobilenetv2", "stem_channels": 8,
                  "head_channels": 32, "stages": [
                      {"name": "s1", "widths": [8, 12], "blocks": 2, "stride": 2,
                       "ops": ["ir_k3_e3", "ir_k5_e6", "skip"]},
                      {"name": "s2", "widths": [12, 16], "blocks": 2, "stride": 2,
                       "ops": ["ir_k3_e3", "ir_k5_e3", "skip"],
                       "attention": {"types": ["none", "sa", "csa", "csalr", "dcs-sa", "dcs-csalr"], "groups": [1, 2],
                                     "options": {"landmarks": 8, "qk_ratio": 2}}},
                      {"name": "s3", "widths": [16, 24], "blocks": 1, "stride": 1, "ops": ["ir_k3_e3", "ir_k5_e6"]}]}
WIDEST_K3 = {"s1/width": "12", "s2/width": "16", "s3/width": "24", "s1/0/op": "ir_k3_e3", "s1/1/op": "ir_k3_e3",
             "s2/0/op": "ir_k3_e3", "s2/1/op": "ir_k3_e3", "s3/0/op": "ir_k3_e3", "s2/attention": "none"}
CASES = {  # choice type → labels that differ from WIDEST_K3
    "op": {"s1/0/op": "ir_k5_e6", "s2/0/op": "ir_k5_e3", "s3/0/op": "ir_k5_e6"},
    "width": {"s1/width": "8", "s2/width": "12", "s3/width": "16"},
    "width_residual": {"s1/width": "8", "s3/width": "16", "s3/0/op": "ir_k5_e6"},
    "skip": {"s1/width": "8", "s1/1/op": "skip", "s2/width": "12", "s2/1/op": "skip"},
    **{f"attention_{label}_w{width}": {"s2/attention": label, "s2/width": str(width), "s1/1/op": "ir_k5_e6"}
       for label in ("sa-g1", "sa-g2", "csa-g2", "csalr-g1", "csalr-g2", "dcs-sa-g2", "dcs-csalr-g2")
       for width in (12, 16)},
}


@pytest.fixture(scope="module", params=["separate", "nested"])
def faithful(tmp_path_factory, request):
    """The space, its cost table and a float64 supernet whose weights are all non-trivial: BN statistics and
    affine parameters, attentions acting (gamma ≠ 0), DCS gates that drop about half the channels; its op
    candidates with separate or nested weights."""
    path = tmp_path_factory.mktemp("space") / "faithful.yaml"
    path.write_text(yaml.safe_dump(FAITHFUL_SPACE))
    space = load_space(path)
    torch.manual_seed(0)
    supernet = SuperNet(space, num_classes=7, op_weights=request.param).double().eval()
    gates = torch.Generator().manual_seed(3)  # the gates' own draws: no matter where their slots sit
    with torch.no_grad():
        for name, module in supernet.named_modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.5, 0.5)
            if name.endswith(".gate"):
                module.weight.normal_(0.0, 1.0, generator=gates), module.bias.zero_()
        for name, param in supernet.named_parameters():
            if name.endswith("gamma"):
                param.fill_(0.7)
    return space, measure_costs(space, INPUT), supernet


def option_indices(space, labels: dict[str, str]) -> dict[str, int]:
    choices = {c.key: c for c in space.choices()}
    indices = {key: 0 for key in choices}
    indices.update({key: choices[key].labels.index(label) for key, label in labels.items()})
    return indices


@pytest.mark.parametrize("case", list(CASES))
def test_supernet_path_computes_the_derived_network(faithful, tmp_path, case):
    """The supernet with the one-hot selection of an architecture computes the network ``dcsnas retrain``
    builds from its arch.json, given the weights of ``supernet.child`` (asked of every slot): on the single
    (sliced) path of evaluation and on the masked path of soft mode with one-hot weights."""
    space, costs, supernet = faithful
    indices = option_indices(space, {**WIDEST_K3, **CASES[case]})
    write_arch(tmp_path / "arch.json", derive_arch(space, indices, costs, {}))
    child = create_model(ModelConfig(backbone="searched", arch=str(tmp_path / "arch.json")), 7).double().eval()
    child.load_state_dict(supernet.child(indices).state_dict())
    x = torch.randn(3, 3, *INPUT, dtype=torch.float64)
    with torch.no_grad():
        expected = child.forward_features(x)
        if case.startswith("attention"):  # the attention acts: the output is not that of the network without it
            attention = child.attentions["s2"]
            assert attention.gamma.item() == 0.7
            if "dcs" in case:
                h = x
                for name, stage in child.backbone.stages.items():  # the attention's input: s2's output
                    h = stage(h)
                    if name == "s2":
                        break
                assert 0.1 < float(attention.attend(h).dcs_kept) < 0.9  # the gates drop some channels
        with supernet.fixed_architecture(indices):
            torch.testing.assert_close(supernet.forward_features(x), expected, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(supernet(x), child(x), rtol=1e-9, atol=1e-9)
        set_argmax(supernet, indices)  # evaluation runs the argmax architecture's path
        torch.testing.assert_close(supernet(x), child(x), rtol=1e-9, atol=1e-9)
        set_argmax(supernet, {k: 0 for k in indices})  # α back to another architecture
        one_hot = {c.key: torch.nn.functional.one_hot(torch.tensor(indices[c.key]), len(c.options)).double()
                   for c in space.choices()}  # the masked path (soft mode) with one-hot weights
        torch.testing.assert_close(supernet.forward_features(x, one_hot, single_path=False), expected,
                                   rtol=1e-9, atol=1e-9)
    # training mode (batch statistics; the same DCS gate noise from the same seed): the same function
    trained_supernet, trained_child = copy.deepcopy(supernet).train(), copy.deepcopy(child).train()
    with torch.no_grad(), trained_supernet.fixed_architecture(indices):
        torch.manual_seed(1)
        out = trained_supernet(x)
        torch.manual_seed(1)
        reference = trained_child(x)
    for key in ("features", "pooled"):
        torch.testing.assert_close(out[key], reference[key], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["logits"], reference["logits"], rtol=1e-9, atol=1e-9)


def test_resnet50_supernet_path_computes_the_derived_network(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "name": "r", "skeleton": "resnet50", "stages": [
        {"name": "layer2", "attention": {"types": ["none", "dcs-sa"], "groups": [1, 2], "options": {"qk_ratio": 8}}}]}))
    resnet_space = load_space(path)
    torch.manual_seed(0)
    supernet = SuperNet(resnet_space, num_classes=5).double().eval()
    with torch.no_grad():
        for name, param in supernet.named_parameters():
            if name.endswith("gamma"):
                param.fill_(0.7)
    indices = {"layer2/attention": 2}  # dcs-sa-g2
    arch_path = tmp_path / "derived" / "arch.json"
    arch_path.parent.mkdir()
    write_arch(arch_path, derive_arch(resnet_space, indices, measure_costs(resnet_space, INPUT), {}))
    child = create_model(ModelConfig(backbone="searched", arch=str(arch_path)), 5).double().eval()
    child.load_state_dict(supernet.child(indices).state_dict())
    x = torch.randn(2, 3, *INPUT, dtype=torch.float64)
    with torch.no_grad(), supernet.fixed_architecture(indices):
        torch.testing.assert_close(supernet(x), child(x), rtol=1e-9, atol=1e-9)


def test_a_fixed_architecture_names_a_bad_choice(space):
    supernet = SuperNet(space, num_classes=12)
    with pytest.raises(ConfigError, match="choice 's2/attention' = 7; expected an option index in 0 … 2"):
        with supernet.fixed_architecture({**random_indices(space, 0), "s2/attention": 7}):
            pass
    with pytest.raises(ConfigError, match="unknown choice 's9/width'"):
        supernet.arch.one_hot({"s9/width": 0})
    assert supernet.fixed is None


def _same(a, b) -> bool:
    """Nested dicts, lists and tuples of tensors and plain values, equal exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_bn_recalibration_changes_the_path_statistics_and_nothing_else(faithful, tmp_path):
    """Recalibration re-estimates the BatchNorm statistics of the evaluated path as the average over the
    batches (whatever they were before), leaves every other tensor, the modes, the optimizers and the RNG as
    they were, and the recalibrated supernet computes the derived network recalibrated on the same batches."""
    space, costs, source = faithful
    supernet = copy.deepcopy(source).train()
    supernet.backbone.stages["s3"].eval()  # a mixed state of modes, to be restored
    indices = option_indices(space, {**WIDEST_K3, **CASES["attention_dcs-csalr-g2_w12"], "s1/width": "8"})
    optimizer = torch.optim.SGD(supernet.weight_modules().parameters(), lr=0.01, momentum=0.9)
    arch_optimizer = torch.optim.Adam(supernet.arch.parameters())
    out = supernet(torch.randn(4, 3, *INPUT, dtype=torch.float64))  # one step of each: optimizer states exist
    (out["features"].square().mean() + out["logits"][0].logsumexp(1).mean()).backward()
    optimizer.step(), arch_optimizer.step()
    before, states = _snapshot(supernet), copy.deepcopy((optimizer.state_dict(), arch_optimizer.state_dict()))
    grads = {n: p.grad.clone() for n, p in supernet.named_parameters() if p.grad is not None}
    modes = {n: m.training for n, m in supernet.named_modules()}
    momenta = {n: m.momentum for n, m in supernet.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    batches = [(torch.randn(4, 3, *INPUT, dtype=torch.float64) + 0.5, torch.zeros(4)) for _ in range(3)]
    rng = torch.get_rng_state()

    with supernet.fixed_architecture(indices):
        assert recalibrate_bn(supernet, batches, 2) == 2
    after = _snapshot(supernet)
    assert torch.equal(torch.get_rng_state(), rng)
    assert {n: m.training for n, m in supernet.named_modules()} == modes
    assert {n: m.momentum for n, m in supernet.named_modules() if isinstance(m, torch.nn.BatchNorm2d)} == momenta
    assert all(torch.equal(p.grad, grads[n]) for n, p in supernet.named_parameters() if n in grads)
    assert _same(copy.deepcopy((optimizer.state_dict(), arch_optimizer.state_dict())), states)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
                           for k in changed)
    # the stem's statistics: the average of the two batches' means and (unbiased) variances
    stem = supernet.backbone.stages["stem"]
    with torch.no_grad():
        y = [stem[0](images) for images, _ in batches[:2]]
    torch.testing.assert_close(stem[1].running_mean, sum(t.mean((0, 2, 3)) for t in y) / 2)
    torch.testing.assert_close(stem[1].running_var, sum(t.var((0, 2, 3)) for t in y) / 2)
    # off the path nothing moved: the candidates not chosen, the channels beyond a chosen width
    assert indices["s1/0/op"] == 0 and not any(k.startswith("backbone.stages.s1.0.candidates.1.") for k in changed)
    key = "backbone.stages.s1.0.candidates.0.project.1.running_mean"  # s1 at width 8 of 12
    assert torch.equal(after[key][8:], before[key][8:]) and not torch.equal(after[key][:8], before[key][:8])
    # re-estimated, not blended with what was there before
    with torch.no_grad():
        stem[1].running_mean.add_(3.0), stem[1].running_var.mul_(5.0)
    with supernet.fixed_architecture(indices):
        recalibrate_bn(supernet, batches, 2)
    assert torch.equal(stem[1].running_mean, after["backbone.stages.stem.1.running_mean"])
    assert torch.equal(stem[1].running_var, after["backbone.stages.stem.1.running_var"])
    # the recalibrated supernet on that path is the derived network recalibrated on the same batches
    write_arch(tmp_path / "arch.json", derive_arch(space, indices, costs, {}))
    child = create_model(ModelConfig(backbone="searched", arch=str(tmp_path / "arch.json")), 7).double()
    child.load_state_dict(supernet.child(indices).state_dict())
    recalibrate_bn(child, batches, 2)
    supernet.eval(), child.eval()
    x = torch.randn(3, 3, *INPUT, dtype=torch.float64)
    with torch.no_grad(), supernet.fixed_architecture(indices):
        torch.testing.assert_close(supernet(x), child(x), rtol=1e-9, atol=1e-9)


def _units(module) -> list[torch.nn.Module]:
    """The modules one path runs: a candidate op, or an attention candidate at one width."""
    return [unit for c in module.candidates for unit in (c.at if isinstance(c, AttentionAtWidths) else [c])]


def _count_calls(supernet: SuperNet) -> dict[str, list[int]]:
    calls: dict[str, list[int]] = {}
    for name, module in supernet.named_modules():
        if isinstance(module, (MixedBlock, MixedAttention)):
            calls[name] = [0] * len(_units(module))
            for j, unit in enumerate(_units(module)):
                unit.register_forward_hook(lambda *_, n=name, j=j: calls[n].__setitem__(j, calls[n][j] + 1))
    return calls


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_hard_mode_runs_one_candidate_per_choice_and_soft_mode_all(space, mode):
    supernet = SuperNet(space, num_classes=12, mode=mode).train()
    for name, param in supernet.named_parameters():  # attentions start as identities (gamma = 0): make them act
        if name.endswith("gamma"):
            param.data.fill_(0.5)
    calls = _count_calls(supernet)
    out = supernet(torch.randn(4, 3, *INPUT))
    assert out["arch_weights"].keys() == {c.key for c in space.choices()}  # the weights this pass ran on
    expected = (lambda n: 1) if mode == "hard" else (lambda n: n)
    assert all(sum(c) == expected(len(c)) and max(c) == 1 for c in calls.values())
    # the logits receive gradients through the (straight-through) weights: in soft mode every one; in hard
    # mode at least those of the residual choices whose sampled branch is not the identity
    (out["logits"][0].logsumexp(1).mean() + out["features"].square().mean()).backward()
    alphas = supernet.arch.alphas
    assert all(a.grad is not None for a in alphas.values())
    mixed = [m for m in supernet.modules() if isinstance(m, (MixedBlock, MixedAttention)) and m.key in alphas]
    sampled = {m.key: m.candidates[int(out["arch_weights"][m.key].argmax())] for m in mixed}
    informative = {m.key for m in mixed if mode == "soft" or (isinstance(m, MixedAttention) or m.residual)
                   and not isinstance(sampled[m.key], (MaskedSkip, torch.nn.Identity))}
    assert informative and all(alphas[k].grad.abs().sum() > 1e-8 for k in informative)
    for name, module in supernet.named_modules():  # candidates that did not run get no gradient
        if isinstance(module, (MixedBlock, MixedAttention)):
            for j, unit in enumerate(_units(module)):
                grads = [p.grad is not None for p in unit.parameters()]
                assert all(grads) if calls[name][j] else not any(grads)


def test_evaluation_runs_the_argmax_path(space):
    supernet = SuperNet(space, num_classes=12, mode="soft").eval()
    indices = random_indices(space, 3)
    set_argmax(supernet, indices)
    calls = _count_calls(supernet)
    supernet(torch.randn(2, 3, *INPUT))
    for name, module in supernet.named_modules():
        if isinstance(module, MixedBlock):
            assert calls[name][indices[module.keys[0]]] == 1 and sum(calls[name]) == 1


def _one_hot(index: int, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(index), n).double()


def test_a_mixed_op_runs_on_its_own_with_given_weights(space):
    """A mixed op outside any supernet, given weights as arguments: with one-hot op weights the single
    (sliced) path and the masked path agree; soft op weights give the weighted sum of the one-hot outputs
    (Σ w = 1, residual or not); nothing is kept between calls."""
    torch.manual_seed(0)
    part = next(p for p in space.parts() if p.kind == "block" and p.payload.key == "s2/1/op")  # 4 ops, widths (12, 16)
    block = MixedBlock(part.payload, part.width_in, part.width_out, part.stride).double().eval()
    x = torch.randn(2, 16, 8, 4, dtype=torch.float64)
    x[:, 12:] = 0  # width 12 active: the channels beyond it are 0, as the previous op leaves them
    width = _one_hot(0, 2)
    n_ops = len(part.payload.options)
    with torch.no_grad():
        outs = []
        for j in range(n_ops):
            weights = {part.payload.key: _one_hot(j, n_ops), part.width_in.key: width}
            masked, sliced = block(x, weights, single_path=False), block(x, weights, single_path=True)
            torch.testing.assert_close(sliced, masked, rtol=1e-12, atol=1e-12)
            outs.append(masked)
        assert not torch.allclose(outs[0], outs[3])  # an inverted residual is not the skip
        soft = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
        weights = {part.payload.key: soft, part.width_in.key: width}
        first = block(x, weights, single_path=False)
        torch.testing.assert_close(first, sum(w * out for w, out in zip(soft, outs)), rtol=1e-12, atol=1e-12)
        block(x, {part.payload.key: _one_hot(3, n_ops), part.width_in.key: _one_hot(1, 2)}, single_path=True)
        assert torch.equal(block(x, weights, single_path=False), first)  # no state from the other call

    part = next(p for p in space.parts() if p.kind == "attention" and p.stage == "s2")
    choice = part.payload
    attention = MixedAttention(choice, part.width_out.options, part.width_out.key).double().eval()
    with torch.no_grad():
        for name, param in attention.named_parameters():
            if name.endswith("gamma"):
                param.fill_(0.7)
    n_att = len(choice.options)
    with torch.no_grad():
        outs = [attention(x, {choice.key: _one_hot(j, n_att), "s2/width": width}, single_path=True)
                for j in range(n_att)]
        assert torch.equal(outs[0], x) and not torch.allclose(outs[1], x)  # none; CSALR acts
        soft = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
        mixed = attention(x, {choice.key: soft, "s2/width": width}, single_path=False)
        torch.testing.assert_close(mixed, sum(w * out for w, out in zip(soft, outs)), rtol=1e-12, atol=1e-12)


class _AttentionLeafTracer(torch.fx.Tracer):
    """Attention modules stay leaves: CSA/CSALR choose their landmark grid from the map size in Python,
    which a symbolic trace (no concrete shapes) cannot run; the supernet's own plumbing is traced."""

    def is_leaf_module(self, module: torch.nn.Module, name: str) -> bool:
        return isinstance(module, AttentionBlock) or super().is_leaf_module(module, name)


class _FixedWeights(torch.nn.Module):
    def __init__(self, supernet: SuperNet, weights: dict, single_path: bool):
        super().__init__()
        self.supernet, self.weights, self.single_path = supernet, weights, single_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.weights, self.single_path)


@pytest.mark.parametrize("single_path", [True, False])
def test_the_supernet_forward_with_given_weights_traces_with_torch_fx(space, single_path):
    torch.manual_seed(0)
    supernet = SuperNet(space, num_classes=5).double().eval()
    for name, param in supernet.named_parameters():
        if name.endswith("gamma"):
            param.data.fill_(0.5)
    indices = {c.key: len(c.options) - 1 for c in space.choices()}  # widest, DCS-CSALR
    weights = supernet.arch.one_hot(indices)
    weights = {k: w.double() for k, w in weights.items()}
    fixed = _FixedWeights(supernet, weights, single_path)
    traced = torch.fx.GraphModule(fixed, _AttentionLeafTracer().trace(fixed))
    mixed_calls = [n for n in traced.graph.nodes if n.op == "call_module" and "candidates" in str(n.target)]
    assert mixed_calls  # the mixed ops were traced through, down to their candidates' layers
    for seed in (1, 2):  # other inputs than any seen while tracing
        x = torch.randn(2, 3, *INPUT, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), supernet(x, weights, single_path), rtol=1e-12, atol=1e-12)
            with supernet.fixed_architecture(indices):
                torch.testing.assert_close(traced(x), supernet(x), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_the_supernet_forward_compiles(space):
    torch.manual_seed(0)
    supernet = SuperNet(space, num_classes=5).eval()
    indices = {c.key: len(c.options) - 1 for c in space.choices()}
    weights = supernet.arch.one_hot(indices)
    compiled = torch.compile(supernet, backend="eager")
    x = torch.randn(2, 3, *INPUT)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, weights, True), supernet(x, weights, True))


def test_nested_op_weights_share_one_superkernel_per_block(space):
    """``op_weights: nested``: a block of ir_k3_e3, ir_k5_e3, ir_k3_e6 and skip holds the weights of one
    ir_k5_e6 (Single-Path NAS / OFA); the k3_e3 child is the centre 3×3 of its depthwise kernel and its first
    3·C_in hidden channels; a step on the k3_e3 path moves only those weights (not the kernel's outer ring,
    not the hidden channels beyond 3·C_in)."""
    torch.manual_seed(0)
    part = next(p for p in space.parts() if p.kind == "block" and p.payload.key == "s2/1/op")  # widths (12, 16)
    assert list(part.payload.labels) == ["ir_k3_e3", "ir_k5_e3", "ir_k3_e6", "skip"]
    nested = MixedBlock(part.payload, part.width_in, part.width_out, part.stride, op_weights="nested")
    separate = MixedBlock(part.payload, part.width_in, part.width_out, part.stride)
    n = sum(p.numel() for p in nested.parameters())
    hidden = 6 * 16  # the widest width times the largest expansion
    # expand 16→96 (+BN), depthwise 5×5 on 96 (+BN), project 96→16 (+BN), counted by hand
    assert n == 16 * hidden + 2 * hidden + hidden * 25 + 2 * hidden + hidden * 16 + 2 * 16
    def block(e: int, k: int) -> int:
        return 16 * 16 * e + 2 * 16 * e + 16 * e * k * k + 2 * 16 * e + 16 * e * 16 + 2 * 16

    assert sum(p.numel() for p in separate.parameters()) == block(3, 3) + block(3, 5) + block(6, 3)

    superkernel = nested.candidates[0].depthwise[0].weight
    child = nested.child({"s2/1/op": 0, "s2/width": 0})  # ir_k3_e3 at width 12: hidden 36
    assert child.depthwise[0].weight.shape == (36, 1, 3, 3)
    assert torch.equal(child.depthwise[0].weight, superkernel[:36, :, 1:4, 1:4])
    assert torch.equal(child.expand[0].weight, nested.candidates[0].expand[0].weight[:36, :12])

    x = torch.randn(4, 16, 8, 4)
    x[:, 12:] = 0
    weights = {"s2/1/op": _one_hot(0, 4).float(), "s2/width": _one_hot(0, 2).float()}
    nested.train()(x, weights, single_path=True).square().sum().backward()
    grad = superkernel.grad
    assert grad[:36, :, 1:4, 1:4].abs().sum() > 0
    ring = torch.ones(5, 5, dtype=torch.bool)
    ring[1:4, 1:4] = False
    assert grad[:, :, ring].abs().sum() == 0 and grad[36:].abs().sum() == 0
    assert nested.candidates[0].expand[0].weight.grad[36:].abs().sum() == 0
