"""ViT backbones from timm with DCS in their attention: equality with the plain timm ViT when every gate is
open, the gate law, analytic FLOPs against the counter on the explicit product, TransReID's overlapping
patch grid, the config refusals, and a training run end to end."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dcsnas.models.vit as vit_module
from dcsnas.attention.token_dcs import TokenAttention
from dcsnas.cli import main
from dcsnas.config import from_dict
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.steps import dcs_modules
from dcsnas.errors import ConfigError
from dcsnas.models.builder import create_model
from dcsnas.models.vit import ClassTokenStage
from dcsnas.utils.flops import count_flops

timm = pytest.importorskip("timm")
SIZE = (32, 16)


def plain_vit(dtype=torch.float64) -> nn.Module:
    """A small timm ViT with random weights (biases and norms too), no dropout."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=8, embed_dim=32,
                            depth=2, num_heads=2, num_classes=0)
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.2)
    return vit.to(dtype)


def with_token_attention(vit: nn.Module, gate_bias: float, gate_std: float = 0.0) -> nn.Module:
    gated = copy.deepcopy(vit)
    for block in gated.blocks:
        block.attn = TokenAttention(block.attn, dcs=True, gate_bias=gate_bias).to(torch.float64)
        block.attn.gate.weight.data.normal_(0, gate_std)
    return gated


@pytest.mark.parametrize("train", [False, True])
def test_open_gates_equal_the_plain_timm_vit(train):
    """Θ -> +∞ keeps every Q/K channel: the DCS ViT is timm's ViT with the same weights (float64), through
    timm's blocks and through the stage that runs the DCS blocks piece by piece."""
    vit = plain_vit()
    gated = with_token_attention(vit, gate_bias=1e6, gate_std=1.0)
    images = torch.randn(3, 3, *SIZE, dtype=torch.float64)
    vit.train(train), gated.train(train)
    expected, got = vit.forward_features(images), gated.forward_features(images)
    assert (got - expected).abs().max().item() <= 1e-9
    cls, kept = ClassTokenStage(gated).run(images)
    assert (cls.flatten(1) - expected[:, 0]).abs().max().item() <= 1e-9
    assert {name: float(ratio) for name, ratio in kept.items()} == {"vit.block0": 1.0, "vit.block1": 1.0}


def test_closed_gates_give_uniform_attention():
    """Θ -> -∞ drops every Q/K channel: logits 0, so each token's output is proj of the mean of V."""
    vit = plain_vit()
    attn = TokenAttention(vit.blocks[0].attn, dcs=True, gate_bias=-1e6).to(torch.float64).eval()
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    v = attn.qkv(x).reshape(2, 7, 3, 2, 16)[:, :, 2]  # [B, N, H, d]
    expected = attn.proj(v.mean(dim=1, keepdim=True).expand(2, 7, 2, 16).reshape(2, 7, 32))
    assert torch.allclose(attn(x), expected, rtol=0, atol=1e-12)


