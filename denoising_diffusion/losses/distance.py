"""The distance between the network's output and its target, per sample: l1, l2 (the L_simple of Ho et al. 2020,
eq. 14) or huber. Shapes: prediction and target (B, ...), per-sample results (B,)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..choices import Choice


class LossType(Choice):
    """Distance between network output and target: l1, l2 (the L_simple of Ho et al. 2020, eq. 14) or huber."""

    __option__ = "loss_type"

    L1 = "l1"
    L2 = "l2"
    HUBER = "huber"


def per_sample_loss(loss_type: LossType, pred: Tensor, target: Tensor) -> Tensor:
    """Mean over all non-batch dims of the elementwise distance. pred, target: (B, ...). Returns (B,)."""
    if loss_type is LossType.L1:
        elementwise = (pred - target).abs()
    elif loss_type is LossType.L2:
        elementwise = (pred - target) ** 2
    else:
        elementwise = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    return elementwise.flatten(1).mean(1)
