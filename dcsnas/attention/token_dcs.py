"""Multi-head self-attention over tokens with DCS gates on Q and K, for Transformer backbones (DESIGN §3, §5).

:class:`TokenAttention` takes over the weights of a ViT attention module (timm's ``Attention``: ``qkv``,
``q_norm``, ``k_norm``, ``attn_drop``, ``norm``, ``proj``, ``proj_drop``; same state-dict keys) and computes

    Q, K, V = split(qkv(x)) per head;  Q <- M * q_norm(Q);  K <- M * k_norm(K)
    out = proj(norm(concat_h softmax(s Q_h K_h^T) V_h))

on ``x`` [B, N, D], H heads of d channels, s = ``scale`` (1/sqrt(d) in timm). With ``dcs=False`` M = 1 and
this is the module it replaces; with ``dcs=True`` the gate logits Θ = Linear(x) [B, N, H·d] (one per token,
head and Q/K channel; weights 0, bias ``gate_bias``) give M by the DCS gate law (:func:`gate_mask`). Written
here rather than taken from timm because timm's attention has no hook between the projections and the
product; the product itself is ``scaled_dot_product_attention``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dcsnas.attention.dcs import GateTemperature, gate_mask, init_gate
from dcsnas.errors import ConfigError


class TokenAttention(nn.Module):
    """Self-attention over tokens [B, N, D] -> [B, N, D] with optional DCS gates (module docstring).

    Args:
        attention: the ViT attention module whose weights it uses (timm's ``Attention``).
        dcs: gate Q and K per token and head.
        tau: Gumbel-sigmoid temperature of the gates; the trainer anneals it through ``module.tau = ...``.
        gate_bias: initial gate logit (sigmoid(3) ~ 0.95: DCS starts as the plain attention).
    """

    tau = GateTemperature()

    def __init__(self, attention: nn.Module, dcs: bool = False, tau: float = 1.0, gate_bias: float = 3.0):
        super().__init__()
        if getattr(attention, "gate", None) is not None:
            raise ConfigError("a gated (per-head output gate) ViT attention cannot take DCS gates")
        self.num_heads, self.head_dim, self.scale = attention.num_heads, attention.head_dim, attention.scale
        self.qkv, self.q_norm, self.k_norm = attention.qkv, attention.q_norm, attention.k_norm
        self.attn_drop, self.proj, self.proj_drop = attention.attn_drop, attention.proj, attention.proj_drop
        self.norm = getattr(attention, "norm", None) or nn.Identity()  # timm >= 1.0.10: optional scale norm
        self.tau = tau
        qk_channels = self.num_heads * self.head_dim
        self.gate: Optional[nn.Linear] = (init_gate(nn.Linear(self.qkv.in_features, qk_channels), gate_bias)
                                          if dcs else None)

    def channel_mask(self, x: Tensor) -> Optional[Tensor]:
        """The Q/K channel mask M [B, H, N, d] of tokens ``x`` [B, N, D] (``None`` without DCS)."""
        if self.gate is None:
            return None
        batch, tokens, _ = x.shape
        theta = self.gate(x).float().reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
        return gate_mask(theta, self.tau, self.training)

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Q, K (masked, normalised) and V of tokens ``x`` [B, N, D], each [B, H, N, d]."""
        return self._heads(x)[:3]

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """:meth:`qkv_heads` and the kept fraction of the mask (0-dim, no gradient; ``None`` without DCS)."""
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        mask = self.channel_mask(x)
        if mask is None:
            return q, k, v, None
        kept = mask.detach().mean()
        mask = mask.to(q.dtype)
        return q * mask, k * mask, v, kept

    def attention_weights(self, x: Tensor) -> Tensor:
        """The attention maps softmax(s Q K^T) [B, H, N, N] of tokens ``x`` (for pictures; forms N×N)."""
        q, k, _ = self.qkv_heads(x)
        return torch.softmax(self.scale * q @ k.transpose(-2, -1), dim=-1)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                need_kept: bool = False) -> Tensor | tuple[Tensor, Optional[Tensor]]:
        """``x`` [B, N, D] -> [B, N, D]; ``attn_mask`` and ``is_causal`` as timm's blocks pass them (to the
        product, as in ``scaled_dot_product_attention``). ``need_kept``: return ``(out, kept)`` instead, ``kept``
        the fraction of Q/K channels the gates kept (0-dim, no gradient; ``None`` without DCS), as
        :class:`~dcsnas.models.vit.ClassTokenStage` calls the DCS blocks' attention."""
        batch, tokens, _ = x.shape
        q, k, v, kept = self._heads(x)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                             dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        out = self.norm(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))
        out = self.proj_drop(self.proj(out))
        return (out, kept) if need_kept else out

    def forward_flops(self, x_shape, attn_mask=None, is_causal: bool = False, need_kept: bool = False) -> int:
        """FLOPs on ``x`` of shape [B, N, D] (multiply-add = 2, biases and elementwise work free): the
        projections qkv 6 B N D D' and proj 2 B N D' D, the products Q K^T and A V 4 B N^2 D', and with DCS
        the gate 2 B N D D' (D' = H d)."""
        batch, tokens, dim = x_shape
        inner = self.num_heads * self.head_dim
        projections = 2 * batch * tokens * dim * inner * (3 + 1 + (self.gate is not None))
        return projections + 4 * batch * tokens * tokens * inner

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, dcs={self.gate is not None}, tau={self.tau:g}"
