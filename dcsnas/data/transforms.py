"""Train and test image transforms (BoT recipe, DESIGN §5) built from ``torchvision.transforms.v2``."""

from __future__ import annotations

from dataclasses import dataclass

from dcsnas.config import ranged

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TransformConfig:
    """Input size in pixels (height, width) and augmentation probabilities."""

    height: int = ranged(256, ge=1, le=4096)
    width: int = ranged(128, ge=1, le=4096)
    flip_p: float = ranged(0.5, ge=0, le=1)
    pad: int = ranged(10, ge=0, le=1024)
    erasing_p: float = ranged(0.5, ge=0, le=1)
    mean: tuple[float, ...] = ranged(IMAGENET_MEAN, ge=0, le=1, length=(3, 3))
    std: tuple[float, ...] = ranged(IMAGENET_STD, gt=0, le=1000, length=(3, 3))

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"height and width must be positive, got {self.height}×{self.width}")
        for name in ("flip_p", "erasing_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def build_transforms(cfg: TransformConfig, train: bool):
    """PIL image → normalised float tensor ``[3, height, width]``.

    Train: resize, horizontal flip, pad + random crop, normalise, random erasing (Zhong et al.; erased
    pixels set to 0, the mean after normalisation). Test: resize and normalise.
    """
    import torch
    from torchvision.transforms import v2

    size = (cfg.height, cfg.width)
    steps = [v2.ToImage(), v2.Resize(size, antialias=True)]
    if train:
        if cfg.flip_p > 0:
            steps.append(v2.RandomHorizontalFlip(cfg.flip_p))
        if cfg.pad > 0:
            steps += [v2.Pad(cfg.pad), v2.RandomCrop(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    if train and cfg.erasing_p > 0:
        steps.append(v2.RandomErasing(p=cfg.erasing_p, value=0))
    return v2.Compose(steps)
