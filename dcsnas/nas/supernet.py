"""The DCS-DNAS supernet: a :class:`~dcsnas.models.builder.ReIDModel` whose slots hold mixed modules.

Built by the space's skeleton (:data:`dcsnas.models.skeleton.SKELETONS`) from the same blocks as the fixed and
derived networks (:mod:`dcsnas.models.blocks`, ResNet-50 of :mod:`dcsnas.models.backbones`, attentions of
:mod:`dcsnas.attention`), at the same positions (blocks in ``backbone.stages``, attentions in ``attentions``),
with the same heads, so the same criterion (:class:`~dcsnas.losses.criterion.ReIDCriterion`) and IB bound
train it. Every forward pass first draws the weights of all choices from ``arch`` (Gumbel-softmax at
temperature ``tau``; argmax in evaluation; the one-hot weights of a given architecture inside
:meth:`SuperNet.fixed_architecture`), unless the caller passes them (``supernet(x, weights, single_path)``),
then runs the slots, which take the weights as arguments (:class:`~dcsnas.models.blocks.Mixed`). DCS
attentions among the candidates keep their gates, so the engine's DCS temperature schedule applies to them.
:meth:`SuperNet.child` asks every slot for its module of an architecture: the derived network with the
supernet's weights of that path.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from torch import Tensor, nn

from dcsnas.models.backbones import Backbone
from dcsnas.models.blocks import Stage, child_of, stem
from dcsnas.models.builder import ReIDModel
from dcsnas.models.heads import create_head
from dcsnas.models.skeleton import SKELETONS, Choice, Part, resolve
from dcsnas.nas.distribution import ArchDistribution
from dcsnas.nas.ops import ArchWeights, MaskedConvHead, MixedAttention, MixedBlock
from dcsnas.nas.space import SearchSpace

Mode = Literal["soft", "hard"]
OpWeights = Literal["separate", "nested"]


def _widths(width: Choice | int) -> list[int]:
    return list(width.options) if isinstance(width, Choice) else [width]


def _super_module(part: Part, op_weights: OpWeights) -> nn.Module:
    """The supernet module of one part (widths: the widest, masked by the choices)."""
    if part.kind == "stem":
        return stem(max(_widths(part.width_out)), part.stride)
    if part.kind == "block":
        return MixedBlock(part.payload, part.width_in, part.width_out, part.stride, op_weights)
    if part.kind == "attention":
        widths = _widths(part.width_out)
        return MixedAttention(part.payload, widths, part.width_out.key if len(widths) > 1 else None)
    return MaskedConvHead(part.width_in, part.width_out)


class SuperNet(ReIDModel):
    """Supernet + Re-ID head. ``arch`` holds the architecture logits α (state-dict keys ``arch.*``);
    ``weight_modules()`` is everything else, for the weight optimizer.

    Args:
        space: the search space.
        num_classes: training identities (classifier size).
        head: ``bnneck`` or ``pcb`` (:mod:`dcsnas.models.heads`).
        mode: ``soft`` (weighted sum of all candidates) or ``hard`` (one sampled path per step).
        tau: initial Gumbel-softmax temperature; the search loop anneals it.
        op_weights: ``separate`` (every op candidate its own weights) or ``nested`` (one superkernel per block,
            :class:`~dcsnas.nas.ops.MixedBlock`).

    ``forward(x, weights=None, single_path=None)``: the outputs of :class:`~dcsnas.models.builder.ReIDModel`
    on the architecture ``weights`` (choice key → ``[n]``; ``None``: :meth:`sample_weights`); in training the
    dict has ``arch_weights`` too, the weights the pass ran on (the search's cost term reads them);
    ``single_path`` (``None``: hard mode or evaluation) runs only the selected candidates of one-hot weights.
    """

    def __init__(self, space: SearchSpace, num_classes: int, head: str = "bnneck", mode: Mode = "hard",
                 tau: float = 5.0, op_weights: OpWeights = "separate"):
        skeleton = SKELETONS[space.skeleton]
        backbone, attentions = skeleton.build(space, space.parts(), lambda part: _super_module(part, op_weights),
                                              lambda w: max(_widths(w)), Stage)
        super().__init__(backbone, create_head(head, backbone.out_channels, num_classes), attentions, {})
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
        """The network weights (backbone, attentions, head), without α; parameter names as in the model."""
        return nn.ModuleDict({"backbone": self.backbone, "attentions": self.attentions, "head": self.head})

    def sample_weights(self) -> tuple[dict[str, Tensor], bool]:
        """The architecture weights of a forward pass and whether they are one-hot: those of the fixed
        architecture, else a draw from α (Gumbel-softmax at ``tau``, hard in hard mode; argmax in evaluation)."""
        if self.fixed is not None:
            return self.arch.one_hot(self.fixed), True
        weights = self.arch.sample(self.tau, hard=self.mode == "hard", training=self.training)
        return weights, self.mode == "hard" or not self.training

    def _weights(self, weights: ArchWeights | None, single_path: bool | None) -> tuple[ArchWeights, bool]:
        if weights is None:
            weights, default_single = self.sample_weights()
        else:
            default_single = self.mode == "hard" or not self.training
        return weights, default_single if single_path is None else single_path

    def forward_features(self, x: Tensor, weights: ArchWeights | None = None,
                         single_path: bool | None = None) -> Tensor:
        """``x`` [B, 3, H, W] -> the final map, on the architecture ``weights`` (class docstring)."""
        return self._run(x, *self._weights(weights, single_path))[0]

    def forward(self, x: Tensor, weights: ArchWeights | None = None, single_path: bool | None = None):
        """The model's outputs (class docstring) on the architecture ``weights``."""
        weights, single = self._weights(weights, single_path)
        out = self._outputs(*self._run(x, weights, single))
        if self.training:
            out["arch_weights"] = dict(weights)
        return out

    def child(self, indices: dict[str, int]) -> ReIDModel:
        """The derived network of the architecture ``indices`` (fixed choices may be left out) with the
        supernet's weights of that path, every slot giving its own module (:func:`~dcsnas.models.blocks.child_of`):
        the network and state-dict keys of ``create_model`` on that architecture's arch.json, computing what the
        supernet computes on the path (``tests/test_supernet.py``)."""
        full = {key: int(w.argmax()) for key, w in self.arch.one_hot(indices).items()}
        stages = {name: child_of(stage, full) for name, stage in self.backbone.stages.items()}
        attentions = {name: child_of(module, full) for name, module in self.attentions.items()}
        channels = {p.stage: resolve(p.width_out, full) for p in self.space.parts() if p.kind != "attention"}
        backbone = Backbone(stages, channels, self.backbone.stage_strides)
        return ReIDModel(backbone, copy.deepcopy(self.head),
                         {name: m for name, m in attentions.items() if m is not None}, {})
