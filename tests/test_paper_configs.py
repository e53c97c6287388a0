"""Every config under experiments/paper/ loads with its schema (a ``search`` section: the search schema, else
the train schema) and builds its model or search space; the CSALR ablations of seed 001 (Tables 2–4)
change only the ablated setting of pcb_csalr.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcsnas.config import load_config, read_config_file, to_dict
from dcsnas.engine.config import TrainConfig
from dcsnas.models.builder import create_model
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.space import load_space

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "experiments" / "paper"
CONFIGS = sorted(PAPER.rglob("*.yaml"))

# file -> (stage, landmarks per group, groups) of each CSALR module
ABLATIONS = {
    "ablation_landmarks_24.yaml": [("layer1", 24, 2), ("layer2", 24, 2), ("layer3", 24, 2)],
    "ablation_landmarks_48.yaml": [("layer1", 48, 2), ("layer2", 48, 2), ("layer3", 48, 2)],
    "ablation_landmarks_192.yaml": [("layer1", 192, 2), ("layer2", 192, 2), ("layer3", 192, 2)],
    "ablation_groups_1.yaml": [("layer1", 96, 1), ("layer2", 96, 1), ("layer3", 96, 1)],
    "ablation_groups_4.yaml": [("layer1", 96, 4), ("layer2", 96, 4), ("layer3", 96, 4)],
    "ablation_groups_8.yaml": [("layer1", 96, 8), ("layer2", 96, 8), ("layer3", 96, 8)],
    "ablation_stages_1.yaml": [("layer1", 96, 2)],
    "ablation_stages_23.yaml": [("layer2", 96, 2), ("layer3", 96, 2)],
}


def test_the_paper_configs_are_there():
    names = {str(p.relative_to(PAPER)) for p in CONFIGS}
    assert {f"csalr/{name}" for name in ABLATIONS} <= names
    for backbone in ("resnet50", "mobilenetv2"):
        for dataset in ("market1501", "msmt17"):
            assert f"dcs/dcsfb_{backbone}_{dataset}.yaml" in names
    for step in ("search", "retrain"):
        assert {f"dcs/dcs_dnas_{step}_market1501.yaml", f"dcs/dcs_dnas_{step}_msmt17.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(PAPER)))
def test_paper_config_loads_with_its_schema_and_builds(path):
    if "search" in read_config_file(path):
        cfg = load_config(SearchConfig, path)
        assert load_space(ROOT / cfg.search.space).choices()
        return
    cfg = load_config(TrainConfig, path, ["model.pretrained=false"])
    if cfg.model.backbone == "searched":  # the network comes from `dcsnas retrain --arch`
        assert cfg.model.arch is None and not cfg.model.attention
        return
    model = create_model(cfg.model, num_classes=10)
    assert set(model.attentions) == {a.stage for a in cfg.model.attention}


@pytest.mark.parametrize("name", ABLATIONS)
def test_csalr_ablation_changes_only_its_setting(name):
    reference = to_dict(load_config(TrainConfig, PAPER / "csalr" / "pcb_csalr.yaml"))
    cfg = load_config(TrainConfig, PAPER / "csalr" / name)
    placed = [(a.stage, a.options["landmarks"], a.options["groups"]) for a in cfg.model.attention]
    assert placed == ABLATIONS[name]
    assert all(a.name == "csalr" and a.deep_supervision for a in cfg.model.attention)
    ablated = to_dict(cfg)
    for both in (ablated, reference):
        del both["model"]["attention"]
    assert ablated == reference


@pytest.mark.parametrize("dataset", ["market1501", "msmt17"])
def test_dcs_dnas_retrains_with_the_dcsfb_recipe(dataset):
    """The derived network is retrained with DCS-FB's recipe (BoT + IB), on the data set it was searched on."""
    retrain = to_dict(load_config(TrainConfig, PAPER / "dcs" / f"dcs_dnas_retrain_{dataset}.yaml"))
    dcsfb = to_dict(load_config(TrainConfig, PAPER / "dcs" / f"dcsfb_resnet50_{dataset}.yaml"))
    search = load_config(SearchConfig, PAPER / "dcs" / f"dcs_dnas_search_{dataset}.yaml")
    assert retrain["data"]["dataset"] == search.data.dataset == dataset
    assert retrain["data"]["root"] == search.data.root == dcsfb["data"]["root"]
    for section in ("data", "loss", "optim", "eval", "schedule"):
        assert retrain[section] == dcsfb[section], section
