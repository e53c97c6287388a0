"""The DCS-DNAS supernet: a :class:`~dcsnas.models.builder.ReIDModel` whose backbone stages hold mixed ops.

Built from the same blocks as the fixed and derived networks (:mod:`dcsnas.models.blocks`, ResNet-50 of
:mod:`dcsnas.models.backbones`, attentions of :mod:`dcsnas.attention`), with the same heads, so the same
criterion (:class:`~dcsnas.losses.criterion.ReIDCriterion`) and IB bound train it. Every forward pass
first draws the weights of all choices from ``arch`` (Gumbel-softmax at temperature ``tau``; argmax in
evaluation; the one-hot weights of a given architecture inside :meth:`SuperNet.fixed_architecture`),
unless the caller passes them (``supernet(x, weights, single_path)``), then runs the stages, which hand
the weights to their mixed ops as arguments (:class:`SuperStage`). DCS attentions among the candidates keep
their gates, so the engine's DCS temperature schedule applies to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from torch import Tensor, nn

from dcsnas.models.arch import CONV_HEAD, STEM
from dcsnas.models.backbones import Backbone, resnet50
from dcsnas.models.blocks import conv_head, stem
from dcsnas.models.builder import ReIDModel
from dcsnas.models.heads import create_head
from dcsnas.models.skeleton import Part, assemble
from dcsnas.nas.distribution import ArchDistribution
from dcsnas.nas.ops import ArchWeights, MixedAttention, MixedBlock
from dcsnas.nas.space import Choice, MobileNetV2Space, SearchSpace

Mode = Literal["soft", "hard"]


class SuperStage(nn.Sequential):
    """A supernet stage: its modules in order; ``forward(x, weights, single_path)`` passes the architecture
    weights to the mixed ops (:mod:`dcsnas.nas.ops`), plain modules (a ResNet layer) get ``x`` alone. A
    ``Sequential`` so that the state-dict keys are those of the modules' positions."""

    def forward(self, x: Tensor, weights: ArchWeights, single_path: bool) -> Tensor:
        for module in self:
            x = module(x, weights, single_path) if isinstance(module, (MixedBlock, MixedAttention)) else module(x)
        return x


def _widest(width: Choice | int) -> int:
    return width if isinstance(width, int) else max(width.options)


def _super_module(part: Part) -> nn.Module:
    """The supernet module of one part of a mobilenetv2 space (widths: the widest, masked by the choices)."""
    if part.kind == "stem":
        return stem(_widest(part.width_out), part.stride)
    if part.kind == "block":
        return MixedBlock(part.payload, part.width_in, part.width_out, part.stride)
    if part.kind == "attention":
        return MixedAttention(part.payload, list(part.width_out.options), part.width_out.key)
    return conv_head(_widest(part.width_in), part.width_out)


