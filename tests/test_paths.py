"""The weight-training paths of a search (search.sampling): uniform draws are uniform (chi-square over 3000
draws), fair paths use every option of every choice (exactly once where a choice has the most options),
a fair step runs every candidate op once and updates the weights once, a sandwich step runs the costliest
and the cheapest path and distils the others from the costliest, and all modes search end to end."""

from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from scipy import stats

from dcsnas.config import load_config
from dcsnas.engine.rundir import create_run_dir
from dcsnas.errors import ConfigError
from dcsnas.losses.distillation import soft_label_distillation
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.ops import MixedBlock
from dcsnas.nas.paths import fair_paths, uniform_path
from dcsnas.nas.search import Searcher
from dcsnas.nas.space import load_space

ROOT = Path(__file__).resolve().parents[1]
TINY_SPACE = ROOT / "search_spaces" / "tiny.yaml"


def choices():
    return {c.key: c for c in load_space(TINY_SPACE).choices() if c.searchable}


def test_uniform_paths_draw_every_option_equally_often():
    generator = torch.Generator().manual_seed(0)
    draws = [uniform_path(choices(), generator) for _ in range(3000)]
    for key, choice in choices().items():
        n = len(choice.options)
        counts = Counter(path[key] for path in draws)
        observed = [counts[i] for i in range(n)]
        assert sum(observed) == 3000
        assert stats.chisquare(observed).pvalue > 1e-3, (key, observed)  # expected 3000/n each


def test_uniform_paths_are_independent_across_choices():
    """Two choices' options are independent: their 2-D table passes a chi-square test of independence."""
    generator = torch.Generator().manual_seed(1)
    keys = [k for k, c in choices().items() if len(c.options) == 4][:2]
    table = torch.zeros(4, 4)
    for _ in range(3000):
        path = uniform_path(choices(), generator)
        table[path[keys[0]], path[keys[1]]] += 1
    assert stats.chi2_contingency(table.numpy()).pvalue > 1e-3


def test_fair_paths_use_every_option_of_every_choice():
    generator = torch.Generator().manual_seed(0)
    m = max(len(c.options) for c in choices().values())
    for _ in range(200):
        paths = fair_paths(choices(), generator)
        assert len(paths) == m
        for key, choice in choices().items():
            used = [path[key] for path in paths]
            if len(choice.options) == m:  # strict fairness: each option exactly once
                assert sorted(used) == list(range(m))
            else:  # fewer options: each at least once
                assert set(used) == set(range(len(choice.options)))


def search_config(root: Path, *overrides: str) -> SearchConfig:
    return load_config(SearchConfig, ROOT / "experiments" / "cpu" / "search_tiny.yaml",
                       [f"data.root={root}", f"search.space={TINY_SPACE}", *overrides])


def test_a_fair_step_runs_every_candidate_op_once_and_updates_once(tiny_data, tmp_path):
    cfg = search_config(tiny_data, "search.sampling=fair")
    searcher = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False)
    runs: Counter = Counter()
    blocks = [(name, m) for name, m in searcher.model.named_modules() if isinstance(m, MixedBlock)]
    for name, block in blocks:
        for j, candidate in enumerate(block.candidates):
            candidate.register_forward_hook(lambda *_, key=(name, j): runs.update([key]))
    updates = []
    searcher.training.updates.update = lambda total, original=searcher.training.updates.update: (
        updates.append(1), original(total))
    alpha = {k: v.detach().clone() for k, v in searcher.model.arch.state_dict().items()}
    images, pids, _, _ = next(iter(searcher.train_loader))
    result = searcher.weight_step(0)(images, pids)
    assert len(updates) == 1 and torch.isfinite(result.terms["total"])
    m = max(len(c.options) for c in searcher.model.arch.choices.values())
    for name, block in blocks:
        counts = [runs[(name, j)] for j in range(len(block.candidates))]
        if len(block.candidates) == m:
            assert counts == [1] * m, (name, counts)
    assert all(torch.equal(alpha[k], v) for k, v in searcher.model.arch.state_dict().items())  # α untouched


def test_a_sandwich_step_trains_the_costliest_and_cheapest_paths_and_distils_the_others(tiny_data, tmp_path,
                                                                                        monkeypatch):
    cfg = search_config(tiny_data, "search.sampling=sandwich", "search.sandwich_paths=2")
    searcher = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False)
    paths, distill, updates = [], [], []
    fixed = searcher.model.fixed_architecture

    @contextmanager
    def recording(indices):
        paths.append(dict(indices))
        with fixed(indices) as model:
            yield model

    monkeypatch.setattr(searcher.model, "fixed_architecture", recording)
    monkeypatch.setattr("dcsnas.nas.search.soft_label_distillation",
                        lambda s, t: distill.append(soft_label_distillation(s, t)) or distill[-1])
    searcher.training.updates.update = lambda total, original=searcher.training.updates.update: (
        updates.append(1), original(total))
    low, high = searcher.costs.bounds("flops")  # the space's extremes (tested against enumeration)
    step = searcher.weight_step(0)
    loader = iter(searcher.train_loader)
    for n in range(1, 3):  # every step
        images, pids, _, _ = next(loader)
        result = step(images, pids)
        assert len(paths) == 4 * n and len(updates) == n and torch.isfinite(result.terms["total"])
        first, second = paths[-4], paths[-3]
        assert searcher.costs.exact(first) == high and searcher.costs.exact(second) == low
        assert distill[-4].item() == 0.0  # the costliest path is the teacher: no distillation term
        assert all(d.item() > 0 for d in distill[-3:])
        assert result.terms["distill"].item() == pytest.approx(sum(d.item() for d in distill[-4:]) / 4)


def test_soft_label_distillation_is_the_tempered_kl_from_the_teacher():
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 0.0]], requires_grad=True)
    # row 1: p_t = (3/4, 1/4), p_s = (1/2, 1/2); row 2: equal logits, KL 0; batch mean
    expected = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2
    value = soft_label_distillation([student], [teacher])
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # T = 2: softmax of the halved logits, times T²; row 1: p_t = (√3, 1)/(√3 + 1)
    pt = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = 4 * (pt * math.log(pt / 0.5) + (1 - pt) * math.log((1 - pt) / 0.5)) / 2
    assert soft_label_distillation([student], [teacher], 2.0).item() == pytest.approx(expected_t2, rel=1e-6)
    value.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0  # the teacher's labels are fixed
    assert soft_label_distillation([teacher], [teacher]).item() == 0.0


@pytest.mark.parametrize("sampling", ["uniform", "fair", "sandwich"])
def test_search_with_uniform_or_fair_paths_writes_its_architecture(tiny_data, tmp_path, sampling):
    cfg = search_config(tiny_data, f"search.sampling={sampling}", "optim.epochs=2", "search.warmup_epochs=1")
    metrics = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False).fit()
    assert (tmp_path / "run" / "arch.json").is_file() and 0 <= metrics["test"]["mAP"] <= 1
    assert all(torch.isfinite(torch.tensor(h["train"]["total"])) for h in metrics["history"])


def test_single_path_sampling_needs_hard_mode(tiny_data):
    with pytest.raises(ConfigError, match="search.sampling = 'uniform' trains single paths and needs search.mode"):
        search_config(tiny_data, "search.sampling=uniform", "search.mode=soft")
