"""DDP helpers: ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK; gloo on CPU, nccl on CUDA."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj, ctx: DistContext, src: int = 0):
    """Rank ``src``'s Python object on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_object(obj, ctx: DistContext, dst: int = 0):
    """Every rank's ``obj`` as a list on rank ``dst`` (``[obj]`` in a single process, ``None`` on other ranks)."""
    if not ctx.enabled:
        return [obj]
    gathered = [None] * ctx.world_size if ctx.rank == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


def gather_strided(rows: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Undo a strided split: rank r holds the rows r, r + world_size, … of a tensor; every rank gets the whole
    tensor in its original order. ``rows`` [n_r, ...] may differ in length across ranks."""
    if not ctx.enabled:
        return rows
    size = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[:rows.shape[0]] = rows
    chunks = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(chunks, padded)
    out = rows.new_empty((sum(counts), *rows.shape[1:]))
    for rank, (chunk, count) in enumerate(zip(chunks, counts)):
        out[rank::ctx.world_size] = chunk[:count]
    return out


def broadcast_tensors(tensors: dict[str, torch.Tensor] | None, ctx: DistContext, device: torch.device,
                      src: int = 0) -> dict[str, torch.Tensor]:
    """Rank ``src``'s named tensors (e.g. a state dict) on every rank, on ``device``; other ranks pass None."""
    if not ctx.enabled:
        return tensors
    meta = broadcast_object({k: (tuple(v.shape), v.dtype) for k, v in tensors.items()} if ctx.rank == src
                            else None, ctx, src)
    out = {}
    for name, (shape, dtype) in meta.items():
        value = tensors[name].to(device) if ctx.rank == src else torch.empty(shape, dtype=dtype, device=device)
        dist.broadcast(value, src=src)
        out[name] = value
    return out


def average_gradients(params: list[torch.Tensor], ctx: DistContext) -> None:
    """Replace the ``.grad`` of ``params`` by its mean over the ranks (one all-reduce of all of them). Every
    rank must hold gradients for the same parameters (``None`` for the others): a RuntimeError on every rank
    otherwise (checked first, by an all-reduce of the ``len(params)`` flags)."""
    if not ctx.enabled or not params:
        return
    device = params[0].device
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int64, device=device)
    counts = present.clone()
    dist.all_reduce(counts)
    if not torch.equal(counts, present * ctx.world_size):
        raise RuntimeError("the ranks computed gradients for different parameters: they are out of lockstep")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    for g, mean in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(mean.view_as(g))


def all_reduce_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= ctx.world_size
    return value


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
