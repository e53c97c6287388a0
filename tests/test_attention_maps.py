"""Attention maps and DCS masks of a network (``eval --run --visualize``), checked by hand on a tiny model
whose DCS gate drops channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dcsnas.config import load_config
from dcsnas.engine.attention_maps import attention_outputs
from dcsnas.engine.config import TrainConfig
from dcsnas.metrics.tsne import plot_tsne
from dcsnas.models.builder import create_model

TINY = Path(__file__).resolve().parents[1] / "experiments" / "cpu" / "tiny_test.yaml"


def test_received_attention_sums_to_one_and_kept_is_the_gate_fraction():
    cfg = load_config(TrainConfig, TINY, [])
    torch.manual_seed(0)
    model = create_model(cfg.model, 5)
    dcs = model.attentions["stage2"]
    dcs.gate.weight.data.normal_()
    dcs.gate.bias.data.zero_()
    model.train()
    images = torch.randn(3, 3, 64, 32)
    outputs = attention_outputs(model, images)
    assert model.training and list(outputs) == ["stage2"]
    x = images
    model.eval()  # as attention_outputs ran it
    with torch.no_grad():
        for name, stage in model.backbone.stages.items():
            x = stage(x)
            if name == "stage2":
                break
        kept = (dcs.gate(x) > 0).float().mean(dim=1)  # by hand: the share of gate logits above 0
    received = outputs["stage2"]["received"]
    assert received.shape == kept.shape == (3, *x.shape[2:])
    # every query's attention row sums to 1, so the mean over queries sums to 1 over the positions
    assert torch.allclose(received.sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert torch.equal(outputs["stage2"]["kept"], kept) and 0 < kept.mean() < 1  # the gate drops some channels


def test_tsne_draws_the_first_identities(tmp_path):
    rng = np.random.default_rng(0)
    q_pids, g_pids = np.repeat(np.arange(30), 2), np.repeat(np.arange(30), 3)
    qf, gf = rng.normal(size=(60, 8)) + q_pids[:, None], rng.normal(size=(90, 8)) + g_pids[:, None]
    assert plot_tsne(qf, gf, q_pids, g_pids, tmp_path / "t.png", max_identities=20) == 20 * 2 + 20 * 3
    assert (tmp_path / "t.png").stat().st_size > 0


def test_vit_maps_are_the_cls_rows_per_head_and_the_kept_fraction_per_patch():
    torch.manual_seed(0)
    model = create_model("vit_micro", 5, img_size=[64, 32], dcs_blocks=[2])
    blocks = model.backbone.stages["vit"].vit.blocks
    blocks[2].attn.gate.weight.data.normal_()
    blocks[2].attn.gate.bias.data.zero_()
    images = torch.randn(2, 3, 64, 32)
    outputs = attention_outputs(model, images)
    assert list(outputs) == ["block 2", "block 5"]  # the DCS block and the last one
    assert list(outputs["block 2"]) == ["head 0", "head 1", "head 2", "kept"]
    assert list(outputs["block 5"]) == ["head 0", "head 1", "head 2"]
    vit = model.backbone.stages["vit"].vit
    with torch.no_grad():  # by hand: the tokens entering block 2, its Q, K per head, the [CLS] row of softmax(QK^T/√d)
        x = blocks[1](blocks[0](vit._pos_embed(vit.patch_embed(images))))
        attn = blocks[2].attn
        tokens = blocks[2].norm1(x)
        q, k, _ = attn.qkv(tokens).reshape(2, 33, 3, 3, 32).unbind(2)  # [B, N, H, d]
        mask = (attn.gate(tokens) > 0).float().reshape(2, 33, 3, 32)
        logits = torch.einsum("bhc,bjhc->bhj", (mask * q)[:, 0], mask * k) / 32 ** 0.5
        cls_row = logits.softmax(-1)[:, :, 1:]  # [B, H, 32 patches]
    for h in range(3):
        assert torch.allclose(outputs["block 2"][f"head {h}"], cls_row[:, h].reshape(2, 8, 4), atol=1e-6)
    kept = mask[:, 1:].mean(dim=(2, 3)).reshape(2, 8, 4)
    assert torch.equal(outputs["block 2"]["kept"], kept) and 0 < kept.mean() < 1
