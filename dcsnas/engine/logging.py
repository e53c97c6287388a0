"""Logging: TensorBoard scalars/images/text (progress bars: :mod:`dcsnas.utils.progress`).

TensorBoard is imported only when a :class:`RunLogger` is created, so importing dcsnas stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RunLogger:
    """Scalars, images and text to TensorBoard (``<run>/tb``); a no-op on non-main ranks."""

    def __init__(self, log_dir: str | Path, enabled: bool = True):
        self.enabled = enabled
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            self._writer.add_scalar(f"{prefix}{key}", float(value), step)

    def image(self, tag: str, image_chw: Any, step: int) -> None:
        """``image_chw``: float tensor or array [3, H, W] in [0, 1]."""
        if self._writer is not None:
            self._writer.add_image(tag, image_chw, step)

    def figure(self, tag: str, fig: Any, step: int) -> None:
        if self._writer is not None:
            self._writer.add_figure(tag, fig, step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self._writer is not None:
            self._writer.add_text(tag, text, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
