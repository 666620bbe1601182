"""NCSN's noise levels (Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the Data Distribution";
2020, "Improved Techniques for Training Score-Based Generative Models"): L geometric levels, α = 1, as a discrete
process sampled by annealed Langevin dynamics."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor

from .base import ProcessDeclarations, process_kind
from .continuous import check_positive_range
from .path import CLEAN, PosteriorStep, Time, check_index_times, gaussian_posterior_step
from .spacing import Spacing, index_of_sigma_tilde, spaced_timesteps
from .ve import FitsSigmaMax


@process_kind("ncsn")
class NCSNSchedule(FitsSigmaMax, ProcessDeclarations):
    """NCSN's noise levels (Song & Ermon 2019, §4.2; 2020, techniques 1-2): L geometric levels σ_0 < … < σ_{L−1}
    between σ_min and σ_max, as a discrete schedule of indices (level i has σ_i = σ_min (σ_max/σ_min)^{i/(L−1)},
    α = 1), sampled from the top level down. Training draws a level uniformly; the network sees log σ_i.
    GaussianDiffusion's ``timesteps`` is L; σ_max, when not given, is computed from the data as for ve.py."""

    continuous: ClassVar[bool] = False
    recommended_sampler: ClassVar[str] = "annealed_langevin"
    fallback_sampler: ClassVar[str] = "ddpm"  # ancestral steps between adjacent levels (Song et al. 2021, eq. 47)
    timesteps_option: ClassVar[str | None] = "num_levels"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, num_levels: int = 232) -> None:
        check_positive_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        if not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"num_levels must be an integer >= 2, got {num_levels!r}")
        self.sigma_min, self.sigma_max, self.num_levels = float(sigma_min), float(sigma_max), num_levels
        ratio = torch.arange(num_levels, dtype=torch.float64) / (num_levels - 1)
        self.sigmas = self.sigma_min * (self.sigma_max / self.sigma_min) ** ratio  # (L,) increasing
        self._sigma_list = [0.0] + self.sigmas.tolist()  # index i + 1; [0] is CLEAN
        self._on_device: dict[torch.device, Tensor] = {}

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
        sigma = self._sigmas_on(t.device).gather(0, t.long())
        return torch.ones_like(sigma), sigma

    def _sigmas_on(self, device: torch.device) -> Tensor:
        """σ_i (L,) float64 on ``device``, copied there once."""
        if device not in self._on_device:
            self._on_device[device] = self.sigmas.to(device)
        return self._on_device[device]

    def check_times(self, timesteps: Sequence[Time]) -> list[Time]:
        return list(check_index_times(timesteps, self.num_levels))

    def timesteps(self, steps: int, spacing: str | Spacing = "linspace", *, rho: float = 7.0) -> list[Time]:
        """:func:`spacing.spaced_timesteps` over the levels (all L of them at steps = L)."""
        return list(spaced_timesteps(self, steps, spacing, rho=rho))

    def time_of_sigma_tilde(self, sigma_tilde: float) -> Time:
        """The level whose σ is the nearest ≥ ``sigma_tilde`` (the top level above them all; index_of_sigma_tilde)."""
        return index_of_sigma_tilde(self.log_sigma_tilde, sigma_tilde)

    def network_time(self, t: Tensor) -> Tensor:
        """log σ_i."""
        return self._sigmas_on(t.device).gather(0, t.long()).log()

    def posterior_step(self, t: Time, s: Time | None = None) -> PosteriorStep[float]:
        s = int(t) - 1 if s is None else s
        return gaussian_posterior_step(*self.alpha_sigma(t), *self.alpha_sigma(s))

    @property
    def config(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "num_levels": self.num_levels}

    def describe(self) -> str:
        return "ncsn"
