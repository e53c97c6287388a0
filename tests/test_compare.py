"""``dcsnas compare`` on fabricated run directories (config.yaml + hand-written metrics.json, tiny models):
the table's values, the Pareto front, the refusals, and the figures."""

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import tiny_arch
from PIL import Image

from dcsnas.cli import main
from dcsnas.compare import load_runs, pareto_front, summarize_over_seeds
from dcsnas.compare.plots import plot_arch
from dcsnas.compare.runs import health_label
from dcsnas.compare.seeds import paired_tests
from dcsnas.compare.table import format_table
from dcsnas.config import save_config
from dcsnas.data.config import DataConfig
from dcsnas.data.transforms import TransformConfig
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.optim import OptimConfig
from dcsnas.errors import ConfigError
from dcsnas.losses.criterion import LossConfig
from dcsnas.models.arch import parse_arch
from dcsnas.models.builder import AttentionPlacement, ModelConfig, create_model
from dcsnas.utils.flops import count_flops, count_params

DCS = {"backend": "csalr", "groups": 2, "landmarks": 8, "qk_ratio": 2}
ARCH = tiny_arch()
NUM_CLASSES = 12


def make_run(root: Path, name: str, model: ModelConfig, mAP: float, dataset: str = "synthetic",
             loss: LossConfig = LossConfig()) -> Path:
    path = root / name
    path.mkdir(parents=True)
    data = DataConfig(dataset=dataset, root="unused", transforms=TransformConfig(height=64, width=32))
    save_config(TrainConfig(data=data, model=model, loss=loss, optim=OptimConfig(epochs=3)), path / "config.yaml")
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
        make_run(tmp_path, "mbv2_dcs", replace(base, attention=[AttentionPlacement("stage3", "dcs", DCS)]), 0.36,
                 loss=LossConfig(ib_weight=0.1, ib_ixf="batch_mi")),
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
    # which runs trained with the IB term: eta, the first term's form, and its first epoch (30 % of 3 epochs: 0)
    assert [(r["ib"], r["ib_start_epoch"]) for r in rows.values()] == [("off", None), ("0.1:batch_mi", 1),
                                                                      ("off", None)]
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
    assert lines[0].split()[:8] == ["run", "kind", "input", "epochs", "IB", "health", "mAP", "R-1"]
    assert lines[3].split()[:7] == ["mbv2_dcs", "fixed", "64x32", "3", "0.1:batch_mi", "-", "36.0"]
    assert lines[3].rstrip().endswith("*")
    assert lines[2].split()[:5] == ["mbv2_base", "fixed", "64x32", "3", "off"]
    assert lines[2].split()[13] == "-"  # CPU ms, not measured
    for name in ("map_vs_flops.png", "cmc.png", "arch_searched_tiny.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 400


def test_runs_at_two_input_sizes_warn_and_show_the_sizes(runs, tmp_path, capsys):
    """A 128x64 run beside 64x32 ones (as a pipeline that retrains at another size): a warning naming each
    run's size and epochs, the sizes in the table and in the figure's legend (a marker fill per setting)."""
    big = make_run(tmp_path, "mbv2_128x64", ModelConfig(backbone="mobilenetv2", width_mult=0.25), 0.4)
    cfg = yaml.safe_load((big / "config.yaml").read_text())
    cfg["data"]["transforms"].update(height=128, width=64)
    (big / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "cmp"
    with pytest.warns(UserWarning, match="differ in input size or training epochs") as caught:
        assert main(["compare", str(runs[0]), str(big), "--out", str(out), "--device", "cpu", "--no-latency"]) == 0
    printed = capsys.readouterr().out
    message = next(str(w.message) for w in caught if "input size" in str(w.message))
    assert "mbv2_base: 64x32, 3 epochs" in message and "mbv2_128x64: 128x64, 3 epochs" in message
    table = {line.split()[0]: line.split() for line in printed.splitlines() if line.startswith("mbv2_")}
    assert table["mbv2_base"][2] == "64x32" and table["mbv2_128x64"][2] == "128x64"
    report = json.loads((out / "compare.json").read_text())
    assert [r["setting"] for r in report["rows"]] == ["64x32, 3 epochs", "128x64, 3 epochs"]
    # the FLOPs were counted at each run's own size: about 4x for twice the height and width
    flops = {r["run"]: r["flops"] for r in report["rows"]}
    assert 3.5 < flops["mbv2_128x64"] / flops["mbv2_base"] < 4.5


@pytest.mark.parametrize("load, noisy", [(0.0, False), (1e3, True)])
def test_latency_on_a_busy_machine_is_marked_noisy(runs, tmp_path, capsys, monkeypatch, load, noisy):
    """Other processes' runnable tasks are read from /proc/loadavg's 4th field (here a fake file)."""
    import dcsnas.compare

    fake = tmp_path / "loadavg"
    fake.write_text(f"0.5 0.5 0.5 {int(load) + 1}/200 123\n")
    original = dcsnas.compare.other_runnable
    monkeypatch.setattr(dcsnas.compare, "LOADAVG", fake)
    assert original(samples=2, interval_s=0) == load
    assert main(["compare", str(runs[0]), "--device", "cpu", "--repeats", "1", "--warmup", "0"]) == 0
    printed = capsys.readouterr().out
    assert ("NOISY: CPU latency and memory were measured on a busy machine (1000.0 other runnable" in printed) == noisy


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


@pytest.mark.parametrize("record, label", [(None, None), ({}, "ok"), ({"collapse": 3}, "collapse@3"),
                                           ({"collapse": 3, "ce_uniform": 7}, "collapse@3,CE@7"),
                                           ({"ce_uniform": "7"}, "ok"), ([3], None)])
def test_health_labels(record, label):
    assert health_label({} if record is None else {"health": record}) == label


def test_a_collapsed_run_is_marked_and_warned(runs, tmp_path, capsys):
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    (runs[0] / "metrics.json").write_text(json.dumps({**metrics, "health": {"collapse": 2}}))
    (runs[1] / "metrics.json").write_text(json.dumps({**json.loads((runs[1] / "metrics.json").read_text()),
                                                      "health": {}}))
    with pytest.warns(UserWarning, match="mbv2_base': its embedding collapsed by epoch 2"):
        assert main(["compare", *map(str, runs), "--device", "cpu", "--no-latency"]) == 0
    table = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert table["mbv2_base"][5] == "collapse@2" and table["mbv2_dcs"][5] == "ok" and table["searched_tiny"][5] == "-"


def test_table_marks_missing_values_and_units():
    row = {"run": "a", "kind": "fixed", "input": "256x128", "epochs": 120, "ib": "0.1:authors", "mAP": 0.5,
           "rank-1": 0.6, "rank-5": 0.7, "rank-10": None, "mINP": 0.2, "params": 2_250_000, "flops": 8_110_000_000,
           "cpu_latency_ms": 12.345, "cpu_peak_memory_mb": 7.06, "train_time_s": 5400.0, "pareto": True}
    lines = format_table([row], ["cpu"], repeats=20).splitlines()
    assert lines[2].split() == ["a", "fixed", "256x128", "120", "0.1:authors", "-", "50.0", "60.0", "70.0", "-", "20.0",
                                "2.25M", "8.11G", "12.35", "7.06", "90.0min", "*"]
    assert "median of 20 forwards at batch 1" in lines[3] and "NOISY" not in "\n".join(lines)


def test_resnet_arch_diagram(tmp_path):
    arch = parse_arch({**{k: ARCH[k] for k in ("format", "version", "search", "params")}, "space": "r50",
                       "input_size": [256, 128], "flops": 8_600_000_000, "skeleton": "resnet50",
                       "stages": [{"name": "layer2", "attention": {"name": "csalr", "options": {"groups": 2}}}]},
                      "test")
    plot_arch(arch, tmp_path / "arch.png", "resnet")
    with Image.open(tmp_path / "arch.png") as image:
        assert image.format == "PNG"


# ------------------------------------------------------------------------------------------------- seeds
def seeded_run(root: Path, name: str, model: ModelConfig, mAP: float, seed: int, dataset: str = "synthetic") -> Path:
    path = make_run(root, name, model, mAP, dataset)
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg["seed"] = seed
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def seed_runs(tmp_path):
    """base: seeds 0-2, mAP .30 .32 .37; dcs: seeds 0-3, mAP .34 .35 .42 .50; one searched run (seed 0)."""
    base = ModelConfig(backbone="mobilenetv2", width_mult=0.25)
    dcs = replace(base, attention=[AttentionPlacement("stage3", "dcs", DCS)])
    searched = seeded_run(tmp_path, "searched", ModelConfig(backbone="searched", arch="/moved/arch.json"), 0.2, 0)
    (searched / "arch.json").write_text(json.dumps(ARCH))
    runs = [seeded_run(tmp_path, f"base_s{s}", base, m, s) for s, m in enumerate((0.30, 0.32, 0.37))]
    runs += [seeded_run(tmp_path, f"dcs_s{s}", dcs, m, s) for s, m in enumerate((0.34, 0.35, 0.42, 0.50))]
    return runs + [searched]


def test_compare_groups_seeds_with_mean_std_and_paired_interval(seed_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", *map(str, seed_runs), "--out", str(out), "--device", "cpu", "--no-latency",
                 "--warmup", "0", "--paired", "base_s0"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((out / "compare.json").read_text())
    groups = {g["group"]: g for g in report["groups"]}
    assert list(groups) == ["base", "dcs", "searched"]
    base, dcs, single = groups["base"], groups["dcs"], groups["searched"]
    assert (base["n"], base["seeds"], dcs["n"], dcs["seeds"], single["n"]) == (3, [0, 1, 2], 4, [0, 1, 2, 3], 1)
    assert base["runs"] == ["base_s0", "base_s1", "base_s2"]
    # base: mean (.30 + .32 + .37) / 3 = .33; squared deviations .0009 + .0001 + .0016 = .0026, / (n - 1) = .0013
    assert base["mAP"] == pytest.approx(0.33) and base["mAP_std"] == pytest.approx(0.0013 ** 0.5)
    assert base["mINP"] == pytest.approx(0.11) and base["mINP_std"] == pytest.approx(0.0013 ** 0.5 / 3)
    # dcs: mean 1.61 / 4 = .4025; deviations -.0625 -.0525 .0175 .0975: squares sum to .016475, / 3
    assert dcs["mAP"] == pytest.approx(0.4025) and dcs["mAP_std"] == pytest.approx((0.016475 / 3) ** 0.5)
    assert dcs["mAP_n"] == 4 and single["mAP"] == 0.2 and single["mAP_std"] is None
    assert base["flops"] < dcs["flops"] and report["groups_pareto_front"] == ["searched", "base", "dcs"]

    paired = report["paired"]
    assert paired["reference"] == "base" and [p["group"] for p in paired["groups"]] == ["dcs", "searched"]
    vs_dcs, vs_single = paired["groups"]
    assert vs_dcs["seeds"] == [0, 1, 2] and vs_dcs["n"] == 3  # seed 3 has no reference run
    stats = vs_dcs["mAP"]
    assert stats["differences"] == pytest.approx([0.04, 0.03, 0.05])
    # mean .04, sd .01 (deviations 0, -.01, .01); t(0.975, 2 dof) = 4.3027 (t table): half width 4.3027 * .01 / sqrt 3
    half = 4.302653 * 0.01 / 3 ** 0.5
    assert stats["mean"] == pytest.approx(0.04) and stats["std"] == pytest.approx(0.01)
    assert stats["ci"] == pytest.approx([0.04 - half, 0.04 + half], abs=1e-6)
    # t = .04 / (.01 / sqrt 3) = 6.9282; with 2 dof P(|T| > t) = 1 - t / sqrt(t² + 2) (closed form)
    assert stats["t"] == pytest.approx(0.04 / (0.01 / 3 ** 0.5))
    assert stats["p_t"] == pytest.approx(1 - 48 ** 0.5 / 50 ** 0.5)
    assert stats["p_wilcoxon"] == pytest.approx(0.25)  # 3 positive differences: 2 · (1 / 2³)
    assert vs_single["n"] == 1 and vs_single["mAP"]["differences"] == pytest.approx([-0.10])
    assert vs_single["mAP"]["ci"] is None

    lines = [line.split() for line in printed.splitlines()]
    assert ["base", "3", "0,1,2", "33.0", "±", "3.6"] in [line[:6] for line in lines]
    assert ["dcs", "4", "0,1,2,3", "40.2", "±", "7.4"] in [line[:6] for line in lines]
    assert "paired against base" in printed and "CI [+1.52, +6.48]  p 0.020 (Wilcoxon 0.250)" in printed
    with Image.open(out / "map_vs_flops.png") as image:
        assert image.format == "PNG"


def test_summarize_over_seeds_on_plain_records():
    records = [{"run": "a1", "key": "a", "seed": 1, "acc": 0.5}, {"run": "b", "key": "b", "seed": 1, "acc": 0.9},
               {"run": "a2", "key": "a", "seed": 2, "acc": 0.7}, {"run": "a3", "key": "a", "seed": 3, "acc": None}]
    a, b = summarize_over_seeds(records, "key", ["acc"])
    assert (a["group"], a["n"], a["acc_n"], a["acc"]) == ("a", 3, 2, pytest.approx(0.6))
    assert a["acc_std"] == pytest.approx(0.02 ** 0.5)  # (.01 + .01) / (2 - 1)
    assert (b["group"], b["acc"], b["acc_std"]) == ("b", 0.9, None)
    with pytest.raises(ConfigError, match="repeat a seed"):
        summarize_over_seeds(records + [{"run": "a4", "key": "a", "seed": 1, "acc": 0.1}], "key", ["acc"])


def test_seed_groups_of_different_data_sets_are_refused(tmp_path, capsys):
    base = ModelConfig(backbone="mobilenetv2", width_mult=0.25)
    runs = [seeded_run(tmp_path, "a_s0", base, 0.3, 0), seeded_run(tmp_path, "a_s1", base, 0.3, 1, "market1501")]
    assert main(["compare", *map(str, runs), "--no-latency"]) == 2
    assert "different data sets or protocols" in capsys.readouterr().err


def test_paired_reference_must_be_a_compared_run(seed_runs, capsys):
    assert main(["compare", *map(str, seed_runs[1:3]), "--no-latency", "--paired", "nowhere"]) == 2
    assert "--paired 'nowhere' is none of the compared runs: base_s1, base_s2" in capsys.readouterr().err


def test_paired_tests_of_hand_examples():
    # d = 8.3, 2.8, 4.9, 3.1, -3.0: mean 3.22; squared deviations 25.8064 + .1764 + 2.8224 + .0144 + 38.6884
    # = 67.508, / 4 = 16.877; t = 3.22 / sqrt(16.877 / 5) = 1.7527. Wilcoxon: |d| ranks 5, 1, 4, 3, 2, the
    # negative rank sum W- = 2; of the 2⁵ sign patterns 3 have W- <= 2 ({}, {1}, {2}): p = 2 · 3 / 32
    tests = paired_tests([8.3, 2.8, 4.9, 3.1, -3.0])
    assert tests["n"] == 5 and tests["mean"] == pytest.approx(3.22)
    assert tests["std"] == pytest.approx(16.877 ** 0.5)
    assert tests["t"] == pytest.approx(3.22 / (16.877 / 5) ** 0.5)
    t = tests["t"]  # with 4 dof P(|T| > t) = 1 - t (t² + 6) / (t² + 4)^(3/2) (closed form): 0.1545
    assert tests["p_t"] == pytest.approx(1 - t * (t ** 2 + 6) / (t ** 2 + 4) ** 1.5)
    assert tests["p_wilcoxon"] == pytest.approx(6 / 32)
    # one difference: nothing to test; all zero: no spread, no signed ranks
    assert paired_tests([1.0])["p_t"] is None and paired_tests([1.0])["p_wilcoxon"] is None
    zero = paired_tests([0.0, 0.0, 0.0])
    assert zero["t"] is None and zero["p_t"] is None and zero["p_wilcoxon"] is None
    with pytest.raises(ValueError):
        paired_tests([])
