"""``dcsnas compare`` on fabricated run directories (config.yaml + hand-written metrics.json, tiny models):
the table's values, the Pareto front, the refusals, and the figures."""

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from PIL import Image

from dcsnas.cli import main
from dcsnas.compare import load_runs, pareto_front
from dcsnas.compare.plots import plot_arch
from dcsnas.compare.table import format_table
from dcsnas.config import save_config
from dcsnas.data.config import DataConfig
from dcsnas.data.transforms import TransformConfig
from dcsnas.engine.config import TrainConfig
from dcsnas.models.builder import AttentionPlacement, ModelConfig, create_model
from dcsnas.nas.arch import parse_arch
from dcsnas.utils.flops import count_flops, count_params

DCS = {"backend": "csalr", "groups": 2, "landmarks": 8, "qk_ratio": 2}
ARCH = {
    "format": "dcsnas-arch", "version": 1, "space": "tiny", "input_size": [64, 32], "flops": 1812000,
    "params": 20000, "search": {}, "skeleton": "mobilenetv2", "stem_channels": 8, "stem_stride": 2,
    "head_channels": 64, "stages": [
        {"name": "s1", "stride": 2, "width": 12, "ops": ["ir_k3_e3", "skip"], "attention": None},
        {"name": "s2", "stride": 2, "width": 16, "ops": ["ir_k5_e3", "ir_k3_e6", "skip"],
         "attention": {"name": "dcs", "options": DCS}},
        {"name": "s3", "stride": 1, "width": 24, "ops": ["ir_k3_e6", "ir_k5_e3"], "attention": None},
    ],
}
NUM_CLASSES = 12


def make_run(root: Path, name: str, model: ModelConfig, mAP: float, dataset: str = "synthetic") -> Path:
    path = root / name
    path.mkdir(parents=True)
    data = DataConfig(dataset=dataset, root="unused", transforms=TransformConfig(height=64, width=32))
    save_config(TrainConfig(data=data, model=model), path / "config.yaml")
    cmc = [min(1.0, mAP + 0.1 + 0.02 * r) for r in range(30)]
    test = {"mAP": mAP, "mINP": mAP / 3, "rank-1": cmc[0], "rank-5": cmc[4], "rank-10": cmc[9], "rank-20": cmc[19],
            "num_valid_queries": 40, "cmc": cmc}
    metrics = {"dataset": dataset, "protocol": "market", "epochs": 3, "num_classes": NUM_CLASSES,
               "train_time_s": 12.5 + mAP, "test": test, "best_val": None, "history": []}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


@pytest.fixture
def runs(tmp_path):
    """FLOPs at 64x32: searched_tiny 1.8M < mbv2_base 5.13M < mbv2_dcs 5.15M."""
    base = ModelConfig(backbone="mobilenetv2", width_mult=0.25)
    searched = make_run(tmp_path, "searched_tiny", ModelConfig(backbone="searched", arch="/moved/arch.json"), 0.34)
    (searched / "arch.json").write_text(json.dumps(ARCH))
    return [
        make_run(tmp_path, "mbv2_base", base, 0.30),
        make_run(tmp_path, "mbv2_dcs", replace(base, attention=[AttentionPlacement("stage3", "dcs", DCS)]), 0.36),
        searched,
    ]


@pytest.mark.parametrize("points, front", [
    ([], []),
    ([(5.0, 0.3)], [0]),
    ([(3.0, 0.9), (1.0, 0.2), (2.0, 0.5)], [1, 2, 0]),                # all on the front, by increasing cost
    ([(1.0, 0.5), (2.0, 0.6), (3.0, 0.55), (2.0, 0.4)], [0, 1]),     # dominated: dearer and worse, same cost worse
    ([(1.0, 0.5), (1.0, 0.5), (0.5, 0.1)], [2, 0, 1]),               # equal points are both on it
    ([(2.0, 0.5), (1.0, 0.5)], [1]),                                 # same accuracy: the cheaper one
    ([(1.0, 0.5), (1.0, 0.6)], [1]),                                 # same cost: the more accurate one
])
def test_pareto_front(points, front):
    assert pareto_front(points) == front


