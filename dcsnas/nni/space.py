"""A search-space file as an NNI ``ModelSpace`` (:class:`ReIDSpace`), its one-shot width mutation, and NNI's
sample back to our option indices (:func:`sample_indices`), and :class:`FlopsBand`, the constraint that keeps
the multi-trial strategies' samples within a FLOPs band.

The model space is built from the blocks of :mod:`dcsnas.models.blocks`, the attentions and the Re-ID
heads. Every searchable choice of the file is one NNI mutable with the same label (``s1/0/op``) and
candidates: op and attention choices are ``LayerChoice``s (candidate names ``ir_k3_e3``, ``none``,
``csalr-g2``), width choices ``nni.choice``s of the widths. A sampled (frozen) model holds exactly the modules
:func:`~dcsnas.models.searched.build_searched_backbone` builds for that architecture.

For the one-shot strategies, candidates whose widths are searched become the FBNetV2 channel-masked ops of
:mod:`dcsnas.nas.ops` weighted by NNI's architecture parameters (:class:`_WidthMixed`): an op is the masked
inverted residual at the widest widths; an attention is :class:`~dcsnas.nas.ops.AttentionAtWidths` (one
attention per width option, each run on its leading channels, as the derived network builds it), so the
supernet computes the child network; op and attention choices are NNI's own mixed layers.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from dcsnas.attention import create_attention
from dcsnas.models.backbones import Backbone
from dcsnas.models.blocks import build_op, conv_head, parse_op, stem
from dcsnas.models.builder import ReIDModel
from dcsnas.models.heads import HEADS
from dcsnas.models.skeleton import SKELETONS, AttentionCandidate, Choice, Part
from dcsnas.nas.ops import AttentionAtWidths, MaskedInvertedResidual, MaskedSkip
from dcsnas.nas.space import SearchSpace, parse_space
from dcsnas.nni.deps import (
    BaseSuperNetModule,
    Categorical,
    Constraint,
    ConstraintViolation,
    LayerChoice,
    ModelSpace,
    ParametrizedModule,
    ensure_frozen,
    label_scope,
    nni,
)


def _labelled(key: str, make: Callable[[str], Any]) -> Any:
    """``make(name)`` inside NNI label scopes, so that the mutable's label is our choice key ``a/b/name``
    (NNI forbids ``/`` in a label and builds hierarchical labels from scopes)."""
    *scopes, name = key.split("/")
    with ExitStack() as stack:
        for scope in scopes:
            stack.enter_context(label_scope(scope))
        return make(name)


class _Candidate(ParametrizedModule):
    """A candidate whose keyword arguments may be ``nni.choice``s: ``build(**arguments)`` at their default
    values in the model space; in a frozen model, the built module itself at the sampled values."""

    build: Callable[..., nn.Module]

    def __init__(self, **arguments: Any):
        super().__init__()
        self.body = type(self).build(**arguments)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @classmethod
    def should_invoke_fixed_module(cls) -> bool:
        return True

    @classmethod
    def create_fixed_module(cls, sample: dict, *args: Any, **kwargs: Any) -> nn.Module:
        _, kwargs = cls.freeze_init_arguments(sample, **kwargs)
        return cls.build(**kwargs)


def _output_only(module: nn.Module, args: tuple, output: tuple) -> torch.Tensor:
    return output[0]


def _attention(name: str, options: dict[str, Any], channels: int) -> nn.Module:
    """The attention block, chained by its output alone (its forward returns ``(out, weights)``)."""
    module = create_attention(name, channels, **options)
    module.register_forward_hook(_output_only)
    return module


class _Op(_Candidate, disable_init_wrapper=True):
    build = staticmethod(build_op)  # (name, in_channels, out_channels, stride)


class _Attention(_Candidate, disable_init_wrapper=True):
    build = staticmethod(_attention)  # (name, options, channels)


class _ConvHead(_Candidate, disable_init_wrapper=True):
    build = staticmethod(conv_head)  # (in_channels, out_channels)


class _SpaceBuilder:
    """NNI mutables for the choices of one space: one ``nni.choice`` object per width key, a
    ``LayerChoice`` per op or attention choice (a searchable one; a fixed choice is its only option)."""

    def __init__(self) -> None:
        self.widths: dict[str, Any] = {}

    def width(self, choice: Choice | int) -> Any:
        """An int width as is; a width choice as its ``nni.choice`` (its only option when fixed)."""
        if isinstance(choice, int):
            return choice
        if not choice.searchable:
            return choice.options[0]
        if choice.key not in self.widths:
            self.widths[choice.key] = _labelled(choice.key, lambda name: nni.choice(name, list(choice.options)))
        return self.widths[choice.key]

    @staticmethod
    def layer(choice: Choice, build: Callable[[Any], nn.Module]) -> nn.Module:
        if not choice.searchable:
            return build(choice.options[0])
        candidates = {label: build(option) for label, option in zip(choice.labels, choice.options)}
        return _labelled(choice.key, lambda name: LayerChoice(candidates, label=name))

    def attention(self, choice: Choice, channels: Any) -> nn.Module:
        return self.layer(choice, lambda c: nn.Identity() if c is None else _Attention(
            name=c.name, options=dict(c.options), channels=channels))


def _space_backbone(space: SearchSpace) -> tuple[Backbone, dict[str, nn.Module]]:
    """The backbone and attention slots of the model space of ``space`` (see the module docstring), built by
    its skeleton (:data:`dcsnas.models.skeleton.SKELETONS`)."""
    build = _SpaceBuilder()

    def module(part: Part) -> nn.Module:
        if part.kind == "stem":
            return stem(build.width(part.width_out), part.stride)
        if part.kind == "block":
            return build.layer(part.payload, lambda op: _Op(name=op, in_channels=build.width(part.width_in),
                                                            out_channels=build.width(part.width_out),
                                                            stride=part.stride))
        if part.kind == "attention":
            return build.attention(part.payload, build.width(part.width_out))
        return _ConvHead(in_channels=build.width(part.width_in), out_channels=part.width_out)

    return SKELETONS[space.skeleton].build(space, space.parts(), module,
                                           lambda width: ensure_frozen(build.width(width)))


class FlopsBand(Constraint):
    """NNI constraint: a sample is valid when its architecture's FLOPs per image (``costs``, the space's
    :class:`~dcsnas.nas.cost.CostModel`) lie within ±``band`` (a fraction) of ``target`` FLOPs. NNI's random
    and evolution strategies draw and mutate again until a sample satisfies it."""

    def __init__(self, space: SearchSpace, costs: Any, target: float, band: float, mutables: list):
        self.label = "flops_band"
        self.space, self.costs, self.target, self.band = space, costs, target, band
        self.mutables = mutables

    def leaf_mutables(self, is_leaf: Callable) -> Iterator:
        for mutable in self.mutables:
            yield from mutable.leaf_mutables(is_leaf)
        yield self

    def check_contains(self, sample: dict[str, Any]):
        flops = self.costs.exact(sample_indices(self.space, sample), "flops")
        if abs(flops / self.target - 1) > self.band:
            return ConstraintViolation(f"{flops / 1e6:.2f} MFLOPs is outside {self.target / 1e6:.2f} ± "
                                       f"{100 * self.band:g} %")
        return None

    def default(self, memo: Optional[dict[str, Any]] = None) -> None:
        """No check: NNI builds the space's default model (every choice at its first candidate) before any
        sampling, and that one need not lie in the band; samples are checked in ``random`` and ``freeze``."""
        return None

    def extra_repr(self) -> str:
        return f"target={self.target / 1e6:.2f} MFLOPs, band={self.band}"


class ReIDSpace(ModelSpace):
    """The NNI model space of a search space (the YAML mapping ``space``) with a Re-ID ``head`` for
    ``num_classes`` identities; ``forward`` is that of :class:`~dcsnas.models.builder.ReIDModel`.
    ``flops_band``: ``(costs, target FLOPs, band)``, a :class:`FlopsBand` on the samples."""

    def __init__(self, space: dict[str, Any], num_classes: int, head: str = "bnneck",
                 flops_band: Optional[tuple[Any, float, float]] = None):
        super().__init__()
        parsed = parse_space(space, str(space.get("name", "search space")))
        backbone, attentions = _space_backbone(parsed)
        self.model = ReIDModel(backbone, HEADS[head](backbone.out_channels, num_classes), attentions, {})
        if flops_band is not None:
            self.add_mutable(FlopsBand(parsed, *flops_band, list(self.simplify().values())))

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def extra_oneshot_hooks(self, strategy) -> list[Callable]:
        """One-shot strategies: candidates with searched widths become :class:`_WidthMixed`."""
        return [_WidthMixed.mutate]


class _AttentionMixture(nn.Module):
    """``forward(x, w)``: Σ_i w_i · the attention built at width option i on the leading channels of ``x``
    (:class:`~dcsnas.nas.ops.AttentionAtWidths`, NNI's soft width weights ``w``)."""

    def __init__(self, name: str, options: dict[str, Any], widths: tuple[int, ...]):
        super().__init__()
        self.attention = AttentionAtWidths(AttentionCandidate(name, name, dict(options)), widths)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.attention(x, w, single_path=False)


class _Widest(nn.Module):
    """``forward(x, *weights)``: the module at the widest input width (channels beyond the active width are 0)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class _WidthMixed(BaseSuperNetModule):
    """One-shot form of a :class:`_Candidate` whose widths are searched: ``body(x, *w)`` at the widest
    widths, with w = softmax(α) of NNI's architecture parameter per width label (``[1.]`` for a fixed width);
    ``softmax`` is the strategy's (Gumbel-softmax for GumbelDARTS). Exports the argmax width per label."""

    def __init__(self, body: nn.Module, widths: list[tuple[Optional[str], tuple[int, ...], Optional[nn.Parameter]]],
                 softmax: nn.Module):
        super().__init__()
        self.body, self.softmax = body, softmax
        self.widths = [(label, values) for label, values, _ in widths]
        self.alphas = nn.ParameterList([alpha for _, _, alpha in widths if alpha is not None])

    def _weights(self) -> list[torch.Tensor]:
        alphas = iter(self.alphas)
        return [self.softmax(next(alphas)) if label is not None else torch.ones(1, device=self.alphas[0].device)
                for label, _ in self.widths]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x, *self._weights())

    def _searched(self) -> Iterator[tuple[str, tuple[int, ...], nn.Parameter]]:
        alphas = iter(self.alphas)
        for label, values in self.widths:
            if label is not None:
                yield label, values, next(alphas)

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {}

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {label: values[int(alpha.argmax())] for label, values, alpha in self._searched() if label not in memo}

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {label: dict(zip(values, self.softmax(alpha).tolist()))
                for label, values, alpha in self._searched() if label not in memo}

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.alphas

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]):
        if not isinstance(module, _Candidate) or not module.mutables:
            return None
        args = module.trace_kwargs

        def width(value) -> tuple[Optional[str], tuple[int, ...], Optional[nn.Parameter]]:
            if isinstance(value, Categorical):
                return value.label, tuple(value.values), memo[value.label]
            return None, (value,), None

        if isinstance(module, _Op):
            w_in, w_out = width(args["in_channels"]), width(args["out_channels"])
            spec = parse_op(args["name"])
            body = MaskedSkip() if spec is None else MaskedInvertedResidual(
                w_in[1], w_out[1], args["stride"], *spec, shared=w_in[0] is not None and w_in[0] == w_out[0])
            widths = [w_in, w_out]
        elif isinstance(module, _Attention):
            widths = [width(args["channels"])]
            body = _AttentionMixture(args["name"], args["options"], widths[0][1])
        else:
            widths = [width(args["in_channels"])]
            body = _Widest(conv_head(max(widths[0][1]), args["out_channels"]))
        return cls(body, widths, mutate_kwargs["softmax"])


def sample_indices(space: SearchSpace, sample: dict[str, Any]) -> dict[str, int]:
    """NNI's sample (label → candidate name or width) as the option index of every choice of ``space``."""
    indices = {}
    for choice in space.choices():
        if not choice.searchable:
            indices[choice.key] = 0
            continue
        if choice.key not in sample:
            raise ValueError(f"NNI's architecture has no value for the choice {choice.key!r}")
        indices[choice.key] = choice.labels.index(str(sample[choice.key]))
    return indices
