"""Heun's second-order method on the probability-flow ODE (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Alg. 1 with S_churn = 0).

In the scaled variables x̃ = x/α and σ̃ = σ/α the probability-flow ODE of any Gaussian path is
dx̃/dσ̃ = (x̃ − D(x̃))/σ̃ = ε̂ (Karras et al. 2022, eq. 4 with s = 1; Song et al. 2021, DDIM §4.3), so an Euler step
in these variables is exactly DDIM with η = 0, and Heun adds the trapezoidal correction.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..denoiser import Callback, Denoiser, StepRecord
from ..schedules import CLEAN, Schedule, Time
from .common import heun_step, time_batch, time_pairs


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Heun (2nd order): x̃' = x̃_t + (σ̃_s − σ̃_t) ε̂_t; x̃_s = x̃_t + (σ̃_s − σ̃_t) (ε̂_t + ε̂_s(x̃'))/2.

    Two network evaluations per step, one on the final step into clean data (σ̃ = 0, where the Euler step returns
    x̂_0): 2n − 1 evaluations for n timesteps. The callback fires once per step.

    Args: as sample_ddim (``generator`` is accepted for the shared signature; this solver draws no noise).
    Returns: (B, C, H, W).
    """
    x = x_T
    for i, t, s in time_pairs(timesteps, schedule):
        pred = denoiser(x, time_batch(x, t))
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        alpha_s, sigma_s = schedule.alpha_sigma(s)
        step = sigma_s / alpha_s - sigma_t / alpha_t  # σ̃_s − σ̃_t (< 0)
        if s == CLEAN:  # σ̃ = 0: the Euler step returns x̂_0
            x_tilde = x / alpha_t + step * pred.eps
        else:
            x_tilde = heun_step(_eps_at(denoiser, s, alpha_s), [x / alpha_t], [pred.eps], step)[0]
        x_next = alpha_s * x_tilde
        if callback is not None:
            callback(StepRecord(index=i, t=t, x_t=x, x_next=x_next, pred_x0=pred.x0))
        x = x_next
    return x


def _eps_at(denoiser: Denoiser, s: Time, alpha_s: float) -> Callable[[list[Tensor]], list[Tensor]]:
    """The ODE's slope dx̃/dσ̃ = ε̂ at time index s, as heun_step calls it (on [x̃])."""
    return lambda y: [denoiser(alpha_s * y[0], time_batch(y[0], s)).eps]
