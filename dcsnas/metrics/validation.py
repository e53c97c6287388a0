"""Input checks shared by the metric functions: each failure is a :class:`MetricsInputError` naming the array,
its shape or dtype, and what was expected."""

from __future__ import annotations

import numpy as np
import torch

from dcsnas.errors import DcsnasError

PROTOCOLS = ("market", "cuhk03")
METRICS = ("euclidean", "cosine")


class MetricsInputError(DcsnasError):
    """Evaluation inputs are inconsistent: wrong shape or dtype, NaN or inf, no valid query."""


def as_tensor(name: str, x, expected: str) -> torch.Tensor:
    """A 2-D real feature matrix as a tensor on its own device (numpy arrays are wrapped, not copied);
    ``expected`` names its shape in messages, e.g. ``"(n_q, d)"``."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        a = np.asarray(x)
        if a.dtype.kind not in "fiu":
            raise MetricsInputError(f"{name} has dtype {a.dtype}, expected a real floating or integer dtype")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dim() != 2:
        raise MetricsInputError(f"{name} has shape {tuple(t.shape)}, expected a 2-D array {expected}")
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise MetricsInputError(f"{name} has dtype {t.dtype}, expected a real floating or integer dtype")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise MetricsInputError(f"{name} has shape {tuple(t.shape)}, expected {expected} with no zero size")
    check_finite(name, t)
    return t


def check_finite(name: str, x: torch.Tensor, row_offset: int = 0, block: int = 4096) -> None:
    """Raise if ``x`` (2-D) holds NaN or inf. A min/max per row block (NaN propagates) is the fast test."""
    if not x.dtype.is_floating_point:
        return
    for start in range(0, x.shape[0], block):
        b = x[start : start + block]
        lo, hi = torch.aminmax(b)
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            row = start + int((~torch.isfinite(b).all(dim=1)).nonzero()[0, 0]) + row_offset
            raise MetricsInputError(f"{name} contains NaN or inf (first in row {row})")


def as_labels(name: str, x, n: int, n_name: str) -> np.ndarray:
    """A 1-D integer label array of length ``n`` as int64 numpy."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.shape != (n,):
        raise MetricsInputError(f"{name} has shape {a.shape}, expected ({n_name},) = ({n},)")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise MetricsInputError(f"{name} has dtype {a.dtype}, expected an integer dtype")
    return a.astype(np.int64, copy=False)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise MetricsInputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MetricsInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
