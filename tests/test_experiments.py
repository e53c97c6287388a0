"""Every training recipe under experiments/ loads, validates and builds its model; every recipe that calls
itself DCS (DCS-FB, DCS-DNAS retraining) trains with the IB loss as its authors do."""

from __future__ import annotations

import math
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


DCS_RECIPES = sorted([*ROOT.glob("demo/*dcsfb.yaml"), *ROOT.glob("demo/*retrain.yaml"), *ROOT.glob("cpu/dcsfb_*.yaml"),
                      ROOT / "cpu" / "retrain_small.yaml", *ROOT.glob("gpu/dcsfb_*.yaml"),
                      *ROOT.glob("paper/dcs/dcsfb_*.yaml"), *ROOT.glob("paper/dcs/dcs_dnas_retrain_*.yaml")])


def test_the_dcs_recipes_are_found():
    names = {str(p.relative_to(ROOT)) for p in DCS_RECIPES}
    assert {"demo/dcsfb.yaml", "demo/quick_dcsfb.yaml", "demo/retrain.yaml", "demo/quick_retrain.yaml",
            "cpu/dcsfb_mbv2_small.yaml", "cpu/retrain_small.yaml", "gpu/dcsfb_resnet50_market1501.yaml",
            "paper/dcs/dcs_dnas_retrain_market1501.yaml"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("path", DCS_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dcs_recipes_train_with_the_authors_ib_bound(path):
    cfg = load_config(TrainConfig, path, ["model.pretrained=false"])
    loss, epochs = cfg.loss, cfg.optim.epochs
    assert loss.ib_weight == 0.1 and loss.ib_ixf == "authors"
    assert loss.ib_start_epoch(epochs) == math.floor(0.3 * epochs) < epochs  # η = 0.1 after 30 % of the epochs
    if "vit" in path.name:  # a ViT's DCS gates sit inside its blocks
        assert cfg.model.dcs_blocks and not cfg.model.attention
    elif "retrain" not in path.name:  # a DCS-FB recipe: its attentions are DCS (a retrain's come from arch.json)
        assert cfg.model.attention and all(a.name == "dcs" for a in cfg.model.attention)

