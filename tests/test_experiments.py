"""Every training recipe under experiments/ loads, validates and builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcsnas.config import load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.models.builder import create_model

ROOT = Path(__file__).resolve().parents[1] / "experiments"
RECIPES = sorted([*ROOT.glob("gpu/bot_base.yaml"), *ROOT.glob("gpu/dcsfb_*.yaml"), *ROOT.glob("cpu/dcsfb_*.yaml"),
                  ROOT / "cpu" / "tiny_test.yaml"])


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_loads_and_builds(path):
    cfg = load_config(TrainConfig, path, ["model.pretrained=false"])
    model = create_model(cfg.model, num_classes=10)
    assert set(model.attentions) == {a.stage for a in cfg.model.attention}
