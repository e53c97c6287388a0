"""Benchmark: NNI's DARTS and GumbelDARTS supernets (:mod:`dcsnas.nni`) against the DCS-DNAS
supernet in hard and soft mode, side by side on the same space and the same P×K batch. Prints JSON.

Per case: the time of a weight step (forward, Re-ID loss, backward, SGD step on the weights) and of a
search step (an architecture step — the same on another batch, Adam on the architecture parameters with
DARTS's settings — then a weight step), median over ``--steps`` after one warm-up search step, and the peak
memory of one search step. The loops are identical; only the supernet differs: ours (Gumbel-softmax
sample at τ = 5, one path in hard mode, all candidates weighted in soft mode) or the model space mutated by
NNI's strategy (all candidates weighted by softmax(α), or by a Gumbel-softmax sample at τ = 1). Lightning's
own per-step overhead in a real NNI search is not included.

Every case runs in two fresh processes (``--case JSON``), one for the times (weight and search steps
alternating, so that a burst of load from other processes falls on both) and one for the memory. Peak
memory as in :mod:`dcsnas.bench.attention`: on CPU the peak resident set of the step (``VmHWM`` reset
through ``/proc/self/clear_refs`` just before it) minus the resident set before it, with glibc's
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the resident set (only in the memory process:
it makes every large allocation fault in fresh pages, which would slow the timed steps); on CUDA
``max_memory_allocated`` during the step minus the memory allocated before it.

    python experiments/bench/search_nni.py                      # tiny space, 64x32, batch 4x4 (CPU, seconds)
    python experiments/bench/search_nni.py --space search_spaces/mbv2_reid.yaml --height 128 --width 64 --p 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = ("dcs_hard", "dcs_soft", "nni_darts", "nni_gumbel_darts")


def _supernet(case: dict, classes: int):
    """(model, weight parameters, architecture parameters) of one case."""
    if case["kind"].startswith("dcs_"):
        from dcsnas.nas.space import load_space
        from dcsnas.nas.supernet import SuperNet

        model = SuperNet(load_space(case["space"]), classes, mode=case["kind"][4:])
        return model, list(model.weight_modules().parameters()), list(model.arch.parameters())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nni.nas.strategy import DARTS, GumbelDARTS

        from dcsnas.config import read_yaml
        from dcsnas.nni.space import ReIDSpace

        strategy = DARTS() if case["kind"] == "nni_darts" else GumbelDARTS()
        model = strategy.mutate_model(ReIDSpace(read_yaml(case["space"]), classes))
    arch = {id(p): p for m in model.modules() if hasattr(m, "arch_parameters") for p in m.arch_parameters()}
    weights = [p for p in model.parameters() if id(p) not in arch]
    return model, weights, list(arch.values())


def measure(case: dict) -> dict:
    import torch

    from dcsnas.bench.memory import peak_memory
    from dcsnas.engine.device import resolve_device
    from dcsnas.losses.criterion import LossConfig, ReIDCriterion

    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    device = resolve_device(case["device"])
    p, k = case["pk"]
    model, weights, arch = _supernet(case, 2 * p)
    model = model.to(device).train()
    criterion = ReIDCriterion(LossConfig(), 2 * p, model.embedding_dim).to(device)
    weight_optimizer = torch.optim.SGD(weights, lr=0.01, momentum=0.9)
    arch_optimizer = torch.optim.Adam(arch, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    batches = [torch.randn(p * k, 3, case["height"], case["width"], device=device) for _ in range(2)]
    labels = torch.arange(p, device=device).repeat_interleave(k)
    cuda = device.type == "cuda"

    def step(images, optimizer) -> None:
        loss = criterion(model(images), labels)["total"]
        model.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def search_step() -> None:
        step(batches[1], arch_optimizer)
        step(batches[0], weight_optimizer)

    def timed(fn) -> float:
        tic = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        return (time.perf_counter() - tic) * 1000

    search_step()
    if case["measure"] == "time":
        times = [(timed(lambda: step(batches[0], weight_optimizer)), timed(search_step)) for _ in range(case["steps"])]
        weight_times, search_times = zip(*times)
        return {"weight_step_ms": statistics.median(weight_times), "search_step_ms": statistics.median(search_times),
                "search_step_ms_min": min(search_times), "params_m": sum(p.numel() for p in weights) / 1e6,
                "arch_params": sum(p.numel() for p in arch)}
    with peak_memory(device) as peak:
        search_step()
    return {"peak_mb": peak.mb}


def _run(case: dict) -> dict:
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "65536"} if case["measure"] == "memory" else {})}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"benchmark case {case['kind']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/tiny.yaml")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--p", type=int, default=4, help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="images per identity")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        result = measure(json.loads(args.case))
        print(json.dumps(result))
        return result
    common = {"space": args.space, "height": args.height, "width": args.width, "pk": (args.p, args.k),
              "steps": args.steps, "device": args.device, "threads": args.threads}
    cases = {kind: {**_run({**common, "kind": kind, "measure": "time"}),
                    **_run({**common, "kind": kind, "measure": "memory"})} for kind in CASES}
    base = cases["dcs_hard"]["search_step_ms"]
    result = {"space": args.space, "input": [args.height, args.width], "batch": args.p * args.k,
              "device": args.device, "threads": args.threads, "steps": args.steps, "cases": cases,
              "search_step_over_dcs_hard": {kind: c["search_step_ms"] / base for kind, c in cases.items()},
              "memory_method": "CPU: peak resident set of one search step (VmHWM reset via /proc/self/clear_refs) "
                               "minus the resident set before it, fresh process per case, "
                               "MALLOC_MMAP_THRESHOLD_=65536; CUDA: max_memory_allocated minus allocated before",
              "time_method": "median over --steps of alternating weight and search steps after one warm-up "
                             "search step, fresh process per case, default malloc"}
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
