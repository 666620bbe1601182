"""DPM-Solver++(2M) and its SDE variant (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", Alg. 2 and §5), in data-prediction form on the Gaussian path x_t = α_t x_0 + σ_t ε.

Glossary: λ_t = log(α_t/σ_t); a step t → s has h = λ_s − λ_t > 0; D_t = x̂_0(x_t, t). The multistep history (the
previous D and h) is a local variable of each call.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..denoiser import Callback, Denoiser, StepRecord
from ..processes import CLEAN, Schedule, Time
from .common import randn_like, time_batch, time_pairs


def _log_snr(alpha: float, sigma: float) -> float:
    return math.log(alpha) - math.log(sigma)


def _second_order(d: Tensor, d_prev: Tensor | None, h: float, h_prev: float | None) -> Tensor:
    """D_t + (D_t − D_prev)/(2r), r = h_prev/h: the multistep linear extrapolation of D (Alg. 2, line 7)."""
    if d_prev is None or h_prev is None:
        return d
    return d + (d - d_prev) * (h / (2.0 * h_prev))


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(2M): x_s = (σ_s/σ_t) x_t − α_s (e^{−h} − 1) D̃ (Lu et al. 2022, Alg. 2).

    D̃ is D_t on the first step and the second-order extrapolation afterwards. The step into clean data (σ = 0,
    h = ∞) returns D_t: the lower-order final step, which keeps few-step sampling stable.

    Args: as sample_ddim (``generator`` is accepted for the shared signature; this solver draws no noise).
    Returns: (B, C, H, W).
    """
    return _multistep(denoiser, x_T, schedule, timesteps, stochastic=False, generator=generator, callback=callback)


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, §5, midpoint form), a second-order solver of the reverse SDE:

    x_s = (σ_s/σ_t) e^{−h} x_t + α_s (1 − e^{−2h}) D̃ + σ_s √(1 − e^{−2h}) z, with D̃ as in sample_dpmpp_2m.

    Args: as sample_ddim. Returns: (B, C, H, W).
    """
    return _multistep(denoiser, x_T, schedule, timesteps, stochastic=True, generator=generator, callback=callback)


def _multistep(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    stochastic: bool,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> Tensor:
    x = x_T
    d_prev, h_prev = None, None
    for i, t, s in time_pairs(timesteps, schedule):
        pred = denoiser(x, time_batch(x, t))
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        alpha_s, sigma_s = schedule.alpha_sigma(s)
        if s == CLEAN:  # h = ∞: both updates reduce to D_t (lower-order final step)
            x_next = pred.x0
        else:
            h = _log_snr(alpha_s, sigma_s) - _log_snr(alpha_t, sigma_t)
            d = _second_order(pred.x0, d_prev, h, h_prev)
            if stochastic:
                one_minus = -math.expm1(-2.0 * h)  # 1 − e^{−2h}
                x_next = (sigma_s / sigma_t) * math.exp(-h) * x + alpha_s * one_minus * d
                x_next = x_next + sigma_s * math.sqrt(one_minus) * randn_like(x, generator)
            else:
                x_next = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * d
            d_prev, h_prev = pred.x0, h
        if callback is not None:
            callback(StepRecord(index=i, t=t, x_t=x, x_next=x_next, pred_x0=pred.x0))
        x = x_next
    return x
