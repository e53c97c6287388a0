"""The training engine on the tiny synthetic preset: exact resume, config and data errors (DDP: test_ddp.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dcsnas.cli import main
from dcsnas.config import load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.rundir import create_run_dir, open_run_dir
from dcsnas.engine.trainer import Trainer

TINY = Path(__file__).resolve().parents[1] / "experiments" / "cpu" / "tiny_test.yaml"


def tiny_config(root: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, TINY, [f"data.root={root}", "eval.every=0", *overrides])


def test_train_writes_run_directory(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(TINY), "--set", f"data.root={tiny_data}", "--set", "optim.epochs=1",
                 "--out", str(out), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["mAP"] == metrics["test"]["mAP"] and 0 < metrics["test"]["mAP"] <= 1
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.pt").is_file()
    assert any((out / "tb").iterdir())
    assert set(metrics["history"][0]["train"]) >= {"ce", "triplet", "deep_supervision", "total"}
    # evaluating the run's checkpoint reproduces the metrics the training wrote
    args = ["eval", "--run", str(out), "--visualize", "3", "--vis-queries", "2", "--out", str(tmp_path / "ev")]
    assert main(args) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["mAP"] == metrics["test"]["mAP"] and evaluated["epoch"] == 1
    assert len(list((tmp_path / "ev" / "ranks").glob("*.png"))) == 2
    # the trained network's attention maps and DCS masks for those queries, and the t-SNE of the embeddings
    assert evaluated["attention_maps"]["count"] == 2 and len(list((tmp_path / "ev" / "attention").glob("*.png"))) == 2
    assert evaluated["tsne"]["points"] > 0 and (tmp_path / "ev" / "tsne.png").stat().st_size > 0


# without workers, exact resume is also checked by tests/test_search.py::test_search_resume_continues_exactly
@pytest.mark.parametrize("workers", [pytest.param(0, marks=pytest.mark.slow), 2])
def test_resume_after_interruption_gives_the_same_weights(tiny_data, tmp_path, workers):
    """A run killed at epoch 2 and resumed ends bit-identical on CPU to an uninterrupted one, with data-loader
    workers too (their random streams are a function of seed, epoch and worker id)."""
    cfg = tiny_config(tiny_data, "optim.epochs=2", f"data.num_workers={workers}")
    straight = Trainer(cfg, create_run_dir(tmp_path / "a", "train", cfg), show_progress=False)
    straight.fit()

    interrupted = Trainer(cfg, create_run_dir(tmp_path / "b", "train", cfg), show_progress=False)
    original = interrupted.loop.begin

    def killed_at_epoch_2(epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(epoch)

    interrupted.loop.begin = killed_at_epoch_2
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Trainer(cfg, open_run_dir(tmp_path / "b"), show_progress=False)
    resumed.resume()
    assert resumed.start_epoch == 1
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_architecture(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(TINY), "--set", f"data.root={tiny_data}", "--set", "optim.epochs=1",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--resume", "--set", "model.width_mult=0.5"]) == 2
    assert "differs from the run's saved config in model.width_mult" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    (["optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["optim.lr=fast"], "config key 'optim.lr': expected float, got 'fast'"),
    (["model.backbone=vgg16"], "model.backbone = 'vgg16'"),
    (["data.root=/does/not/exist"], "data root '/does/not/exist' does not exist"),
    (["model.attention=[{stage: stage9, name: sa}]"], "no such stage in mobilenetv2"),
    (["loss.names=[ce]"], "unknown config key 'loss.names'"),
])
def test_bad_config_exits_2_naming_the_problem(tiny_data, tmp_path, capsys, overrides, message):
    args = ["train", "--config", str(TINY), "--set", f"data.root={tiny_data}", "--out", str(tmp_path / "r")]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
