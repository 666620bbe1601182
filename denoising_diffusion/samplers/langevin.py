"""Langevin dynamics with a learned score: the step shared by the predictor-corrector sampler's corrector
(samplers/sde.py) and NCSN's annealed Langevin dynamics (Song & Ermon 2019, "Generative Modeling by Estimating
Gradients of the Data Distribution", Alg. 1; Song & Ermon 2020, "Improved Techniques for Training Score-Based
Generative Models").

Glossary: a *level* is one time of the grid (a noise level σ_i of NCSN, or any time of any schedule); the score at a
level is s_θ(x, t) = −ε̂/σ_t (parameterization.score_from_eps); ε is the step size, z ~ N(0, I).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..denoiser import Callback, Denoiser, StepRecord
from ..parameterization import score_from_eps
from ..processes import CLEAN, Schedule, Time
from .common import check_not_refused, randn_like, time_batch, time_pairs

DEFAULT_STEPS_PER_LEVEL = 5
"""n of annealed Langevin: Song & Ermon 2020's value for their 232 levels (App. B.1; technique 4 takes n as large as
the budget allows, then ε from n)."""


def technique4_step_lr(sigma_high: float, sigma_low: float, levels: int, steps_per_level: int) -> float:
    """ε chosen by Song & Ermon 2020's technique 4: the step at the lowest level, ε = u σ_L², whose n Langevin steps
    per level bring the variance of one level's samples, started at the level above, closest to the level's own
    (their eq. 7, with u = ε/σ_L²): (1 − u)^{2n} (γ² − 2/(2 − u)) + 2/(2 − u) ≈ 1, γ = σ_{i−1}/σ_i the ratio of two
    levels, here (σ_high/σ_low)^{1/(L−1)} (exact for NCSN's geometric levels, the mean ratio for other grids).

    For NCSNSchedule's defaults (σ 50 → 0.01, L = 232) and n = 5 this gives 6.18e-6, the 6.2e-6 Song & Ermon used
    on CIFAR-10. u is the best of 4000 values log-spaced in [1e-5, 1). One level (γ = 1) gives the smallest u.

    Why not a fixed ε: the step scales with σ_L², so a value tuned for one grid fails on another. 6.2e-6 on the VP
    process (σ_L = 1e-3 at t_min = 1e-5) is a step 6 times the variance of the first level, and the chain diverges;
    with 50 levels (γ = 1.15) instead of 232 it leaves the mixture's spreads 33-39 % too wide, against 10-14 % for
    technique 4's ε (exact mixture score, n = 5).
    """
    gamma2 = (sigma_high / sigma_low) ** (2.0 / (levels - 1)) if levels > 1 else 1.0
    n2 = 2 * steps_per_level

    def mismatch(u: float) -> float:
        stationary = 2.0 / (2.0 - u)  # v/(1 − u/2) relative to σ_i²: the Langevin chain's own bias
        return abs((1.0 - u) ** n2 * (gamma2 - stationary) + stationary - 1.0)

    grid = (10.0 ** (-5.0 + 5.0 * k / 4000) for k in range(4000))
    return min(grid, key=mismatch) * sigma_low**2


def langevin_step(
    x: Tensor,
    score: Tensor,
    step_size: float | Tensor,
    generator: torch.Generator | None,
    *,
    noise: Tensor | None = None,
) -> Tensor:
    """One step of the unadjusted Langevin algorithm: x + ε s + √(2ε) z (Song & Ermon 2019, eq. 4 and Alg. 1,
    line 6; Song et al. 2021, Alg. 4-5, line 5), which samples p as ε → 0 when s = ∇ log p.

    For finite ε the chain is biased: for p = N(m, v) its stationary variance is v/(1 − ε/(2v)) (the fixed point of
    V ← (1 − ε/v)² V + 2ε).

    Args:
        x: (B, C, H, W) the current state.
        score: ∇ log p at x, (B, C, H, W).
        step_size: ε > 0, a float or a tensor broadcastable to x (e.g. (B, 1, 1, 1), one per sample).
        generator: source of z (drawn with x's shape, dtype and device) when ``noise`` is not given.
        noise: z itself, when the caller needs it first (the corrector sets ε from ‖z‖).
    Returns:
        (B, C, H, W).
    """
    z = randn_like(x, generator) if noise is None else noise
    scale = torch.sqrt(2 * step_size) if isinstance(step_size, Tensor) else math.sqrt(2 * step_size)
    return x + step_size * score + scale * z


def check_annealed_options(step_lr: float | None, steps_per_level: int) -> None:
    """ValueError unless ε = ``step_lr`` is None or > 0 and ``steps_per_level`` is an integer >= 1."""
    if step_lr is not None and not (isinstance(step_lr, (int, float)) and math.isfinite(step_lr) and step_lr > 0):
        raise ValueError(
            f"step_lr must be a finite number > 0 (the Langevin step size at the lowest level), got {step_lr!r}"
        )
    if isinstance(steps_per_level, bool) or not isinstance(steps_per_level, int) or steps_per_level < 1:
        raise ValueError(f"steps_per_level must be an integer >= 1, got {steps_per_level!r}")


@torch.no_grad()
def sample_annealed_langevin(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    step_lr: float | None = None,
    steps_per_level: int = DEFAULT_STEPS_PER_LEVEL,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1), with the final denoising step (Song & Ermon 2020).

    For each level t_i of the grid, from the highest noise to the lowest: n = ``steps_per_level`` Langevin steps
    x ← x + α_i s_θ(x, t_i) + √(2 α_i) z with α_i = ε σ_i²/σ_L² (ε = ``step_lr``, σ_L = σ at the grid's last time:
    the step is ε at the lowest level and keeps the "signal-to-noise ratio" α_i s/√(2α_i) constant over levels,
    2019, §4.3). After the last level, one more evaluation gives x̂_0 = x + σ_L² s_θ(x, t_L) (2020, "denoising",
    Tweedie's formula), which is the denoiser's x̂_0 = (x + σ_L² s_θ)/α_L; the sampler returns pred.x0.

    Works with any schedule: at each level it samples the marginal p_t of x_t = α_t x_0 + σ_t ε, so on α ≠ 1 paths
    (VP, sub-VP, DDPM) it anneals through those marginals (whose mean scale α_t changes too) rather than NCSN's
    p_σ = data ⊛ N(0, σ² I); the last one is near the data either way, and x̂_0 removes its noise.

    ``x_T`` should be drawn from the prior N(0, prior_std² I) (Song & Ermon draw uniform noise; the Gaussian is
    closer to the first level's marginal). One callback per level (x_t: the state on arrival at the level, x_next:
    after its n steps, and after the denoising step on the last level; nfe: evaluations so far), n·L + 1 network
    evaluations in all.

    Args:
        denoiser, x_T, schedule, timesteps, generator, callback: as sample_ddim; timesteps are the levels, from high
            noise to low (``schedule.timesteps(steps, spacing)``; all of NCSNSchedule's levels at steps = L).
        step_lr: ε > 0, the step size at the lowest level; None (default): chosen for the grid and n by Song &
            Ermon 2020's technique 4 (:func:`technique4_step_lr`; 6.2e-6 for NCSN's default 232 levels, their value).
        steps_per_level: n ≥ 1 Langevin steps per level (default 5, Song & Ermon 2020's).
    Returns:
        (B, C, H, W), same dtype and device as x_T.
    """
    check_annealed_options(step_lr, steps_per_level)
    check_not_refused(schedule, "annealed_langevin")
    pairs = list(time_pairs(timesteps, schedule))
    sigma_low = schedule.alpha_sigma(pairs[-1][1])[1]
    if step_lr is None:
        sigma_high = schedule.alpha_sigma(pairs[0][1])[1]
        step_lr = technique4_step_lr(sigma_high, sigma_low, len(pairs), steps_per_level)
    x, nfe = x_T, 0
    for i, t, s in pairs:
        sigma_t = schedule.alpha_sigma(t)[1]
        step = step_lr * (sigma_t / sigma_low) ** 2  # α_i = ε σ_i²/σ_L² (Alg. 1, line 3)
        x_level, times = x, time_batch(x, t)
        for _ in range(steps_per_level):
            pred = denoiser(x, times)
            x = langevin_step(x, score_from_eps(pred.eps, sigma_t), step, generator)
        nfe += steps_per_level
        if s == CLEAN:  # the denoising step x + σ_L² s_θ(x, σ_L) (Song & Ermon 2020, technique "denoising")
            pred = denoiser(x, times)
            nfe += 1
            x = pred.x0
        if callback is not None:
            callback(StepRecord(index=i, t=t, x_t=x_level, x_next=x, pred_x0=pred.x0, nfe=nfe))
    return x
