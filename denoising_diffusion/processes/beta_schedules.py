"""The β schedules of the discrete ddpm process (ddpm.py), by name: computed once in float64 (STYLE.md, R2).

Beta schedules may be added, but are not changed once released: a checkpoint stores only the schedule's name and
length.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..choices import Choice


class BetaSchedule(Choice):
    """Names of the built-in β schedules (strings at the edge, this enum inside)."""

    __option__ = "beta_schedule"
    __hint__ = ", or a 1-D tensor of betas"

    LINEAR = "linear"
    COSINE = "cosine"
    SIGMOID = "sigmoid"
    QUADRATIC = "quadratic"


def linear_beta_schedule(timesteps: int, max_beta: float = 0.999) -> Tensor:
    """Linear β from 1e-4 to 0.02, both scaled by 1000/T (Ho et al. 2020, §4; Nichol & Dhariwal 2021, §3).

    Below T = 50 the scaled end point exceeds 1, so β is clipped to ``max_beta`` as the cosine schedule is.
    """
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(max=max_beta)


def quadratic_beta_schedule(timesteps: int, max_beta: float = 0.999) -> Tensor:
    """β linear in √β between the linear schedule's end points (the 'quad' schedule of the DDPM code release)."""
    scale = 1000 / timesteps
    betas = torch.linspace(math.sqrt(scale * 1e-4), math.sqrt(scale * 0.02), timesteps, dtype=torch.float64) ** 2
    return betas.clamp(max=max_beta)


def cosine_beta_schedule(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule, ᾱ(t) = f(t)/f(0) with f(t) = cos²(((t/T + s)/(1 + s)) · π/2).

    Nichol & Dhariwal 2021, eq. 17; β_t is clipped to ``max_beta`` to avoid the singularity at t = T.
    """
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, max_beta)


def sigmoid_beta_schedule(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999
) -> Tensor:
    """Sigmoid schedule of ᾱ (Jabri et al. 2022, "Scalable Adaptive Computation", Alg. 1; good for > 64x64)."""
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.tensor(start / tau, dtype=torch.float64).sigmoid()
    v_end = torch.tensor(end / tau, dtype=torch.float64).sigmoid()
    alphas_cumprod = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, max_beta)


_BUILDERS: dict[BetaSchedule, Callable[[int], Tensor]] = {
    BetaSchedule.LINEAR: linear_beta_schedule,
    BetaSchedule.COSINE: cosine_beta_schedule,
    BetaSchedule.SIGMOID: sigmoid_beta_schedule,
    BetaSchedule.QUADRATIC: quadratic_beta_schedule,
}


def make_betas(schedule: str | BetaSchedule | Tensor | Sequence[float], timesteps: int) -> Tensor:
    """β_0..β_{T−1} as float64 from a schedule name or explicit values.

    Args:
        schedule: one of ``BetaSchedule``'s names, or a 1-D tensor/sequence of T betas in (0, 1).
        timesteps: T, the number of diffusion steps (ignored when explicit betas decide it... and then checked).

    Returns:
        (T,) float64 tensor.
    """
    if isinstance(schedule, (str, BetaSchedule)):
        if not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
        return _BUILDERS[BetaSchedule(schedule)](timesteps)
    betas = torch.as_tensor(schedule, dtype=torch.float64).detach().cpu()
    if betas.ndim != 1 or len(betas) != timesteps:
        raise ValueError(
            f"explicit betas must be a 1-D tensor of length timesteps={timesteps}, got shape {tuple(betas.shape)}"
        )
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("explicit betas must all lie strictly between 0 and 1")
    return betas
