"""Two-process DDP (gloo, CPU) against a single process: the ranks draw disjoint batches whose union is the
single-process epoch, one DDP step equals one single-process step on the union batch, and the IB refresh
gives every rank the same centroids and Q(a|y), equal to a single-process refresh."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch.nn.modules.batchnorm import _BatchNorm

from dcsnas.config import load_config
from dcsnas.engine.checkpoint import rng_state
from dcsnas.engine.config import TrainConfig
from dcsnas.engine.distributed import DistContext
from dcsnas.engine.loop import restore_rng
from dcsnas.engine.rundir import RunDir, create_run_dir
from dcsnas.engine.trainer import Trainer

TINY = Path(__file__).resolve().parents[1] / "experiments" / "cpu" / "tiny_test.yaml"
# Every loss term a mean over the batch (CE, deep supervision, the authors' IB bound; no batch-hard triplet,
# whose mining depends on the batch), no Gumbel noise (CSALR, not DCS), SGD (Adam would hide a gradient
# scale error), a learning rate large enough for the step to show.
OVERRIDES = [
    "eval.every=0", "optim.epochs=2", "optim.name=sgd", "optim.lr=0.05", "optim.warmup_factor=1.0",
    "loss.triplet_weight=0", "loss.ib_weight=0.1", "loss.ib_warmup_epochs=0", "loss.ib_ixf=authors",
    "model.attention=[{stage: stage2, name: csalr, options: {landmarks: 8, groups: 2, qk_ratio: 2}, "
    "deep_supervision: true}]",
]


def _config(root: str) -> TrainConfig:
    return load_config(TrainConfig, TINY, [f"data.root={root}", *OVERRIDES])


def _first_step(trainer: Trainer, images=None, pids=None) -> dict:
    """Epoch 0 of ``trainer`` up to its first optimizer step, BatchNorm in eval mode; what it drew and did."""
    step = trainer.begin_epoch(0)  # IB without warm-up: the step has the IB term
    drawn = [list(b) for b in trainer.train_loader.batch_sampler]
    trainer.train_model.train()
    for m in trainer.model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    if images is None:
        images, pids, _, indices = next(iter(trainer.train_loader))
        assert indices.tolist() == drawn[0]
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    terms = step(images, pids).terms
    return {
        "drawn": drawn, "images": images, "pids": pids, "before": before,
        "after": {k: v.detach().clone() for k, v in trainer.model.named_parameters()},
        "grads": {k: v.grad.clone() for k, v in trainer.model.named_parameters() if v.grad is not None},
        "ib": {k: v.clone() for k, v in trainer.training.ib.state_dict().items()}, "ib_term": terms["ib"].detach(),
    }


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = _config(root)
    run = create_run_dir(Path(out) / "run", "train", cfg) if rank == 0 else RunDir(Path(out) / "run")
    torch.distributed.init_process_group("gloo")  # before rank 1 builds its Trainer on rank 0's run directory
    trainer = Trainer(cfg, run, show_progress=False)
    torch.save(_first_step(trainer), Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    """Equal up to float32 summation order: within ``rel`` of the tensor's largest entry (measured: < 1e-5;
    averaging wrongly, e.g. summing the ranks or keeping one rank's gradient, is off by ~50 %)."""
    return bool((a - b).abs().max() <= rel * b.abs().max() + 1e-9)


