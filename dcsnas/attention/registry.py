"""Attention modules by name: ``create_attention("csalr", 256, landmarks=96, groups=2)``.

Names: ``sa``, ``csa``, ``csalr``, ``dcs`` (with ``backend="sa"|"csa"|"csalr"``). Unknown names and options
raise :class:`~dcsnas.errors.ConfigError` naming the option, its value and what is allowed.
"""

from __future__ import annotations

import inspect
from typing import Any

from dcsnas.attention.base import AttentionBlock, option_error
from dcsnas.attention.csa import CompressedSelfAttention
from dcsnas.attention.csalr import CSALRAttention
from dcsnas.attention.dcs import BACKENDS, DCSAttention
from dcsnas.attention.sa import SelfAttention
from dcsnas.errors import ConfigError

ATTENTIONS: dict[str, type[AttentionBlock]] = {
    "sa": SelfAttention,
    "csa": CompressedSelfAttention,
    "csalr": CSALRAttention,
    "dcs": DCSAttention,
}


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
    if name not in ATTENTIONS:
        raise option_error("name", name, "one of " + ", ".join(repr(n) for n in ATTENTIONS))
    backend = options.get("backend", "sa")
    allowed = attention_options(name, backend)
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(
                f"attention option '{key}' = {value!r}: no such option for '{name}'"
                f"{f' with backend {backend!r}' if name == 'dcs' else ''}; allowed: {', '.join(sorted(allowed))}"
            )
    return ATTENTIONS[name](channels, **options)
