"""The run's console and log.txt: start-up block, one line per epoch, results block, no bar frames; the
thread defaults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dcsnas.cli import main
from dcsnas.engine.trainer import WeightReport

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "cpu" / "tiny_test.yaml"


def test_log_txt_has_startup_epochs_and_results(tiny_data, tmp_path, capsys, monkeypatch):
    original = WeightReport.log

    def with_health(self, epoch, train_stats, kept):  # a scalar another part of the loop adds: printed too
        log = original(self, epoch, train_stats, kept)
        log["health/spread"] = 0.25 * (epoch + 1)
        return log

    monkeypatch.setattr(WeightReport, "log", with_health)
    out = tmp_path / "run"
    # progress bars on (no --no-progress): stderr is no terminal here, so no bar frame may reach it
    assert main(["train", "--config", str(TINY), "--set", f"data.root={tiny_data}", "--set", "optim.epochs=2",
                 "--set", "eval.every=1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    log = (out / "log.txt").read_text()
    assert "\r" not in log and "\r" not in err
    assert all(line in err for line in log.splitlines())  # log.txt holds what the console showed
    lines = log.splitlines()
    # start-up block: the run directory, threads, the data set table counted from the files, the model
    assert f"run directory: {out}" in lines and any(line.startswith("device: cpu · CPU threads: ") for line in lines)
    files = {split: [p.name for p in (tiny_data / folder).iterdir() if p.suffix == ".jpg"]
             for split, folder in (("train", "bounding_box_train"), ("query", "query"))}
    for split, names in files.items():
        ids = {n.split("_")[0] for n in names}
        assert re.search(rf"^\s+{split}\s+{len(ids)}\s+{len(names)}\s+\d+$", log, re.M), split
    assert any(line.startswith("model: mobilenetv2 (dcs@stage2") and "MFLOPs per image at 64×32" in line
               for line in lines)
    # one line per epoch with the loop's scalars (whatever they are), the time and the test metrics
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split(" | ")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    for line, record in zip(epochs, metrics["history"]):
        assert f"| total {record['train']['total']:.4g} |" in line
        assert f"| health/spread {0.25 * record['epoch']:.4g} |" in line and "img/s" in line
        assert f"test mAP {100 * record['test']['mAP']:.1f}%" in line
    # results block after the last epoch
    tail = lines[lines.index(epochs[-1]) + 1:]
    assert tail[0].startswith("results on synthetic (market protocol) after 2 epochs")
    assert f"test mAP {100 * metrics['test']['mAP']:.1f}%" in tail[1]
    assert f"metrics: {out / 'metrics.json'}" in tail


def _threads_in_fresh_process(env_extra: dict[str, str], code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]


def test_cli_makes_openmp_passive_unless_the_user_chose():
    code = ("import os, sys\nfrom dcsnas.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n"
            "    pass\nprint(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    assert _threads_in_fresh_process({}, code) == "PASSIVE False"  # set before torch (and OpenMP) is loaded
    assert _threads_in_fresh_process({"OMP_WAIT_POLICY": "ACTIVE"}, code) == "ACTIVE False"


def test_default_threads_are_the_cores_the_process_may_use(tiny_data, tmp_path):
    """threads: 0 (the default) → one torch thread per core of the process's affinity mask (here limited to
    one core with taskset semantics through sched_setaffinity)."""
    code = ("import os, torch; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from dcsnas.config import load_config; from dcsnas.engine.config import TrainConfig; "
            "from dcsnas.engine.rundir import create_run_dir; from dcsnas.engine.trainer import Trainer; "
            "torch.set_num_threads(4); "
            f"cfg = load_config(TrainConfig, {str(TINY)!r}, ['data.root={tiny_data}']); "
            f"Trainer(cfg, create_run_dir({str(tmp_path / 'run')!r}, 'train', cfg), show_progress=False); "
            "print(torch.get_num_threads())")
    assert _threads_in_fresh_process({}, code) == "1"


def test_an_unknown_flag_is_reported_with_its_commands_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--features", "f.npz", "--bogus"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: dcsnas eval ")
    assert "dcsnas eval: error: unrecognized arguments: --bogus" in err
