"""The training loop of train, retrain and search: one epoch loop that runs a step callable, composed (not
subclassed) by the Trainer and the Searcher, with the checkpoint keys of every earlier version."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dcsnas.config import load_config
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.distributed import DistContext
from dcsnas.engine.loop import train_epoch
from dcsnas.engine.rundir import create_run_dir
from dcsnas.engine.steps import Runtime, StepResult
from dcsnas.engine.trainer import LoopHandle, Trainer
from dcsnas.nas.search import Searcher

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "cpu" / "tiny_test.yaml"

# the keys of a training checkpoint since the first version (tests/test_run_safety.py reads old ones)
TRAIN_KEYS = {"epoch", "model", "criterion", "optimizer", "scheduler", "center_optimizer", "scaler", "ib", "elapsed",
              "history", "best", "untrained", "health", "config", "num_classes", "threads"}


class _Recorder:
    def __init__(self):
        self.calls = []

    def scalars(self, values, step, prefix=""):
        self.calls.append((prefix, step, dict(values)))


def test_train_epoch_runs_the_step_on_every_batch_and_averages_its_terms():
    """A step that takes two passes per batch (here: two terms per batch, counted): the epoch's means are
    the hand means, every ``log_every``-th step is logged at its global step, and the kept ratio of each
    module is that of the last step that reported it."""
    batches = [(torch.full((2, 1), float(i)), torch.tensor([i, i]), None, None) for i in range(5)]
    passes = []

    def step(images, pids):
        i = int(images[0, 0])
        passes.extend([i, i])  # e.g. a weight pass and an architecture pass
        kept = {"a": torch.tensor(0.1 * i)} if i < 4 else {}
        return StepResult({"total": torch.tensor(float(i)), "square": torch.tensor(float(i * i))},
                          {**kept, "b": torch.tensor(1.0 - 0.1 * i)})

    logger = _Recorder()
    means, kept = train_epoch(step, batches, "epoch 1/1", Runtime(DistContext(), torch.device("cpu")), logger,
                              log_every=2, first_step=10)
    assert passes == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert means == {"total": 2.0, "square": (0 + 1 + 4 + 9 + 16) / 5}
    assert kept == pytest.approx({"a": 0.3, "b": 0.6})
    assert [(prefix, s, v["total"]) for prefix, s, v in logger.calls] == [("train_step/", 11, 1.0),
                                                                          ("train_step/", 13, 3.0)]


def test_train_and_search_compose_the_loop_instead_of_overriding_it():
    """The Searcher is no Trainer: both hand their collaborators to the one loop and override nothing of
    what the commands call (fit, resume, dist, start_epoch); neither has an epoch loop of its own."""
    assert not issubclass(Searcher, Trainer)
    shared = set(vars(LoopHandle)) - set(vars(object))
    for cls in (Trainer, Searcher):
        assert not shared & set(vars(cls)) - {"__doc__", "__module__", "__init__", "__annotations__"}
        assert not {"train_epoch", "train_step", "log_epoch", "epoch_note", "state"} & set(vars(cls))


def test_checkpoints_keep_their_keys(tiny_data, tmp_path):
    cfg = load_config(TrainConfig, TINY, [f"data.root={tiny_data}", "loss.ib_weight=0.1"])
    trainer = Trainer(cfg, create_run_dir(tmp_path / "run", "train", cfg), show_progress=False)
    state = trainer.loop.state(0)
    assert set(state) == TRAIN_KEYS
    assert state["ib"] is not None and state["center_optimizer"] is None  # tiny_test: no centre loss
    assert state["optimizer"]["param_groups"][0]["name"] == trainer.training.optimizer.param_groups[0]["name"]


def test_search_checkpoints_keep_their_keys(tiny_data, tmp_path):
    from dcsnas.nas.config import SearchConfig

    cfg = load_config(SearchConfig, ROOT / "experiments" / "cpu" / "search_tiny.yaml",
                      [f"data.root={tiny_data}", f"search.space={ROOT / 'search_spaces' / 'tiny.yaml'}"])
    searcher = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False)
    state = searcher.loop.state(0)
    assert set(state) == TRAIN_KEYS | {"arch_optimizer", "arch_scaler", "arch_rng"}
    assert torch.equal(state["arch_rng"], searcher.model.arch.generator.get_state())


def _recipe(name: str) -> str:
    """The Python block of docs/architecture.md's section ``name``."""
    text = (ROOT / "docs" / "architecture.md").read_text().split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_search_strategy_trains_one_uniform_path_per_batch(tiny_data, tmp_path):
    """docs/architecture.md's uniform single-path step, as written there: α stays where it starts, the
    weights move, every batch runs a fixed path and the paths differ from batch to batch."""
    from dcsnas.nas import search
    from dcsnas.nas.config import SearchConfig

    namespace = dict(vars(search))
    exec(_recipe("Add a search strategy"), namespace)
    cfg = load_config(SearchConfig, ROOT / "experiments" / "cpu" / "search_tiny.yaml",
                      [f"data.root={tiny_data}", f"search.space={ROOT / 'search_spaces' / 'tiny.yaml'}",
                       "optim.epochs=1", "search.warmup_epochs=0", "eval.before_training=false"])
    searcher = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False,
                        strategy=namespace["uniform_step"])
    alpha = {k: v.clone() for k, v in searcher.model.arch.state_dict().items()}
    weights = {k: v.clone() for k, v in searcher.model.weight_modules().state_dict().items()}
    paths, fixed = [], searcher.model.fixed_architecture

    def recording(indices):
        if searcher.model.training:
            paths.append(tuple(sorted(indices.items())))
        return fixed(indices)

    searcher.model.fixed_architecture = recording
    history = searcher.fit()["history"]
    assert all(torch.equal(v, alpha[k]) for k, v in searcher.model.arch.state_dict().items())
    assert any(not torch.equal(v, weights[k]) for k, v in searcher.model.weight_modules().state_dict().items())
    assert len(paths) == len(searcher.train_loader) > 1 and len(set(paths)) > 1
    assert not any(k.startswith("arch_step/") for k in history[0]["train"])
