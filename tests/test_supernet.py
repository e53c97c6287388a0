"""The supernet's mixed ops (hard/soft, width masks) and the plain networks rebuilt from arch.json."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml

from dcsnas.models.blocks import InvertedResidual
from dcsnas.models.builder import ModelConfig, create_model
from dcsnas.nas.arch import derive_arch, write_arch
from dcsnas.nas.cost import measure_costs
from dcsnas.nas.ops import MaskedSkip, MixedAttention, MixedBlock
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
    path = tmp_path / "space.yaml"
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


def test_masked_supernet_computes_the_child_network(space, costs, tmp_path):
    """With one-hot weights the width masks make the supernet compute exactly the derived network, given
    the derived network's weights are the leading slices of the supernet's widest ones."""
    indices = {**random_indices(space, 5), "s2/attention": 0, "s1/width": 0, "s2/width": 1, "s3/width": 0}
    supernet = SuperNet(space, num_classes=12).eval()
    set_argmax(supernet, indices)
    torch.manual_seed(0)
    for module in supernet.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.5, 0.5)
    arch = derive_arch(space, indices, costs, {})
    write_arch(tmp_path / "arch.json", arch)
    child = create_model(ModelConfig(backbone="searched", arch=str(tmp_path / "arch.json")), num_classes=12).eval()
    source = supernet.backbone.state_dict()
    state = {}
    for key, value in child.backbone.state_dict().items():
        parts = key.split(".")
        if parts[1] not in ("stem", "conv_head"):
            parts[3:3] = ["candidates", str(indices[f"{parts[1]}/{parts[2]}/op"])]
        state[key] = source[".".join(parts)][tuple(slice(0, n) for n in value.shape)]
    child.backbone.load_state_dict(state)
    x = torch.randn(2, 3, *INPUT)
    with torch.no_grad():
        expected = child.forward_features(x)
        # evaluation takes the single (sliced) path of the argmax architecture
        torch.testing.assert_close(supernet.forward_features(x), expected, rtol=1e-4, atol=1e-5)
        # the masked path (soft mode) with one-hot weights computes the same
        supernet.selection.single_path = False
        supernet.selection.weights = {c.key: torch.nn.functional.one_hot(torch.tensor(indices[c.key]),
                                                                         len(c.options)).float()
                                      for c in space.choices()}
        torch.testing.assert_close(supernet.backbone(x), expected, rtol=1e-4, atol=1e-5)


def _count_calls(supernet: SuperNet) -> dict[str, list[int]]:
    calls: dict[str, list[int]] = {}
    for name, module in supernet.named_modules():
        if isinstance(module, (MixedBlock, MixedAttention)):
            calls[name] = [0] * len(module.candidates)
            for j, candidate in enumerate(module.candidates):
                candidate.register_forward_hook(lambda *_, n=name, j=j: calls[n].__setitem__(j, calls[n][j] + 1))
    return calls


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_hard_mode_runs_one_candidate_per_choice_and_soft_mode_all(space, mode):
    supernet = SuperNet(space, num_classes=12, mode=mode).train()
    for name, param in supernet.named_parameters():  # attentions start as identities (gamma = 0): make them act
        if name.endswith("gamma"):
            param.data.fill_(0.5)
    calls = _count_calls(supernet)
    out = supernet(torch.randn(4, 3, *INPUT))
    expected = (lambda n: 1) if mode == "hard" else (lambda n: n)
    assert all(sum(c) == expected(len(c)) and max(c) == 1 for c in calls.values())
    # the logits receive gradients through the (straight-through) weights: in soft mode every one; in hard
    # mode at least those of the residual choices whose sampled branch is not the identity
    (out["logits"][0].logsumexp(1).mean() + out["features"].square().mean()).backward()
    alphas = supernet.arch.alphas
    assert all(a.grad is not None for a in alphas.values())
    mixed = [m for m in supernet.modules() if isinstance(m, (MixedBlock, MixedAttention)) and m.key in alphas]
    sampled = {m.key: m.candidates[int(supernet.selection[m.key].argmax())] for m in mixed}
    informative = {m.key for m in mixed if mode == "soft" or (isinstance(m, MixedAttention) or m.residual)
                   and not isinstance(sampled[m.key], (MaskedSkip, torch.nn.Identity))}
    assert informative and all(alphas[k].grad.abs().sum() > 1e-8 for k in informative)
    for name, module in supernet.named_modules():  # candidates that did not run get no gradient
        if isinstance(module, (MixedBlock, MixedAttention)):
            for j, candidate in enumerate(module.candidates):
                grads = [p.grad is not None for p in candidate.parameters()]
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
