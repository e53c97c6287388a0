"""Deep supervision branch of an attention block (seed 001 §3.3, eq. 18).

The branch multiplies the block's input feature map element-wise with the output of the attention
module *before the residual connection* (the paper draws the residual out of the module and reports that
the product works better than the sum), then GAP and a fully connected layer give class logits, trained
with cross entropy (weight lambda = 1 in eq. 18). Here "the output before the residual connection" is the
fused attention output ``fuse(attn(x))`` without ``gamma``: gamma belongs to the residual gate, and with
gamma = 0 at initialisation the branch would otherwise pass no gradient to the attention weights.

Usage: ``out, branch = block(x, return_branch=True)``; ``logits = head(x, branch)``.
"""

from __future__ import annotations

from torch import Tensor, nn


class DeepSupervisionHead(nn.Module):
    """``logits = FC(GAP(x * attn(x)))``.

    Args:
        channels: C of the attention block.
        num_classes: number of training identities.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor, attention_output: Tensor) -> Tensor:
        """``x``, ``attention_output`` [B, C, H, W] -> logits [B, num_classes]."""
        return self.fc((x * attention_output).mean(dim=(2, 3)))
