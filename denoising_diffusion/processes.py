"""Continuous-time diffusion processes (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations", §3.4 and App. B) and NCSN's noise levels (Song & Ermon 2019, 2020), as schedules.

Each forward SDE here has a linear drift, dx = f(t) x dt + g(t) dw, so its marginal is the Gaussian path
x_t = α_t x_0 + σ_t ε of schedules.py with α_t = exp(∫_0^t f) and g(t)² = dσ_t²/dt − 2 f(t) σ_t² (Kingma et al. 2021,
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
from typing import Any, Sequence, TypeVar

import torch
from torch import Tensor

from .choices import Choice
from .schedules import (
    CLEAN,
    PosteriorStep,
    Spacing,
    Time,
    check_index_times,
    gaussian_posterior_step,
    index_of_sigma_tilde,
    log_sigma_tilde_targets,
    spaced_timesteps,
)

C = TypeVar("C", float, Tensor)  # a time: a Python float or a tensor of times


class Process(Choice):
    """The diffusion process of a GaussianDiffusion: ``ddpm`` (discrete time, schedules.NoiseSchedule), the
    continuous-time SDEs ``vp``, ``subvp`` and ``ve``, ``ncsn``'s discrete noise levels, and ``edm`` (Karras et al.
    2022: time is σ, with its preconditioning and σ distribution)."""

    __option__ = "process"

    DDPM = "ddpm"
    VP = "vp"
    SUBVP = "subvp"
    VE = "ve"
    NCSN = "ncsn"
    EDM = "edm"


class ContinuousSchedule(ABC):
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

    def sample_times(self, n: int, *, device: torch.device | str = "cpu") -> Tensor:
        """t ~ U(t_min, 1), (n,) float64 (Song et al. 2021, eq. 7 with ε = t_min)."""
        return self.t_min + (self.t_max - self.t_min) * torch.rand(n, device=device, dtype=torch.float64)

    def posterior_step(self, t: Time, s: Time | None = None) -> PosteriorStep[float]:
        """q(x_s | x_t, x_0) for s < t (schedules.gaussian_posterior_step); ``s`` is required."""
        if s is None:
            raise ValueError("a continuous process has no 'previous' time: give s")
        if not (s == CLEAN or float(s) < float(t)):
            raise ValueError(f"a reverse step goes from t to s < t, got t={t}, s={s}")
        return gaussian_posterior_step(*self.alpha_sigma(t), *self.alpha_sigma(s))

    def describe(self) -> str:
        return type(self).__name__.removesuffix("Schedule").lower()


def _check_positive_range(low_name: str, low: float, high_name: str, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise ValueError(f"need 0 < {low_name} < {high_name}, got {low_name}={low}, {high_name}={high}")


def _check_t_min(t_min: float) -> None:
    if not 0.0 < t_min < 1.0:
        raise ValueError(f"t_min must lie in (0, 1), got {t_min}")


class VPSchedule(ContinuousSchedule):
    """The variance-preserving SDE dx = −½β(t) x dt + √β(t) dw with β(t) = β_min + t (β_max − β_min) (Song et al.
    2021, eq. 11 and §3.4; the continuous limit of DDPM's linear schedule: β_i = β(i/N)/N). Prior N(0, I)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5) -> None:
        _check_positive_range("beta_min", beta_min, "beta_max", beta_max)
        _check_t_min(t_min)
        self.beta_min, self.beta_max, self.t_min = float(beta_min), float(beta_max), float(t_min)

    def integral_beta(self, t: Tensor) -> Tensor:
        """B(t) = ∫_0^t β = β_min t + (β_max − β_min) t²/2."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def beta(self, t: C) -> C:
        """β(t) = β_min + t (β_max − β_min), for a float or a tensor of times."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        b = self.integral_beta(t)
        return torch.exp(-0.5 * b), torch.sqrt(-torch.expm1(-b))

    def drift_coef(self, t: float) -> float:
        return -0.5 * self.beta(t)

    def diffusion_sq_at(self, t: Tensor) -> Tensor:
        return self.beta(t)

    @property
    def prior_std(self) -> float:
        return 1.0

    def network_time(self, t: Tensor) -> Tensor:
        """999·t: the range of a 1000-step DDPM's indices (Song et al. 2021, models/utils.py)."""
        return 999.0 * t

    @property
    def config(self) -> dict[str, Any]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "t_min": self.t_min}