@pytest.mark.slow
def test_ddp_step_equals_a_single_process_step_on_the_union_batch(tiny_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tiny_data), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    cfg = _config(str(tiny_data))
    single_trainer = Trainer(cfg, create_run_dir(tmp_path / "single", "train", cfg), show_progress=False)
    union_images = torch.cat([r["images"] for r in ranks])
    union_pids = torch.cat([r["pids"] for r in ranks])
    single = _first_step(single_trainer, union_images, union_pids)

    # batches: disjoint across ranks, together the single-process epoch (cut to a multiple of the world size)
    drawn0, drawn1 = ranks[0]["drawn"], ranks[1]["drawn"]
    assert len(drawn0) == len(drawn1) > 0
    flat0, flat1 = {i for b in drawn0 for i in b}, {i for b in drawn1 for i in b}
    assert not flat0 & flat1
    assert drawn0 + drawn1 != single["drawn"]  # the shares are interleaved, not the first and second halves
    assert sorted(drawn0 + drawn1) == sorted(single["drawn"][:2 * len(drawn0)])

    # the IB refresh: the same centroids and Q on both ranks, and those of one process on the same weights
    assert ranks[0]["ib"].keys() == ranks[1]["ib"].keys() == single["ib"].keys()
    for key in single["ib"]:
        assert torch.equal(ranks[0]["ib"][key], ranks[1]["ib"][key])
        assert torch.allclose(ranks[0]["ib"][key], single["ib"][key], atol=1e-5), key

    # one step: averaged gradients and updated weights equal the single process's on the union batch
    for key, value in single["before"].items():
        assert torch.equal(ranks[0]["before"][key], value)
    assert ranks[0]["grads"].keys() == single["grads"].keys()
    for key, grad in single["grads"].items():
        assert _close(ranks[0]["grads"][key], grad), key
        assert torch.equal(ranks[0]["after"][key], ranks[1]["after"][key])
        # the weights after the step: apart by far less than the step itself (float32 rounding of w + step)
        step = (single["after"][key] - single["before"][key]).abs().max()
        rounding = 4 * torch.finfo(torch.float32).eps * single["after"][key].abs().max()
        assert (ranks[0]["after"][key] - single["after"][key]).abs().max() <= 1e-2 * step + rounding, key
    # not a degenerate step that any comparison would pass: real gradients, every weight moved
    assert sum(float(g.abs().max()) for g in single["grads"].values()) > 1.0
    assert all(not torch.equal(single["after"][k], single["before"][k]) for k in single["grads"])
    ib_mean = (ranks[0]["ib_term"] + ranks[1]["ib_term"]) / 2
    assert torch.allclose(ib_mean, single["ib_term"], rtol=1e-4)


def _stream_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    """Rank ``rank`` trains one epoch without data-loader workers; it saves its weights at the start and the
    torch random state with which its first training epoch starts."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, TINY, [f"data.root={root}", "data.num_workers=0", "optim.epochs=1",
                                          "eval.every=0", "eval.before_training=false"])
    run = create_run_dir(Path(out) / "run", "train", cfg) if rank == 0 else RunDir(Path(out) / "run")
    torch.distributed.init_process_group("gloo")
    trainer = Trainer(cfg, run, show_progress=False)
    seen = {"weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}}
    begin = trainer.loop.begin

    def recording_epoch(epoch):
        seen.setdefault("rng", torch.get_rng_state())
        return begin(epoch)

    trainer.loop.begin = recording_epoch
    trainer.fit()
    torch.save(seen, Path(out) / f"stream{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_start_alike_and_draw_their_own_random_streams(tiny_data, tmp_path):
    """Without loader workers the augmentations (and DCS gate noise) come from the process's generator: the
    ranks must not draw the same numbers, while the weights they build agree; rank 0 draws what one process
    draws."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_stream_worker, args=(2, port, str(tiny_data), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"stream{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key
    assert not torch.equal(ranks[0]["rng"], ranks[1]["rng"])

    cfg = load_config(TrainConfig, TINY, [f"data.root={tiny_data}", "data.num_workers=0", "optim.epochs=1",
                                          "eval.every=0", "eval.before_training=false"])
    single = Trainer(cfg, create_run_dir(tmp_path / "single", "train", cfg), show_progress=False)
    seen = {}
    begin = single.loop.begin
    single.loop.begin = lambda epoch: (seen.setdefault("rng", torch.get_rng_state()), begin(epoch))[1]
    single.fit()
    assert torch.equal(seen["rng"], ranks[0]["rng"])


def test_resume_gives_every_rank_its_own_saved_random_state():
    states = []
    for seed in (11, 22):
        torch.manual_seed(seed)
        states.append(rng_state())
    ckpt = {"rng": states[0], "rng_ranks": states}
    for rank in (0, 1):
        torch.manual_seed(99)
        restore_rng(ckpt, SimpleNamespace(dist=DistContext(rank, 2, rank)), seed=0, start_epoch=1)
        assert torch.equal(torch.get_rng_state(), states[rank]["torch"])
    # another number of processes: rank 0 continues its saved stream, rank 1 gets a fresh one of its own
    for rank in (0, 1):
        with pytest.warns(UserWarning, match="random states of 2") if rank == 0 else contextlib.nullcontext():
            restore_rng(ckpt, SimpleNamespace(dist=DistContext(rank, 3, rank)), seed=0, start_epoch=1)
        assert torch.equal(torch.get_rng_state(), states[0]["torch"]) == (rank == 0)
