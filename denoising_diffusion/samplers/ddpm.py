"""Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), on any decreasing subset of timesteps."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..choices import Choice
from ..denoiser import Callback, Denoiser, StepRecord
from ..parameterization import learned_log_variance
from ..schedules import NoiseSchedule
from ._common import randn_like, time_batch, time_pairs


class VarianceType(Choice):
    """Reverse-step variance: β̃ (posterior, 'fixed_small'), β ('fixed_large'), or the network's interpolation
    between log β and log β̃ ('learned_range', Nichol & Dhariwal 2021, eq. 15)."""

    __option__ = "variance type"

    FIXED_SMALL = "fixed_small"
    FIXED_LARGE = "fixed_large"
    LEARNED_RANGE = "learned_range"


def posterior_coefficients(schedule: NoiseSchedule, t: int, s: int) -> tuple[float, float, float, float]:
    """Coefficients of q(x_s | x_t, x_0) for s < t on the (possibly respaced) chain.

    Respacing recomputes β from the kept ᾱ values: β'_t = 1 − ᾱ_t/ᾱ_s (Nichol & Dhariwal 2021, App. B). Then
    μ̃ = c_0 x̂_0 + c_t x_t with c_0 = √ᾱ_s β'/(1 − ᾱ_t), c_t = √(1 − β') (1 − ᾱ_s)/(1 − ᾱ_t), and
    β̃ = β' (1 − ᾱ_s)/(1 − ᾱ_t) (Ho et al. 2020, eqs. 6–7).

    Returns:
        (c_0, c_t, β̃, β') as Python floats.
    """
    ab_t, ab_s = schedule.alphabar(t), schedule.alphabar(s)
    beta = 1.0 - ab_t / ab_s
    c0 = math.sqrt(ab_s) * beta / (1.0 - ab_t)
    ct = math.sqrt(1.0 - beta) * (1.0 - ab_s) / (1.0 - ab_t)
    return c0, ct, beta * (1.0 - ab_s) / (1.0 - ab_t), beta


def reverse_log_variance(variance: VarianceType, posterior_var: float, beta: float,
                         var_interp: Tensor | None) -> Tensor | float:
    """log Σ of a reverse step that adds noise (s ≥ 0, where β̃ > 0). var_interp: (B, C, H, W) in [−1, 1] or None."""
    if variance is VarianceType.FIXED_LARGE:
        return math.log(beta)
    log_small = math.log(posterior_var)
    if variance is VarianceType.FIXED_SMALL:
        return log_small
    if var_interp is None:
        raise ValueError("variance 'learned_range' needs a denoiser that returns var_interp (a learned_variance model)")
    return learned_log_variance(var_interp, math.log(beta), log_small)


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, x_T: Tensor, schedule: NoiseSchedule, timesteps: Sequence[int], *,
                variance: str | VarianceType = VarianceType.FIXED_SMALL, generator: torch.Generator | None = None,
                callback: Callback | None = None) -> Tensor:
    """Ancestral sampling x_s ~ N(μ̃(x_t, x̂_0), Σ) (Ho et al. 2020, Alg. 2; respaced as Nichol & Dhariwal 2021).

    Args:
        denoiser: (x_t, t) -> Prediction.
        x_T: (B, C, H, W) noise at timesteps[0].
        schedule: the NoiseSchedule of the model.
        timesteps: strictly decreasing time indices (all of range(T-1, -1, -1) for the original DDPM).
        variance: 'fixed_small' (β̃), 'fixed_large' (β) or 'learned_range'.
        generator: source of all noise drawn.
        callback: receives a StepRecord after every step.
    Returns:
        (B, C, H, W); the last step (to t = −1) returns μ̃ = x̂_0 with no noise.
    """
    variance = VarianceType(variance)
    x = x_T
    for i, t, s in time_pairs(timesteps, schedule):
        pred = denoiser(x, time_batch(x, t))
        c0, ct, posterior_var, beta = posterior_coefficients(schedule, t, s)
        x_next = c0 * pred.x0 + ct * x
        if s >= 0:  # the step to clean data adds no noise (Alg. 2: z = 0 when t = 1)
            log_var = reverse_log_variance(variance, posterior_var, beta, pred.var_interp)
            std = torch.exp(0.5 * log_var) if isinstance(log_var, Tensor) else math.exp(0.5 * log_var)
            x_next = x_next + std * randn_like(x, generator)
        if callback is not None:
            callback(StepRecord(index=i, t=t, x_t=x, x_next=x_next, pred_x0=pred.x0))
        x = x_next
    return x