def test_mask_gates_q_and_k_of_each_token_but_not_v():
    """By hand: out_i = proj(Σ_j softmax_j(s Σ_c M_ic q_ic M_jc k_jc) v_j) per head, M = 1[Θ > 0] in evaluation."""
    vit = plain_vit()
    attn = TokenAttention(vit.blocks[0].attn, dcs=True).to(torch.float64).eval()
    attn.gate.weight.data.normal_(0, 1)
    attn.gate.bias.data.zero_()
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    q, k, v = attn.qkv(x).reshape(2, 6, 3, 2, 16).unbind(2)  # [B, N, H, d]
    m = (attn.gate(x) > 0).double().reshape(2, 6, 2, 16)
    assert 0.2 < m.mean() < 0.8
    logits = torch.einsum("bihc,bjhc->bhij", m * q, m * k) / math.sqrt(16)
    heads = torch.einsum("bhij,bjhc->bihc", logits.softmax(-1), v)
    assert torch.allclose(attn(x), attn.proj(heads.reshape(2, 6, 32)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("tau", [0.2, 1.0, 4.0])
def test_kept_mask_follows_the_gate_law(tau):
    """P(M = 1) = σ(Θ) at every τ (M = 1[Θ + g1 - g2 > 0], g1 - g2 logistic)."""
    vit = plain_vit(torch.float32)
    attn = TokenAttention(vit.blocks[0].attn, dcs=True, tau=tau).train()
    thetas = torch.linspace(-3, 3, 32)  # one logit per Q/K channel (2 heads x 16)
    attn.gate.weight.data.zero_()
    attn.gate.bias.data.copy_(thetas)
    torch.manual_seed(1)
    draws = 4000
    mask = attn.channel_mask(torch.randn(1, draws, 32))  # [1, H, N, d]
    kept = mask.detach().transpose(1, 2).reshape(draws, 32).mean(0)
    expected = torch.sigmoid(thetas)
    tolerance = 4.5 * torch.sqrt(expected * (1 - expected) / draws)
    assert ((kept - expected).abs() <= tolerance).all(), (kept - expected).abs().max()


def test_evaluation_mask_is_theta_positive():
    vit = plain_vit(torch.float32)
    attn = TokenAttention(vit.blocks[0].attn, dcs=True).eval()
    attn.gate.weight.data.normal_()
    x = torch.randn(2, 5, 32)
    theta = attn.gate(x).reshape(2, 5, 2, 16).transpose(1, 2)
    assert torch.equal(attn.channel_mask(x), (theta > 0).float())


@pytest.mark.parametrize("dcs", [False, True])
def test_analytic_flops_equal_the_counter_on_the_explicit_product(dcs):
    """timm's attention without the fused kernel computes Q K^T and A V as matrix products, which the counter
    counts; the gate is one more Linear(D, D)."""
    vit = plain_vit(torch.float32)
    explicit = vit.blocks[0].attn
    explicit.fused_attn = False
    shape = (2, 9, 32)
    counter = FlopCounterMode(display=False)
    with counter:
        explicit(torch.randn(shape))
    expected = counter.get_total_flops() + (2 * 2 * 9 * 32 * 32 if dcs else 0)
    assert TokenAttention(explicit, dcs=dcs).forward_flops(shape) == expected


def test_model_flops_count_every_block_analytically():
    """count_flops of the whole model = patch conv + per block (attention formula + MLP 16 N D^2), by hand."""
    model = create_model("vit_micro", 5, img_size=[64, 32], dcs_blocks=[1])
    tokens, dim, depth = 1 + (64 // 8) * (32 // 8), 96, 6
    patch = 2 * 32 * (3 * 8 * 8) * dim
    attention = 8 * tokens * dim * dim + 4 * tokens * tokens * dim
    mlp = 2 * 2 * tokens * dim * 4 * dim
    gate = 2 * tokens * dim * dim
    assert count_flops(model, (1, 3, 64, 32)) == patch + depth * (attention + mlp) + gate


def test_overlapping_patches_make_transreids_grid():
    """TransReID: 256×128, 16×16 patches at stride 12 -> a 21×10 grid; here 64×32, 8×8 at stride 6 -> 10×5."""
    model = create_model("vit_micro", 5, img_size=[64, 32], patch_stride=6)
    vit = model.backbone.stages["vit"].vit
    assert tuple(vit.patch_embed.grid_size) == ((64 - 8) // 6 + 1, (32 - 8) // 6 + 1) == (10, 5)
    assert vit.pos_embed.shape == (1, 1 + 50, 96)
    assert model.eval()(torch.randn(2, 3, 64, 32)).shape == (2, 96)


def test_cls_token_feeds_the_head():
    """The backbone's map is the [CLS] token after timm's final norm."""
    model = create_model("vit_micro", 5, img_size=[64, 32]).eval()
    images = torch.randn(2, 3, 64, 32)
    vit = model.backbone.stages["vit"].vit
    fmap = model.forward_features(images)
    assert fmap.shape == (2, 96, 1, 1)
    assert torch.allclose(fmap.flatten(1), vit.norm(vit.blocks(vit._pos_embed(vit.patch_embed(images))))[:, 0])


def test_training_outputs_carry_each_dcs_blocks_kept_ratio():
    """Block 1's gates keep the first quarter of each token's Q/K channels for sure (logits +100 against Gumbel
    noise of scale 1) and drop the rest (-100); block 4's keep all: the outputs say 1/4 and 1, per block."""
    model = create_model("vit_micro", 5, img_size=[64, 32], dcs_blocks=[1, 4])
    blocks = model.backbone.stages["vit"].vit.blocks
    gate = blocks[1].attn.gate
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.fill_(-100.0)
        gate.bias[:gate.bias.numel() // 4] = 100.0
        blocks[4].attn.gate.bias.fill_(100.0)
    out = model.train()(torch.randn(2, 3, 64, 32))
    assert set(out["dcs_kept"]) == {"vit.block1", "vit.block4"}
    assert float(out["dcs_kept"]["vit.block1"]) == 0.25 and float(out["dcs_kept"]["vit.block4"]) == 1.0
    assert not out["dcs_kept"]["vit.block1"].requires_grad


def test_the_stage_runs_the_dcs_blocks_as_timms_blocks_do_in_training():
    """With stochastic depth, attention dropout and Gumbel gates in training, the stage's piecewise DCS blocks draw
    the same random numbers in the same order as timm's ``Block.forward``: the same [CLS] token, bit for bit."""
    model = create_model("vit_micro", 5, img_size=[64, 32], dcs_blocks=[1, 3], drop_path=0.3).train()
    stage = model.backbone.stages["vit"]
    for block in stage.vit.blocks:
        block.attn.attn_drop.p = 0.2
    images = torch.randn(4, 3, 64, 32)
    torch.manual_seed(5)
    expected = stage.vit.forward_features(images)[:, 0]
    torch.manual_seed(5)
    got, kept = stage.run(images)
    assert torch.equal(got.flatten(1), expected)
    assert set(kept) == {"vit.block1", "vit.block3"} and all(0.8 < float(r) < 1 for r in kept.values())


def test_the_kept_ratio_is_the_mean_of_the_mask_of_the_blocks_gate_logits():
    """Evaluation (M = 1[Θ > 0]) with random gates: the stage's kept ratio of block 2 is the mean of the mask of
    Θ = gate(norm1(x)) computed by hand on block 2's input tokens x; the [CLS] map is the plain forward's."""
    torch.manual_seed(0)
    model = create_model("vit_micro", 5, img_size=[64, 32], dcs_blocks=[2]).eval()
    stage = model.backbone.stages["vit"]
    vit = stage.vit
    vit.blocks[2].attn.gate.weight.data.normal_(0, 1)
    vit.blocks[2].attn.gate.bias.data.zero_()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        fmap, kept = stage.run(images)
        x = vit.blocks[:2](vit._pos_embed(vit.patch_embed(images)))
        mask = (vit.blocks[2].attn.gate(vit.blocks[2].norm1(x)) > 0).float()
        expected = vit.norm(vit.blocks(vit._pos_embed(vit.patch_embed(images))))[:, 0]
    assert 0.2 < mask.mean() < 0.8
    assert list(kept) == ["vit.block2"] and float(kept["vit.block2"]) == pytest.approx(float(mask.mean()), abs=1e-7)
    assert torch.allclose(fmap.flatten(1), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fields, message", [
    ({"dcs_blocks": [6]}, "model.dcs_blocks: block 6"),
    ({"patch_stride": 9}, "model.patch_stride = 9"),
    ({"img_size": [64]}, "model.img_size = [64]"),
    ({"img_size": [4, 4]}, "smaller than vit_micro"),
    ({"head": "pcb"}, "model.head = 'pcb'"),
    ({"attention": [{"stage": "vit", "name": "sa"}]}, "model.attention"),
])
def test_bad_vit_options_are_config_errors(fields, message):
    fields = {"img_size": [64, 32], **fields}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        create_model("vit_micro", 5, **fields)


def test_vit_options_on_a_cnn_are_config_errors():
    with pytest.raises(ConfigError, match="model.dcs_blocks = \\[0\\] applies to the ViT backbones"):
        create_model("mobilenetv2", 5, dcs_blocks=[0])


def test_pretrained_weights_that_cannot_be_fetched_are_a_config_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match="timm's ImageNet weights of vit_small_patch16_224 cannot be loaded"):
        create_model("vit_small", 5, img_size=[256, 128], pretrained=True)
    assert vit_module.VIT_SIZES["vit_small"][0] == "vit_small_patch16_224"


def test_train_config_takes_the_input_size_and_refuses_another():
    base = {"model": {"backbone": "vit_micro"}, "data": {"transforms": {"height": 64, "width": 32}}}
    assert from_dict(TrainConfig, base).model.img_size == [64, 32]
    with pytest.raises(ConfigError, match="model.img_size = \\[128, 64\\] differs from the input size"):
        from_dict(TrainConfig, {**base, "model": {"backbone": "vit_micro", "img_size": [128, 64]}})


def test_the_gate_temperature_is_checked():
    with pytest.raises(ConfigError, match="'tau' = 0"):
        TokenAttention(plain_vit(torch.float32).blocks[0].attn, dcs=True, tau=0)
    assert math.isclose(TokenAttention(plain_vit(torch.float32).blocks[0].attn, tau=0.5).tau, 0.5)


def test_train_a_dcs_vit_end_to_end(tiny_data, tmp_path):
    """`dcsnas train` with a ViT: the IB term runs on the [CLS] embedding, the gates are saved, the run
    evaluates, and `dcsnas eval --visualize` draws its attention from the run's own config."""
    tiny = Path(__file__).resolve().parents[1] / "experiments" / "cpu" / "tiny_test.yaml"
    out = tmp_path / "run"
    overrides = [f"data.root={tiny_data}", "model.backbone=vit_micro", "model.attention=[]", "model.dcs_blocks=[1]",
                 "model.patch_stride=6", "optim.epochs=2", "loss.ib_weight=0.1", "loss.ib_warmup_ratio=0",
                 "schedule.dcs_tau_start=2.0", "schedule.dcs_tau_end=0.5"]
    assert main(["train", "--config", str(tiny), *[a for o in overrides for a in ("--set", o)], "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["test"]["mAP"] <= 100
    assert all(math.isfinite(h["train"]["ib"]) for h in metrics["history"])
    epochs = [line for line in (out / "log.txt").read_text().splitlines()
              if line.startswith("epoch ") and "untrained" not in line]
    kept = [float(line.split("attention/vit.block1/dcs_kept_ratio ")[1].split(" |")[0]) for line in epochs]
    assert len(kept) == 2 and all(0 < ratio <= 1 for ratio in kept)  # each epoch logs block 1's kept ratio
    ckpt = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert any(k.endswith("blocks.1.attn.gate.weight") for k in ckpt["model"])
    views = tmp_path / "views"
    assert main(["eval", "--run", str(out), "--visualize", "2", "--vis-queries", "2", "--out", str(views)]) == 0
    assert len(list((views / "attention").glob("*.png"))) == 2  # [CLS] maps per head and DCS masks, per query


def test_the_trainer_anneals_the_gated_vit_blocks_only():
    model = create_model("vit_micro", 5, img_size=[64, 32], dcs_blocks=[1, 4])
    blocks = model.backbone.stages["vit"].vit.blocks
    assert dcs_modules(model) == [blocks[1].attn, blocks[4].attn]
