"""Mixed ops of the supernet: a choice among candidate blocks, width masks, and the attention choice.

Every mixed op takes the architecture weights of the forward pass as arguments,
``forward(x, weights, single_path)``: ``weights`` maps each choice key to its ``[n]`` vector (drawn by the
supernet from :class:`~dcsnas.nas.distribution.ArchDistribution`, or given), ``single_path`` says that they
are one-hot (hard mode, evaluation, a fixed architecture) and only the selected candidates run. No module
holds the weights between calls, so a mixed op can be called on its own and a forward with given weights
traces (``torch.fx``) and compiles.

- **Op choice** (:class:`MixedBlock`): ``soft`` mode returns Σ_j w_j · op_j(x) (FBNet/DARTS); ``hard``
  mode (and evaluation) runs only the sampled op i, and its value is op_i(x) (w is one-hot) while w keeps a
  gradient (straight-through). Where every candidate is residual, op_j(x) = x + F_j(x) (the blocks after the
  first of a stage: inverted residuals and ``skip`` with F = 0; the attentions), the single path returns
  x + w_i · F_i(x): the unsampled branches count as 0, and the gradient of w_i measures the sampled branch
  against the identity. Elsewhere it returns w_i · op_i(x) + Σ_{j≠i} w_j (GDAS). The residual form matters
  in a chain of blocks: a block's whole output feeds a conv and a BatchNorm, which ignore its scale, so
  the gradient of w_i · op_i(x) vanishes there. In soft mode both forms have the same value and, as Σ_j w_j
  = 1, the same gradient in α.
- **Width choice** (FBNetV2): each conv is built at the widest width (one set of weights); its output is
  multiplied by the channel mask m = Σ_i w_i · 1[c < width_i] ``[C_max]``. In an inverted residual the
  hidden channels get the mask of e·width_in, the output the mask of width_out, so with one-hot weights the
  masked supernet computes exactly the channels of the child network. On the single path (hard mode,
  evaluation) the block runs only the leading slices of its weights for the sampled widths (no arithmetic
  on masked channels) and multiplies by the same masks cut to those widths (value 1, the width logits'
  gradient), then zero-pads to the widest width; a wider option's logit then sees the gradient of the
  active channels only, as GDAS's unsampled ops see a constant.
- **Attention choice** (:class:`MixedAttention`): ``none`` (identity) or an attention candidate, chosen
  like an op. Each attention candidate exists once per width option of its stage
  (:class:`AttentionAtWidths`), built by :func:`~dcsnas.attention.create_attention` at that width exactly
  as the derived network builds it, and runs on the leading channels of its width only. So at width w the
  groups split at w/G, C' = w/qk_ratio, the DCS gate conv reads w channels, and CSA/CSALR pool the same
  landmarks per group: the child's attention function, by construction. Slicing one widest module would
  not give it (a grouped projection of the widest module mixes the channels of group g at max/G, not
  w/G; C' would be max/qk_ratio), and slicing that keeps the child's groups and C' would need a second,
  functional implementation of every attention block (grouped projections, gate, fusion conv) beside
  :mod:`dcsnas.attention`, bound to drift from it. The price: attention parameters × widths, and each
  width's attention trains only on the steps that sample that width.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcsnas.attention import create_attention
from dcsnas.models.blocks import ConvBNAct, InvertedResidual, Mixed, parse_op, with_leading_weights
from dcsnas.models.skeleton import AttentionCandidate, Choice

ArchWeights = Mapping[str, Tensor]
"""The weights ``[n]`` of every choice key of one forward pass."""


def mask_matrix(widths: Sequence[int], scale: int = 1) -> Tensor:
    """``[n, scale·max(widths)]`` 0/1 rows: row i keeps the first ``scale·widths[i]`` channels."""
    channels = torch.arange(scale * max(widths))
    return (channels[None, :] < scale * torch.tensor(widths)[:, None]).float()


def channel_mask(weights: Tensor, masks: Tensor, like: Tensor) -> Tensor:
    """Σ_i w_i · masks_i as ``[1, C, 1, 1]`` in the dtype of ``like``."""
    return (weights.to(masks.dtype) @ masks).to(like.dtype)[None, :, None, None]


def choose(weights: Tensor, single_path: bool, run, identity: Tensor | None = None) -> Tensor:
    """Combine candidates ``run(j)`` (a tensor per index j) under ``weights`` ``[n]``: the weighted sum of
    all or, on the ``single_path``, only the selected one in the straight-through form of the module
    docstring (the residual form when the candidates are residual around ``identity``)."""
    if len(weights) == 1:
        return run(0)
    if not single_path:
        return sum(w.to(out.dtype) * out for w, out in ((weights[j], run(j)) for j in range(len(weights))))
    i = int(weights.argmax())
    out = run(i)
    if identity is not None:
        return identity + weights[i].to(out.dtype) * (out - identity)
    return out * weights[i].to(out.dtype) + (weights.sum() - weights[i]).to(out.dtype)


class MaskedInvertedResidual(InvertedResidual):
    """:class:`~dcsnas.models.blocks.InvertedResidual` at the widest widths, with width masks; with nested op
    weights, also at the largest kernel and expansion of the candidates that share it.

    Args:
        widths_in: input width options (the previous stage's choice, or the own one after block 0).
        widths_out: output width options.
        stride, kernel, expansion: as in ``InvertedResidual`` (the largest of the sharing candidates).
        shared: True when input and output widths are the same choice (blocks after the first).
        expansions: the expansions of the candidates that run through this block (default: ``expansion``).

    ``forward(x, w_in, w_out, sliced=False, kernel=None, expansion=None)``: ``x`` ``[B, max(widths_in), H,
    W]`` (masked), ``w_in`` ``[n_in]``, ``w_out`` ``[n_out]`` → ``[B, max(widths_out), H', W']``. ``kernel``
    and ``expansion`` pick a sharing candidate (``None``: the block's own): it runs the centre
    ``kernel``×``kernel`` of the depthwise kernel and the first ``expansion``·C_in hidden channels. The
    residual is added with weight P(width_in = width_out), 1 for a shared choice, so that it exists exactly
    where the child network has one. ``sliced`` (one-hot weights only): compute the selected widths alone
    (module docstring).
    """

    def __init__(self, widths_in: Sequence[int], widths_out: Sequence[int], stride: int, kernel: int,
                 expansion: int, shared: bool, expansions: Sequence[int] | None = None):
        super().__init__(max(widths_in), max(widths_out), stride, kernel, expansion)
        self.widths_in, self.widths_out = tuple(widths_in), tuple(widths_out)
        self.stride, self.kernel, self.expansion, self.shared = stride, kernel, expansion, shared
        self.expansions = tuple(expansions or (expansion,))
        hidden_masks = torch.zeros(len(self.expansions), len(widths_in), expansion * max(widths_in))
        for i, e in enumerate(self.expansions):
            hidden_masks[i, :, :e * max(widths_in)] = mask_matrix(widths_in, e)
        self.register_buffer("hidden_masks", hidden_masks, persistent=False)
        self.register_buffer("out_masks", mask_matrix(widths_out), persistent=False)
        equal = torch.tensor([[float(a == b) for b in widths_out] for a in widths_in])
        self.register_buffer("equal_widths", equal, persistent=False)
        self.residual = stride == 1 and (shared or bool(equal.any()))

    def forward(self, x: Tensor, w_in: Tensor, w_out: Tensor, sliced: bool = False, kernel: int | None = None,
                expansion: int | None = None) -> Tensor:
        kernel, expansion = kernel or self.kernel, expansion or self.expansion
        if sliced:
            c_in, c_out = self.widths_in[int(w_in.argmax())], self.widths_out[int(w_out.argmax())]
            x = x[:, :c_in]
        else:
            c_in, c_out = max(self.widths_in), max(self.widths_out)
        hidden = expansion * c_in
        hidden_mask = None
        if len(w_in) > 1 or expansion != self.expansion:
            masks = self.hidden_masks[self.expansions.index(expansion), :, :hidden]
            hidden_mask = channel_mask(w_in, masks, x)
        h = self.expand.leading(x, c_in, hidden) if expansion != 1 else x
        if hidden_mask is not None and not sliced and expansion != 1:
            h = h * hidden_mask
        h = self.depthwise.leading(h, hidden, hidden, kernel)
        if hidden_mask is not None:
            h = h * hidden_mask
        y = self.project.leading(h, hidden, c_out)
        if len(w_out) > 1:
            y = y * channel_mask(w_out, self.out_masks[:, :c_out], y)
        return _fit_channels(self._add_residual(y, x, w_in, w_out, c_in, c_out), c_out, max(self.widths_out))

    def narrowed(self, width_in: int, width_out: int, kernel: int | None = None,
                 expansion: int | None = None) -> InvertedResidual:
        """The standalone block at widths ``width_in`` → ``width_out`` (and the sharing candidate ``kernel``,
        ``expansion``) with the leading slices of the weights and the centre of the depthwise kernel."""
        with torch.device("meta"):
            block = InvertedResidual(width_in, width_out, self.stride, kernel or self.kernel,
                                     expansion or self.expansion)
        return with_leading_weights(block, self)

    def _add_residual(self, y: Tensor, x: Tensor, w_in: Tensor, w_out: Tensor, c_in: int, c_out: int) -> Tensor:
        """``y`` (``c_out`` channels) plus the residual ``x`` (``c_in`` channels) where the child has one."""
        if not self.residual:
            return y
        if self.shared:
            return x + y
        p_equal = w_in.to(self.equal_widths.dtype) @ self.equal_widths @ w_out.to(self.equal_widths.dtype)
        return y + p_equal.to(y.dtype) * _fit_channels(x, c_in, c_out)


def _fit_channels(x: Tensor, have: int, want: int) -> Tensor:
    """``x`` (``have`` channels) cut or zero-padded to ``want`` (the channels beyond the active width are 0
    anyway)."""
    if have >= want:
        return x[:, :want]
    return F.pad(x, (0, 0, 0, 0, 0, want - have))


class MaskedSkip(nn.Module):
    """The ``skip`` op: ``forward(x, w_in, w_out, sliced, ...) = x`` (only where input and output widths
    agree)."""

    def forward(self, x: Tensor, w_in: Tensor, w_out: Tensor, sliced: bool = False, kernel: None = None,
                expansion: None = None) -> Tensor:
        return x

    def narrowed(self, width_in: int, width_out: int, kernel: None = None, expansion: None = None) -> nn.Identity:
        return nn.Identity()


class MaskedConvHead(ConvBNAct, Mixed):
    """The 1×1 head conv after a stage whose width options are ``width_in``: built at the widest, reading the
    masked map (the channels beyond the active width are 0). ``[B, max(widths), H, W]`` → ``[B, out, H, W]``."""

    def __init__(self, width_in: Choice, out_channels: int):
        super().__init__(max(width_in.options), out_channels)
        self.key, self.widths = width_in.key, tuple(width_in.options)

    def forward(self, x: Tensor, weights: ArchWeights, single_path: bool) -> Tensor:
        return super().forward(x)

    def child(self, indices: Mapping[str, int]) -> ConvBNAct:
        with torch.device("meta"):
            head = ConvBNAct(self.widths[indices[self.key]], self[0].out_channels)
        return with_leading_weights(head, self)


class MixedBlock(Mixed):
    """One block of the supernet: the candidates of ``op`` between the width choices ``width_in`` and
    ``width_out``. ``[B, max(width_in), H, W]`` → ``[B, max(width_out), H', W']``.

    ``op_weights``: ``separate`` gives every inverted-residual candidate its own weights; ``nested`` runs
    them all through one :class:`MaskedInvertedResidual` at the largest kernel and expansion, candidate
    (k, e) on the centre k×k of its depthwise kernel and its first e·C_in hidden channels: the superkernel
    of Single-Path NAS (Stamoulis et al. 2019) and the elastic kernel and expansion of Once-for-All (Cai et
    al. 2020). Every path then trains the same weights, where separate candidates each see the steps that
    sample them (docs/training_recipe.md). ``candidates``: the distinct modules; ``routes[j]`` = (index in
    ``candidates``, kernel, expansion) of option j.
    """

    def __init__(self, op: Choice, width_in: Choice, width_out: Choice, stride: int,
                 op_weights: Literal["separate", "nested"] = "separate"):
        super().__init__()
        self.key, self.keys = op.key, (op.key, width_in.key, width_out.key)
        self.widths_in, self.widths_out = tuple(width_in.options), tuple(width_out.options)
        self.residual = width_in == width_out and stride == 1  # every candidate is x + F(x)
        specs = [parse_op(name) for name in op.options]
        inverted = [spec for spec in specs if spec is not None]

        def block(kernel: int, expansion: int, expansions: Sequence[int]) -> MaskedInvertedResidual:
            return MaskedInvertedResidual(width_in.options, width_out.options, stride, kernel, expansion,
                                          shared=width_in == width_out, expansions=expansions)

        nested = op_weights == "nested" and len(inverted) > 1
        candidates: list[nn.Module] = []
        self.routes: list[tuple[int, int | None, int | None]] = []
        if nested:
            expansions = sorted({e for _, e in inverted})
            candidates.append(block(max(k for k, _ in inverted), max(expansions), expansions))
        for spec in specs:
            if spec is None:
                self.routes.append((len(candidates), None, None))
                candidates.append(MaskedSkip())
            elif nested:
                self.routes.append((0, *spec))
            else:
                self.routes.append((len(candidates), *spec))
                candidates.append(block(*spec, None))
        self.candidates = nn.ModuleList(candidates)

    def forward(self, x: Tensor, weights: ArchWeights, single_path: bool) -> Tensor:
        """``x`` and the architecture weights (module docstring) -> the block's output."""
        w_op, w_in, w_out = (weights[k] for k in self.keys)

        def run(j: int) -> Tensor:
            index, kernel, expansion = self.routes[j]
            return self.candidates[index](x, w_in, w_out, sliced=single_path, kernel=kernel, expansion=expansion)

        return choose(w_op, single_path, run, x if self.residual else None)

    def child(self, indices: Mapping[str, int]) -> nn.Module:
        """The chosen op at the chosen widths, its weights cut from the candidate's."""
        op, width_in, width_out = (indices[k] for k in self.keys)
        index, kernel, expansion = self.routes[op]
        return self.candidates[index].narrowed(self.widths_in[width_in], self.widths_out[width_out], kernel,
                                               expansion)


class AttentionAtWidths(nn.Module):
    """One attention candidate at every width option of its stage: ``at[i]`` is
    ``create_attention(candidate.name, widths[i], **candidate.options)`` (module docstring).

    ``forward(x, w, single_path)``: ``x`` ``[B, max(widths), H, W]`` (channels at or beyond the active width
    are 0), ``w`` ``[n]`` width weights (``None`` for a single width) → ``[B, max(widths), H, W]``. On the
    single path only ``at[argmax w]`` runs, on the leading ``widths[i]`` channels, times the stage's width
    mask cut to them (value 1, the width logits' gradient), zero-padded; otherwise
    Σ_i w_i · pad(at[i](x[:, :widths[i]])).
    """

    def __init__(self, candidate: AttentionCandidate, widths: Sequence[int]):
        super().__init__()
        self.widths = tuple(widths)
        self.at = nn.ModuleList(create_attention(candidate.name, w, **candidate.options) for w in self.widths)
        self.register_buffer("masks", mask_matrix(self.widths), persistent=False)

    def forward(self, x: Tensor, w: Tensor | None, single_path: bool) -> Tensor:
        def run(i: int) -> Tensor:
            return self.at[i](x[:, :self.widths[i]])[0]

        if len(self.widths) == 1:
            return run(0)
        widest = max(self.widths)
        if not single_path:
            return sum(w[i].to(x.dtype) * _fit_channels(run(i), self.widths[i], widest)
                       for i in range(len(self.widths)))
        i = int(w.argmax())
        y = run(i)
        return _fit_channels(y * channel_mask(w, self.masks[:, :self.widths[i]], y), self.widths[i], widest)


class MixedAttention(Mixed):
    """The attention choice after a stage whose width options are ``widths`` (``width_key``: their choice
    key, ``None`` for a fixed width): ``none`` or an :class:`AttentionAtWidths` per candidate.
    ``[B, max(widths), H, W]`` → same."""

    def __init__(self, attention: Choice, widths: Sequence[int], width_key: str | None):
        super().__init__()
        self.key, self.width_key = attention.key, width_key if len(widths) > 1 else None
        self.candidates = nn.ModuleList(nn.Identity() if c is None else AttentionAtWidths(c, widths)
                                        for c in attention.options)

    def forward(self, x: Tensor, weights: ArchWeights, single_path: bool) -> Tensor:
        """``x`` and the architecture weights (module docstring) -> ``x`` with the chosen attention."""
        w = weights[self.width_key] if self.width_key is not None else None

        def run(j: int) -> Tensor:
            candidate = self.candidates[j]
            return candidate(x) if isinstance(candidate, nn.Identity) else candidate(x, w, single_path)

        return choose(weights[self.key], single_path, run, x)

    def child(self, indices: Mapping[str, int]) -> Optional[nn.Module]:
        """A copy of the chosen attention at the chosen width; ``None`` for ``none``."""
        candidate = self.candidates[indices[self.key]]
        if isinstance(candidate, nn.Identity):
            return None
        return copy.deepcopy(candidate.at[indices[self.width_key] if self.width_key is not None else 0])
