"""DDIM sampling (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12 and eq. 16)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..denoiser import Callback, Denoiser, StepRecord
from ..processes import Schedule, Time, forward_step
from .common import randn_like, time_batch, time_pairs


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM: x_s = α_s x̂_0 + √(σ_s² − c²) ε̂ + c z, c = η σ_s/σ_t σ_{t|s}, σ²_{t|s} = σ_t² − α_t²σ_s²/α_s² (eqs. 12, 16).

    Symbols: α, σ are the Gaussian-path coefficients of processes/path.py (α_t = √ᾱ_t); t → s is one step, s = −1 after
    the last entry (α = 1, σ = 0), so the final step returns x̂_0 without noise. η = 0 is deterministic (DDIM);
    η = 1 with every step is ancestral DDPM with the posterior variance β̃_t.

    Args:
        denoiser: (x_t, t) -> Prediction.
        x_T: (B, C, H, W) initial noise at timesteps[0].
        schedule: the schedule the denoiser was trained with (schedules.Schedule: discrete or continuous).
        timesteps: strictly decreasing times to visit (``schedule.timesteps(steps, spacing)``).
        eta: η ≥ 0, the stochasticity.
        generator: source of all noise drawn.
        callback: receives a StepRecord after every step.
    Returns:
        (B, C, H, W) sample, same dtype and device as x_T.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x = x_T
    for i, t, s in time_pairs(timesteps, schedule):
        pred = denoiser(x, time_batch(x, t))
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        alpha_s, sigma_s = schedule.alpha_sigma(s)
        # 1. c = η σ_s/σ_t · σ_{t|s}: the noise injected (DDIM eq. 16, where σ²_{t|s} = 1 − ᾱ_t/ᾱ_s; written for any
        #    Gaussian path, σ²_{t|s} = σ_t² − (α_t/α_s)² σ_s², so that η = 1 is ancestral on VE paths too).
        c = eta * sigma_s / sigma_t * math.sqrt(forward_step(alpha_t, sigma_t, alpha_s, sigma_s)[1])
        # 2. Deterministic part points along the predicted ε (eq. 12).
        x_next = alpha_s * pred.x0 + math.sqrt(max(sigma_s**2 - c**2, 0.0)) * pred.eps
        if c > 0:
            x_next = x_next + c * randn_like(x, generator)
        if callback is not None:
            callback(StepRecord(index=i, t=t, x_t=x, x_next=x_next, pred_x0=pred.x0))
        x = x_next
    return x


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler on the probability-flow ODE dx̃/dσ̃ = ε̂ in x̃ = x/α, σ̃ = σ/α (Karras et al. 2022, Alg. 1 without the
    correction): x̃_s = x̃_t + (σ̃_s − σ̃_t) ε̂. Multiplying by α_s gives α_s x̂_0 + σ_s ε̂, DDIM's η = 0 update, so
    this is sample_ddim(eta=0) under the name samplers from k-diffusion use."""
    return sample_ddim(denoiser, x_T, schedule, timesteps, eta=0.0, generator=generator, callback=callback)


@torch.no_grad()
def sample_euler_ancestral(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler-ancestral: an Euler step down to σ̃_down, then fresh noise σ̃_up, with
    σ̃_up² = σ̃_s² (σ̃_t² − σ̃_s²)/σ̃_t². On a variance-preserving path σ̃_up·α_s equals DDIM's c at η = 1
    (both reduce to σ_s/σ_t √(1 − α_t²/α_s²)), so this is sample_ddim(eta=1) under its k-diffusion name."""
    return sample_ddim(denoiser, x_T, schedule, timesteps, eta=1.0, generator=generator, callback=callback)


@torch.no_grad()
def invert_ddim(denoiser: Denoiser, x_start: Tensor, schedule: Schedule, timesteps: Sequence[Time]) -> Tensor:
    """DDIM inversion: run the η = 0 update upwards, image → noise (Song et al. 2021, §4.3; Dhariwal & Nichol 2021,
    App. F). x_u at each visited index u maps to x_t = α_t x̂_0(x_u, u) + σ_t ε̂(x_u, u) at the next larger t.

    The clean image stands in for the state at the smallest index (σ ≈ 0 there when it is 0), and the update uses
    the prediction at u for the step to t, so ``sample_ddim`` over the same timesteps undoes it up to the
    discretization error, which vanishes as the steps shrink.

    Args:
        x_start: (B, C, H, W) in the model's space.
        timesteps: the strictly decreasing list a sampler would visit; inversion visits it backwards.
    Returns:
        (B, C, H, W) latent at timesteps[0].
    """
    ascending = [t for _, t, _ in time_pairs(timesteps, schedule)][::-1]
    x = x_start
    for u, t in zip(ascending, ascending[1:]):
        pred = denoiser(x, time_batch(x, u))
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        x = alpha_t * pred.x0 + sigma_t * pred.eps
    return x
