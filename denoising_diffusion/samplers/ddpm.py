"""Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), on any decreasing subset of timesteps."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..denoiser import Callback, Denoiser, Prediction, StepRecord
from ..processes import CLEAN, Schedule, Time
from ..variance import VarianceType, reverse_log_variance
from .common import randn_like, time_batch, time_pairs


@torch.no_grad()
def sample_ddpm(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    variance: str | VarianceType = VarianceType.FIXED_SMALL,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling x_s ~ N(μ̃(x_t, x̂_0), Σ) (Ho et al. 2020, Alg. 2; respaced as Nichol & Dhariwal 2021).

    Args:
        denoiser: (x_t, t) -> Prediction.
        x_T: (B, C, H, W) noise at timesteps[0].
        schedule: the schedule of the model (schedules.Schedule).
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
        x_next = ddpm_step(pred, x, schedule, t, s, variance, generator)
        if callback is not None:
            callback(StepRecord(index=i, t=t, x_t=x, x_next=x_next, pred_x0=pred.x0))
        x = x_next
    return x


def ddpm_step(
    pred: Prediction,
    x_t: Tensor,
    schedule: Schedule,
    t: Time,
    s: Time,
    variance: VarianceType,
    generator: torch.Generator | None,
) -> Tensor:
    """One ancestral step t → s < t: x_s ~ N(μ̃(x_t, x̂_0), Σ) with the step's posterior (β' = 1 − ᾱ_t/ᾱ_s on a
    respaced chain) and Σ from ``variance``; the step into clean data (s = −1) returns μ̃ = x̂_0 without noise.
    Shared by sample_ddpm and sample_repaint."""
    step = schedule.posterior_step(t, s)  # respaced: β' = 1 − ᾱ_t/ᾱ_s
    x_next = step.mean(pred.x0, x_t)
    if s != CLEAN:  # the step to clean data adds no noise (Alg. 2: z = 0 when t = 1)
        log_var = reverse_log_variance(variance, step.log_beta, step.log_variance, pred.var_interp)
        std = torch.exp(0.5 * log_var) if isinstance(log_var, Tensor) else math.exp(0.5 * log_var)
        x_next = x_next + std * randn_like(x_t, generator)
    return x_next
