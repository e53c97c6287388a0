"""Search spaces and the cost model: loading, validation errors, exact cost bookkeeping (arch.json: test_arch.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml

from dcsnas.errors import ConfigError
from dcsnas.nas.cost import CostConfig, CostLoss, measure_costs
from dcsnas.nas.space import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "search_spaces"


@pytest.fixture(scope="module")
def tiny_space():
    return load_space(SPACES / "tiny.yaml")


@pytest.fixture(scope="module")
def tiny_costs(tiny_space):
    return measure_costs(tiny_space, (64, 32))


def test_shipped_spaces_load_with_their_choices():
    mbv2 = load_space(SPACES / "mbv2_reid.yaml")
    keys = {c.key: c for c in mbv2.choices()}
    assert keys["stage2/width"].options == (12, 16, 24)
    assert keys["stage3/attention"].labels == ("none", "sa-g1", "sa-g2", "csa-g1", "csa-g2", "csalr-g1", "csalr-g2",
                                               "dcs-sa-g1", "dcs-sa-g2", "dcs-csalr-g1", "dcs-csalr-g2")
    # skip only where shapes allow: not in the first block of a stage (stride or width change)
    assert "skip" not in keys["stage3/0/op"].options and "skip" in keys["stage3/1/op"].options
    assert len(keys["stage3/1/op"].options) == 5 and not keys["stage1/0/op"].searchable
    resnet = load_space(SPACES / "resnet50_attention.yaml")
    assert [c.key for c in resnet.choices()] == ["layer1/attention", "layer2/attention", "layer3/attention"]
    assert len(resnet.choices()[0].options) == 1 + 5 * 3


BASE = {"version": 1, "name": "t", "skeleton": "mobilenetv2", "stem_channels": 8, "head_channels": 16,
        "stages": [{"name": "s1", "widths": [8, 16], "blocks": 2, "stride": 2, "ops": ["ir_k3_e3", "skip"]}]}


def _with(path: str, value):
    data = json.loads(json.dumps(BASE))
    node, keys = data, path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize("data, message", [
    (_with("version", 2), "version = 2; this dcsnas reads version 1"),
    (_with("skeleton", "vgg"), "key 'skeleton' = 'vgg'; allowed: mobilenetv2, resnet50"),
    (_with("stages.0.width", [8]), "unknown config key 'stages[0].width'"),
    (_with("stages.0.widths", [8, -1]), "config key 'stages[0].widths[1]' = -1: expected an int in [1, 4096]"),
    (_with("stages.0.ops", ["ir_k4_e3"]), "op 'ir_k4_e3': the kernel must be odd"),
    (_with("stages.0.ops", ["conv3x3"]), "unknown op 'conv3x3'"),
    (_with("stages.0.ops", ["skip"]), "stages[0].ops = ['skip']: block 0 of stage 's1' has no candidate op"),
    (_with("stages.0.name", "conv_head"), "stage name 'conv_head'"),
    (_with("stages.0.attention", {"types": ["none", "nl"]}), "attention type 'nl'"),
    (_with("stages.0.attention", {"types": ["sa"], "options": {"landmarks": 4}}), "option 'landmarks' is not accepted"),
    (_with("stages.0.attention", {"types": ["csalr"], "groups": [3]}), "stages[0].attention (s1, csalr-g3, width 8)"),
    ({"version": 1, "name": "r", "skeleton": "resnet50", "stages": [{"name": "layer5"}]},
     "'layer5' is not a ResNet-50"),
])
def test_bad_space_file_names_file_and_key(tmp_path, data, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_cost_bounds_and_expectation_match_enumeration(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**BASE, "stages": [
        {"name": "s1", "widths": [8, 16], "blocks": 2, "stride": 2, "ops": ["ir_k3_e3", "ir_k5_e6", "skip"]},
        {"name": "s2", "widths": [16, 24], "blocks": 1, "stride": 1, "ops": ["ir_k3_e3", "ir_k3_e6"],
         "attention": {"types": ["none", "csalr"], "groups": [2], "options": {"landmarks": 4}}}]}))
    space = load_space(path)
    costs = measure_costs(space, (32, 16))
    choices = space.choices()
    every = [dict(zip([c.key for c in choices], idx)) for idx in itertools.product(*(range(len(c.options))
                                                                                     for c in choices))]
    assert len(every) == 2 * 2 * 2 * 3 * 2 * 2
    flops = [costs.exact(index) for index in every]
    params = [costs.exact(index, "params") for index in every]
    assert costs.bounds("flops") == (min(flops), max(flops)) and costs.bounds("params") == (min(params), max(params))
    # with one-hot weights the expectation is the exact cost; it is linear and differentiable in the weights
    index = every[-1]
    one_hot = {c.key: torch.nn.functional.one_hot(torch.tensor(index[c.key]), len(c.options)).double()
               for c in choices}
    assert costs.expected(one_hot).item() == costs.exact(index)
    logits = {c.key: torch.zeros(len(c.options), requires_grad=True) for c in choices}
    expected = costs.expected({k: v.softmax(0) for k, v in logits.items()})
    assert expected.item() == pytest.approx(sum(flops) / len(flops))  # uniform p: the mean over the space
    expected.backward()
    assert logits["s1/1/op"].grad.abs().sum() > 0 and logits["s2/attention"].grad[1] > 0


def test_flops_target_outside_the_space_is_an_error(tiny_costs):
    low, high = tiny_costs.bounds("flops")
    with pytest.raises(ConfigError, match=r"search.cost.target_mflops = 0.1 is outside .* \[0.754, 3.315\]"):
        CostLoss(CostConfig(kind="hinge", target_mflops=0.1), tiny_costs)
    CostLoss(CostConfig(kind="hinge", target_mflops=(low + high) / 2e6), tiny_costs)
    with pytest.raises(ConfigError, match="search.cost.unit"):
        CostLoss(CostConfig(kind="fbnet", unit=1e6), tiny_costs)
