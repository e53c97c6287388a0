"""CNN backbones as ordered named stages, so attention modules can be inserted after any stage.

A backbone is a :class:`Backbone`: ``stages`` (an ``nn.ModuleDict`` run in order) and the channel count
after each stage. Built from torchvision's ResNet-50 and MobileNetV2, with the last stride set to 1 as
usual for Re-ID (a 256×128 input gives a 16×8 final map instead of 8×4). By name:
``create_backbone("mobilenetv2", width_mult=0.5)``; registry ``BACKBONES``
(:class:`~dcsnas.utils.registry.Registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights, mobilenet_v2
from torchvision.models import resnet50 as tv_resnet50

from dcsnas.errors import ConfigError
from dcsnas.utils.registry import Registry

BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")


class Backbone(nn.Module):
    """Named stages run in order. ``stage_channels[name]`` is the channel count after stage ``name``;
    ``stage_strides[name]`` its total stride relative to the input."""

    def __init__(self, stages: dict[str, nn.Module], stage_channels: dict[str, int], stage_strides: dict[str, int]):
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.stage_channels = dict(stage_channels)
        self.stage_strides = dict(stage_strides)

    @property
    def out_channels(self) -> int:
        return self.stage_channels[next(reversed(self.stage_channels))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return x


def _load_weights(builder: Callable, weights_enum, pretrained: bool, name: str) -> nn.Module:
    if not pretrained:
        return builder(weights=None)
    weights = weights_enum.DEFAULT
    try:
        return builder(weights=weights)
    except (OSError, RuntimeError) as exc:  # no network and nothing in the torch hub cache
        raise ConfigError(
            f"model.pretrained=true: the ImageNet weights of {name} ({weights.url}) are not in the torch cache and "
            f"cannot be downloaded ({type(exc).__name__}); put the file in $TORCH_HOME/hub/checkpoints "
            "or set model.pretrained=false"
        ) from None


@BACKBONES.register("resnet50")
def resnet50(pretrained: bool = False, last_stride: int = 1) -> Backbone:
    """torchvision ResNet-50: stages stem (stride 4, 64 ch), layer1 (4, 256), layer2 (8, 512),
    layer3 (16, 1024), layer4 (16 or 32, 2048)."""
    net = _load_weights(tv_resnet50, ResNet50_Weights, pretrained, "resnet50")
    if last_stride not in (1, 2):
        raise ConfigError(f"model.last_stride = {last_stride}; allowed: 1, 2")
    net.layer4[0].conv2.stride = (last_stride, last_stride)
    net.layer4[0].downsample[0].stride = (last_stride, last_stride)
    stages = {
        "stem": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        "layer1": net.layer1, "layer2": net.layer2, "layer3": net.layer3, "layer4": net.layer4,
    }
    channels = {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    strides = {"stem": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 16 * last_stride}
    return Backbone(stages, channels, strides)


@BACKBONES.register("mobilenetv2")
def mobilenetv2(pretrained: bool = False, last_stride: int = 1, width_mult: float = 1.0) -> Backbone:
    """torchvision MobileNetV2 split by resolution: stem (stride 2), stage1 (4), stage2 (8), stage3 (16),
    stage4 (16 or 32, ending with the 1×1 conv to 1280·max(1, width_mult) channels)."""
    if last_stride not in (1, 2):
        raise ConfigError(f"model.last_stride = {last_stride}; allowed: 1, 2")
    if pretrained and width_mult != 1.0:
        raise ConfigError(f"model.width_mult = {width_mult}: ImageNet weights exist only for width_mult 1.0")
    if pretrained:
        net = _load_weights(mobilenet_v2, MobileNet_V2_Weights, True, "mobilenetv2")
    else:
        net = mobilenet_v2(weights=None, width_mult=width_mult)
    f = net.features
    f[14].conv[1][0].stride = (last_stride, last_stride)  # depthwise conv of the first stride-2 block of stage4
    bounds = {"stem": (0, 2), "stage1": (2, 4), "stage2": (4, 7), "stage3": (7, 14), "stage4": (14, 19)}
    stages = {name: nn.Sequential(*f[a:b]) for name, (a, b) in bounds.items()}
    channels = {name: _out_channels(stage) for name, stage in stages.items()}
    strides = {"stem": 2, "stage1": 4, "stage2": 8, "stage3": 16, "stage4": 16 * last_stride}
    return Backbone(stages, channels, strides)


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def create_backbone(name: str, context: str = "model.backbone", extra: tuple[str, ...] = (),
                    **options: Any) -> Backbone:
    """The backbone ``name`` with its keyword ``options`` (``pretrained``, ``last_stride``, MobileNetV2's
    ``width_mult``). Unknown names or options: :class:`ConfigError` naming ``context`` and listing the
    names (``extra``: names the caller builds itself, listed too)."""
    return BACKBONES.create(name, context, extra=extra, **options)
