"""Progress bars: tqdm on stderr, off for scripts (``--no-progress``), non-main DDP ranks and a stderr that is
no terminal (a redirected job log would fill with bar frames)."""

from __future__ import annotations

import sys
from typing import Any, Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool = True,
             **kwargs: Any) -> Iterable[T]:
    """A tqdm progress bar on stderr; ``enabled=False`` (or a non-main DDP rank) or a stderr that is no terminal
    gives the bare iterable."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, file=sys.stderr, leave=False, **kwargs)
