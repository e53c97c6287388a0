"""Run safety on the tiny synthetic preset: no code run from a file, no run lost, exact resume, and every
bad input a clean one-line error (exit 2). One test per defect of the run-safety issue; the bad inputs are
listed in ``BAD_INPUTS`` (their count is the number of its cases)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dcsnas.cli import main
from dcsnas.config import load_config
from dcsnas.engine.checkpoint import save_checkpoint
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.rundir import create_run_dir, open_run_dir
from dcsnas.engine.trainer import Trainer
from dcsnas.utils.io import atomic_open

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "cpu" / "tiny_test.yaml"
SEARCH = ROOT / "experiments" / "cpu" / "search_tiny.yaml"
TINY_SPACE = ROOT / "search_spaces" / "tiny.yaml"


def tiny_config(root: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, TINY, [f"data.root={root}", "eval.every=0", *overrides])


def train_args(data: Path, out: Path, *sets: str) -> list[str]:
    args = ["train", "--config", str(TINY), "--set", f"data.root={data}", "--set", "optim.epochs=1",
            "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    """A 1-epoch training run with a validation split (so it has best.pt)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(train_args(tiny_data, out, "eval.val_identities=2", "eval.every=1")) == 0
    assert (out / "checkpoints" / "best.pt").is_file()
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / ".lock").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def search_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("search") / "run"
    assert main(["search", "--config", str(SEARCH), "--set", f"data.root={tiny_data}", "--set",
                 f"search.space={TINY_SPACE}", "--set", "optim.epochs=1", "--set", "search.warmup_epochs=0", "--out",
                 str(out), "--no-progress"]) == 0
    return out


def write_crafted_pickle(path: Path, marker: Path) -> None:
    """A checkpoint whose unpickling would run ``touch marker``."""
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {}, "epoch": 0, "payload": Payload()}, path)