def test_compare_table_csv_json_and_figures(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", *map(str, runs), "--out", str(out), "--device", "cpu", "--no-latency", "--warmup", "1"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((out / "compare.json").read_text())
    rows = {row["run"]: row for row in report["rows"]}
    assert list(rows) == ["mbv2_base", "mbv2_dcs", "searched_tiny"]
    assert [r["kind"] for r in rows.values()] == ["fixed", "fixed", "searched"]
    assert rows["mbv2_dcs"]["attention"] == "stage3:dcs-csalr-g2"
    assert rows["searched_tiny"]["attention"] == "s2:dcs-csalr-g2"
    for path, row in zip(runs, rows.values()):
        metrics = json.loads((path / "metrics.json").read_text())
        for key in ("mAP", "rank-1", "rank-5", "rank-10", "mINP"):
            assert row[key] == metrics["test"][key]
        assert row["train_time_s"] == metrics["train_time_s"] and row["epochs"] == 3
        assert row["dataset"] == "synthetic" and row["input"] == "64x32"
        assert row["cpu_latency_ms"] is None and row["cpu_peak_memory_mb"] >= 0
        assert report["cmc"][row["run"]] == metrics["test"]["cmc"]
    built = {"mbv2_base": ModelConfig(backbone="mobilenetv2", width_mult=0.25),
             "searched_tiny": ModelConfig(backbone="searched", arch=str(runs[2] / "arch.json"))}
    for name, model_cfg in built.items():
        model = create_model(model_cfg, NUM_CLASSES)
        assert rows[name]["flops"] == count_flops(model, (1, 3, 64, 32))
        assert rows[name]["params_total"] == count_params(model)
        assert rows[name]["params"] == count_params(model) - model.head.classifier.weight.numel()
    assert report["pareto_front"] == ["searched_tiny", "mbv2_dcs"]
    assert [r["pareto"] for r in rows.values()] == [False, True, True]

    with open(out / "compare.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["run"] for r in table] == list(rows) and float(table[1]["mAP"]) == 0.36
    assert table[0]["cpu_latency_ms"] == "" and int(table[2]["flops"]) == rows["searched_tiny"]["flops"]

    lines = printed.splitlines()
    assert lines[0].split()[:4] == ["run", "kind", "mAP", "R-1"]
    assert lines[3].split()[:3] == ["mbv2_dcs", "fixed", "36.0"] and lines[3].rstrip().endswith("*")
    assert lines[2].split()[9] == "-"  # CPU ms, not measured
    for name in ("map_vs_flops.png", "cmc.png", "arch_searched_tiny.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 400


def test_runs_of_different_data_sets_are_refused(runs, tmp_path, capsys):
    other = make_run(tmp_path, "r50_market", ModelConfig(backbone="mobilenetv2", width_mult=0.25), 0.5, "market1501")
    assert main(["compare", str(runs[0]), str(other)]) == 2
    err = capsys.readouterr().err
    assert "different data sets or protocols" in err
    assert f"{runs[0]}: data set 'synthetic'" in err and f"{other}: data set 'market1501'" in err


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "metrics.json").unlink(), "has no metrics.json: its training has not finished"),
    (lambda p: (p / "config.yaml").write_text("search: {}\n"), "is a search run"),
    (lambda p: (p / "arch.json").unlink(), "has a searched model but no arch.json: neither .* nor /moved/arch.json"),
    (lambda p: (p / "metrics.json").write_text('{"dataset": "x"}'), "lacks protocol, epochs, .*test.mAP"),
])
def test_unusable_runs_are_refused(runs, capsys, damage, message):
    damage(runs[2])
    assert main(["compare", str(runs[0]), str(runs[2])]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_different_evaluation_settings_warn(runs):
    cfg = yaml.safe_load((runs[1] / "config.yaml").read_text())
    cfg["eval"]["rerank"] = True
    (runs[1] / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.warns(UserWarning, match="mbv2_dcs: metric=euclidean, flip=False, rerank=True"):
        assert [r.name for r in load_runs(runs)] == ["mbv2_base", "mbv2_dcs", "searched_tiny"]


def test_table_marks_missing_values_and_units():
    row = {"run": "a", "kind": "fixed", "mAP": 0.5, "rank-1": 0.6, "rank-5": 0.7, "rank-10": None, "mINP": 0.2,
           "params": 2_250_000, "flops": 8_110_000_000, "cpu_latency_ms": 12.345, "cpu_peak_memory_mb": 7.06,
           "train_time_s": 5400.0, "pareto": True}
    lines = format_table([row], ["cpu"], repeats=20).splitlines()
    assert lines[2].split() == ["a", "fixed", "50.0", "60.0", "70.0", "-", "20.0", "2.25M", "8.11G", "12.35", "7.06",
                                "90.0min", "*"]
    assert "median of 20 forwards at batch 1" in lines[3]


def test_resnet_arch_diagram(tmp_path):
    arch = parse_arch({**{k: ARCH[k] for k in ("format", "version", "search", "params")}, "space": "r50",
                       "input_size": [256, 128], "flops": 8_600_000_000, "skeleton": "resnet50",
                       "stages": [{"name": "layer2", "attention": {"name": "csalr", "options": {"groups": 2}}}]},
                      "test")
    plot_arch(arch, tmp_path / "arch.png", "resnet")
    with Image.open(tmp_path / "arch.png") as image:
        assert image.format == "PNG"
