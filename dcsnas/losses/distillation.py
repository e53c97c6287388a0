"""In-place distillation (Yu et al., "BigNAS", ECCV 2020; Cai et al., "Once-for-All", ICLR 2020): a child
network of a supernet learns the soft labels that the largest child predicts on the same batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def soft_label_distillation(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                            temperature: float = 1.0) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch and over the classifiers: ``student`` and
    ``teacher`` are the heads' logits lists (``[B, num_classes]`` each, in the same order); the teacher's are
    detached. 0 where student and teacher logits are equal."""
    terms = [F.kl_div(F.log_softmax(s / temperature, dim=1), F.log_softmax(t.detach() / temperature, dim=1),
                      reduction="batchmean", log_target=True) for s, t in zip(student, teacher, strict=True)]
    return temperature ** 2 * torch.stack(terms).mean()
