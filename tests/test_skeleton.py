"""The skeleton walk (:mod:`dcsnas.models.skeleton`): the parts of a tiny space and of a tiny arch, in order,
written out by hand from the mobilenetv2 skeleton (block 0 of a stage takes the previous width at the
stage's stride, the others the stage's width at stride 1; the attention slot ends the stage)."""

from __future__ import annotations

import pytest
import torch

from dcsnas.errors import ConfigError
from dcsnas.models.arch import ArchAttention, ArchStage, MobileNetV2Arch
from dcsnas.models.skeleton import SKELETONS
from dcsnas.nas.space import parse_space

SPACE = {
    "name": "two-stage", "skeleton": "mobilenetv2", "stem_channels": 4, "stem_stride": 2, "head_channels": 20,
    "stages": [
        {"name": "a", "widths": [4, 6], "blocks": 2, "stride": 2, "ops": ["ir_k3_e3", "skip"]},
        {"name": "b", "widths": [16], "blocks": 1, "stride": 1, "ops": ["ir_k5_e6"],
         "attention": {"types": ["none", "csalr"], "groups": [2]}},
    ],
}


def _rows(parts, width=lambda w: w, payload=lambda p: p):
    return [(p.kind, p.stage, p.index, width(p.width_in), width(p.width_out), p.stride_in, p.stride_out, p.stride,
             payload(p.payload)) for p in parts]


def test_the_parts_of_a_space_are_its_slots_in_order():
    space = parse_space(SPACE, "test")
    key = lambda c: None if c is None else c.key  # noqa: E731
    assert _rows(space.parts(), width=lambda w: w if isinstance(w, int) else w.key, payload=key) == [
        ("stem", "stem", 0, 3, "stem/width", 1, 2, 2, None),
        ("block", "a", 0, "stem/width", "a/width", 2, 4, 2, "a/0/op"),
        ("block", "a", 1, "a/width", "a/width", 4, 4, 1, "a/1/op"),
        ("attention", "a", 0, "a/width", "a/width", 4, 4, 1, "a/attention"),
        ("block", "b", 0, "a/width", "b/width", 4, 4, 1, "b/0/op"),
        ("attention", "b", 0, "b/width", "b/width", 4, 4, 1, "b/attention"),
        ("conv_head", "conv_head", 0, "b/width", 20, 4, 4, 1, None),
    ]
    ops = [p.payload.options for p in space.parts() if p.kind == "block"]
    assert ops == [("ir_k3_e3",), ("ir_k3_e3", "skip"), ("ir_k5_e6",)]  # skip only where shapes may agree


def test_the_parts_of_an_arch_carry_its_widths_and_ops():
    csalr = ArchAttention("csalr", {"groups": 2})
    arch = MobileNetV2Arch(format="dcsnas-arch", version=1, space="two-stage", input_size=[32, 16], flops=0,
                           params=0, search={}, stem_channels=4, stem_stride=2, head_channels=20,
                           stages=(ArchStage("a", 2, 6, ["ir_k3_e3", "skip"]),
                                   ArchStage("b", 1, 16, ["ir_k5_e6"], csalr)))
    assert _rows(SKELETONS["mobilenetv2"].arch_parts(arch)) == [
        ("stem", "stem", 0, 3, 4, 1, 2, 2, None),
        ("block", "a", 0, 4, 6, 2, 4, 2, "ir_k3_e3"),
        ("block", "a", 1, 6, 6, 4, 4, 1, "skip"),
        ("attention", "a", 0, 6, 6, 4, 4, 1, None),
        ("block", "b", 0, 6, 16, 4, 4, 1, "ir_k5_e6"),
        ("attention", "b", 0, 16, 16, 4, 4, 1, csalr),
        ("conv_head", "conv_head", 0, 16, 20, 4, 4, 1, None),
    ]


RESNET_SPACE = {"name": "r", "skeleton": "resnet50", "last_stride": 1, "stages": [
    {"name": "layer1", "attention": {"types": ["none", "sa"], "groups": [1, 2]}},
    {"name": "layer3", "attention": {"types": ["csalr"], "groups": [4]}}]}


def test_the_parts_of_a_resnet50_space_are_torchvisions_stages_and_the_attention_slots():
    """Channels and strides of the walk against what torchvision's stages compute on a 64×32 input."""
    space = parse_space(RESNET_SPACE, "test")
    skeleton = SKELETONS["resnet50"]
    stages = skeleton.fixed(space)
    x = torch.zeros(1, 3, 64, 32, device="meta")
    measured = {}
    for name, module in stages.items():
        x = module.to("meta")(x)
        measured[name] = (x.shape[1], 64 // x.shape[2])
    parts = list(space.parts())
    assert [(p.kind, p.stage) for p in parts] == [
        ("stage", "stem"), ("stage", "layer1"), ("attention", "layer1"), ("stage", "layer2"), ("stage", "layer3"),
        ("attention", "layer3"), ("stage", "layer4")]
    assert {p.stage: (p.width_out, p.stride_out) for p in parts if p.kind == "stage"} == measured
    assert [p.payload.labels for p in parts if p.kind == "attention"] == [("none", "sa-g1", "sa-g2"), ("csalr-g4",)]
    assert [c.key for c in space.choices()] == ["layer1/attention", "layer3/attention"]


def test_derive_and_indices_are_inverse_and_refuse_another_skeleton():
    space = parse_space(RESNET_SPACE, "test")
    skeleton = SKELETONS["resnet50"]
    common = dict(format="dcsnas-arch", version=1, space="r", input_size=[64, 32], flops=0, params=0, search={})
    for choice in range(3):
        indices = {"layer1/attention": choice, "layer3/attention": 0}
        arch = skeleton.derive(space, indices, common)
        assert [s.name for s in arch.stages] == ["layer1", "layer3"]
        assert (arch.stages[0].attention is None) == (choice == 0)
        assert skeleton.indices(space, arch, "arch.json") == indices
    mbv2_space = parse_space(SPACE, "test")
    mbv2 = SKELETONS["mobilenetv2"].derive(mbv2_space, {c.key: 0 for c in mbv2_space.choices()}, common)
    with pytest.raises(ConfigError, match="arch 'arch.json': its stages do not match those of the space 'r'"):
        skeleton.indices(space, mbv2, "arch.json")
