"""One torchrun rank of ``dcsnas search`` that records what it did, for ``tests/test_search_ddp.py``.

``torchrun --nproc_per_node 2 tests/ddp_search_probe.py search --config … --out …`` runs
``dcsnas.cli.main(["search", …])`` unchanged in every rank and writes ``$PROBE_DIR/rank<r>.pt``:

- ``batches``: per (sampler seed, epoch), the dataset indices of every P×K batch the rank's samplers
  yielded (seed = the weight split, seed + 1 = the architecture split, seed + 2 = BatchNorm recalibration);
- ``archs``: the architecture (choice key → option index) of every training forward pass, in order; on
  rank 1 the global generator is a draw ahead at every sample, so equal lists on both ranks show that the
  samples do not come from the global generator;
- ``writes``: the files the rank wrote through the checkpoint, metrics and arch.json writers;
- ``no_grad`` / ``no_grad_moved``: after the rank's first weight step, the weight parameters without a
  gradient, and whether any of them changed in that step;
- ``params``: every parameter of the supernet (α included) and of the criterion at the end.

``$PROBE_KILL_EPOCH=e``: rank 1 sends itself SIGKILL when epoch ``e`` (0-based) begins.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

from dcsnas.cli import main
from dcsnas.data.sampler import IdentityBatchSampler
from dcsnas.engine import loop as engine
from dcsnas.engine.rundir import RunDir
from dcsnas.nas import search
from dcsnas.nas.distribution import ArchDistribution

RANK = int(os.environ.get("RANK", "0"))
RECORD: dict = {"batches": {}, "archs": [], "writes": [], "no_grad": None, "no_grad_moved": None}


def _recording(original, record):
    def wrapper(*args, **kwargs):
        record(*args, **kwargs)
        return original(*args, **kwargs)
    return wrapper


def _sampler_iter(original):
    def wrapper(self):
        batches = list(original(self))
        RECORD["batches"].setdefault(f"{self.seed}/{self.epoch}", []).extend(batches)
        return iter(batches)
    return wrapper


def _sample(original):
    def wrapper(self, tau, hard, training):
        if RANK == 1:  # rank 1's global generator one draw ahead for this sample (its state is put back after)
            state = torch.get_rng_state()
            torch.rand(1)
            weights = original(self, tau, hard, training)
            torch.set_rng_state(state)
        else:
            weights = original(self, tau, hard, training)
        if training:
            RECORD["archs"].append({k: int(w.argmax()) for k, w in weights.items()})
        return weights
    return wrapper


def _weight_step(original):
    def wrapper(forward, *args):
        step = original(forward, *args)
        named = dict(getattr(forward, "module", forward).weights.named_parameters())  # DDP(WeightModules)

        def recording(images, pids):
            first = RECORD["no_grad"] is None
            before = {n: p.detach().clone() for n, p in named.items()} if first else {}
            result = step(images, pids)
            if first:
                RECORD["no_grad"] = sorted(n for n, p in named.items() if p.grad is None)
                RECORD["no_grad_moved"] = any(not torch.equal(named[n], before[n]) for n in RECORD["no_grad"])
            return result
        return recording
    return wrapper


def _begin_epoch(original):
    def wrapper(self, epoch):
        if RANK == 1 and str(epoch) == os.environ.get("PROBE_KILL_EPOCH"):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, epoch)
    return wrapper


def _fit(original):
    def wrapper(self):
        metrics = original(self)
        params = {f"model.{n}": p.detach().clone() for n, p in self.model.named_parameters()}
        params.update({f"criterion.{n}": p.detach().clone() for n, p in self.training.criterion.named_parameters()})
        torch.save({**RECORD, "params": params}, Path(os.environ["PROBE_DIR"]) / f"rank{RANK}.pt")
        return metrics
    return wrapper


def _noting(kind):
    return lambda *args, **kwargs: RECORD["writes"].append(kind)


IdentityBatchSampler.__iter__ = _sampler_iter(IdentityBatchSampler.__iter__)
ArchDistribution.sample = _sample(ArchDistribution.sample)
search.weight_step = _weight_step(search.weight_step)
search.Searcher.begin_epoch = _begin_epoch(search.Searcher.begin_epoch)
search.Searcher.fit = _fit(search.Searcher.fit)
search.write_arch = _recording(search.write_arch, _noting("arch.json"))
engine.save_checkpoint = _recording(engine.save_checkpoint, lambda path, **_: RECORD["writes"].append(Path(path).name))
RunDir.write_metrics = _recording(RunDir.write_metrics, _noting("metrics.json"))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
