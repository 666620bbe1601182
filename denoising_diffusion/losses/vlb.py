"""The terms of the variational bound (Ho et al. 2020, eq. 5): KL divergences between Gaussians and the decoder's
discretized log-likelihood, in bits per dimension; used by the hybrid loss of learned variances (denoising.py) and
by the likelihood (likelihood.py).

Every function returns an unreduced tensor. Shapes: (B, C, H, W) elementwise, (B,) per sample.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..choices import Choice
from ..processes import PosteriorStep


class Decoder(Choice):
    """The reverse model's last step p(x_0 | x_t=0): 'discretized' Gaussian over 256 bins (Ho et al. 2020, eq. 13),
    for 8-bit images; or a plain 'gaussian' density, for continuous data."""

    __option__ = "decoder"

    DISCRETIZED = "discretized"
    GAUSSIAN = "gaussian"


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


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


def gaussian_log_likelihood(x: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(x; mean, e^log_var) elementwise, in nats."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def vlb_term(
    x_start: Tensor,
    x_t: Tensor,
    pred_x0: Tensor,
    step: PosteriorStep,
    model_log_var: Tensor | float,
    is_decoder: Tensor,
    decoder: Decoder = Decoder.DISCRETIZED,
) -> Tensor:
    """One term L_t of the variational bound, in bits per dimension (Ho et al. 2020, eq. 5).

    L_t = KL(q(x_{t−1} | x_t, x_0) || p_θ(x_{t−1} | x_t)) where ``is_decoder`` is False, and the decoder's
    −log p_θ(x_0 | x_t) where it is True (the step from t = 0 into clean data). q is ``step``; p_θ has the mean
    ``step.mean(pred_x0, x_t)`` and the log variance ``model_log_var`` (variance.reverse_log_variance).

    Args:
        x_start: (B, C, H, W) clean data in [−1, 1].
        x_t: (B, C, H, W) the noisy input at t.
        pred_x0: (B, C, H, W) the model's x̂_0.
        step: the posterior at t (coefficients floats or (B, 1, 1, 1)).
        model_log_var: broadcastable to x_start.
        is_decoder: (B,) bool.
    Returns:
        (B,) bits per dimension.
    """
    model_mean = step.mean(pred_x0, x_t)
    true_log_var = torch.as_tensor(step.log_variance, dtype=x_start.dtype, device=x_start.device)
    model_log_var = torch.as_tensor(model_log_var, dtype=x_start.dtype, device=x_start.device)
    kl = normal_kl(step.mean(x_start, x_t), true_log_var, model_mean, model_log_var).flatten(1).mean(1)
    if decoder is Decoder.DISCRETIZED:
        log_p = discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_var)
    else:
        log_p = gaussian_log_likelihood(x_start, model_mean, model_log_var)
    nll = -log_p.flatten(1).mean(1)
    return torch.where(is_decoder, nll, kl) / math.log(2.0)
