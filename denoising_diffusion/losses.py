"""Per-sample training losses and their weightings.

Every function returns an unreduced tensor; GaussianDiffusion reduces. Shapes: prediction and target (B, C, H, W),
per-sample results (B,).
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor

from .parameterization import Objective


class LossType(str, Enum):
    """Distance between network output and target: l1, l2 (the L_simple of Ho et al. 2020, eq. 14) or huber."""

    L1 = "l1"
    L2 = "l2"
    HUBER = "huber"

    @classmethod
    def _missing_(cls, value: object) -> None:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"unknown loss_type {value!r}; allowed values: {allowed}")


def per_sample_loss(loss_type: LossType, pred: Tensor, target: Tensor) -> Tensor:
    """Mean over all non-batch dims of the elementwise distance. pred, target: (B, ...). Returns (B,)."""
    if loss_type is LossType.L1:
        elementwise = (pred - target).abs()
    elif loss_type is LossType.L2:
        elementwise = (pred - target) ** 2
    else:
        elementwise = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    return elementwise.flatten(1).mean(1)


def min_snr_weight(snr: Tensor, objective: Objective, gamma: float = 5.0) -> Tensor:
    """Min-SNR-γ weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting", eq. 9).

    The weight min(SNR, γ) applies to the x_0-space loss; for the other targets it is divided by the factor that
    converts their squared error into x_0 space: SNR for ε-prediction and SNR + 1 for v-prediction.

    Args:
        snr: (B,) ᾱ_t / (1 − ᾱ_t) at the sampled timesteps.
    Returns:
        (B,) weights.
    """
    clipped = snr.clamp(max=gamma)
    if objective is Objective.PRED_NOISE:
        return clipped / snr
    if objective is Objective.PRED_X0:
        return clipped
    return clipped / (snr + 1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log p(x) of data quantized to 256 bins in [−1, 1] under N(mean, e^{2 log_scale}) (Ho et al. 2020, eq. 13).

    Edge bins extend to ±∞. x, mean, log_scale: broadcastable (B, C, H, W). Returns elementwise nats.
    """
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centered + 1.0 / 255))
    cdf_minus = torch.special.ndtr(inv_std * (centered - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_delta))
