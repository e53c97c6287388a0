"""Images to Re-ID embeddings: :class:`FeatureExtractor` over a trained run or a file of ``dcsnas export``.

Unreadable images: a call that meets one is refused with a :class:`~dcsnas.errors.DataError` naming every
unreadable file of the call (no embedding is returned): the rows of the result are the inputs in order,
and a gallery with silently missing rows would be misaligned with its labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from dcsnas.data.transforms import TransformConfig, build_transforms
from dcsnas.engine.device import resolve_device
from dcsnas.engine.inference import load_exported, load_run_model
from dcsnas.errors import ConfigError, DataError
from dcsnas.utils.image import read_image
from dcsnas.utils.progress import progress

ImageInput = Union[str, Path, Image.Image]
MAX_BATCH = 4096  # images per forward


def _read(item: ImageInput) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    return read_image(item)  # as the data loaders read files


class FeatureExtractor:
    """Embeddings ``[N, D]`` (float32, CPU) of images, with the run's test transform (resize, normalise).

    Args:
        source: a run directory of ``dcsnas train``/``retrain`` or a file written by ``dcsnas export``
            (ONNX or TorchScript; input size and normalisation from its metadata).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint: ``last`` or ``best`` (run directories only).
        flip: average with the horizontally flipped image's embedding (default: the run's ``eval.flip``).
        batch_size: images per forward (default: the run's ``data.test_batch_size``, else 64).
        show_progress: a progress bar (default: when there is more than one batch).
        trust_torchscript: allow a TorchScript file. Loading one runs the code it holds (its dcsnas metadata
            proves nothing): set it only for a file from a source you trust; ONNX files need no trust.

    Call it on one image or a list of paths / PIL images, or on a batch: a tensor ``[N, 3, H, W]`` or an
    array ``[N, H, W, 3]`` (the image libraries' layout), uint8 in 0..255 or float in [0, 1], any size.
    """

    def __init__(self, source: Union[str, Path], device: str = "auto", checkpoint: str = "last",
                 flip: Optional[bool] = None, batch_size: Optional[int] = None,
                 show_progress: Optional[bool] = None, trust_torchscript: bool = False):
        self.device = resolve_device(device)
        path = Path(source)
        if path.is_dir():
            loaded = load_run_model(path, checkpoint, finished=False)
            self._forward = loaded.model.to(self.device)
            self.metadata = loaded.metadata
            transforms = loaded.config.data.transforms
            default_batch = loaded.config.data.test_batch_size
        else:
            self._forward, self.metadata = load_exported(path, str(self.device), trust_torchscript)
            height, width = self.metadata["input_size"]
            transforms = TransformConfig(height=height, width=width, mean=tuple(self.metadata["mean"]),
                                         std=tuple(self.metadata["std"]))
            default_batch = 64
        self.transform = build_transforms(transforms, train=False)
        self.flip = self.metadata["flip"] if flip is None else bool(flip)
        self.batch_size = default_batch if batch_size is None else batch_size
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigError(f"batch_size must be in [1, {MAX_BATCH}], got {self.batch_size}")
        self.show_progress = show_progress

    @property
    def embedding_dim(self) -> int:
        return self.metadata["embedding_dim"]

    @torch.no_grad()
    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device)
        feats = self._forward(images).float()
        if self.flip:
            feats = (feats + self._forward(images.flip(3)).float()) / 2
        return feats.cpu()

    def _batch_tensor(self, batch: Any) -> torch.Tensor:
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(np.ascontiguousarray(batch)).movedim(-1, -3)  # [.., H, W, 3] -> [.., 3, H, W]
        if batch.dim() == 3:
            batch = batch.unsqueeze(0)
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise DataError(f"expected images [N, 3, H, W] (tensor) or [N, H, W, 3] (array), got shape "
                            f"{tuple(batch.shape)}")
        if batch.dtype != torch.uint8 and not batch.is_floating_point():
            raise DataError(f"expected uint8 (0..255) or float ([0, 1]) images, got {batch.dtype}")
        return self.transform(batch.float() if batch.is_floating_point() else batch).contiguous()

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput], torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Embeddings ``[N, D]`` of ``images`` in order (see the class docstring for the inputs)."""
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        tensor_input = isinstance(images, (torch.Tensor, np.ndarray))
        n = len(images)
        starts = range(0, n, self.batch_size)
        show = len(starts) > 1 if self.show_progress is None else self.show_progress
        chunks, unreadable = [], []
        for start in progress(starts, "features", total=len(starts), enabled=show, unit="batch"):
            items = images[start:start + self.batch_size]
            if tensor_input:
                chunks.append(self._embed(self._batch_tensor(items)))
                continue
            batch = []
            for item in items:
                try:
                    batch.append(self.transform(_read(item)))
                except DataError as exc:  # missing, truncated, not an image, or out of bounds
                    unreadable.append(str(exc).removeprefix("cannot read image "))
                except (OSError, ValueError) as exc:  # a PIL image given in memory that cannot convert
                    unreadable.append(f"'{item}' ({exc})")
            if not unreadable:  # after the first failure, only read on to name every unreadable file
                chunks.append(self._embed(torch.stack(batch)))
        if unreadable:
            raise DataError(f"{len(unreadable)} of {n} image(s) cannot be read, no features computed: "
                            + "; ".join(unreadable[:10]) + ("; ..." if len(unreadable) > 10 else ""))
        if not chunks:
            return torch.empty(0, self.embedding_dim)
        return torch.cat(chunks)
