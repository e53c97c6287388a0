"""PCB-RPP runs: the refined pooling is part of the checkpoint, so evaluating the run (``dcsnas eval --run``)
or resuming it after its last epoch reproduces the mAP the training wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcsnas.cli import main
from dcsnas.config import load_config
from dcsnas.engine.checkpoint import load_checkpoint
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.rundir import open_run_dir
from dcsnas.engine.trainer import Trainer

TINY = Path(__file__).resolve().parents[1] / "experiments" / "cpu" / "tiny_test.yaml"
RPP = ["optim.epochs=2", "eval.every=0", "model.head=pcb", "model.pcb_parts=4", "model.pcb_reduce_dim=16",
       "schedule.rpp_start_epoch=1", "schedule.rpp_classifier_epochs=1"]


@pytest.mark.slow
def test_rpp_run_evaluates_and_resumes_with_refined_pooling(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(TINY), "--set", f"data.root={tiny_data}", "--out", str(out), "--no-progress"]
    for o in RPP:
        args += ["--set", o]
    assert main(args) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    state = load_checkpoint(out / "checkpoints" / "last.pt")["model"]
    assert bool(state["head.refined_pooling"])

    assert main(["eval", "--run", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["mAP"] == metrics["test"]["mAP"]

    cfg = load_config(TrainConfig, out / "config.yaml")
    resumed = Trainer(cfg, open_run_dir(out), show_progress=False)
    resumed.resume()
    assert resumed.start_epoch == 2 and resumed.model.head.refined
    assert resumed.fit()["test"]["mAP"] == metrics["test"]["mAP"]
