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
