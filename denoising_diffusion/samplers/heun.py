"""Heun's second-order method on the probability-flow ODE, with EDM's optional stochastic "churn" (Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", Alg. 1, and Alg. 2 when S_churn > 0).

In the scaled variables x̃ = x/α and σ̃ = σ/α the probability-flow ODE of any Gaussian path is
dx̃/dσ̃ = (x̃ − D(x̃))/σ̃ = ε̂ (Karras et al. 2022, eq. 4 with s = 1; Song et al. 2021, DDIM §4.3), so an Euler step
in these variables is exactly DDIM with η = 0, and Heun adds the trapezoidal correction. In the same variables every
path is x̃ = x_0 + σ̃ ε, so Alg. 2's churn (raise the noise level from σ̃_i to σ̂ = σ̃_i (1 + γ_i) by adding fresh
noise of variance σ̂² − σ̃_i²) is exact for every process.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..denoiser import Callback, Denoiser, StepRecord
from ..processes import CLEAN, Schedule, Time
from .common import heun_step, randn_like, time_batch, time_pairs

MAX_GAMMA = math.sqrt(2.0) - 1.0
"""γ_i is capped at √2 − 1, so that σ̂ ≤ √2 σ̃_i: the churn at most doubles the noise's variance (Karras et al.
2022, Alg. 2, line 3)."""


def check_churn(s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> None:
    """ValueError for a negative S_churn or S_noise, a negative S_tmin, or S_tmin > S_tmax (each named)."""
    if not (math.isfinite(s_churn) and s_churn >= 0):
        raise ValueError(f"heun: s_churn must be a finite number >= 0 (0: deterministic Alg. 1), got {s_churn}")
    if not (math.isfinite(s_noise) and s_noise >= 0):
        raise ValueError(f"heun: s_noise must be a finite number >= 0, got {s_noise}")
    if not (s_tmin >= 0 and s_tmax >= 0) or math.isnan(s_tmin) or math.isnan(s_tmax):
        raise ValueError(f"heun: s_tmin and s_tmax must be noise levels >= 0, got s_tmin={s_tmin}, s_tmax={s_tmax}")
    if s_tmin > s_tmax:
        raise ValueError(f"heun: need s_tmin <= s_tmax (the σ̃ range where churn applies), got {s_tmin} > {s_tmax}")


def churn_gamma(sigma_tilde: float, steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """γ_i = min(S_churn/N, √2 − 1) when S_tmin ≤ σ̃_i ≤ S_tmax, else 0 (Karras et al. 2022, Alg. 2, line 3);
    N = ``steps``, the number of timesteps."""
    if s_churn == 0 or not s_tmin <= sigma_tilde <= s_tmax:
        return 0.0
    return min(s_churn / steps, MAX_GAMMA)


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Heun (2nd order): x̃' = x̃_t + (σ̃_s − σ̃_t) ε̂_t; x̃_s = x̃_t + (σ̃_s − σ̃_t) (ε̂_t + ε̂_s(x̃'))/2.

    Two network evaluations per step, one on the final step into clean data (σ̃ = 0, where the Euler step returns
    x̂_0): 2n − 1 evaluations for n timesteps. The callback fires once per step, with the step's starting time and
    state (before any churn).

    With ``s_churn`` > 0 (Karras et al. 2022, Alg. 2): before the step from t, γ = :func:`churn_gamma`; when γ > 0
    the noise level is raised to the time t̂ = ``schedule.time_of_sigma_tilde(σ̃_t (1 + γ))`` (on a discrete
    schedule the index whose σ̃ is the nearest above; on a continuous one clamped to its range), σ̂ is THAT time's
    exact σ̃, x̃ ← x̃ + √(σ̂² − σ̃_t²) S_noise z, and the Heun step runs from t̂. S_churn = 0 is Alg. 1, bit for bit.

    Args: as sample_ddim, plus
        s_churn: S_churn ≥ 0, the total stochasticity (γ = S_churn/N per step, capped at √2 − 1); 0 (default):
            deterministic.
        s_tmin, s_tmax: the range of σ̃ where churn applies (default [0, ∞)).
        s_noise: S_noise ≥ 0, the added noise's scale (default 1; EDM used 1.003-1.007 to offset the loss of detail).
    Returns: (B, C, H, W).
    """
    check_churn(s_churn, s_tmin, s_tmax, s_noise)
    x = x_T
    steps = len(timesteps)
    for i, t, s in time_pairs(timesteps, schedule):
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        x_start, t_start = x, t
        gamma = churn_gamma(sigma_t / alpha_t, steps, s_churn, s_tmin, s_tmax)
        if gamma > 0:
            t = schedule.time_of_sigma_tilde(sigma_t / alpha_t * (1 + gamma))
            alpha_hat, sigma_hat = schedule.alpha_sigma(t)
            added = math.sqrt(max((sigma_hat / alpha_hat) ** 2 - (sigma_t / alpha_t) ** 2, 0.0))
            x = alpha_hat * (x / alpha_t + added * s_noise * randn_like(x, generator))
            alpha_t, sigma_t = alpha_hat, sigma_hat
        pred = denoiser(x, time_batch(x, t))
        alpha_s, sigma_s = schedule.alpha_sigma(s)
        step = sigma_s / alpha_s - sigma_t / alpha_t  # σ̃_s − σ̃_t (< 0)
        if s == CLEAN:  # σ̃ = 0: the Euler step returns x̂_0
            x_tilde = x / alpha_t + step * pred.eps
        else:
            x_tilde = heun_step(_eps_at(denoiser, s, alpha_s), [x / alpha_t], [pred.eps], step)[0]
        x_next = alpha_s * x_tilde
        if callback is not None:
            callback(StepRecord(index=i, t=t_start, x_t=x_start, x_next=x_next, pred_x0=pred.x0))
        x = x_next
    return x


def _eps_at(denoiser: Denoiser, s: Time, alpha_s: float) -> Callable[[list[Tensor]], list[Tensor]]:
    """The ODE's slope dx̃/dσ̃ = ε̂ at time index s, as heun_step calls it (on [x̃])."""
    return lambda y: [denoiser(alpha_s * y[0], time_batch(y[0], s)).eps]