def clean_error(capsys, code: int, message: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------ code execution
@pytest.mark.parametrize("name, command", [
    ("last.pt", ["train", "--resume"]), ("last.pt", ["eval"]), ("best.pt", ["eval", "--checkpoint", "best"])])
def test_crafted_checkpoint_is_refused_and_never_run(run_copy, tiny_data, tmp_path, capsys, name, command):
    marker = tmp_path / "marker"
    write_crafted_pickle(run_copy / "checkpoints" / name, marker)
    if command[0] == "train":
        code = main(train_args(tiny_data, run_copy, "eval.val_identities=2", "eval.every=1") + ["--resume"])
    else:
        code = main(["eval", "--run", str(run_copy), *command[1:], "--device", "cpu"])
    clean_error(capsys, code, "holds objects other than tensors")
    assert not marker.exists()


def test_crafted_checkpoint_of_a_search_is_refused_by_derive(search_run, tmp_path, capsys):
    run = tmp_path / "search"
    shutil.copytree(search_run, run)
    marker = tmp_path / "marker"
    write_crafted_pickle(run / "checkpoints" / "last.pt", marker)
    clean_error(capsys, main(["derive", str(run)]), "holds objects other than tensors")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ data lost
def test_a_finished_run_is_not_overwritten(run_copy, tiny_data, capsys):
    before = (run_copy / "metrics.json").read_bytes(), (run_copy / "checkpoints" / "last.pt").read_bytes()
    clean_error(capsys, main(train_args(tiny_data, run_copy)), "already holds a run")
    assert ((run_copy / "metrics.json").read_bytes(), (run_copy / "checkpoints" / "last.pt").read_bytes()) == before


def test_force_starts_over_and_moves_the_old_run_aside(run_copy, tiny_data, capsys):
    old_metrics = (run_copy / "metrics.json").read_text()
    with pytest.warns(UserWarning, match="--force: moved") as caught:
        assert main(train_args(tiny_data, run_copy, "optim.epochs=2") + ["--force"]) == 0
    lines = [str(w.message) for w in caught if "--force" in str(w.message)]
    aside = sorted(run_copy.parent.glob("run.replaced-*"))
    assert len(lines) == 1 and len(aside) == 1 and str(aside[0]) in lines[0] and "\n" not in lines[0]
    assert json.loads((run_copy / "metrics.json").read_text())["epochs"] == 2
    assert (aside[0] / "metrics.json").is_file() and (aside[0] / "checkpoints" / "last.pt").is_file()
    assert old_metrics != (run_copy / "metrics.json").read_text()


def test_resume_and_force_together_are_refused(run_copy, tiny_data, capsys):
    clean_error(capsys, main(train_args(tiny_data, run_copy) + ["--resume", "--force"]), "exclude each other")


def _hold_lock(path: Path) -> subprocess.Popen:
    code = ("import sys, time; from pathlib import Path; from dcsnas.engine.rundir import RunDir, lock_run_dir; "
            f"lock_run_dir(RunDir(Path({str(path)!r}))); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_on_the_same_out_is_refused_naming_the_holder(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        err = clean_error(capsys, main(train_args(tiny_data, out)), f"in use by process {holder.pid}")
        assert not (out / "config.yaml").exists()
        clean_error(capsys, main(train_args(tiny_data, out) + ["--force"]), f"in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert "Traceback" not in err


def test_a_stale_lock_is_taken_over_with_a_warning(tiny_data, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    import socket

    (out / ".lock").write_text(f"{socket.gethostname()} {dead.pid}\n")
    with pytest.warns(UserWarning, match=f"stale lock of process {dead.pid}"):
        create_run_dir(out, "train", tiny_config(tiny_data))
    assert (out / ".lock").read_text().split()[1] == str(os.getpid())


def _interrupt_second_write(monkeypatch, epoch: int) -> list:
    """Raise KeyboardInterrupt at the second checkpoint write of epoch ``epoch`` (0-based); returns the
    list of the paths written in that epoch."""
    import dcsnas.engine.loop as loop

    original, writes = loop.save_checkpoint, []

    def save(path, **state):
        if state["epoch"] == epoch:
            writes.append(path)
            if len(writes) == 2:
                raise KeyboardInterrupt
        original(path, **state)

    monkeypatch.setattr(loop, "save_checkpoint", save)
    return writes


def test_kill_between_the_two_checkpoint_writes_then_resume_gives_a_valid_best(tiny_data, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_data, "optim.epochs=2", "eval.val_identities=2", "eval.every=1")
    run = create_run_dir(tmp_path / "run", "train", cfg)
    scores = iter(range(100))  # every evaluation better than the last: each epoch writes best.pt and last.pt
    monkeypatch.setattr(Trainer, "evaluate", lambda self, split="test", show_progress=None: {"mAP": next(scores)})
    writes = _interrupt_second_write(monkeypatch, epoch=1)  # the last epoch
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, run, show_progress=False).fit()
    assert len(writes) == 2
    monkeypatch.setattr("dcsnas.engine.loop.save_checkpoint", save_checkpoint)
    resumed = Trainer(cfg, open_run_dir(run.path), show_progress=False)
    resumed.resume()
    resumed.fit()
    best_val = json.loads(run.metrics.read_text())["best_val"]
    best = torch.load(run.checkpoints / "best.pt", weights_only=True)
    assert best["epoch"] + 1 == best_val["epoch"] and best["best"] == best_val


def test_resume_rebuilds_a_missing_best_pt_and_says_so(run_copy, tiny_data, capsys):
    (run_copy / "checkpoints" / "best.pt").unlink()
    cfg = tiny_config(tiny_data, "optim.epochs=1", "eval.val_identities=2", "eval.every=1")
    trainer = Trainer(cfg, open_run_dir(run_copy), show_progress=False)
    trainer.resume()
    assert "rebuilt it from last.pt" in capsys.readouterr().err
    best = torch.load(run_copy / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run_copy / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == last["epoch"]
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


def test_stale_temp_files_are_removed_at_start(run_copy, tiny_data):
    stale = run_copy / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match="temporary file"):
        Trainer(tiny_config(tiny_data, "optim.epochs=1", "eval.val_identities=2", "eval.every=1"),
                open_run_dir(run_copy), show_progress=False)
    assert not stale.exists()


def test_atomic_write_leaves_no_temp_file_when_interrupted(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "last.pt") as fh:
            fh.write(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ exact resume
# (resume with data-loader workers: tests/test_train.py::test_resume_after_interruption_gives_the_same_weights)


def test_evaluating_more_often_does_not_change_the_training(tiny_data, tmp_path):
    weights = []
    for every in (0, 1):
        cfg = tiny_config(tiny_data, "optim.epochs=2", f"eval.every={every}")
        trainer = Trainer(cfg, create_run_dir(tmp_path / f"e{every}", "train", cfg), show_progress=False)
        trainer.fit()
        weights.append(trainer.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_says_which_epoch_it_continues_from(run_copy, tiny_data, capsys):
    assert main(train_args(tiny_data, run_copy, "eval.val_identities=2", "eval.every=1", "optim.epochs=2")
                + ["--resume"]) == 0
    assert "from the checkpoint of epoch 1 (continuing with epoch 2 of 2)" in capsys.readouterr().err


def test_resume_with_fewer_epochs_is_refused(run_copy, tiny_data, capsys):
    assert main(train_args(tiny_data, run_copy, "eval.val_identities=2", "eval.every=1", "optim.epochs=2")
                + ["--resume"]) == 0
    capsys.readouterr()
    before = (run_copy / "metrics.json").read_bytes()
    code = main(train_args(tiny_data, run_copy, "eval.val_identities=2", "eval.every=1", "optim.epochs=1")
                + ["--resume"])
    clean_error(capsys, code, "has already trained 2 epochs, more than optim.epochs = 1")
    assert (run_copy / "metrics.json").read_bytes() == before


def test_threads_key_sets_the_cpu_threads(tiny_data, tmp_path):
    threads = torch.get_num_threads()
    cfg = tiny_config(tiny_data, "threads=2")
    try:
        trainer = Trainer(cfg, create_run_dir(tmp_path / "run", "train", cfg), show_progress=False)
        assert torch.get_num_threads() == 2 and trainer.loop.state(0)["threads"] == 2
    finally:
        torch.set_num_threads(threads)


_ALONE = """
import sys, torch
from pathlib import Path
from dcsnas.config import load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.rundir import create_run_dir
from dcsnas.engine.trainer import Trainer
cfg = load_config(TrainConfig, sys.argv[1], sys.argv[3:])
trainer = Trainer(cfg, create_run_dir(Path(sys.argv[2]), "train", cfg), show_progress=False)
trainer.fit()
torch.save(trainer.model.state_dict(), Path(sys.argv[2]) / "weights.pt")
"""


@pytest.mark.slow
def test_a_run_after_other_runs_in_one_process_equals_the_run_alone(tiny_data, tmp_path):
    """What ``dcsnas demo`` does (several trainings in one process, workers) against a fresh process."""
    overrides = [f"data.root={tiny_data}", "eval.every=0", "optim.epochs=2", "data.num_workers=2", "threads=1"]
    first = load_config(TrainConfig, TINY, [*overrides, "model.attention=[]", "seed=3"])
    Trainer(first, create_run_dir(tmp_path / "first", "train", first), show_progress=False).fit()
    cfg = load_config(TrainConfig, TINY, overrides)
    inside = Trainer(cfg, create_run_dir(tmp_path / "inside", "train", cfg), show_progress=False)
    inside.fit()
    subprocess.run([sys.executable, "-c", _ALONE, str(TINY), str(tmp_path / "alone"), *overrides], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "2"})
    alone = torch.load(tmp_path / "alone" / "weights.pt", weights_only=True)
    own = inside.model.state_dict()
    assert all(torch.equal(own[k], alone[k]) for k in own)


# ------------------------------------------------------------------------------------------ signals
@pytest.mark.slow
@pytest.mark.parametrize("signum, code, line", [(signal.SIGINT, 130, "dcsnas: interrupted"),
                                                (signal.SIGTERM, 143, "dcsnas: terminated")])
def test_a_signal_ends_with_one_line_and_keeps_the_last_checkpoint(tiny_data, tmp_path, signum, code, line):
    out = tmp_path / "run"
    args = train_args(tiny_data, out, "optim.epochs=200", "data.num_workers=2")
    proc = subprocess.Popen([sys.executable, "-m", "dcsnas.cli", *args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(proc.pid, signum)  # as a terminal does: the whole process group, DataLoader workers included
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == line, err
    assert torch.load(last, weights_only=True)["epoch"] >= 0
    assert not list((out / "checkpoints").glob(".*.tmp")) and not (out / ".lock").exists()


# ------------------------------------------------------------------------------------------ bad inputs
def _non_utf8_config(tmp_path: Path, data: Path) -> list[str]:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(f"base: {TINY}\n# caf\xe9\n".encode("latin-1"))
    return ["train", "--config", str(path), "--set", f"data.root={data}", "--out", str(tmp_path / "r")]


def _folder_with_letters(tmp_path: Path, data: Path) -> list[str]:
    return ["data", "info", "--dataset", "folder", "--root", str(data), "--option",
            r"pattern=^(?P<pid>\d+)_(?P<camid>[a-z])"]


def _malformed_run_config(tmp_path: Path, data: Path, finished: Path) -> list[str]:
    run = tmp_path / "bad-run"
    shutil.copytree(finished, run)
    (run / "config.yaml").write_text("model: [unclosed\n")
    return ["eval", "--run", str(run)]


def _huge_width(tmp_path: Path, data: Path, search: Path) -> list[str]:
    arch = json.loads((search / "arch.json").read_text())
    arch["stages"][0]["width"] = 100000
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    return ["retrain", "--arch", str(tmp_path / "arch.json"), "--config", str(TINY), "--set", f"data.root={data}",
            "--set", "model.attention=[]", "--out", str(tmp_path / "r")]


def _width_not_in_space(tmp_path: Path, data: Path, search: Path) -> list[str]:
    run = tmp_path / "search"
    shutil.copytree(search, run)
    arch = json.loads((run / "arch.json").read_text())
    arch["stages"][0]["width"] += 1
    (run / "arch.json").write_text(json.dumps(arch))
    return ["retrain", "--arch", str(run / "arch.json"), "--config", str(TINY), "--set", f"data.root={data}",
            "--set", "model.attention=[]", "--out", str(tmp_path / "r")]


def _train_width_not_in_space(tmp_path: Path, data: Path, search: Path) -> list[str]:
    retrain = _width_not_in_space(tmp_path, data, search)
    arch = retrain[retrain.index("--arch") + 1]
    return train_args(data, tmp_path / "t", "model.backbone=searched", f"model.arch={arch}", "model.attention=[]")


def _bad_image_in_worker(tmp_path: Path, data: Path) -> list[str]:
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    victim = sorted((copy / "bounding_box_train").iterdir())[0]
    victim.write_bytes(b"not an image")
    return train_args(copy, tmp_path / "r", "data.num_workers=2")


def _incomplete_synthetic(tmp_path: Path, data: Path) -> list[str]:
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    meta = json.loads((copy / "synth_meta.json").read_text())
    (copy / "synth_meta.json").write_text(json.dumps({**meta, "complete": False}))
    return train_args(copy, tmp_path / "r")


def _market_camera_0(tmp_path: Path, data: Path, market: Path) -> list[str]:
    from conftest import write_image

    write_image(market / "Market-1501-v15.09.15" / "query" / "0005_c0s1_000500_00.jpg")
    return ["data", "info", "--dataset", "market1501", "--root", str(market)]


def _out_is_a_file(tmp_path: Path, data: Path) -> list[str]:
    (tmp_path / "file").write_text("x")
    return train_args(data, tmp_path / "file")


# (id, arguments or a builder, what the message must contain). Builders take (tmp_path, data[, fixture]).
BAD_INPUTS = [
    ("lr-nan", lambda t, d: train_args(d, t / "r", "optim.lr=.nan"), "'optim.lr' = nan"),
    ("lr-inf", lambda t, d: train_args(d, t / "r", "optim.lr=.inf"), "'optim.lr' = inf"),
    ("lr-zero", lambda t, d: train_args(d, t / "r", "optim.lr=0"), "lr must be > 0"),
    ("weight-decay-negative", lambda t, d: train_args(d, t / "r", "optim.weight_decay=-1"), "optim.weight_decay"),
    ("seed-negative", lambda t, d: train_args(d, t / "r", "seed=-1"), "'seed' = -1"),
    ("seed-too-large", lambda t, d: train_args(d, t / "r", "seed=4294967296"), "'seed' = 4294967296"),
    ("log-every-zero", lambda t, d: train_args(d, t / "r", "log_every=0"), "'log_every' = 0"),
    ("threads-negative", lambda t, d: train_args(d, t / "r", "threads=-1"), "'threads' = -1"),
    ("warmup-negative", lambda t, d: train_args(d, t / "r", "optim.warmup_epochs=-1"), "'optim.warmup_epochs' = -1"),
    ("milestone-negative", lambda t, d: train_args(d, t / "r", "optim.milestones=[-3]"), "optim.milestones"),
    ("config-not-utf8", _non_utf8_config, "is not UTF-8"),
    ("folder-pattern-letters", _folder_with_letters, "must match integers"),
    ("junk-pids-string", lambda t, d: ["data", "info", "--dataset", "folder", "--root", str(d), "--option",
                                       "junk_pids=abc"], "'junk_pids' = 'abc'"),
    ("synthetic-incomplete", _incomplete_synthetic, "is incomplete"),
    ("bad-image-in-worker", _bad_image_in_worker, "cannot read image"),
    ("resume-without-out", lambda t, d: ["train", "--config", str(TINY), "--resume"], "--resume needs --out"),
    ("resume-empty-dir", lambda t, d: (t.joinpath("empty").mkdir(), train_args(d, t / "empty") + ["--resume"])[1],
     "is missing"),
    ("out-is-a-file", _out_is_a_file, "is a file"),
    ("market-camera-0", "market", "camera ids of this data set start at 1"),
    ("eval-malformed-run-config", "finished", "config.yaml is not valid YAML"),
    ("eval-search-run", "search-eval", "derive its network"),
    ("arch-width-100000", "search-huge", "width in [1, 4096]"),
    ("arch-width-not-in-space", "search-space", "is not an option of the space"),
    ("train-arch-width-not-in-space", "search-space-train", "is not an option of the space"),
    ("search-into-a-finished-search", "search-again", "already holds a run"),
    ("resume-before-first-checkpoint", "no-checkpoint", "has no checkpoint yet"),
    ("std-zero", lambda t, d: train_args(d, t / "r", "data.transforms.std=[0,1,1]"), "'data.transforms.std[0]' = 0.0"),
    ("mean-four-values", lambda t, d: train_args(d, t / "r", "data.transforms.mean=[0.5,0.5,0.5,0.5]"),
     "expected 3 values"),
    ("tau-start-zero", lambda t, d: train_args(d, t / "r", "schedule.dcs_tau_start=0"),
     "'schedule.dcs_tau_start' = 0.0"),
    ("width-mult-negative", lambda t, d: train_args(d, t / "r", "model.width_mult=-1"), "'model.width_mult' = -1.0"),
    ("center-lr-negative", lambda t, d: train_args(d, t / "r", "loss.center_lr=-1"), "'loss.center_lr' = -1.0"),
    ("triplet-margin-nan", lambda t, d: train_args(d, t / "r", "loss.triplet_margin=.nan"),
     "'loss.triplet_margin' = nan"),
    ("pcb-parts-zero", lambda t, d: train_args(d, t / "r", "model.head=pcb", "model.pcb_parts=0"),
     "'model.pcb_parts' = 0"),
    ("search-warmup-not-below-epochs", lambda t, d: ["search", "--config", str(SEARCH), "--set", f"data.root={d}",
                                                     "--set", "optim.epochs=1", "--out", str(t / "r")],
     "search.warmup_epochs = 1 is not below optim.epochs = 1"),
    ("camid-base-string", lambda t, d: ["data", "info", "--dataset", "folder", "--root", str(d), "--option",
                                        "camid_base=abc"], "'camid_base' = 'abc'"),
    ("base-not-a-file-name", lambda t, d: (t.joinpath("b.yaml").write_text("base: 3\n"),
                                           ["train", "--config", str(t / "b.yaml")])[1], "'base' must be a file name"),
    ("bench-batch-huge", lambda t, d: ["bench", "model", "--batch", "1000000000"], "--batch must be an integer in"),
    ("bench-classes-huge", lambda t, d: ["bench", "model", "--num-classes", "10000000000"], "[1, 100000]"),
]


@pytest.mark.parametrize("builder, message", [pytest.param(b, m, id=i) for i, b, m in BAD_INPUTS])
def test_bad_input_is_one_clean_line(request, tmp_path, tiny_data, capsys, builder, message):
    if builder == "market":
        args = _market_camera_0(tmp_path, tiny_data, request.getfixturevalue("market_tree"))
    elif builder == "finished":
        args = _malformed_run_config(tmp_path, tiny_data, request.getfixturevalue("finished_run"))
    elif builder == "search-eval":
        args = ["eval", "--run", str(request.getfixturevalue("search_run"))]
    elif builder == "search-huge":
        args = _huge_width(tmp_path, tiny_data, request.getfixturevalue("search_run"))
    elif builder == "search-space":
        args = _width_not_in_space(tmp_path, tiny_data, request.getfixturevalue("search_run"))
    elif builder == "search-space-train":
        args = _train_width_not_in_space(tmp_path, tiny_data, request.getfixturevalue("search_run"))
    elif builder == "no-checkpoint":
        run = tmp_path / "stopped"
        shutil.copytree(request.getfixturevalue("finished_run"), run)
        shutil.rmtree(run / "checkpoints")
        args = train_args(tiny_data, run, "eval.val_identities=2", "eval.every=1") + ["--resume"]
    elif builder == "search-again":
        args = ["search", "--config", str(SEARCH), "--set", f"data.root={tiny_data}", "--set",
                f"search.space={TINY_SPACE}", "--out", str(request.getfixturevalue("search_run")), "--no-progress"]
    else:
        args = builder(tmp_path, tiny_data)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("dcsnas: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_a_diverging_loss_is_a_clean_error(tiny_data, tmp_path, capsys, monkeypatch):
    from dcsnas.losses.criterion import ReIDCriterion

    original = ReIDCriterion.forward

    def diverged(self, outputs, labels):
        terms = original(self, outputs, labels)
        return {**terms, "total": terms["total"] * float("nan")}

    monkeypatch.setattr(ReIDCriterion, "forward", diverged)
    clean_error(capsys, main(train_args(tiny_data, tmp_path / "r")), "training diverged: the loss is nan")



# ------------------------------------------------------------------------------------------ --force guard
def _tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> content): what must survive a refused --force."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["cwd", "cwd-parent", "data-root", "data-parent", "config-folder", "home"])
def test_force_never_moves_a_protected_folder(tiny_data, tmp_path, capsys, monkeypatch, target):
    data = tmp_path / "datasets" / "tiny"
    shutil.copytree(tiny_data, data)
    work = tmp_path / "work" / "project"
    (work / "configs").mkdir(parents=True)
    config = work / "configs" / "tiny.yaml"
    config.write_text(f"base: {TINY}\n")
    (work / "notes.txt").write_text("mine")
    home = tmp_path / "home"
    (home / "thesis.tex").parent.mkdir()
    (home / "thesis.tex").write_text("precious")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    out = {"cwd": work, "cwd-parent": work.parent, "data-root": data, "data-parent": data.parent,
           "config-folder": config.parent, "home": home}[target]
    before = _tree(tmp_path)
    args = ["train", "--config", str(config), "--set", f"data.root={data}", "--out", str(out), "--force",
            "--no-progress"]
    clean_error(capsys, main(args), "--force refused")
    assert _tree(tmp_path) == before and not list(tmp_path.rglob("*.replaced-*"))


def test_force_refuses_a_folder_that_is_not_a_run_and_a_symlinked_out(tiny_data, tmp_path, capsys, run_copy):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not yours")
    clean_error(capsys, main(train_args(tiny_data, other) + ["--force"]), "is not a dcsnas run directory")
    assert _tree(other) == {"holiday.jpg": b"not yours"}
    link = tmp_path / "link"
    link.symlink_to(run_copy)
    before = _tree(run_copy)
    clean_error(capsys, main(train_args(tiny_data, link) + ["--force"]), "is a symbolic link")
    assert _tree(run_copy) == before


def test_force_on_an_empty_folder_and_on_a_run_still_works(tiny_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = tiny_config(tiny_data)
    assert create_run_dir(empty, "train", cfg, force=True).config.is_file()


# ------------------------------------------------------------------------------------------ other outputs
def _features(path: Path) -> Path:
    from dcsnas.metrics import save_features

    rng = np.random.default_rng(0)
    save_features(path, rng.normal(size=(4, 8)), rng.normal(size=(6, 8)), [1, 2, 3, 4], [1, 2, 3, 4, 5, 6],
                  [0, 0, 0, 0], [1, 1, 1, 1, 1, 1])
    return path


@pytest.mark.parametrize("case", ["eval-into-run", "eval-into-checkpoints", "export-over-checkpoint",
                                  "extract-over-metrics", "derive-over-config", "bench-over-arch"])
def test_no_command_writes_over_a_runs_files(run_copy, tmp_path, capsys, case):
    feats = _features(tmp_path / "f.npz")
    args = {
        "eval-into-run": ["eval", "--features", str(feats), "--out", str(run_copy)],
        "eval-into-checkpoints": ["eval", "--features", str(feats), "--out", str(run_copy / "checkpoints")],
        "export-over-checkpoint": ["export", "--run", str(run_copy), "--format", "onnx", "--out",
                                   str(run_copy / "checkpoints" / "last.pt"), "--force"],
        "extract-over-metrics": ["extract", "--run", str(run_copy), "--images", str(tmp_path), "--out",
                                 str(run_copy / "metrics.json"), "--force"],
        "derive-over-config": ["derive", str(run_copy), "--out", str(run_copy / "config.yaml"), "--force"],
        "bench-over-arch": ["bench", "model", "--out", str(run_copy / "arch.json"), "--force"],
    }[case]
    before = _tree(run_copy)
    clean_error(capsys, main(args), "run directory")
    assert _tree(run_copy) == before


def test_an_existing_output_file_needs_force(tmp_path, capsys):
    feats = _features(tmp_path / "f.npz")
    out = tmp_path / "eval"
    assert main(["eval", "--features", str(feats), "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "metrics.json").write_text("{}")
    clean_error(capsys, main(["eval", "--features", str(feats), "--out", str(out)]), "pass --force")
    assert (out / "metrics.json").read_text() == "{}"
    assert main(["eval", "--features", str(feats), "--out", str(out), "--force"]) == 0
    assert json.loads((out / "metrics.json").read_text())["num_queries"] == 4
    capsys.readouterr()
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    clean_error(capsys, main(["bench", "model", "--out", str(fifo), "--force"]), "not a regular file")


def test_a_killed_export_leaves_no_file(run_copy, tmp_path, monkeypatch):
    import dcsnas.export as export

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "check_parity", killed)
    out = tmp_path / "model.onnx"
    assert main(["export", "--run", str(run_copy), "--format", "onnx", "--out", str(out)]) == 130
    assert list(tmp_path.iterdir()) == [run_copy]  # neither the file nor a temporary one


def test_a_killed_figure_leaves_no_file(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from dcsnas.utils.io import atomic_savefig

    fig = plt.figure()
    fig.savefig = lambda fh, **kw: (fh.write(b"\x89PNG half"), (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        atomic_savefig(fig, tmp_path / "cmc.png")
    plt.close(fig)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ model files
def _torchscript_file(path: Path, metadata: dict) -> Path:
    traced = torch.jit.trace(torch.nn.Flatten(), torch.zeros(1, 3, 4, 4))
    torch.jit.save(traced, str(path), _extra_files={"dcsnas": json.dumps(metadata)})
    return path


GOOD_METADATA = {"input_size": [8, 4], "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "embedding_dim": 96,
                 "flip": False}


def test_torchscript_is_never_loaded_without_trust(tmp_path, capsys, monkeypatch):
    import dcsnas

    path = _torchscript_file(tmp_path / "model.pt", GOOD_METADATA)
    loads = []
    original = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or original(*a, **k))
    with pytest.raises(dcsnas.errors.ConfigError, match="runs the code it holds"):
        dcsnas.FeatureExtractor(path, device="cpu")
    (tmp_path / "images").mkdir()
    clean_error(capsys, main(["extract", "--model", str(path), "--images", str(tmp_path / "images"), "--out",
                              str(tmp_path / "f.npz")]), "--trust-torchscript")
    assert loads == []
    with pytest.warns(UserWarning, match="runs the code it holds"):
        extractor = dcsnas.FeatureExtractor(path, device="cpu", trust_torchscript=True)
    assert loads and extractor.embedding_dim == 96


@pytest.mark.parametrize("key, value, message", [
    ("input_size", [100000, 100000], "input_size"), ("input_size", [8.5, 4], "input_size"),
    ("input_size", "big", "input_size"), ("mean", [0.5, 0.5], "mean"), ("std", [0.2, 0.0, 0.2], "std"),
    ("std", [float("nan")] * 3, "std"), ("embedding_dim", 10**9, "embedding_dim"),
    ("embedding_dim", True, "embedding_dim"),
    ("flip", "yes", "flip"), ("input_size", None, "input_size")])
def test_exported_metadata_is_checked(tmp_path, key, value, message):
    from dcsnas.engine.inference import check_metadata
    from dcsnas.errors import ConfigError

    meta = {**GOOD_METADATA, key: value}
    with pytest.raises(ConfigError, match=f"metadata '{message}'"):
        check_metadata(json.dumps(meta), "m.onnx")
    for text in ("not json", "[1, 2]", "[" * 100000):
        with pytest.raises(ConfigError, match="m.onnx"):
            check_metadata(text, "m.onnx")
    assert check_metadata(json.dumps(GOOD_METADATA), "m.onnx") == GOOD_METADATA


# ------------------------------------------------------------------------------------------ resources
def test_yaml_alias_bomb_and_duplicate_keys_are_refused(tiny_data, tmp_path, capsys, run_copy):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9))
    (tmp_path / "bomb.yaml").write_text(f"base: {TINY}\n{bomb}")
    start = time.monotonic()
    clean_error(capsys, main(["train", "--config", str(tmp_path / "bomb.yaml"), "--out", str(tmp_path / "r")]),
                "alias")
    assert time.monotonic() - start < 30  # 10**10 values once expanded: refused, not formatted
    (run_copy / "config.yaml").write_text(bomb)
    clean_error(capsys, main(["eval", "--run", str(run_copy)]), "alias")
    (tmp_path / "dup.yaml").write_text(f"base: {TINY}\noptim:\n  lr: 0.1\nseed: 1\noptim:\n  epochs: 3\n")
    clean_error(capsys, main(["train", "--config", str(tmp_path / "dup.yaml"), "--out", str(tmp_path / "r")]),
                "duplicate key 'optim' at lines 2 and 5")


def _png_header(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims ``width`` × ``height`` 8-bit RGB pixels (one row of data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_image_bombs_pipes_and_16_bit_images(tmp_path):
    from PIL import Image

    from dcsnas.errors import DataError
    from dcsnas.utils.image import read_image

    (tmp_path / "bomb.png").write_bytes(_png_header(100000, 100000))
    with pytest.raises(DataError, match=r"bomb.png.*10000000000 pixels"):
        read_image(tmp_path / "bomb.png")
    Image.new("L", (5000, 4000)).save(tmp_path / "big.png")  # 2e7 pixels: over the bound, under PIL's own
    with pytest.raises(DataError, match=r"big.png.*5000x4000"):
        read_image(tmp_path / "big.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("read_image blocked")))
    signal.alarm(10)
    try:
        with pytest.raises(DataError, match="pipe.jpg.*not a regular file"):
            read_image(tmp_path / "pipe.jpg")
    finally:
        signal.alarm(0)
    Image.fromarray(np.full((4, 3), 32768, dtype=np.uint16)).save(tmp_path / "grey16.png")
    assert np.asarray(read_image(tmp_path / "grey16.png")).tolist() == [[[128] * 3] * 3] * 4  # 32768 / 257


def test_a_features_file_that_claims_huge_arrays_is_refused_before_allocating(tmp_path):
    import io
    import zipfile

    from dcsnas.errors import DataError
    from dcsnas.metrics import load_features

    path = _features(tmp_path / "f.npz")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("huge.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(DataError, match=r"huge.npy claims \(100000, 100000\)"):
        load_features(path)


def test_compare_reads_metrics_json_by_its_schema_and_warns_of_a_run_being_written(run_copy, tmp_path):
    from dcsnas.compare.runs import load_run
    from dcsnas.errors import ConfigError

    metrics = json.loads((run_copy / "metrics.json").read_text())
    (run_copy / "metrics.json").write_text(json.dumps({**metrics, "num_classes": 10**10}))
    with pytest.raises(ConfigError, match="'num_classes' = 10000000000: expected an int in"):
        load_run(run_copy)
    (run_copy / "metrics.json").write_text(json.dumps({**metrics, "test": {**metrics["test"], "mAP": "abc"}}))
    with pytest.raises(ConfigError, match="'test.mAP': expected float"):
        load_run(run_copy)
    (run_copy / "metrics.json").write_text(json.dumps(metrics))
    holder = _hold_lock(run_copy)
    try:
        with pytest.warns(UserWarning, match=f"is being written by process {holder.pid}"):
            load_run(run_copy)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------ OS errors
def test_read_only_output_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    import errno
    import tempfile

    feats = _features(tmp_path / "f.npz")

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    err = clean_error(capsys, main(["eval", "--features", str(feats), "--out", str(tmp_path / "ro")]),
                      "Read-only file system")
    assert str(tmp_path / "ro") in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_names_the_cause_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import contextlib
    import errno

    import dcsnas.utils.io as io_module

    path = tmp_path / "last.pt"
    io_module.atomic_torch_save({"w": torch.ones(3)}, path)

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    monkeypatch.setattr(io_module, "atomic_open", lambda *a, **k: contextlib.nullcontext(Full()))
    with pytest.raises(OSError, match="No space left on device") as caught:
        io_module.atomic_torch_save({"w": torch.zeros(10000)}, path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
