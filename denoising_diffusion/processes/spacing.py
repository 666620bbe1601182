"""Which times a sampler visits: the spacings of a grid of ``steps`` times, for discrete and continuous processes.

``linspace``, ``trailing`` and ``leading`` pick indices of a discrete chain uniformly; ``logsnr`` and ``karras`` aim
at values of log σ̃ = log(σ/α) = −λ (Lu et al. 2022, §3.3; Karras et al. 2022, eq. 5), for discrete and continuous
processes alike (:func:`log_sigma_tilde_targets`).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from ..choices import Choice


class IndexSchedule(Protocol):
    """What :func:`spaced_timesteps` needs of a discrete schedule: its length and log σ̃ per index."""

    @property
    def num_timesteps(self) -> int: ...

    @property
    def log_sigma_tilde(self) -> Tensor: ...


class Spacing(Choice):
    """How a few-step sampler picks its timesteps from {0, …, T−1}."""

    __option__ = "timestep spacing"

    LINSPACE = "linspace"
    TRAILING = "trailing"
    LEADING = "leading"
    LOGSNR = "logsnr"
    KARRAS = "karras"


def spaced_timesteps(
    schedule: IndexSchedule | int,
    steps: int,
    spacing: str | Spacing = "linspace",
    *,
    rho: float = 7.0,
    sigma_max: float = 80.0,
) -> list[int]:
    """A strictly decreasing list of ``steps`` time indices to visit, in sampling order.

    * ``linspace`` (default): round(linspace(T−1, 0, steps)); starts at T−1 and ends exactly on t = 0.
    * ``trailing``: T−1, T−1−T/steps, … (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
      Flawed", Table 2); starts at T−1, may end above 0.
    * ``leading``: the DDIM paper's 0, T/steps, 2T/steps, … reversed; ends on 0 but starts below T−1.
    * ``logsnr``: uniform in λ_t = log(α_t/σ_t) between t = T−1 and t = 0 (the DPM-Solver paper's choice, Lu et al.
      2022, §3.3).
    * ``karras``: σ̃ = σ/α spaced as (σ̃_max^{1/ρ} + i/(n−1) (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ (Karras et al. 2022, eq. 5),
      ρ = ``rho``.

    The continuous spacings run from σ̃_min = σ̃_0 to σ̃_max = min(σ̃_{T−1}, ``sigma_max``), σ̃ = σ/α. The cosine
    schedule's clipped tail puts σ̃ above 10^4 in its last few indices, where uniform spacing would waste steps, so
    σ̃ is capped at 80 (Karras et al. 2022, Table 1). ``logsnr`` still starts at T−1 (its first step, first order
    in every solver here, is exact in the nearly linear regime above σ̃ = 80). ``karras`` starts at the index
    nearest σ̃_max, as Karras et al. do: Heun's trapezoidal step across a σ̃ ratio of 250 (T−1 → σ̃ = 80) is badly
    biased, and x_T ~ N(0, I) differs from the true marginal there only by α ≈ 1/80. Values are rounded to the
    nearest index; where rounding makes two entries equal they are pushed apart by one index, so exactly
    ``steps`` distinct indices come back, the last one 0. Every sampler appends the clean target t = −1 itself.

    Args:
        schedule: a discrete schedule (ddpm.NoiseSchedule, ncsn.NCSNSchedule), or just T for the uniform spacings.
        steps: number of entries, in [1, T].
    """
    num_timesteps = schedule if isinstance(schedule, int) else schedule.num_timesteps
    if not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be an integer in [1, {num_timesteps}] (the model's timesteps), got {steps!r}")
    spacing = Spacing(spacing)
    if spacing is Spacing.TRAILING:
        return _distinct(
            (num_timesteps - torch.arange(steps, dtype=torch.float64) * (num_timesteps / steps)).round().long() - 1,
            num_timesteps,
        )
    if spacing is Spacing.LEADING:
        return _distinct((torch.arange(steps) * (num_timesteps // steps)).flip(0), num_timesteps)
    if spacing is Spacing.LINSPACE:
        return _distinct(torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round().long(), num_timesteps)
    if isinstance(schedule, int):
        raise ValueError(f"timestep spacing {spacing.value!r} needs the schedule, not just T")
    log_sigma_tilde = schedule.log_sigma_tilde  # = −λ_t, increasing
    lo, hi = float(log_sigma_tilde[0]), min(float(log_sigma_tilde[-1]), math.log(sigma_max))
    targets = log_sigma_tilde_targets(spacing, lo, hi, steps, rho)
    nearest = (log_sigma_tilde[None, :] - targets[:, None]).abs().argmin(dim=1)
    if spacing is Spacing.LOGSNR:
        nearest[0] = num_timesteps - 1
    return _distinct(nearest, num_timesteps)


def log_sigma_tilde_targets(spacing: Spacing, lo: float, hi: float, steps: int, rho: float) -> Tensor:
    """The ``steps`` decreasing values of log σ̃ that the continuous spacings aim at, from ``hi`` down to ``lo``
    (float64): ``logsnr`` uniform in log σ̃ = −λ (Lu et al. 2022, §3.3); ``karras`` σ̃ = (σ̃_max^{1/ρ} +
    i/(n−1) (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ (Karras et al. 2022, eq. 5). Shared by discrete and continuous schedules."""
    if spacing is Spacing.LOGSNR:
        return torch.linspace(hi, lo, steps, dtype=torch.float64)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    s_max, s_min = math.exp(hi) ** (1 / rho), math.exp(lo) ** (1 / rho)
    return ((s_max + ramp * (s_min - s_max)) ** rho).log()


def _distinct(ts: Tensor, num_timesteps: int) -> list[int]:
    """Sort decreasingly and push equal neighbours apart by one index, staying inside [0, T−1]."""
    asc = sorted(int(t) for t in ts)
    for i in range(1, len(asc)):  # from the bottom: strictly increasing
        asc[i] = max(asc[i], asc[i - 1] + 1)
    asc[-1] = min(asc[-1], num_timesteps - 1)
    for i in range(len(asc) - 2, -1, -1):  # from the top: back inside the range
        asc[i] = min(asc[i], asc[i + 1] - 1)
    return asc[::-1]


def index_of_sigma_tilde(log_sigma_tilde: Tensor, sigma_tilde: float) -> int:
    """The first index i of an increasing table log σ̃_i (T,) with σ̃_i ≥ ``sigma_tilde``, or T − 1 when none is.

    A discrete schedule has no time at an arbitrary noise level, so the stochastic Heun sampler (Karras et al. 2022,
    Alg. 2) raises the noise to the next level up and then uses THAT level's exact σ̃ as σ̂, so that the noise it
    adds, √(σ̂² − σ̃_i²), brings x̃ exactly to the marginal the denoiser is evaluated at.
    """
    if not sigma_tilde > 0:
        raise ValueError(f"sigma_tilde must be positive, got {sigma_tilde}")
    target = torch.tensor([math.log(sigma_tilde)], dtype=torch.float64)
    index = int(torch.searchsorted(log_sigma_tilde, target, side="left")[0])
    return min(index, len(log_sigma_tilde) - 1)
