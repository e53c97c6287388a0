"""FLOPs and parameter counts (one multiply-add = 2 FLOPs). The parameter count a network reports
everywhere (start-up block, compare, bench, demo) is :func:`count_inference_params`: the inference network's.

:func:`count_flops` runs one forward under ``torch.utils.flop_counter.FlopCounterMode``, which counts the
matrix products and convolutions of the network (biases, normalisations and elementwise work are free).
Fused kernels are miscounted by that counter, and differently per device and torch version (the fused
CPU attention kernel counts 0, the ``meta`` fallback counts what it would compute), so a module that
defines ``forward_flops(*args, **kwargs)`` reports its FLOPs by that analytic formula instead: it receives
the arguments of its ``forward`` with every tensor replaced by its shape, and whatever the counter saw
inside the module is discarded. The count is then the same on CPU, CUDA and ``meta`` and on every torch.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _shapes(value: Any) -> Any:
    """``value`` with every tensor replaced by its shape (inside tuples and lists too)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return type(value)(_shapes(v) for v in value)
    return value


class _FormulaCounter:
    """Hooks that replace the counter's count inside modules with a ``forward_flops`` by their formula.

    Only the outermost such module on the call stack counts (a formula covers what it calls)."""

    def __init__(self, model: nn.Module, counter: FlopCounterMode) -> None:
        self.counter, self.depth, self.start, self.formula, self.discarded = counter, 0, 0, 0, 0
        self.hooks = []
        for module in model.modules():
            if callable(getattr(module, "forward_flops", None)):
                self.hooks.append(module.register_forward_pre_hook(self._enter, with_kwargs=True))
                self.hooks.append(module.register_forward_hook(self._exit))

    def _enter(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.depth == 0:
            self.start = self.counter.get_total_flops()
            self.formula += int(module.forward_flops(*_shapes(args), **_shapes(kwargs)))
        self.depth += 1

    def _exit(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.discarded += self.counter.get_total_flops() - self.start

    def total(self) -> int:
        return int(self.counter.get_total_flops()) - self.discarded + self.formula

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> int:
    """Forward FLOPs of ``model`` in eval mode on one zero input of ``input_shape`` (e.g. ``(1, 3, 256, 128)``);
    modules with ``forward_flops`` count by their formula (module docstring)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    formulas = _FormulaCounter(model, counter)
    try:
        with counter:
            model(torch.zeros(input_shape, device=device))
    finally:
        formulas.remove()
        model.train(was_training)
    return formulas.total()


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, or dicts, lists and tuples of them), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in output_tensors(item)]
    return []


def count_inference_params(model: nn.Module, input_shape: Sequence[int], device: torch.device | str = "cpu") -> int:
    """Parameters that ``model``'s eval-mode forward uses (a Re-ID model's identity classifiers and
    deep-supervision branches are not used): those of every module it calls, and those its output depends
    on through autograd (weights read by a functional call). The model's mode and ``requires_grad`` flags
    are restored; ``.grad`` is left untouched."""
    params = list(model.parameters())
    flags, was_training = [p.requires_grad for p in params], model.training
    called: set[int] = set()
    hooks = [m.register_forward_pre_hook(lambda module, args: called.add(id(module))) for m in model.modules()]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            out = model(torch.randn(tuple(input_shape), device=device))
            outputs = [t for t in output_tensors(out) if t.requires_grad]
            grads = (torch.autograd.grad([t.float().sum() for t in outputs], params, allow_unused=True)
                     if outputs else [None] * len(params))
    finally:
        for hook in hooks:
            hook.remove()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    used = {id(p) for m in model.modules() if id(m) in called for p in m.parameters(recurse=False)}
    used |= {id(p) for p, g in zip(params, grads) if g is not None}
    return sum(p.numel() for p in params if id(p) in used)
