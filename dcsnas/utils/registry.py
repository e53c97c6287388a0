"""Named builders: the one registry style of attentions, backbones, heads and data sets.

``HEADS = Registry("head")``; ``@HEADS.register("pcb")`` on a class or function adds it under that name;
``HEADS.get(name, "model.head")`` returns it or raises :class:`~dcsnas.errors.ConfigError`
``"<context> = '<name>': expected one of 'a', 'b', ..."`` (a name comes from the user's config or command
line, so the CLI prints the error as one line); ``HEADS.create(name, "model.head", *args, **options)`` calls
it after checking ``options`` against its keyword parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from dcsnas.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Builders of one ``kind`` by name, in registration order; read like a ``dict`` (``in``, ``[]``, ``len``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator adding its target under ``name`` (a name registered twice is a programming error)."""
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str, context: str, extra: Iterable[str] = ()) -> T:
        """The entry ``name``; an unknown one raises :class:`ConfigError` naming ``context``, the value and every name
        (``extra``: names the caller handles itself, listed too)."""
        if name not in self._entries:
            allowed = ", ".join(repr(n) for n in [*self._entries, *extra])
            raise ConfigError(f"{context} = {name!r}: expected one of {allowed}")
        return self._entries[name]

    def create(self, name: str, context: str, *args: Any, extra: Iterable[str] = (), **options: Any) -> Any:
        """``get(name, context, extra)(*args, **options)``; an option that is no keyword parameter of the
        entry (after the positional ``args``) raises :class:`ConfigError` listing the allowed ones."""
        entry = self.get(name, context, extra)
        params = list(inspect.signature(entry).parameters.values())[len(args):]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            allowed = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            unknown = [k for k in options if k not in allowed]
            if unknown:
                raise ConfigError(f"{self.kind} {name!r} has no option {unknown[0]!r}; "
                                 f"allowed: {', '.join(allowed) or 'none'}")
        return entry(*args, **options)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
