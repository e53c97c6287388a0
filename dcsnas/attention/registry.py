"""Attention modules by name: ``create_attention("csalr", 256, landmarks=96, groups=2)``.

Names: ``sa``, ``csa``, ``csalr``, ``dcs`` (with ``backend="sa"|"csa"|"csalr"``), in the registry
``ATTENTIONS`` (:class:`~dcsnas.utils.registry.Registry`; the modules are registered here, where the registry
can import them all). Unknown names and options raise :class:`~dcsnas.errors.ConfigError` naming the option,
its value and what is allowed.
"""

from __future__ import annotations

import inspect
from typing import Any

from dcsnas.attention.base import AttentionBlock
from dcsnas.attention.csa import CompressedSelfAttention
from dcsnas.attention.csalr import CSALRAttention
from dcsnas.attention.dcs import BACKENDS, DCSAttention
from dcsnas.attention.sa import SelfAttention
from dcsnas.errors import ConfigError
from dcsnas.utils.registry import Registry

ATTENTIONS: Registry[type[AttentionBlock]] = Registry("attention")
ATTENTIONS.register("sa")(SelfAttention)
ATTENTIONS.register("csa")(CompressedSelfAttention)
ATTENTIONS.register("csalr")(CSALRAttention)
ATTENTIONS.register("dcs")(DCSAttention)


def _keyword_names(fn) -> set[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds}
    return names - {"self", "channels", "kernel"}


def attention_options(name: str, backend: str = "sa") -> set[str]:
    """The options ``create_attention(name, ...)`` accepts (for ``dcs``, those of its ``backend`` too)."""
    options = _keyword_names(AttentionBlock.__init__) | _keyword_names(ATTENTIONS[name].__init__)
    if name == "dcs" and backend in BACKENDS:
        options |= _keyword_names(BACKENDS[backend].__init__)
    return options


def create_attention(name: str, channels: int, **options: Any) -> AttentionBlock:
    """Build the attention module ``name`` for ``channels`` input channels."""
    module = ATTENTIONS.get(name, "attention option 'name'")
    backend = options.get("backend", "sa")
    allowed = attention_options(name, backend)
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(
                f"attention option '{key}' = {value!r}: no such option for '{name}'"
                f"{f' with backend {backend!r}' if name == 'dcs' else ''}; allowed: {', '.join(sorted(allowed))}"
            )
    return module(channels, **options)
