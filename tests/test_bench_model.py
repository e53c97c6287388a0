from __future__ import annotations

import json
from pathlib import Path

from dcsnas.cli import main
from dcsnas.config import load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.models.arch import write_arch
from dcsnas.models.builder import create_model
from dcsnas.nas.arch import derive_arch
from dcsnas.nas.cost import measure_costs
from dcsnas.nas.space import load_space

TINY = Path(__file__).resolve().parents[1] / "experiments" / "cpu" / "tiny_test.yaml"


def test_bench_model_reports_the_models_flops(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "model", "--config", str(TINY), "--repeats", "1", "--num-classes", "12", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    model = create_model(load_config(TrainConfig, TINY).model, 12)
    assert result["flops"] > 0  # profile_model's count against a hand formula: tests/test_profile.py
    assert result["input_shape"] == [1, 3, 64, 32] and result["latency_ms"] > 0
    # params: the inference network's (the count compare and the training's start-up block print): no identity
    # classifier, no deep-supervision branch, so the number of training identities does not change it
    training_only = model.head.classifier.weight.numel() + sum(p.numel() for p in model.deep_supervision.parameters())
    assert result["params"] == result["params_total"] - training_only and training_only > 0
    assert main(args[:-4] + ["--num-classes", "751"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == result["params"]


def test_bench_model_train_mode_and_bad_input(capsys):
    assert main(["bench", "model", "--config", str(TINY), "--train", "--batch", "8", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch"] == 8 and result["images_per_s"] > 0
    assert main(["bench", "model", "--config", str(TINY), "--repeats", "0"]) == 2
    assert "--repeats must be an integer in [1, " in capsys.readouterr().err


def test_bench_model_of_an_arch_measures_at_the_arch_input_size(tmp_path, capsys):
    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "tiny.yaml")
    indices = {c.key: len(c.options) - 1 for c in space.choices()}  # DCS-CSALR attention included
    arch = derive_arch(space, indices, measure_costs(space, (64, 32)), {})
    write_arch(tmp_path / "arch.json", arch)
    assert main(["bench", "model", "--arch", str(tmp_path / "arch.json"), "--repeats", "1", "--num-classes", "12",
                 "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_shape"] == [1, 3, 64, 32] and result["flops"] == arch.flops  # not 256x128's
