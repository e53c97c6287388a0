"""The DCS-DNAS supernet: a :class:`~dcsnas.models.builder.ReIDModel` whose backbone stages hold mixed ops.

Built from the same blocks as the fixed and derived networks (:mod:`dcsnas.models.blocks`, ResNet-50 of
:mod:`dcsnas.models.backbones`, attentions of :mod:`dcsnas.attention`), with the same heads, so the same
criterion (:class:`~dcsnas.losses.criterion.ReIDCriterion`) and IB bound train it. Every forward pass
first draws the weights of all choices from ``arch`` (Gumbel-softmax at temperature ``tau``; argmax in
evaluation), then runs the stages. DCS attentions among the candidates keep their gates, so the engine's
DCS temperature schedule applies to them.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from dcsnas.models.backbones import Backbone, resnet50
from dcsnas.models.blocks import conv_head, stem
from dcsnas.models.builder import ReIDModel
from dcsnas.models.heads import HEADS
from dcsnas.nas.distribution import ArchDistribution
from dcsnas.nas.ops import MixedAttention, MixedBlock, Selection
from dcsnas.nas.space import CONV_HEAD, STEM, MobileNetV2Space, SearchSpace

Mode = Literal["soft", "hard"]


def super_backbone(space: SearchSpace, selection: Selection) -> Backbone:
    """The supernet's stages for ``space``; mixed ops read their weights from ``selection``."""
    if isinstance(space, MobileNetV2Space):
        stages: dict[str, nn.Module] = {STEM: stem(space.stem_channels, space.stem_stride)}
        channels, strides = {STEM: space.stem_channels}, {STEM: space.stem_stride}
        stride = space.stem_stride
        slots = list(space.blocks())
        for i, stage in enumerate(space.stages):
            width = space.width_choice(i)
            blocks = [MixedBlock(s.op, s.width_in, s.width_out, s.stride, selection) for s in slots
                      if s.stage == stage.name]
            attention = MixedAttention(space.attention_choice(i), max(stage.widths), width, selection)
            stages[stage.name] = nn.Sequential(*blocks, attention)
            stride *= stage.stride
            channels[stage.name], strides[stage.name] = max(stage.widths), stride
        stages[CONV_HEAD] = conv_head(max(space.stages[-1].widths), space.head_channels)
        channels[CONV_HEAD], strides[CONV_HEAD] = space.head_channels, stride
        return Backbone(stages, channels, strides)
    net = resnet50(space.pretrained, space.last_stride)
    searched = {s.name: i for i, s in enumerate(space.stages)}
    stages = {}
    for name, module in net.stages.items():
        if name in searched:
            attention = MixedAttention(space.attention_choice(searched[name]), net.stage_channels[name], None,
                                       selection)
            module = nn.Sequential(module, attention)
        stages[name] = module
    return Backbone(stages, net.stage_channels, net.stage_strides)


class SuperNet(ReIDModel):
    """Supernet + Re-ID head. ``arch`` holds the architecture logits α (state-dict keys ``arch.*``);
    ``weight_modules()`` is everything else, for the weight optimizer.

    Args:
        space: the search space.
        num_classes: training identities (classifier size).
        head: ``bnneck`` or ``pcb`` (:mod:`dcsnas.models.heads`).
        mode: ``soft`` (weighted sum of all candidates) or ``hard`` (one sampled path per step).
        tau: initial Gumbel-softmax temperature; the search loop anneals it.
    """

    def __init__(self, space: SearchSpace, num_classes: int, head: str = "bnneck", mode: Mode = "hard",
                 tau: float = 5.0):
        self.selection = Selection()
        backbone = super_backbone(space, self.selection)
        super().__init__(backbone, HEADS[head](backbone.out_channels, num_classes), {}, {})
        self.space = space
        self.arch = ArchDistribution(space.choices())
        self.mode, self.tau = mode, tau

    def weight_modules(self) -> nn.ModuleDict:
        """The network weights (backbone, head), without α; parameter names as in the model."""
        return nn.ModuleDict({"backbone": self.backbone, "head": self.head})

    def _run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        self.selection.single_path = self.mode == "hard" or not self.training
        self.selection.weights = self.arch.sample(self.tau, hard=self.mode == "hard", training=self.training)
        return super()._run(x)
