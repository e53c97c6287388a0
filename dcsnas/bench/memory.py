"""Peak memory of a block of code, in MiB (2**20 bytes), on CPU or CUDA.

- CPU (Linux): the peak resident set of the process during the block minus the resident set before it.
  ``VmHWM`` (the resident set's high-water mark) is reset to the current resident set through
  ``/proc/self/clear_refs`` on entry and read from ``/proc/self/status`` on exit. Memory that malloc kept
  from earlier frees is reused without growing the resident set, so measure in a process started with
  :func:`memory_env`: glibc then maps every block above a threshold on its own and hands it back to the
  system when freed (this slows big allocations: time elsewhere). Resolution: Linux counts resident pages
  in per-CPU batches, so changes below a few hundred KiB may not show (a toy model can read 0).
- CUDA: ``torch.cuda.max_memory_allocated`` during the block minus ``torch.cuda.memory_allocated`` before
  it (tensors of torch's caching allocator; not the CUDA context, nor blocks cached by the allocator).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
METHODS = {
    "cpu": "peak resident set during the block (VmHWM reset via /proc/self/clear_refs) minus the resident set "
           "before it, in a process started with glibc's MALLOC_MMAP_THRESHOLD_",
    "cuda": "torch.cuda.max_memory_allocated during the block minus torch.cuda.memory_allocated before it",
}


@dataclass
class PeakMemory:
    """Filled in when the ``with`` block of :func:`peak_memory` ends. ``mb``: MiB; ``None`` where it cannot be
    measured (CPU without a writable ``/proc/self/clear_refs``: not Linux, or a restricted container; other
    device types)."""

    device: str
    mb: Optional[float] = None


def memory_env(mmap_threshold: int = 65536) -> dict[str, str]:
    """``os.environ`` plus ``MALLOC_MMAP_THRESHOLD_`` (bytes): the environment of a subprocess whose CPU memory
    is measured with :func:`peak_memory` (glibc reads it when the process starts). Blocks smaller than the
    threshold may come from malloc's cache unseen: 4096 shows even small tensors, at a higher cost per
    allocation than the default 64 KiB."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(mmap_threshold)}


def cpu_peak_supported() -> bool:
    return os.access(CLEAR_REFS, os.W_OK) and STATUS.is_file()


def status_mb(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``VmRSS``, ``VmHWM``) in MiB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{STATUS} has no {field}")


@contextmanager
def peak_memory(device: torch.device | str = "cpu") -> Iterator[PeakMemory]:
    """``with peak_memory(device) as peak: ...`` then ``peak.mb``: the peak memory of the block above what was
    in use before it (see the module docstring for the method on each device)."""
    device = torch.device(device)
    result = PeakMemory(str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result.mb = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    elif device.type == "cpu" and cpu_peak_supported():
        CLEAR_REFS.write_text("5")
        before = status_mb("VmRSS")
        yield result
        result.mb = status_mb("VmHWM") - before
    else:
        yield result
