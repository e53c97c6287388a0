"""The search loop on the tiny preset and the tiny space: search → derive → retrain → eval, the entropy of
the choices, the FLOPs hinge, exact resume, the splits, and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dcsnas.cli import main
from dcsnas.config import load_config
from dcsnas.data.base import ImageRecord
from dcsnas.engine.rundir import create_run_dir, open_run_dir
from dcsnas.errors import ConfigError
from dcsnas.nas.config import SearchConfig
from dcsnas.nas.search import Searcher
from dcsnas.nas.space import load_space
from dcsnas.nas.split import split_for_search

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "experiments" / "cpu" / "search_tiny.yaml"
TRAIN = ROOT / "experiments" / "cpu" / "tiny_test.yaml"


TINY_SPACE = ROOT / "search_spaces" / "tiny.yaml"


def search_config(root: Path, *overrides: str) -> SearchConfig:
    return load_config(SearchConfig, SEARCH, [f"data.root={root}", f"search.space={TINY_SPACE}", *overrides])


def test_search_derive_retrain_eval_end_to_end(tiny_data, tmp_path, capsys):
    run = tmp_path / "search"
    assert main(["search", "--config", str(SEARCH), "--set", f"data.root={tiny_data}", "--set",
                 f"search.space={TINY_SPACE}", "--out", str(run), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    arch = json.loads((run / "arch.json").read_text())
    assert printed["mflops"] == round(arch["flops"] / 1e6, 3) and printed["arch"] == str(run / "arch.json")
    # the parameters dcsnas prints everywhere: the cost table's backbone (arch.json) + the BNNeck's BatchNorm
    assert printed["mparams"] == pytest.approx((arch["params"] + 2 * arch["head_channels"]) / 1e6, abs=1e-9)
    assert arch["input_size"] == [64, 32] and arch["space"] == "tiny"
    # the mean entropy of the choices is that of α = 0 (uniform: the maximum) during the weight warm-up, and
    # below it once architecture steps have moved α. The tiny space's 11 choices: 3 widths of 2 options, 7
    # blocks of 3 ops (the first of a stage) or 4 (skip too), the attention after s2 of 3
    history = json.loads((run / "metrics.json").read_text())["history"]
    entropy = [h["train"]["arch/entropy"] for h in history]
    uniform = (3 * math.log(2) + 3 * math.log(3) + 4 * math.log(4) + math.log(3)) / 11
    assert len(entropy) == 4 and entropy[0] == pytest.approx(uniform, abs=1e-5)
    assert max(entropy[1:]) < uniform - 1e-5
    # per epoch: a heat map of softmax(α) and a log line with the argmax architecture and its MFLOPs
    assert [p.name for p in sorted((run / "alpha").glob("*.png"))] == [f"epoch_00{e}.png" for e in range(1, 5)]
    lines = [line for line in (run / "log.txt").read_text().splitlines() if line.startswith("epoch ")]
    assert len(lines) == 4 and all("| argmax s1/width: " in line and "arch/argmax_mflops" in line for line in lines)
    assert {"arch_step/ce", "arch_step/triplet", "arch_step/mflops", "ce", "triplet"} <= set(history[-1]["train"])
    assert "arch_step/ce" not in history[0]["train"]  # warm-up: weight steps only

    (run / "arch.json").unlink()
    assert main(["derive", str(run)]) == 0
    assert json.loads((run / "arch.json").read_text()) == arch
    capsys.readouterr()

    retrain = tmp_path / "retrain"
    assert main(["retrain", "--arch", str(run / "arch.json"), "--config", str(TRAIN), "--set",
                 f"data.root={tiny_data}", "--set", "model.attention=[]", "--set", "optim.epochs=1",
                 "--out", str(retrain), "--no-progress"]) == 0
    capsys.readouterr()
    metrics = json.loads((retrain / "metrics.json").read_text())
    assert 0 < metrics["test"]["mAP"] <= 1
    assert open_run_dir(retrain).saved_config()["model"]["backbone"] == "searched"
    assert main(["eval", "--run", str(retrain), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["mAP"] == pytest.approx(metrics["test"]["mAP"], abs=1e-6)
    assert main(["derive", str(retrain)]) == 2
    assert "is not the run directory of a search: space.yaml is missing" in capsys.readouterr().err


def test_hinge_holds_the_derived_flops_at_the_target(tiny_data, tmp_path):
    target = 3.0  # MFLOPs; the tiny space spans 0.75 to 3.31 at 64×32 (seeds 0-7 all land within 5%)
    cfg = search_config(tiny_data, "search.cost.kind=hinge", f"search.cost.target_mflops={target}",
                        "search.cost.weight=100", "search.arch_lr=0.0001", "optim.epochs=10")
    metrics = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False).fit()
    assert abs(metrics["arch"]["flops"] / 1e6 / target - 1) <= 0.10
    first = metrics["history"][0]["train"]["arch/argmax_mflops"]
    assert abs(first / target - 1) > 0.10  # the argmax at the start is elsewhere: the hinge moved it


def test_search_resume_continues_exactly(tiny_data, tmp_path):
    cfg = search_config(tiny_data)
    straight = Searcher(cfg, create_run_dir(tmp_path / "a", "search", cfg), show_progress=False)
    straight.fit()

    interrupted = Searcher(cfg, create_run_dir(tmp_path / "b", "search", cfg), show_progress=False)
    original = interrupted.loop.begin

    def killed_in_last_epoch(epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(epoch)

    interrupted.loop.begin = killed_in_last_epoch
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Searcher(cfg, open_run_dir(tmp_path / "b"), show_progress=False)
    resumed.resume()
    assert resumed.start_epoch == 3
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("arch.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.arch_optimizer.state_dict()["state"][0]["exp_avg"].equal(
        resumed.arch_optimizer.state_dict()["state"][0]["exp_avg"])
    assert (tmp_path / "a" / "arch.json").read_text() == (tmp_path / "b" / "arch.json").read_text()


def test_arch_step_has_its_own_scaler_and_computes_gradients_for_alpha_only(tiny_data, tmp_path):
    cfg = search_config(tiny_data)
    searcher = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False)
    assert searcher.arch_scaler is not searcher.training.updates.scaler
    model = searcher.model.train()
    weights = {n: p.detach().clone() for n, p in model.weight_modules().named_parameters()}
    alphas = {k: a.detach().clone() for k, a in model.arch.alphas.items()}
    images, pids, _, _ = next(iter(searcher.arch_loader))
    searcher.arch_step(images, pids, ib_on=False)
    # no weight gradient was computed or stored, and no weight moved
    assert all(p.grad is None for p in [*model.weight_modules().parameters(),
                                        *searcher.training.criterion.parameters()])
    assert all(torch.equal(p, weights[n]) for n, p in model.weight_modules().named_parameters())
    # α took Adam's first step: −lr · sign(g + weight_decay · α) where the gradient is not tiny
    moved = 0
    for key, alpha in model.arch.alphas.items():
        grad = alpha.grad + cfg.search.arch_weight_decay * alphas[key]
        big = grad.abs() > 1e-5
        delta = alpha.detach() - alphas[key]
        torch.testing.assert_close(delta[big], -cfg.search.arch_lr * grad[big].sign(), rtol=1e-3, atol=0.0)
        moved += int(big.sum())
    assert moved > 0


def test_search_evaluation_recalibrates_the_batchnorm_statistics_first(tiny_data, tmp_path):
    cfg = search_config(tiny_data, "search.bn_recalibration_batches=2")
    searcher = Searcher(cfg, create_run_dir(tmp_path / "on", "search", cfg), show_progress=False)
    stem_bn = searcher.model.backbone.stages["stem"][1]
    with torch.no_grad():
        stem_bn.running_mean.fill_(100.0)
    rng, alphas = torch.get_rng_state(), searcher.model.arch.state_dict()
    searcher.evaluate("test")
    recalibrated = stem_bn.running_mean.clone()
    assert recalibrated.abs().max() < 10 and int(stem_bn.num_batches_tracked) == 2
    assert torch.equal(torch.get_rng_state(), rng)
    # any architecture of the space, by option indices; the argmax's statistics come back with its evaluation
    other = {k: len(c.options) - 1 - i for (k, c), i in zip(searcher.model.arch.choices.items(),
                                                            searcher.model.arch.argmax().values())}
    assert 0 <= searcher.evaluate_architecture(other)["mAP"] <= 1
    assert all(torch.equal(v, searcher.model.arch.state_dict()[k]) for k, v in alphas.items())
    assert searcher.model.fixed is None
    searcher.recalibrate()
    assert torch.equal(stem_bn.running_mean, recalibrated)  # the same batches every time

    cfg = search_config(tiny_data, "search.bn_recalibration_batches=0")
    searcher = Searcher(cfg, create_run_dir(tmp_path / "off", "search", cfg), show_progress=False)
    stem_bn = searcher.model.backbone.stages["stem"][1]
    with torch.no_grad():
        stem_bn.running_mean.fill_(100.0)
    searcher.recalibrate()
    assert searcher.recalibration_loader is None
    assert torch.equal(stem_bn.running_mean, torch.full_like(stem_bn.running_mean, 100.0))


def test_a_run_directory_keeps_its_search_space(tiny_data, tmp_path):
    cfg = search_config(tiny_data)
    Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False)
    other = tmp_path / "space.yaml"
    other.write_text(TINY_SPACE.read_text().replace("head_channels: 64", "head_channels: 48"))
    cfg = search_config(tiny_data, f"search.space={other}")
    with pytest.raises(ConfigError, match="holds a search of another space"):
        Searcher(cfg, open_run_dir(tmp_path / "run"), show_progress=False)


def test_identity_disjoint_search_uses_metric_losses_only(tiny_data, tmp_path):
    cfg = search_config(tiny_data, "search.split=identity_disjoint", "optim.epochs=2")
    searcher = Searcher(cfg, create_run_dir(tmp_path / "run", "search", cfg), show_progress=False)
    original_pid = {r.path: r.pid for r in searcher.data.dataset.train}
    assert not {original_pid[r.path] for r in searcher.data.train_records} & {original_pid[r.path]
                                                                               for r in searcher.arch_records}
    stats = searcher.fit()["history"][-1]["train"]
    assert "arch_step/triplet" in stats and "arch_step/ce" not in stats and "ce" in stats


def test_splits_for_the_search():
    records = [ImageRecord(f"{pid}_{i}.jpg", pid, i % 2) for pid in range(6) for i in range(pid + 1)]
    weight, arch = split_for_search(records, 0.5, "per_identity", seed=0)
    assert sorted(weight + arch) == sorted(records) and not set(weight) & set(arch)
    assert {r.pid for r in arch} == set(range(1, 6)) and {r.pid for r in weight} == set(range(6))
    assert [sum(r.pid == p for r in arch) for p in range(6)] == [0, 1, 2, 2, 2, 3]
    weight, arch = split_for_search(records, 0.5, "identity_disjoint", seed=0)
    assert len(weight) + len(arch) == len(records)
    assert {r.pid for r in weight} == {0, 1, 2} and {r.pid for r in arch} == {0, 1, 2}  # relabelled
    assert not {r.path for r in weight} & {r.path for r in arch}


@pytest.mark.parametrize("overrides, message", [
    (["search.cost.kind=hinge", "search.cost.target_mflops=0.5"],
     ("search.cost.target_mflops = 0.5 is outside the FLOPs of the search space at 64×32: expected a value in "
      "[0.754, 3.3")),  # the largest architecture's attention FLOPs follow the attention formulas
    (["search.cost.kind=hinge"], "config section 'search.cost': kind = 'hinge' needs target_mflops"),
    (["search.space=/no/such/space.yaml"], "config file '/no/such/space.yaml' does not exist"),
    (["search.mode=fast"], "config key 'search.mode': expected one of 'soft', 'hard'"),
    (["search.bn_recalibration_batches=-1"], "config key 'search.bn_recalibration_batches' = -1: expected an int"),
    (["data.p=13"], "data.p × data.k = 13×2 yields no batch on the weight split of the search"),
])
def test_bad_search_config_exits_2_naming_the_key(tiny_data, tmp_path, capsys, overrides, message):
    args = ["search", "--config", str(SEARCH), "--set", f"data.root={tiny_data}", "--set",
            f"search.space={TINY_SPACE}", "--out", str(tmp_path / "r")]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_retrain_refuses_an_arch_of_another_version(tmp_path, capsys):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"format": "dcsnas-arch", "version": 0}))
    assert main(["retrain", "--arch", str(path), "--config", str(TRAIN), "--out", str(tmp_path / "r")]) == 2
    assert f"arch '{path}': version = 0, expected 1" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["cpu/search_tiny.yaml", "cpu/search_small.yaml", "gpu/dcs_dnas_market.yaml",
                                    "demo/search.yaml", "bench/search_vs_random/search.yaml"])
def test_search_recipes_load_with_their_space(recipe):
    cfg = load_config(SearchConfig, ROOT / "experiments" / recipe)
    load_space(ROOT / cfg.search.space)
