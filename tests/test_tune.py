"""NNI experiment configs, the trials summary, and dcsnas without NNI (these tests never need NNI)."""

from __future__ import annotations

import csv
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dcsnas.cli import main as cli_main
from dcsnas.config import load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.errors import ConfigError
from dcsnas.nni.config import INSTALL_HINT, NNISearchConfig, TuneConfig, check_trial_keys
from dcsnas.nni.summary import write_summary

NNI_MODULES = ["dcsnas.nni.deps", "dcsnas.nni.space", "dcsnas.nni.lightning", "dcsnas.nni.supernet",
               "dcsnas.nni.strategies", "dcsnas.nni.tune"]  # the modules that import NNI

ROOT = Path(__file__).resolve().parents[1]
TUNE_TINY = ROOT / "experiments/cpu/tune_tiny.yaml"


def test_tune_tiny_config_loads():
    cfg = load_config(TuneConfig, TUNE_TINY)
    assert cfg.tuner.name == "TPE" and cfg.max_trials == 3 and cfg.training_service == {"platform": "local"}
    check_trial_keys(cfg, TrainConfig)


@pytest.mark.parametrize("name", ["remote", "kubeflow", "frameworkcontroller"])
def test_multi_machine_examples_load(name):
    cfg = load_config(TuneConfig, ROOT / f"experiments/tune/{name}.yaml")
    assert cfg.training_service["platform"] == name and cfg.bind == "all" and cfg.nni_manager_ip
    check_trial_keys(cfg, TrainConfig)


@pytest.mark.parametrize("overrides, message", [
    (["search_space.optim.lr._type=gaussian"], "search_space.optim"),
    (["command=retrain"], "retrain needs arch"),
    (["training_service={platform: remote, machine_list: []}"], "bind: all"),
    (["concurrency=0"], "concurrency"),
    (["port=80"], "port"),
    (["tuner.nam=TPE"], "tuner.nam"),
])
def test_tune_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TuneConfig, TUNE_TINY, overrides)


def test_tuned_keys_must_exist_in_the_trial_config():
    cfg = load_config(TuneConfig, TUNE_TINY, ["search_space={optim.lrr: {_type: uniform, _value: [0, 1]}}"])
    with pytest.raises(ConfigError, match=r"search_space\.optim\.lrr.*'lrr'"):
        check_trial_keys(cfg, TrainConfig)


@pytest.mark.parametrize("name", ["nni_random_tiny", "nni_evolution_tiny", "nni_darts_tiny"])
def test_nni_search_configs_load(name):
    cfg = load_config(NNISearchConfig, ROOT / f"experiments/cpu/{name}.yaml")
    assert cfg.search.space == "search_spaces/tiny.yaml" and cfg.search.cost.kind == "none"


def test_nni_section_is_validated():
    with pytest.raises(ConfigError, match="sample_size"):
        load_config(NNISearchConfig, ROOT / "experiments/cpu/nni_evolution_tiny.yaml", ["nni.sample_size=9"])


def test_summary_ranks_trials_and_writes_json_csv_markdown(tmp_path):
    trials = [{"trial": "a", "status": "SUCCEEDED", "params": {"optim.lr": 0.1}, "metric": 0.3, "intermediate": [0.3]},
              {"trial": "b", "status": "FAILED", "params": {"optim.lr": 0.2}, "metric": None, "intermediate": []},
              {"trial": "c", "status": "SUCCEEDED", "params": {"optim.lr": 0.3, "loss.ib_weight": 1.0},
               "metric": 0.7, "intermediate": [0.5, 0.7]}]
    summary = write_summary(tmp_path, trials, "mAP")
    assert [t["trial"] for t in summary["trials"]] == ["c", "a", "b"]
    assert summary["best"]["trial"] == "c" and summary["num_succeeded"] == 2
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    rows = list(csv.reader((tmp_path / "trials.csv").open()))
    assert rows[0] == ["trial", "status", "mAP", "loss.ib_weight", "optim.lr"]
    assert rows[1] == ["c", "SUCCEEDED", "0.7", "1.0", "0.3"] and rows[3][:3] == ["b", "FAILED", ""]
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("# 3 trials, best mAP: 0.7000 (trial c)") and "| a | SUCCEEDED | 0.3000 |" in markdown


def test_summary_without_any_result_has_no_best(tmp_path):
    summary = write_summary(tmp_path, [{"trial": "a", "status": "FAILED", "metric": None}], "mAP")
    assert summary["best"] is None and "best mAP: none" in (tmp_path / "summary.md").read_text()


@pytest.fixture
def without_nni(monkeypatch):
    """Imports of ``nni`` fail, as where it is not installed; the NNI modules are imported afresh."""
    for name in [m for m in sys.modules if m == "nni" or m.startswith("nni.") or m in NNI_MODULES]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nni", None)


@pytest.mark.parametrize("module", NNI_MODULES)
def test_without_nni_the_nni_modules_say_how_to_install_it(without_nni, module):
    with pytest.raises(ConfigError, match="pip install") as info:
        importlib.import_module(module)
    assert INSTALL_HINT in str(info.value)


def test_without_nni_tune_exits_2_with_the_install_command(without_nni, tmp_path, capsys):
    assert cli_main(["tune", "--config", str(TUNE_TINY), "--out", str(tmp_path / "run")]) == 2
    assert INSTALL_HINT in capsys.readouterr().err


def test_without_nni_search_with_an_nni_strategy_exits_2(without_nni, tmp_path, capsys):
    config = str(ROOT / "experiments/cpu/nni_darts_tiny.yaml")
    assert cli_main(["search", "--strategy", "nni:darts", "--config", config, "--out", str(tmp_path / "run")]) == 2
    assert INSTALL_HINT in capsys.readouterr().err


def test_without_nni_the_cli_and_its_help_work(without_nni, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["--help"])
    assert info.value.code == 0 and "tune" in capsys.readouterr().out


def test_no_dcsnas_module_but_the_nni_modules_imports_nni():
    """Everything else, ``dcsnas.nni`` itself and its config and summary modules included, imports without it."""
    code = ("import importlib, pkgutil, sys, dcsnas\n"
            "for m in pkgutil.walk_packages(dcsnas.__path__, 'dcsnas.'):\n"
            f"    if m.name not in {NNI_MODULES!r}:\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(m for m in sys.modules if m == 'nni' or m.startswith('nni.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]"
