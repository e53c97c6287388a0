"""Attention modules for Re-ID backbones: SA, CSA, CSALR and DCS (DESIGN §3), and deep supervision."""

from dcsnas.attention.base import AttentionBlock, AttentionKernel
from dcsnas.attention.csa import CompressedSelfAttention, CSAKernel
from dcsnas.attention.csalr import CSALRAttention, CSALRKernel
from dcsnas.attention.dcs import DCSAttention
from dcsnas.attention.deep_supervision import DeepSupervisionHead
from dcsnas.attention.registry import ATTENTIONS, attention_options, create_attention
from dcsnas.attention.sa import SAKernel, SelfAttention

__all__ = [
    "ATTENTIONS",
    "AttentionBlock",
    "AttentionKernel",
    "CSAKernel",
    "CSALRAttention",
    "CSALRKernel",
    "CompressedSelfAttention",
    "DCSAttention",
    "DeepSupervisionHead",
    "SAKernel",
    "SelfAttention",
    "attention_options",
    "create_attention",
]
