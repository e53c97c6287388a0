from __future__ import annotations

import pytest
import torch

from dcsnas.config import from_dict
from dcsnas.errors import ConfigError
from dcsnas.models.backbones import BACKBONES, create_backbone
from dcsnas.models.builder import ModelConfig, create_model
from dcsnas.models.heads import HEADS, create_head


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
    assert [logits.shape for logits in out["logits"]] == [(4, 5)]
    assert out["features"].shape == (4, model.embedding_dim) == out["pooled"].shape
    assert len(out["aux_logits"]) == 1 and out["aux_logits"][0].shape == (4, 5)
    # deep supervision reaches the attention's Q/K/V even though gamma = 0 at initialisation
    out["aux_logits"][0].sum().backward()
    attention = model.attentions["stage3"]
    value_rows = slice(2 * attention.qk_channels, None)  # G = 1: the qkv conv's rows are Q, K, V
    assert attention.qkv.weight.grad[value_rows].abs().sum() > 0


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
    ({"backbone": "vgg16"}, r"model.backbone = 'vgg16': expected one of 'resnet50', 'mobilenetv2', 'vit_micro', "
     r"'vit_tiny', 'vit_small', 'vit_base', 'searched'"),
    ({"backbone": "resnet50", "attention": [{"stage": "layer9"}]},
     r"model.attention\[0\].stage = 'layer9': no such stage in resnet50; allowed: stem, layer1"),
    ({"backbone": "mobilenetv2", "attention": [{"stage": "stage2", "name": "nonlocal"}]},
     r"attention option 'name' = 'nonlocal'"),
    ({"backbone": "searched"}, r"needs model.arch"),
    ({"backbone": "mobilenetv2",
      "attention": [{"stage": "stage2", "name": "sa", "options": {"return_attention": True}}]},
     r"model.attention\[0\].options.return_attention = True is not a model option"),
    ({"backbone": "mobilenetv2", "attention": [{"stage": "stage2", "name": "sa", "options": {"keep_output": True}}]},
     r"attention option 'keep_output' = True: no such option for 'sa'; allowed: "),
])
def test_bad_model_configs(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build(**cfg)


def test_create_model_by_name_equals_the_model_of_the_config():
    fields = {"width_mult": 0.5, "head": "pcb", "pcb_parts": 2, "pcb_reduce_dim": 8,
              "attention": [{"stage": "stage3", "name": "csa", "options": {"landmarks": 4}, "deep_supervision": True}]}
    torch.manual_seed(0)
    by_name = create_model("mobilenetv2", 5, **fields)
    torch.manual_seed(0)
    by_config = build(backbone="mobilenetv2", **fields)
    assert by_name.state_dict().keys() == by_config.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), by_config.state_dict().values()))
    with pytest.raises(ConfigError, match="unknown config key 'widthmult'"):
        create_model("mobilenetv2", 5, widthmult=0.5)
    with pytest.raises(ConfigError, match=r"options \['width_mult'\] are given with a model config"):
        create_model(ModelConfig(backbone="mobilenetv2"), 5, width_mult=0.5)


def test_training_outputs_carry_each_dcs_attentions_kept_ratio_by_stage():
    """The gate of stage2's DCS keeps its first quarter of query/key channels for sure (logits +100 against
    Gumbel noise of scale 1) and drops the rest (-100): the outputs say 1/4 for stage2; stage3's keeps all."""
    model = create_model("mobilenetv2", 5, width_mult=0.5, attention=[
        {"stage": "stage2", "name": "dcs", "options": {"backend": "sa", "qk_ratio": 2}},
        {"stage": "stage3", "name": "dcs", "options": {"backend": "sa", "qk_ratio": 2}}])
    gate = model.attentions["stage2"].gate
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.fill_(-100.0)
        gate.bias[:gate.bias.numel() // 4] = 100.0
        model.attentions["stage3"].gate.bias.fill_(100.0)
    out = model.train()(torch.randn(2, 3, 64, 32))
    assert set(out["dcs_kept"]) == {"stage2", "stage3"}
    assert float(out["dcs_kept"]["stage2"]) == 0.25 and float(out["dcs_kept"]["stage3"]) == 1.0


def test_the_train_and_eval_contract():
    """Training mode: the dict of logits (one per classifier), features and the embedding for the losses,
    deep-supervision logits and the pooled map; evaluation mode: the test embedding;
    forward = forward_head(forward_features)."""
    model = create_model("mobilenetv2", 5, width_mult=0.5, attention=[
        {"stage": "stage2", "name": "sa", "deep_supervision": True}])
    x = torch.randn(3, 3, 64, 32)
    model.train()
    torch.manual_seed(0)
    out = model(x)
    assert set(out) == {"logits", "features", "embedding", "aux_logits", "pooled", "dcs_kept"}
    assert out["dcs_kept"] == {}  # no DCS attention
    assert out["embedding"].shape == (3, model.embedding_dim)
    assert [logits.shape for logits in out["logits"]] == [(3, 5)]
    assert [logits.shape for logits in out["aux_logits"]] == [(3, 5)]
    model.eval()
    embedding = model(x)
    assert embedding.shape == (3, model.embedding_dim)
    assert torch.equal(embedding, model.forward_head(model.forward_features(x)))


def test_head_and_backbone_registries_list_their_names():
    assert list(HEADS) == ["bnneck", "pcb"]
    assert list(BACKBONES) == ["resnet50", "mobilenetv2", "vit_micro", "vit_tiny", "vit_small", "vit_base"]
    with pytest.raises(ConfigError, match=r"model.head = 'mgn': expected one of 'bnneck', 'pcb'$"):
        create_head("mgn", 64, 5)
    with pytest.raises(ConfigError, match=r"head 'bnneck' has no option 'parts'; allowed: none"):
        create_head("bnneck", 64, 5, parts=2)
    assert create_head("pcb", 64, 5, parts=2, reduce_dim=8).embedding_dim == 16
    with pytest.raises(ConfigError, match=r"backbone 'resnet50' has no option 'width_mult'; allowed: pretrained, "
                                          r"last_stride"):
        create_backbone("resnet50", width_mult=0.5)
    assert create_backbone("mobilenetv2", width_mult=0.5).out_channels == 1280