class SubVPSchedule(VPSchedule):
    """The sub-VP SDE dx = −½β(t) x dt + √(β(t)(1 − e^{−2B(t)})) dw (Song et al. 2021, eq. 29): σ_t = 1 − α_t²,
    below the VP's √(1 − α_t²) at every t; prior N(0, I)."""

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        b = self.integral_beta(t)
        return torch.exp(-0.5 * b), -torch.expm1(-b)

    def diffusion_sq_at(self, t: Tensor) -> Tensor:
        return self.beta(t) * -torch.expm1(-2.0 * self.integral_beta(t))


class VESchedule(ContinuousSchedule):
    """The variance-exploding SDE dx = √(dσ²/dt) dw with σ_t = σ_min (σ_max/σ_min)^t (Song et al. 2021, eq. 9 and
    §3.4): α = 1, g(t) = σ_t √(2 log(σ_max/σ_min)); prior N(0, σ_max² I). σ_max should be about the largest
    distance between two training images (Song & Ermon 2020, technique 1; :func:`sigma_max_from_data`)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5) -> None:
        _check_positive_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        _check_t_min(t_min)
        self.sigma_min, self.sigma_max, self.t_min = float(sigma_min), float(sigma_max), float(t_min)

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return torch.ones_like(sigma), sigma

    def drift_coef(self, t: float) -> float:
        return 0.0

    def diffusion_sq_at(self, t: Tensor) -> Tensor:
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return sigma**2 * (2.0 * math.log(self.sigma_max / self.sigma_min))

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def network_time(self, t: Tensor) -> Tensor:
        """log σ_t (the noise level, as NCSN++ conditions on it)."""
        return self._alpha_sigma(t.to(torch.float64))[1].log()

    @property
    def config(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "t_min": self.t_min}


class EDMSchedule(ContinuousSchedule):
    """EDM's process (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Table 1):
    time IS the noise level, σ_t = t, α = 1, t ∈ [σ_min, σ_max]; the VE SDE dx = √(dσ²/dt) dw = √(2t) dw; prior
    N(0, σ_max² I).

    Training draws ln σ ~ N(P_mean, P_std²) (Table 1, "noise distribution"; not truncated to [σ_min, σ_max], as in
    EDM); the network sees c_noise = ¼ ln σ (eq. 7). σ_data is the data's standard deviation, used by the
    preconditioning (parameterization.edm_coefficients): it is a property of the data, kept with the process so
    that a checkpoint's config carries it. Defaults: σ_min = 0.002, σ_max = 80, σ_data = 0.5, P_mean = −1.2,
    P_std = 1.2 (Table 1, CIFAR-10)."""

    karras_sigma_cap = math.inf  # the grid starts at σ_max itself

    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
    ) -> None:
        _check_positive_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(
                f"sigma_data must be a finite number > 0 (the data's standard deviation), got {sigma_data}"
            )
        if not (math.isfinite(p_mean) and math.isfinite(p_std) and p_std > 0):
            raise ValueError(f"need a finite p_mean and p_std > 0, got p_mean={p_mean}, p_std={p_std}")
        self.sigma_min, self.sigma_max, self.sigma_data = float(sigma_min), float(sigma_max), float(sigma_data)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self.t_min, self.t_max = self.sigma_min, self.sigma_max

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), t

    def drift_coef(self, t: float) -> float:
        return 0.0

    def diffusion_sq_at(self, t: Tensor) -> Tensor:
        """g(t)² = dσ²/dt = 2t."""
        return 2.0 * t

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def network_time(self, t: Tensor) -> Tensor:
        """c_noise(σ) = ¼ ln σ (Karras et al. 2022, Table 1)."""
        return 0.25 * t.to(torch.float64).log()

    def time_of_log_sigma_tilde(self, targets: Tensor) -> Tensor:
        """σ = exp(target) itself (σ̃ = σ = t), clamped to [σ_min, σ_max]."""
        return targets.exp().clamp(self.t_min, self.t_max)

    def sample_times(self, n: int, *, device: torch.device | str = "cpu") -> Tensor:
        """σ with ln σ ~ N(P_mean, P_std²), (n,) float64 (Karras et al. 2022, Table 1)."""
        return (self.p_mean + self.p_std * torch.randn(n, device=device, dtype=torch.float64)).exp()

    @property
    def config(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "sigma_data": self.sigma_data,
                "p_mean": self.p_mean, "p_std": self.p_std}  # fmt: skip


class NCSNSchedule:
    """NCSN's noise levels (Song & Ermon 2019, §4.2; 2020, techniques 1-2): L geometric levels σ_0 < … < σ_{L−1}
    between σ_min and σ_max, as a discrete schedule of indices (level i has σ_i = σ_min (σ_max/σ_min)^{i/(L−1)},
    α = 1), sampled from the top level down. Training draws a level uniformly; the network sees log σ_i."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, num_levels: int = 232) -> None:
        _check_positive_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        if not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"num_levels must be an integer >= 2, got {num_levels!r}")
        self.sigma_min, self.sigma_max, self.num_levels = float(sigma_min), float(sigma_max), num_levels
        ratio = torch.arange(num_levels, dtype=torch.float64) / (num_levels - 1)
        self.sigmas = self.sigma_min * (self.sigma_max / self.sigma_min) ** ratio  # (L,) increasing
        self._sigma_list = [0.0] + self.sigmas.tolist()  # index i + 1; [0] is CLEAN

    @property
    def num_timesteps(self) -> int:
        return self.num_levels

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    @property
    def log_sigma_tilde(self) -> Tensor:
        return self.sigmas.log()

    def alpha_sigma(self, t: Time) -> tuple[float, float]:
        i = int(t)
        if float(t) != i or not CLEAN <= i < self.num_levels:
            raise ValueError(f"NCSN level {t} outside the levels {{-1 (clean), 0, ..., {self.num_levels - 1}}}")
        return 1.0, self._sigma_list[i + 1]

    def alpha_sigma_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.sigmas.to(t.device).gather(0, t.long())
        return torch.ones_like(sigma), sigma

    def check_times(self, timesteps: Sequence[Time]) -> list[Time]:
        return list(check_index_times(timesteps, self.num_levels))

    def timesteps(self, steps: int, spacing: str | Spacing = "linspace", *, rho: float = 7.0) -> list[Time]:
        """:func:`schedules.spaced_timesteps` over the levels (all L of them at steps = L)."""
        return list(spaced_timesteps(self, steps, spacing, rho=rho))

    def time_of_sigma_tilde(self, sigma_tilde: float) -> Time:
        """The level whose σ is the nearest ≥ ``sigma_tilde`` (the top level above them all; index_of_sigma_tilde)."""
        return index_of_sigma_tilde(self.log_sigma_tilde, sigma_tilde)

    def sample_times(self, n: int, *, device: torch.device | str = "cpu") -> Tensor:
        return torch.randint(0, self.num_levels, (n,), device=device)

    def network_time(self, t: Tensor) -> Tensor:
        """log σ_i."""
        return self.sigmas.to(t.device).gather(0, t.long()).log()

    def posterior_step(self, t: Time, s: Time | None = None) -> PosteriorStep[float]:
        s = int(t) - 1 if s is None else s
        return gaussian_posterior_step(*self.alpha_sigma(t), *self.alpha_sigma(s))

    @property
    def config(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "num_levels": self.num_levels}

    def describe(self) -> str:
        return "ncsn"


def sigma_max_from_data(images: Tensor, *, max_images: int = 2000) -> float:
    """σ_max as large as the maximum Euclidean distance between two training images (Song & Ermon 2020,
    technique 1), for images (N, C, H, W) in the model's space ([−1, 1]); at most ``max_images`` are compared
    (all pairs, O(N²) in memory of N² floats)."""
    if images.ndim < 2 or len(images) < 2:
        raise ValueError(f"sigma_max_from_data needs at least 2 images, got a tensor of shape {tuple(images.shape)}")
    flat = images[:max_images].flatten(1).double()
    return float(torch.cdist(flat, flat).max())