def super_backbone(space: SearchSpace) -> Backbone:
    """The supernet's stages for ``space``: :class:`SuperStage` where a stage holds a choice."""
    if isinstance(space, MobileNetV2Space):
        return assemble(space.parts(), _super_module, _widest, SuperStage)
    net = resnet50(space.pretrained, space.last_stride)
    searched = {s.name: i for i, s in enumerate(space.stages)}
    stages = {}
    for name, module in net.stages.items():
        if name in searched:
            attention = MixedAttention(space.attention_choice(searched[name]), [net.stage_channels[name]], None)
            module = SuperStage(module, attention)
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

    ``forward(x, weights=None, single_path=None)``: the outputs of :class:`~dcsnas.models.builder.ReIDModel`
    (training dict, or the embedding in evaluation) on the architecture ``weights`` (choice key → ``[n]``;
    ``None``: :meth:`sample_weights`); ``single_path`` (``None``: hard mode or evaluation) runs only the
    selected candidates of one-hot weights. The training dict carries the weights it ran on as
    ``arch_weights`` (the search loop's cost term reads them).

    :func:`child_state_dict` gives the derived network of an architecture the supernet's weights of its path.
    """

    def __init__(self, space: SearchSpace, num_classes: int, head: str = "bnneck", mode: Mode = "hard",
                 tau: float = 5.0):
        backbone = super_backbone(space)
        super().__init__(backbone, create_head(head, backbone.out_channels, num_classes), {}, {})
        self.space = space
        self.arch = ArchDistribution(space.choices())
        self.mode, self.tau = mode, tau
        self.fixed: dict[str, int] | None = None

    @contextmanager
    def fixed_architecture(self, indices: dict[str, int]) -> Iterator[SuperNet]:
        """Inside the ``with`` block every forward pass (training or evaluation mode) runs the single path of
        the architecture ``indices`` (choice key → option index; fixed choices may be left out) instead of
        a sample of α, which gets no gradient. Errors (:class:`~dcsnas.errors.ConfigError`) name a bad key
        or index."""
        self.arch.one_hot(indices)
        previous, self.fixed = self.fixed, dict(indices)
        try:
            yield self
        finally:
            self.fixed = previous

    def weight_modules(self) -> nn.ModuleDict:
        """The network weights (backbone, head), without α; parameter names as in the model."""
        return nn.ModuleDict({"backbone": self.backbone, "head": self.head})

    def sample_weights(self) -> tuple[dict[str, Tensor], bool]:
        """The architecture weights of a forward pass and whether they are one-hot: those of the fixed
        architecture, else a draw from α (Gumbel-softmax at ``tau``, hard in hard mode; argmax in evaluation)."""
        if self.fixed is not None:
            return self.arch.one_hot(self.fixed), True
        weights = self.arch.sample(self.tau, hard=self.mode == "hard", training=self.training)
        return weights, self.mode == "hard" or not self.training

    def _run(self, x: Tensor, weights: ArchWeights | None = None,
             single_path: bool | None = None) -> tuple[Tensor, list[Tensor]]:
        if weights is None:
            weights, default_single = self.sample_weights()
        else:
            default_single = self.mode == "hard" or not self.training
        single = default_single if single_path is None else single_path
        for stage in self.backbone.stages.values():
            x = stage(x, weights, single) if isinstance(stage, SuperStage) else stage(x)
        return x, []

    def forward_features(self, x: Tensor, weights: ArchWeights | None = None,
                         single_path: bool | None = None) -> Tensor:
        """``x`` [B, 3, H, W] -> the final map, on the architecture ``weights`` (class docstring)."""
        return self._run(x, weights, single_path)[0]

    def forward(self, x: Tensor, weights: ArchWeights | None = None, single_path: bool | None = None):
        """The model's outputs (class docstring) on the architecture ``weights``."""
        if weights is None:
            weights, sampled_single = self.sample_weights()
            single_path = sampled_single if single_path is None else single_path
        out = self._outputs(*self._run(x, weights, single_path))
        if self.training:
            out["arch_weights"] = dict(weights)
        return out


def child_state_dict(supernet: SuperNet, child: nn.Module, indices: dict[str, int]) -> dict[str, Tensor]:
    """The state dict of ``child``, the network derived for ``indices`` (``create_model`` with backbone
    ``searched`` on its arch.json), from the supernet's shared weights: per child key the tensor of the
    chosen candidate (op; attention at the chosen width), cut to the child's shape (its leading slices,
    the channels of the width masks). With it the child computes what the supernet computes on that path
    (``tests/test_supernet.py``)."""
    source = supernet.state_dict()
    space = supernet.space
    state = {}
    for key, value in child.state_dict().items():
        parts = key.split(".")
        if isinstance(space, MobileNetV2Space):
            if parts[0] == "backbone" and parts[2] not in (STEM, CONV_HEAD):
                parts[4:4] = ["candidates", str(indices.get(f"{parts[2]}/{parts[3]}/op", 0))]
            elif parts[0] == "attentions":
                i = [s.name for s in space.stages].index(parts[1])
                width = space.width_choice(i)
                parts = ["backbone", "stages", parts[1], str(space.stages[i].blocks), "candidates",
                         str(indices[f"{parts[1]}/attention"]), "at", str(indices.get(width.key, 0)), *parts[2:]]
        else:
            if parts[0] == "backbone" and parts[2] in {s.name for s in space.stages}:
                parts.insert(3, "0")
            elif parts[0] == "attentions":
                parts = ["backbone", "stages", parts[1], "1", "candidates", str(indices[f"{parts[1]}/attention"]),
                         "at", "0", *parts[2:]]
        state[key] = source[".".join(parts)][tuple(slice(0, n) for n in value.shape)]
    return state
