"""The cost of a model's forward pass: parameters, FLOPs, latency and peak memory, on CPU or CUDA.

Everything is measured in eval mode, without gradients, in fp32, on a random input of ``input_shape``
(``[batch, 3, height, width]``):

- FLOPs: :func:`dcsnas.utils.flops.count_flops` (one multiply-add = 2 FLOPs), for the whole batch;
- latency: median (and minimum) wall time of ``repeats`` forwards after ``warmup`` untimed ones, in ms
  (CUDA: synchronised), in this process; several models are timed in interleaved rounds;
- peak memory: one forward after the warm-up, above what was in use before it (weights and input
  excluded), in MiB, with :func:`dcsnas.bench.memory.peak_memory`. On CUDA in this process. On CPU the
  resident set only shows it when malloc hands freed blocks back to the system, which slows allocations
  (latency 2-5× on a MobileNetV2), so the models go to one fresh worker process (a ``multiprocessing``
  spawn-context process that receives them through its pipe: no file is written or loaded) started with
  :func:`dcsnas.bench.memory.memory_env` at a 4 KiB threshold: it measures memory only, and small
  activations stay visible. (Spawning re-imports the caller's main script: it must run its work under
  ``if __name__ == "__main__":``, as every script of this repository does.)
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import statistics
import time
import traceback
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from dcsnas.bench.memory import METHODS, memory_env, peak_memory
from dcsnas.losses.criterion import LossConfig, ReIDCriterion
from dcsnas.utils.flops import count_flops, count_inference_params, count_params, output_tensors

ROUNDS = 5  # interleaved latency rounds over the models of one profile_models call


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _forward_peak_mb(model: nn.Module, input_shape: Sequence[int], device: torch.device,
                     warmup: int) -> Optional[float]:
    """Peak memory (MiB) of one forward of ``model`` (already on ``device``, in eval mode) after ``warmup``."""
    x = torch.randn(tuple(input_shape), device=device)
    for _ in range(warmup):
        model(x)
    _sync(device)
    with peak_memory(device) as peak:
        model(x)
    return peak.mb

def _train_step_peak_mb(model: nn.Module, input_shape: Sequence[int], device: torch.device,
                        warmup: int) -> Optional[float]:
    """Peak memory (MiB) of one training-mode forward and backward of ``model`` (the loss: the sum of every
    output tensor) after ``warmup`` such steps, gradients cleared before each; the model is left in eval mode."""
    x = torch.randn(tuple(input_shape), device=device)
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        sum(t.float().sum() for t in output_tensors(model(x))).backward()

    for _ in range(warmup):
        step()
    model.zero_grad(set_to_none=True)
    _sync(device)
    with peak_memory(device) as peak:
        step()
    model.zero_grad(set_to_none=True)
    model.eval()
    return peak.mb


@torch.no_grad()
def _latencies_ms(models: Sequence[nn.Module], input_shapes: Sequence[Sequence[int]], device: torch.device,
                  repeats: int, warmup: int) -> list[list[float]]:
    """Forward times (ms) of each model, ``repeats`` each, measured in up to :data:`ROUNDS` interleaved rounds
    (each opened by one untimed forward per model), so that a burst of load from other processes spreads
    over all the models instead of falling on one."""
    inputs = [torch.randn(tuple(shape), device=device) for shape in input_shapes]
    for model, x in zip(models, inputs):
        for _ in range(warmup):
            model(x)
    _sync(device)
    times: list[list[float]] = [[] for _ in models]
    rounds = min(ROUNDS, repeats)
    for r in range(rounds):
        for model, x, into in zip(models, inputs, times):
            model(x)
            _sync(device)
            for _ in range(repeats // rounds + (r < repeats % rounds)):
                start = time.perf_counter()
                model(x)
                _sync(device)
                into.append((time.perf_counter() - start) * 1000)
    return times


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` is ``env`` inside the block (a spawned process starts with the parent's environment)."""
    previous = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(previous)


def _memory_worker(conn, input_shapes: Sequence[Sequence[int]], warmup: int, threads: int,
                   train: bool = False) -> None:
    """The worker process: receives the pickled models through ``conn`` and sends back the peak (MiB, or
    None) of each, or ``("error", traceback)``; ``train``: also the peak of a training step."""
    try:
        torch.set_num_threads(threads)
        models = pickle.loads(conn.recv_bytes())  # written by this package's parent process, not a file
        cpu = torch.device("cpu")
        conn.send(("ok", [(_forward_peak_mb(model.eval(), shape, cpu, warmup),
                           _train_step_peak_mb(model, shape, cpu, warmup) if train else None)
                          for model, shape in zip(models, input_shapes)]))
    except BaseException:  # the parent raises it with the worker's traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _cpu_peaks_in_worker(models: Sequence[nn.Module], input_shapes: Sequence[Sequence[int]], warmup: int,
                         threads: int, train: bool = False) -> list[tuple[Optional[float], Optional[float]]]:
    """Peak memory of each model in a fresh spawned process, (forward, training step or None). The models
    travel as plain pickle bytes (not as the process's arguments: those would move every tensor into shared
    memory, /dev/shm, in place)."""
    env = memory_env(mmap_threshold=4096)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads stall a shared machine
    payload = pickle.dumps(list(models))
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    worker = context.Process(target=_memory_worker,
                             args=(child, [list(s) for s in input_shapes], warmup, threads, train), daemon=True)
    with _environment(env):
        worker.start()
    child.close()
    try:
        parent.send_bytes(payload)
        status, value = parent.recv()
    except (EOFError, BrokenPipeError):
        status, value = "error", "it exited before answering"
    finally:
        parent.close()
        worker.join()
    if status != "ok" and worker.exitcode:
        value = f"{value} (exit code {worker.exitcode})"
    if status != "ok":
        raise RuntimeError(f"the memory worker failed:\n{value[-4000:]}")
    return value


