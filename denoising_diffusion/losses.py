"""Per-sample training losses and their weightings.

Every function returns an unreduced tensor; GaussianDiffusion reduces. Shapes: prediction and target (B, C, H, W),
per-sample results (B,).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .choices import Choice
from .parameterization import Objective
from .schedules import PosteriorStep


class Decoder(Choice):
    """The reverse model's last step p(x_0 | x_t=0): 'discretized' Gaussian over 256 bins (Ho et al. 2020, eq. 13),
    for 8-bit images; or a plain 'gaussian' density, for continuous data."""

    __option__ = "decoder"

    DISCRETIZED = "discretized"
    GAUSSIAN = "gaussian"


class LossType(Choice):
    """Distance between network output and target: l1, l2 (the L_simple of Ho et al. 2020, eq. 14) or huber."""

    __option__ = "loss_type"

    L1 = "l1"
    L2 = "l2"
    HUBER = "huber"


class LossWeighting(Choice):
    """λ(t) of the denoising score matching loss E_t λ(t) E‖s_θ(x_t, t) − ∇ log p(x_t | x_0)‖² (Song et al. 2021,
    eq. 7), as a weight on the objective's own loss.

    * ``simple``: the objective's own loss, unweighted. For ε-prediction (s = −ε/σ_t) ‖ε̂ − ε‖² = σ_t² ‖s_θ − ∇ log
      p‖², i.e. λ(t) = σ_t² (Song & Ermon 2019, §4.2; Song et al. 2021, §3.3; Ho et al. 2020's L_simple).
    * ``likelihood``: λ(t) = g(t)², which makes the loss a bound on the negative log-likelihood (Song, Durkan et al.
      2021, "Maximum Likelihood Training of Score-Based Diffusion Models", Thm. 1): the weight g(t)²/σ_t² on
      ‖ε̂ − ε‖² (:func:`likelihood_weight`). Continuous-time processes and ε-prediction only.
    """

    __option__ = "loss_weighting"

    SIMPLE = "simple"
    LIKELIHOOD = "likelihood"


class SDESchedule(Protocol):
    """What :func:`likelihood_weight` needs of a continuous-time process (processes.ContinuousSchedule)."""

    def diffusion_sq_at(self, t: Tensor) -> Tensor: ...

    def alpha_sigma_at(self, t: Tensor) -> tuple[Tensor, Tensor]: ...


def likelihood_weight(schedule: SDESchedule, t: Tensor) -> Tensor:
    """g(t)²/σ_t² for times t (B,) float: the likelihood weighting λ(t) = g(t)² of the score loss written as a
    weight on ‖ε̂ − ε‖² (:class:`LossWeighting`). Returns (B,) float64 on t's device.

    g(t)² comes from the process's SDE on the whole batch at once (no per-time Python loop, no device sync)."""
    g2 = schedule.diffusion_sq_at(t.to(torch.float64))
    sigma = schedule.alpha_sigma_at(t)[1]
    return g2 / sigma**2


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
