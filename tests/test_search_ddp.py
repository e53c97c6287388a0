"""The search under DDP: the lockstep pieces in the default run (α's Gumbel noise follows its own generator,
both splits are sharded disjointly, α's gradients are averaged over two gloo processes), and, marked slow,
``torchrun --nproc_per_node 2`` searches on ``tiny``: identical α and weights on both ranks, the same
architecture at every step, disjoint batches, one writer, and a killed run that ``--resume`` under torchrun
continues to the uninterrupted run's exact end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from dcsnas.data.loaders import build_train_loader
from dcsnas.data.registry import build_dataset
from dcsnas.engine.distributed import DistContext, average_gradients
from dcsnas.nas.distribution import ArchDistribution, gumbel_softmax
from dcsnas.nas.space import load_space
from dcsnas.nas.split import split_for_search

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "experiments" / "cpu" / "search_tiny.yaml"
TINY_SPACE = ROOT / "search_spaces" / "tiny.yaml"
PROBE = Path(__file__).resolve().parent / "ddp_search_probe.py"


def test_gumbel_noise_follows_the_architecture_generator():
    # with no generator: F.gumbel_softmax's numbers (the same global draws)
    logits = torch.tensor([0.3, -1.0, 2.0, 0.1])
    torch.manual_seed(5)
    expected = F.gumbel_softmax(logits, tau=2.0, hard=False)
    torch.manual_seed(5)
    assert torch.allclose(gumbel_softmax(logits, 2.0, False), expected, rtol=1e-6, atol=0)
    hard = gumbel_softmax(logits.requires_grad_(), 0.5, True)
    assert sorted(hard.tolist()) == [0.0, 0.0, 0.0, 1.0] and hard.grad_fn is not None

    # two "ranks": the same α and generator seed give the same architectures although the ranks draw
    # different amounts from the global generator in between (augmentations, DCS gate noise)
    choices = load_space(TINY_SPACE).choices()
    ranks = [ArchDistribution(choices) for _ in range(2)]
    ranks[1].load_state_dict(ranks[0].state_dict())
    for dist in ranks:
        dist.generator = torch.Generator().manual_seed(3)
    draws = [[], []]
    for step in range(20):
        for r, dist in enumerate(ranks):
            torch.rand(1 + r * step)
            draws[r].append({k: int(w.argmax()) for k, w in dist.sample(1.0, hard=True, training=True).items()})
    assert draws[0] == draws[1]
    assert len({tuple(d.values()) for d in draws[0]}) > 1  # samples, not one fixed architecture
    for dist, seed in zip(ranks, (3, 4)):  # another generator seed: other architectures
        dist.generator.manual_seed(seed)
    seeded = [[{k: int(w.argmax()) for k, w in d.sample(1.0, True, True).items()} for _ in range(20)] for d in ranks]
    assert seeded[0] == draws[0] and seeded[1] != draws[0]


def test_both_search_splits_are_sharded_disjointly(tiny_data):
    train = build_dataset("synthetic", tiny_data).train
    weight_split, arch_split = split_for_search(train, 0.5, "per_identity", seed=0)
    for records, seed in ((weight_split, 0), (arch_split, 1)):
        shares = []
        for rank in range(2):
            loader = build_train_loader(records, lambda image: image, 4, 2, 0, seed, rank, 2)
            loader.batch_sampler.set_epoch(1)
            shares.append([i for batch in loader.batch_sampler for i in batch])
        single = build_train_loader(records, lambda image: image, 4, 2, 0, seed)
        single.batch_sampler.set_epoch(1)
        everything = [i for batch in single.batch_sampler for i in batch]
        assert len(shares[0]) == len(shares[1]) > 0
        assert not set(shares[0]) & set(shares[1])
        assert sorted(shares[0] + shares[1]) == sorted(everything[:len(shares[0]) * 2])


def _average_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    ctx = DistContext(rank, 2, rank)
    a, b, unused = (torch.zeros(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True),
                    torch.zeros(1, requires_grad=True))
    a.grad = torch.tensor([1.0, 2.0, 3.0]) * (rank + 1)          # rank 0: 1 2 3, rank 1: 2 4 6
    b.grad = torch.full((2, 2), 10.0 if rank == 0 else -4.0)
    average_gradients([a, unused, b], ctx)
    result = {"a": a.grad, "b": b.grad, "unused": unused.grad is None}
    c = torch.zeros(2, requires_grad=True)
    c.grad = torch.ones(2) if rank == 0 else None                # only rank 0 has a gradient: out of lockstep
    try:
        average_gradients([a, c], ctx)
        result["error"] = None
    except RuntimeError as exc:
        result["error"] = str(exc)
    torch.save(result, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_alpha_gradients_are_averaged_over_the_ranks(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # forked, not spawned: no second import of torch (seconds on a loaded machine); the tensors are tiny
    mp.start_processes(_average_worker, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["a"].tolist() == [1.5, 3.0, 4.5]
        assert result["b"].tolist() == [[3.0, 3.0], [3.0, 3.0]]
        assert result["unused"]
        assert "out of lockstep" in result["error"]


def test_nni_strategies_refuse_torchrun(tmp_path, monkeypatch, capsys):
    from dcsnas.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["search", "--strategy", "nni:random", "--config", str(ROOT / "experiments" / "cpu" /
                 "nni_random_tiny.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "runs in a single process on one device (NNI's Lightning path)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ torchrun


def _torchrun(target: list[str], out: Path, data: Path, env: dict[str, str], *extra: str):
    """``torchrun --standalone --nproc_per_node 2 <target> search …`` of the tiny recipe, 2 epochs."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target,
               "search", "--config", str(SEARCH), "--set", f"data.root={data}", "--set",
               f"search.space={TINY_SPACE}", "--set", "optim.epochs=2", "--out", str(out), "--no-progress", *extra]
    return subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **env})