def profile_models(models: Sequence[nn.Module], input_shapes: Sequence[Sequence[int]],
                   device: torch.device | str = "cpu", repeats: int = 20, warmup: int = 3,
                   latency: bool = True, train_memory: bool = False) -> list[dict[str, Any]]:
    """:func:`profile_model` of several models; on CPU their memory is measured in one worker process.
    ``train_memory``: also ``train_peak_memory_mb``, the peak of one training-mode forward and backward (the
    loss: the sum of the outputs) above the weights and input, gradients included."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if len(models) != len(input_shapes):
        raise ValueError(f"{len(models)} models but {len(input_shapes)} input shapes")
    device = torch.device(device)
    modes = [m.training for m in models]
    for model in models:
        model.to(device).eval()
    latencies = _latencies_ms(models, input_shapes, device, repeats, warmup) if latency else [[] for _ in models]
    results = []
    for model, shape, times in zip(models, input_shapes, latencies):
        weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        results.append({
            "params": count_inference_params(model, shape, device), "params_total": count_params(model),
            "flops": count_flops(model, tuple(shape), device),
            "weights_mb": weights / 2**20,
            "latency_ms": statistics.median(times) if times else None,
            "latency_min_ms": min(times) if times else None,
            "input_shape": [int(s) for s in shape], "device": str(device), "threads": torch.get_num_threads(),
            "repeats": repeats if latency else 0, "warmup": warmup, "memory_method": METHODS.get(device.type),
        })
    if device.type == "cpu":
        peaks = _cpu_peaks_in_worker(models, input_shapes, warmup, torch.get_num_threads(), train_memory)
    else:
        peaks = [(_forward_peak_mb(model, shape, device, warmup),
                  _train_step_peak_mb(model, shape, device, warmup) if train_memory else None)
                 for model, shape in zip(models, input_shapes)]
    for model, mode, result, (peak, train_peak) in zip(models, modes, results, peaks):
        result["peak_memory_mb"] = peak
        if train_memory:
            result["train_peak_memory_mb"] = train_peak
        model.train(mode)
    return results


def profile_model(model: nn.Module, input_shape: Sequence[int], device: torch.device | str = "cpu",
                  repeats: int = 20, warmup: int = 3, latency: bool = True) -> dict[str, Any]:
    """Cost of ``model`` (moved to ``device``; its train/eval mode is restored afterwards).

    Returns ``params`` (those the inference forward uses: :func:`count_inference_params`, the count dcsnas
    reports everywhere), ``params_total`` (all, with training-only classifiers), ``flops`` (one forward
    of the whole ``input_shape`` batch), ``weights_mb`` (MiB of parameters and buffers), ``peak_memory_mb``
    (MiB of one forward above the weights and input; ``None`` where it cannot be measured), ``latency_ms``
    and ``latency_min_ms`` (median and minimum over ``repeats`` forwards, ms; ``None`` with
    ``latency=False``), and the settings: ``input_shape``, ``device``, ``threads`` (torch CPU threads),
    ``repeats`` (0 without latency), ``warmup``, ``memory_method``.
    """
    return profile_models([model], [input_shape], device, repeats, warmup, latency)[0]


def train_throughput(model: nn.Module, num_classes: int, input_shape: Sequence[int], device: torch.device | str,
                     steps: int = 10, warmup: int = 2, amp_dtype: torch.dtype | None = None,
                     channels_last: bool = False) -> dict[str, Any]:
    """Images/s of full training steps (forward, CE + triplet loss, backward, Adam step) on random images with
    P×K-style labels (4 images per identity). CUDA: also the peak allocated memory of a step (MiB)."""
    device = torch.device(device)
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = ReIDCriterion(LossConfig(), num_classes, model.embedding_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    batch = input_shape[0]
    images = torch.randn(*input_shape, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = (torch.arange(batch, device=device) // 4) % num_classes

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        loss = criterion(outputs, labels)["total"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        step()
        times.append(time.perf_counter() - tic)
    step_s = statistics.median(times)
    return {"images_per_s": batch / step_s, "step_ms": step_s * 1000, "batch": batch,
            "input_shape": [int(s) for s in input_shape], "device": str(device),
            "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
