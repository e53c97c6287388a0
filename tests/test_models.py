from __future__ import annotations

import pytest
import torch

from dcsnas.config import from_dict
from dcsnas.errors import ConfigError
from dcsnas.models.builder import ModelConfig, create_model


def build(**cfg):
    return create_model(from_dict(ModelConfig, cfg), num_classes=5)


def test_resnet50_last_stride_1_and_attention_after_stages():
    model = build(backbone="resnet50", attention=[{"stage": "layer1", "name": "csalr", "options": {"landmarks": 8}},
                                                  {"stage": "layer2", "name": "sa"}])
    assert list(model.attentions) == ["layer1", "layer2"]
    x = torch.randn(2, 3, 64, 32)
    fmap = model.forward_features(x)
    assert fmap.shape == (2, 2048, 4, 2)  # stride 16 with last stride 1
    model.eval()
    assert model(x).shape == (2, 2048)


def test_mobilenetv2_stages_and_strides():
    model = build(backbone="mobilenetv2", width_mult=0.5, last_stride=2)
    bb = model.backbone
    assert list(bb.stage_channels) == ["stem", "stage1", "stage2", "stage3", "stage4"]
    x = torch.randn(1, 3, 64, 32)
    for name, stage in bb.stages.items():
        x = stage(x)
        assert x.shape[1] == bb.stage_channels[name]
        assert x.shape[2] == 64 // bb.stage_strides[name]


def test_bnneck_training_outputs_and_deep_supervision():
    model = build(backbone="mobilenetv2", width_mult=0.5,
                  attention=[{"stage": "stage3", "name": "dcs", "options": {"backend": "csalr", "landmarks": 4},
                              "deep_supervision": True}])
    model.train()
    out = model(torch.randn(4, 3, 64, 32))
    assert [l.shape for l in out["logits"]] == [(4, 5)]
    assert out["features"].shape == (4, model.embedding_dim) == out["pooled"].shape
    assert len(out["aux_logits"]) == 1 and out["aux_logits"][0].shape == (4, 5)
    # deep supervision reaches the attention's Q/K/V even though gamma = 0 at initialisation
    out["aux_logits"][0].sum().backward()
    assert model.attentions["stage3"].value.weight.grad.abs().sum() > 0


def test_bnneck_bias_is_frozen():
    model = build(backbone="mobilenetv2", width_mult=0.5)
    assert not model.head.bn.bias.requires_grad


def test_pcb_parts_and_refined_pooling():
    model = build(backbone="mobilenetv2", width_mult=0.5, head="pcb", pcb_parts=4, pcb_reduce_dim=16)
    x = torch.randn(2, 3, 64, 32)  # final map 4×2: one row per part
    out = model(x)
    assert len(out["logits"]) == 4 and out["features"].shape == (2, 64)
    fmap = model.forward_features(x)
    uniform = model.head.pool_parts(fmap)
    torch.nn.init.zeros_(model.head.part_classifier.weight)
    torch.nn.init.zeros_(model.head.part_classifier.bias)
    model.head.refined = True
    refined = model.head.pool_parts(fmap)  # equal part probabilities everywhere: every part is the global mean
    assert torch.allclose(refined, fmap.mean(dim=(2, 3))[:, :, None].expand_as(uniform), atol=1e-5)
    refined.sum().backward()
    assert model.head.part_classifier.weight.grad is not None


def test_pcb_refined_pooling_travels_in_the_state_dict():
    model = build(backbone="mobilenetv2", width_mult=0.5, head="pcb", pcb_parts=4, pcb_reduce_dim=16)
    model.head.refined = True
    fresh = build(backbone="mobilenetv2", width_mult=0.5, head="pcb", pcb_parts=4, pcb_reduce_dim=16)
    assert not fresh.head.refined
    fresh.load_state_dict(model.state_dict())
    assert fresh.head.refined
    fmap = torch.randn(2, model.backbone.out_channels, 4, 2)
    stripes = build(backbone="mobilenetv2", width_mult=0.5, head="pcb", pcb_parts=4, pcb_reduce_dim=16)
    stripes.load_state_dict({**model.state_dict(), "head.refined_pooling": torch.tensor(False)})
    assert torch.equal(fresh.head.pool_parts(fmap), model.head.pool_parts(fmap))
    assert not torch.allclose(stripes.head.pool_parts(fmap), model.head.pool_parts(fmap), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("cfg, message", [
    ({"backbone": "vgg16"}, r"model.backbone = 'vgg16'; allowed: mobilenetv2, resnet50, searched"),
    ({"backbone": "resnet50", "attention": [{"stage": "layer9"}]},
     r"model.attention\[0\].stage = 'layer9': no such stage in resnet50; allowed: stem, layer1"),
    ({"backbone": "mobilenetv2", "attention": [{"stage": "stage2", "name": "nonlocal"}]},
     r"attention option 'name' = 'nonlocal'"),
    ({"backbone": "searched"}, r"needs model.arch"),
    ({"backbone": "mobilenetv2", "attention": [{"stage": "stage2", "name": "sa", "options": {"return_attention": True}}]},
     r"model.attention\[0\].options.return_attention = True is not a model option"),
    ({"backbone": "mobilenetv2", "attention": [{"stage": "stage2", "name": "sa", "options": {"keep_output": True}}]},
     r"model.attention\[0\].options.keep_output = True is not a model option: it is internal; set deep_supervision"),
])
def test_bad_model_configs(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build(**cfg)
