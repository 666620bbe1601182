"""The base of the continuous-time diffusion processes (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", §3.4 and App. B): vp.py, subvp.py, ve.py, edm.py.

Each forward SDE here has a linear drift, dx = f(t) x dt + g(t) dw, so its marginal is the Gaussian path
x_t = α_t x_0 + σ_t ε of path.py with α_t = exp(∫_0^t f) and g(t)² = dσ_t²/dt − 2 f(t) σ_t² (Kingma et al. 2021,
eq. 30). Time t ∈ [0, 1]; samplers visit [t_min, 1] (t_min = ε of Song et al. 2021: σ_t is 0 or tiny at t = 0) and
then CLEAN (α = 1, σ = 0), the final denoising step.

=========  ======================================  ===============================  ===========================
process    α_t                                     σ_t                              f(t), g(t)²
=========  ======================================  ===============================  ===========================
vp         exp(−B(t)/2), B = β_min t + (β_max −     √(1 − α_t²)                      −β(t)/2, β(t)
           β_min) t²/2, β(t) = B'(t)
subvp      as vp                                   1 − α_t²                         −β(t)/2, β(t)(1 − e^{−2B(t)})
ve         1                                       σ_min (σ_max/σ_min)^t            0, 2 σ_t² log(σ_max/σ_min)
edm        1                                       t  (time IS σ, t ∈ [σ_min, σ_max])  0, 2 t
=========  ======================================  ===============================  ===========================

The network's time input (``network_time``) is 999·t for vp and subvp (so a network sees the range of a
1000-step DDPM, as in Song et al. 2021's code), log σ_t for ve and ncsn (the noise level itself, as NCSN and
NCSN++ condition on it) and c_noise = ¼ ln σ for edm (Karras et al. 2022, Table 1).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from torch import Tensor

from .base import ProcessDeclarations
from .path import CLEAN, PosteriorStep, Time, gaussian_posterior_step
from .spacing import Spacing, log_sigma_tilde_targets


class ContinuousSchedule(ProcessDeclarations, ABC):
    """A continuous-time process on t ∈ [0, t_max = 1] with linear drift; subclasses give α_t, σ_t, f and g.

    Samplers visit times in [t_min, 1]; CLEAN (−1) is clean data. All values are computed in float64.
    """

    t_min: float
    t_max: float = 1.0
    karras_sigma_cap: float = 80.0  # the ``karras`` spacing starts at σ̃ ≤ this (Karras et al. 2022, Table 1)

    # ----- the process: subclasses ------------------------------------------------------------------------------

    @abstractmethod
    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α_t, σ_t) for float64 times t in [0, 1]."""

    @abstractmethod
    def drift_coef(self, t: float) -> float:
        """f(t) of the drift f(x, t) = f(t) x."""

    @abstractmethod
    def diffusion_sq_at(self, t: Tensor) -> Tensor:
        """g(t)² for float64 times t (any shape): the one home of each process's diffusion coefficient."""

    def diffusion_coef(self, t: float) -> float:
        """g(t), the diffusion coefficient."""
        return math.sqrt(float(self.diffusion_sq_at(torch.tensor(t, dtype=torch.float64))))

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std² I) at t = 1."""

    @abstractmethod
    def network_time(self, t: Tensor) -> Tensor:
        """What the network's time input receives for float times t (B,)."""

    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able)."""

    # ----- the Schedule contract (schedules.Schedule) ---------------------------------------------------------

    def alpha_sigma(self, t: Time) -> tuple[float, float]:
        """(α_t, σ_t) as floats; (1, 0) at CLEAN. ValueError for a time outside [0, 1]."""
        if t == CLEAN:
            return 1.0, 0.0
        self._check_time(float(t))
        alpha, sigma = self._alpha_sigma(torch.tensor(float(t), dtype=torch.float64))
        return float(alpha), float(sigma)

    def alpha_sigma_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α_t, σ_t) for times t (B,), float64 on t's device."""
        return self._alpha_sigma(t.to(torch.float64))

    def sde(self, t: Time) -> tuple[float, float]:
        """(f(t), g(t)) of the forward SDE dx = f(t) x dt + g(t) dw."""
        self._check_time(float(t))
        return self.drift_coef(float(t)), self.diffusion_coef(float(t))

    def _check_time(self, t: float) -> None:
        if not 0.0 <= t <= self.t_max:
            raise ValueError(f"time {t} is outside the {self.describe()} process's range [0, {self.t_max}]")

    def check_times(self, timesteps: Sequence[Time]) -> list[Time]:
        """Strictly decreasing floats in [t_min, 1]; ValueError otherwise."""
        ts = [float(t) for t in timesteps]
        if not ts:
            raise ValueError("timesteps is empty: a sampler needs at least one step")
        if any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] < self.t_min * (1 - 1e-9) or ts[0] > self.t_max:
            raise ValueError(
                f"timesteps must be strictly decreasing times in [t_min={self.t_min:g}, {self.t_max:g}] for the "
                f"{self.describe()} process, got {ts[:5]}{'...' if len(ts) > 5 else ''}"
            )
        return list(ts)

    def timesteps(self, steps: int, spacing: str | Spacing = "linspace", *, rho: float = 7.0) -> list[Time]:
        """``steps`` decreasing times from 1 to t_min.

        * ``linspace``: uniform in t (Song et al. 2021's samplers);
        * ``logsnr``: uniform in λ_t = log(α_t/σ_t) (Lu et al. 2022, §3.3);
        * ``karras``: σ̃ = σ/α spaced as in Karras et al. 2022, eq. 5 (exponent ρ = ``rho``), capped at σ̃ = 80.

        The index spacings ``trailing`` and ``leading`` have no meaning in continuous time: ValueError.
        """
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        spacing = Spacing(spacing)
        if spacing in (Spacing.TRAILING, Spacing.LEADING):
            raise ValueError(
                f"timestep spacing {spacing.value!r} is for discrete indices; a continuous process takes "
                "'linspace', 'logsnr' or 'karras'"
            )
        if steps == 1:
            return [self.t_max]
        if spacing is Spacing.LINSPACE:
            grid = torch.linspace(self.t_max, self.t_min, steps, dtype=torch.float64)
        else:
            lo, hi = self.log_sigma_tilde(self.t_min), self.log_sigma_tilde(self.t_max)
            if spacing is Spacing.KARRAS:
                hi = min(hi, math.log(self.karras_sigma_cap))
            grid = self.time_of_log_sigma_tilde(log_sigma_tilde_targets(spacing, lo, hi, steps, rho))
            grid[-1] = self.t_min
            if spacing is Spacing.LOGSNR:
                grid[0] = self.t_max
        return [float(t) for t in grid]

    def log_sigma_tilde(self, t: float) -> float:
        """log(σ_t/α_t) = −λ_t, increasing in t."""
        alpha, sigma = self.alpha_sigma(t)
        return math.log(sigma) - math.log(alpha)

    def time_of_log_sigma_tilde(self, targets: Tensor) -> Tensor:
        """The times (float64) at which log σ̃_t equals ``targets``, by bisection on [t_min, 1] (log σ̃ is increasing;
        targets outside its range come back clamped to the ends)."""
        lo = torch.full_like(targets, self.t_min)
        hi = torch.full_like(targets, self.t_max)
        for _ in range(60):  # 2^-60 of the interval: float64 resolution
            mid = 0.5 * (lo + hi)
            alpha, sigma = self._alpha_sigma(mid)
            above = (sigma.log() - alpha.log()) > targets
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        return 0.5 * (lo + hi)

    def time_of_sigma_tilde(self, sigma_tilde: float) -> Time:
        """The time whose σ̃ = σ/α is ``sigma_tilde`` (:meth:`time_of_log_sigma_tilde`), clamped to [t_min, t_max]: what
        the stochastic Heun sampler evaluates the denoiser at after raising the noise level (Karras et al. 2022,
        Alg. 2); it reads that time's own σ̃ back, so a clamped time stays exact."""
        if not sigma_tilde > 0:
            raise ValueError(f"sigma_tilde must be positive, got {sigma_tilde}")
        target = torch.tensor([math.log(sigma_tilde)], dtype=torch.float64)
        return float(self.time_of_log_sigma_tilde(target)[0])

    def posterior_step(self, t: Time, s: Time | None = None) -> PosteriorStep[float]:
        """q(x_s | x_t, x_0) for s < t (schedules.gaussian_posterior_step); ``s`` is required."""
        if s is None:
            raise ValueError("a continuous process has no 'previous' time: give s")
        if not (s == CLEAN or float(s) < float(t)):
            raise ValueError(f"a reverse step goes from t to s < t, got t={t}, s={s}")
        return gaussian_posterior_step(*self.alpha_sigma(t), *self.alpha_sigma(s))

    def times_at_sigma_tilde(self, sigma_tilde: Tensor) -> Tensor:
        """Times (B,) float64 whose σ̃ = σ/α are ``sigma_tilde`` (B,) (:meth:`time_of_log_sigma_tilde`, clamped to
        [t_min, t_max])."""
        return self.time_of_log_sigma_tilde(sigma_tilde.to(torch.float64).log())

    def describe(self) -> str:
        return self.name or type(self).__name__


def check_positive_range(low_name: str, low: float, high_name: str, high: float) -> None:
    """ValueError unless 0 < low < high, both finite (the processes' σ and β ranges)."""
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise ValueError(f"need 0 < {low_name} < {high_name}, got {low_name}={low}, {high_name}={high}")


def check_t_min(t_min: float) -> None:
    """ValueError unless t_min lies in (0, 1)."""
    if not 0.0 < t_min < 1.0:
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
