"""CPU thread defaults: torch's threads = the cores this process may use, OpenMP threads that sleep when idle.

OpenMP's default (active) wait policy keeps idle threads spinning; beside other busy processes that spinning
takes the cores the working threads need, and a training step becomes many times slower. The policy is
read when OpenMP starts (when torch is imported), so :func:`passive_openmp` must run before that.
"""

from __future__ import annotations

import os


def default_threads() -> int:
    """The cores this process may use (its CPU affinity; all cores where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def passive_openmp() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy; call before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