@pytest.mark.slow
def test_torchrun_search_keeps_the_ranks_in_lockstep_and_resumes_after_a_kill(tiny_data, tmp_path):
    probe_a, probe_b = tmp_path / "probe_a", tmp_path / "probe_b"
    probe_a.mkdir()
    probe_b.mkdir()
    straight = _torchrun([str(PROBE)], tmp_path / "a", tiny_data, {"PROBE_DIR": str(probe_a)})
    assert straight.returncode == 0, straight.stderr[-3000:]
    ranks = [torch.load(probe_a / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # the same α and weights on both ranks at the end, and α has moved from its 1e-3 · N(0, 1) start
    params = [r["params"] for r in ranks]
    assert params[0].keys() == params[1].keys()
    alphas = [k for k in params[0] if k.startswith("model.arch.")]
    assert alphas and max(float(params[0][k].abs().max()) for k in alphas) > 0.01
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])
    # the same architecture at every step; hard mode: the unsampled candidates had no gradient on either rank
    # and did not move (DDP left their .grad at None, as a single process does)
    assert ranks[0]["archs"] == ranks[1]["archs"] and len({tuple(a.values()) for a in ranks[0]["archs"]}) > 1
    assert ranks[0]["no_grad"] == ranks[1]["no_grad"] and ranks[0]["no_grad"]
    assert ranks[0]["no_grad_moved"] is False and ranks[1]["no_grad_moved"] is False
    # both splits' batches disjoint across ranks in every epoch (seed 0: weight split, 1: architecture split)
    batches = [r["batches"] for r in ranks]
    for key in ("0/0", "0/1", "1/1"):
        shares = [{i for b in rank[key] for i in b} for rank in batches]
        assert len(batches[0][key]) == len(batches[1][key]) > 0 and not shares[0] & shares[1], key
    # rank 0 alone writes: two epoch checkpoints, metrics.json, arch.json once
    assert ranks[1]["writes"] == []
    assert ranks[0]["writes"].count("arch.json") == 1 and ranks[0]["writes"].count("last.pt") == 2
    assert "metrics.json" in ranks[0]["writes"]
    assert json.loads((tmp_path / "a" / "arch.json").read_text())["space"] == "tiny"

    # killed: rank 1 dies (SIGKILL) when epoch 2 begins, after the checkpoint of epoch 1
    killed = _torchrun([str(PROBE)], tmp_path / "b", tiny_data, {"PROBE_DIR": str(probe_b), "PROBE_KILL_EPOCH": "1"})
    assert killed.returncode != 0
    assert not (tmp_path / "b" / "arch.json").exists()
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 0
    # resumed with the plain command line under torchrun: it continues to the uninterrupted run's end exactly
    resumed = _torchrun(["-m", "dcsnas.cli"], tmp_path / "b", tiny_data, {}, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "from the checkpoint of epoch 1 (continuing with epoch 2 of 2)" in resumed.stderr
    assert resumed.stdout.count('"strategy": "dcs"') == 1  # one rank prints
    a, b = (torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True) for run in ("a", "b"))
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["arch_rng"], b["arch_rng"])
    assert (tmp_path / "a" / "arch.json").read_text() == (tmp_path / "b" / "arch.json").read_text()
    assert len(json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]) == 2
