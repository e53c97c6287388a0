"""``dcsnas demo``: the quick demo end to end, skipping finished steps, continuing a stopped one, refusing a
run directory of another config, and the full demo's configs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from dcsnas.cli import main
from dcsnas.config import to_dict
from dcsnas.errors import ConfigError

RUNS = ("dcs-fb", "mobilenetv2", "dcs-dnas")
STEPS = ("dcs-fb", "mobilenetv2", "dcs-dnas-search", "dcs-dnas")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, Path, str]:
    """One ``dcsnas demo --quick``: (its --out, its --data, what it printed)."""
    root = tmp_path_factory.mktemp("demo")
    out, data = root / "demo", root / "synthetic-tiny"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--quick", "--out", str(out), "--data", str(data), "--no-progress"]) == 0
    return out, data, printed.getvalue()


def quick_demo_again(out: Path, data: Path, capsys) -> str:
    assert main(["demo", "--quick", "--out", str(out), "--data", str(data), "--no-progress"]) == 0
    return capsys.readouterr().out


def test_quick_demo_trains_searches_retrains_and_compares(quick_demo):
    out, data, printed = quick_demo
    assert json.loads((data / "synth_meta.json").read_text())["preset"]["name"] == "tiny"
    report = json.loads((out / "compare" / "compare.json").read_text())
    assert [row["run"] for row in report["rows"]] == list(RUNS)
    assert [row["kind"] for row in report["rows"]] == ["fixed", "fixed", "searched"]
    for name in ("compare.csv", "map_vs_flops.png", "cmc.png", "arch_dcs-dnas.png"):
        assert (out / "compare" / name).stat().st_size > 0
        assert str(out / "compare" / name) in printed
    table = printed[printed.index("\nrun ") + 1:]
    assert [line.split()[0] for line in table.splitlines()[2:5]] == list(RUNS)
    for name in RUNS:
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["untrained_test"] is not None and 0 < metrics["test"]["mAP"] <= 1
    retrained = yaml.safe_load((out / "dcs-dnas" / "config.yaml").read_text())["model"]
    assert retrained["backbone"] == "searched"
    assert json.loads((out / "dcs-dnas" / "arch.json").read_text()) == json.loads(
        (out / "dcs-dnas-search" / "arch.json").read_text())
    assert "demo finished in" in printed


def test_second_call_skips_every_finished_step(quick_demo, capsys):
    out, data, first = quick_demo
    before = {p: p.stat().st_mtime_ns for p in [*out.glob("*/metrics.json"), out / "compare" / "compare.json"]}
    printed = quick_demo_again(out, data, capsys)
    assert "already there (its synth_meta.json matches): skipped" in printed
    for name in STEPS:
        assert f"{out / name} has its metrics.json: skipped" in printed
    assert "compare.json is newer than the runs: skipped" in printed
    assert {p: p.stat().st_mtime_ns for p in before} == before
    table = first[first.index("\nrun "):first.index("\ncsv: ")]
    assert table in printed


def test_a_stopped_step_continues_from_its_checkpoint(quick_demo, tmp_path):
    from dcsnas.demo import Demo, config_file, demo_plan

    out, data, _ = quick_demo
    copy = tmp_path / "demo"
    shutil.copytree(out / "dcs-fb", copy / "dcs-fb")
    (copy / "dcs-fb" / "metrics.json").unlink()  # killed after its last checkpoint
    lines: list[str] = []
    demo = Demo(demo_plan(quick=True), copy, data, show_progress=False, log=lines.append)
    demo.run_step(demo.plan.steps[0], config_file("quick_dcsfb.yaml"))
    assert f"  continuing the stopped run in {copy / 'dcs-fb'} from its last checkpoint" in lines
    resumed = json.loads((copy / "dcs-fb" / "metrics.json").read_text())
    assert resumed["test"] == json.loads((out / "dcs-fb" / "metrics.json").read_text())["test"]


def test_a_finished_run_of_another_config_is_refused(quick_demo, tmp_path):
    from dcsnas.demo import Demo, config_file, demo_plan

    out, data, _ = quick_demo
    copy = tmp_path / "demo"
    shutil.copytree(out / "dcs-fb", copy / "dcs-fb")
    saved = yaml.safe_load((copy / "dcs-fb" / "config.yaml").read_text())
    saved["optim"]["lr"] *= 10
    (copy / "dcs-fb" / "config.yaml").write_text(yaml.safe_dump(saved))
    demo = Demo(demo_plan(quick=True), copy, data, show_progress=False, log=lambda line: None)
    with pytest.raises(ConfigError, match=r"holds a run of another config \(it differs in optim\.lr\)"):
        demo.run_step(demo.plan.steps[0], config_file("quick_dcsfb.yaml"))


def test_synthetic_data_of_another_preset_or_seed_is_not_reused(quick_demo, tmp_path):
    from dcsnas.demo import has_synthetic

    _, data, _ = quick_demo
    assert has_synthetic(data, "tiny", 0)
    assert not has_synthetic(data, "small", 0) and not has_synthetic(data, "tiny", 1)
    meta = json.loads((data / "synth_meta.json").read_text())
    (tmp_path / "synth_meta.json").write_text(json.dumps({**meta, "complete": False}))
    assert not has_synthetic(tmp_path, "tiny", 0)
    assert not has_synthetic(tmp_path / "missing", "tiny", 0)


def test_missing_repository_configs_are_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("dcsnas.demo.DEMO_CONFIGS", tmp_path / "experiments" / "demo")
    assert main(["demo", "--quick", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert f"'{tmp_path / 'experiments' / 'demo' / 'quick_dcsfb.yaml'}' is missing" in err
    assert "pip install -e ." in err and not (tmp_path / "data").exists()


def test_full_demo_compares_its_networks_on_one_recipe(tmp_path):
    """The full demo's networks see the same data and input size, and the retrained network has the DCS-FB
    recipe; the search's FLOPs target lies inside its space."""
    from dcsnas.demo import Demo, config_file, demo_plan
    from dcsnas.nas.cost import CostLoss, measure_costs
    from dcsnas.nas.space import load_space

    demo = Demo(demo_plan(quick=False), tmp_path / "demo", tmp_path / "data", log=lambda line: None)
    cfgs = {s.name: to_dict(demo.load_step_config(s, config_file(s.config))) for s in demo.plan.steps}
    assert demo.plan.preset == "small"
    assert len({json.dumps([c["data"][k] for k in ("dataset", "root", "transforms")]) for c in cfgs.values()}) == 1
    dcsfb, baseline, retrain = cfgs["dcs-fb"], cfgs["mobilenetv2"], cfgs["dcs-dnas"]
    assert dcsfb["model"]["attention"] and not baseline["model"]["attention"] and not retrain["model"]["attention"]
    for other in (baseline, retrain):
        assert {k: v for k, v in other.items() if k != "model"} == {k: v for k, v in dcsfb.items() if k != "model"}
    assert retrain["model"]["arch"] == str((tmp_path / "demo" / "dcs-dnas-search" / "arch.json").resolve())
    search = demo.load_step_config(demo.plan.steps[2], config_file("search.yaml"))
    size = (search.data.transforms.height, search.data.transforms.width)
    CostLoss(search.search.cost, measure_costs(load_space(search.search.space), size))  # target within range
