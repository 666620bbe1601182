"""The discrete ddpm process (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"): T steps of a β schedule
(beta_schedules.py), with THE time convention of path.py: t ∈ {0, …, T−1}, ᾱ_t = ∏_{s≤t} (1 − β_s),
x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, and t = −1 (CLEAN) the clean data. Sampled by ancestral DDPM at T steps and by DDIM
on fewer (respaced: β recomputed from the kept ᾱ, Nichol & Dhariwal 2021, App. B).
"""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from .base import ProcessDeclarations, process_kind
from .beta_schedules import BetaSchedule, make_betas
from .path import CLEAN, PosteriorStep, Time, check_index_times, posterior_coefficients
from .spacing import Spacing, index_of_sigma_tilde, spaced_timesteps


@process_kind("ddpm")
@dataclass(frozen=True, eq=False)
class NoiseSchedule(ProcessDeclarations):
    """The discrete ddpm process (Ho et al. 2020): a variance-preserving schedule of T steps, all values float64.

    Everything is derived from ``betas`` (T,) (path.py states the time convention). Samplers read it through
    :meth:`alpha_sigma`, which maps an index t ∈ {−1, 0, …, T−1} to the Python floats (α_t, σ_t) of the Gaussian
    path, with (1, 0) at t = −1; batches of indices read the float64 tables through :meth:`alpha_sigma_at` and
    :meth:`posterior_at`, kept once per device (derived from ``betas``, never saved).
    """

    continuous: ClassVar[bool] = False

    betas: Tensor

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        object.__setattr__(self, "betas", betas)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        object.__setattr__(self, "_ac", alphas_cumprod)
        object.__setattr__(self, "_ac_list", [1.0] + alphas_cumprod.tolist())  # index t + 1; [0] is t = -1
        object.__setattr__(self, "_on_device", {})  # device -> the tables there (float64), made once

    # ----- GaussianDiffusion's arguments ---------------------------------------------------------------------------

    @classmethod
    def option_defaults(cls) -> dict[str, float | None]:
        return {}

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any] | None) -> dict[str, float]:
        """ddpm takes no process_options: ValueError for any (its schedule is ``beta_schedule``)."""
        if options:
            raise ValueError(
                f"process_options {sorted(options)} are for the continuous processes (vp, subvp, ve, ncsn, edm); "
                "process='ddpm' takes its schedule from beta_schedule"
            )
        return {}

    @classmethod
    def options_of(cls, process: Any) -> dict[str, Any]:
        """None: a ddpm process is described by its betas (GaussianDiffusion's ``beta_schedule``)."""
        return {}

    @classmethod
    def from_arguments(cls, resolved: Mapping[str, float], timesteps: int, beta_schedule: Any = "cosine") -> Any:
        """T = ``timesteps`` steps of the β schedule ``beta_schedule`` (a name of beta_schedules.py, or T betas)."""
        return cls.from_name(beta_schedule, timesteps)

    @classmethod
    def default_sampler(cls, sampling_steps: int, num_timesteps: int, registered: Container[str]) -> str:
        """DDIM when sampling fewer steps than T (its respaced update is exact on any subset), else ancestral DDPM."""
        return "ddim" if sampling_steps < num_timesteps else "ddpm"

    @property
    def config(self) -> dict[str, Any]:
        """The betas (the process's only parameter); GaussianDiffusion records the schedule's name instead."""
        return {"betas": self.betas.tolist()}

    @classmethod
    def from_name(cls, schedule: str | BetaSchedule | Tensor | Sequence[float], timesteps: int) -> NoiseSchedule:
        return cls(make_betas(schedule, timesteps))

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> Tensor:
        return 1 - self.betas

    @property
    def alphas_cumprod(self) -> Tensor:
        return self._ac  # type: ignore[attr-defined]

    @property
    def alphas_cumprod_prev(self) -> Tensor:
        return torch.cat([self.betas.new_ones(1), self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> Tensor:
        """β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) (Ho et al. 2020, eq. 7); β̃_0 = 0."""
        return posterior_coefficients(self.alphas_cumprod, self.alphas_cumprod_prev)[2]

    @property
    def posterior_log_variance_clipped(self) -> Tensor:
        """log β̃_t with β̃_0 replaced by β̃_1, so the log is finite (Nichol & Dhariwal 2021, §3.1)."""
        var = self.posterior_variance
        return torch.log(torch.cat([var[1:2], var[1:]]))

    @property
    def posterior_mean_coef1(self) -> Tensor:
        """Coefficient c_0 of x_0 in μ̃_t(x_t, x_0) (Ho et al. 2020, eq. 7)."""
        return posterior_coefficients(self.alphas_cumprod, self.alphas_cumprod_prev)[0]

    @property
    def posterior_mean_coef2(self) -> Tensor:
        """Coefficient c_t of x_t in μ̃_t(x_t, x_0) (Ho et al. 2020, eq. 7)."""
        return posterior_coefficients(self.alphas_cumprod, self.alphas_cumprod_prev)[1]

    def posterior_step(self, t: Time, s: Time | None = None) -> PosteriorStep[float]:
        """q(x_s | x_t, x_0) as floats for the reverse step t → s (default s = t − 1; s = −1 is clean data)."""
        t = _index(t, self.num_timesteps)
        s = t - 1 if s is None else _index(s, self.num_timesteps)
        if not CLEAN <= s < t:
            raise ValueError(f"a reverse step goes from t to s < t (s >= -1), got t={t}, s={s}")
        c0, ct, variance, beta = posterior_coefficients(self.alphabar(t), self.alphabar(s))
        clipped = variance if variance > 0 else posterior_coefficients(self.alphabar(1), self.alphabar(0))[2]
        return PosteriorStep(c0, ct, variance, math.log(clipped), beta, math.log(beta))

    @property
    def snr(self) -> Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) = exp(2 λ_t)."""
        return self.alphas_cumprod / (1 - self.alphas_cumprod)

    def alphabar(self, t: int) -> float:
        """ᾱ_t as a Python float, with ᾱ_{−1} = 1."""
        if not CLEAN <= t < self.num_timesteps:
            raise IndexError(f"time index {t} outside [-1, {self.num_timesteps - 1}]")
        return self._ac_list[t + 1]  # type: ignore[attr-defined]

    def alpha_sigma(self, t: Time) -> tuple[float, float]:
        """(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) of the Gaussian path; (1, 0) at t = −1."""
        ab = self.alphabar(_index(t, self.num_timesteps))
        return math.sqrt(ab), math.sqrt(1.0 - ab)

    def alpha_sigma_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(√ᾱ_t, √(1 − ᾱ_t)) for indices t (B,) int64, float64 on t's device."""
        tables = self._tables(t.device)
        return tables["sqrt_alphas_cumprod"].gather(0, t.long()), tables["sqrt_one_minus_alphas_cumprod"].gather(
            0, t.long()
        )

    def posterior_at(self, t: Tensor) -> PosteriorStep[Tensor]:
        """q(x_{t−1} | x_t, x_0) at indices t (B,): coefficients (B,) float64 on t's device (the training loss's VLB
        term reads it; one step at a time, samplers use :meth:`posterior_step`)."""
        tables, index = self._tables(t.device), t.long()
        return PosteriorStep(
            *(tables[name].gather(0, index) for name in ("c0", "ct", "variance", "log_variance", "betas", "log_betas"))
        )

    def snr_at(self, t: Tensor) -> Tensor:
        """ᾱ_t/(1 − ᾱ_t) at indices t (B,), float64 on t's device."""
        return self._tables(t.device)["snr"].gather(0, t.long())

    def _tables(self, device: torch.device) -> dict[str, Tensor]:
        """The per-step tables on ``device`` (float64), computed once per device from ``betas``."""
        cache: dict[torch.device, dict[str, Tensor]] = self._on_device  # type: ignore[attr-defined]
        if device not in cache:
            ac = self.alphas_cumprod
            tables = {
                "sqrt_alphas_cumprod": ac.sqrt(),
                "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(),
                "c0": self.posterior_mean_coef1,
                "ct": self.posterior_mean_coef2,
                "variance": self.posterior_variance,
                "log_variance": self.posterior_log_variance_clipped,
                "betas": self.betas,
                "log_betas": self.betas.log(),
                "snr": self.snr,
            }
            cache[device] = {name: table.to(device) for name, table in tables.items()}
        return cache[device]

    @property
    def prior_std(self) -> float:
        """1: sampling starts from x_T ~ N(0, I)."""
        return 1.0

    @property
    def log_sigma_tilde(self) -> Tensor:
        """log σ̃_t = log(σ_t/α_t) = −λ_t for each index (T,), float64, increasing (what the continuous spacings use)."""
        return 0.5 * torch.log((1 - self.alphas_cumprod) / self.alphas_cumprod)

    def check_times(self, timesteps: Sequence[Time]) -> list[Time]:
        """Strictly decreasing int indices in [0, T) (see :func:`check_index_times`)."""
        return list(check_index_times(timesteps, self.num_timesteps))

    def timesteps(self, steps: int, spacing: str | Spacing = "linspace", *, rho: float = 7.0) -> list[Time]:
        """:func:`spaced_timesteps` of this schedule."""
        return list(spaced_timesteps(self, steps, spacing, rho=rho))

    def time_of_sigma_tilde(self, sigma_tilde: float) -> Time:
        """The index whose σ̃ is the nearest ≥ ``sigma_tilde`` (T − 1 above them all): :func:`index_of_sigma_tilde`."""
        return index_of_sigma_tilde(self.log_sigma_tilde, sigma_tilde)

    def network_time(self, t: Tensor) -> Tensor:
        """The index itself: the network's time input is t ∈ {0, …, T−1}."""
        return t


def _index(t: Time, num_timesteps: int) -> int:
    """t as an int index of a discrete schedule; ValueError for a non-integer time."""
    if isinstance(t, int):
        return t
    if float(t) != int(t):
        raise ValueError(f"this schedule is discrete (indices 0..{num_timesteps - 1}); got the non-integer time {t}")
    return int(t)
