"""The variance-preserving SDE of Song et al. 2021 ("Score-Based Generative Modeling through Stochastic Differential
Equations", eq. 11): α_t = exp(−B(t)/2), σ_t = √(1 − α_t²), B(t) = ∫_0^t β, β linear in t."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from .base import process_kind
from .continuous import ContinuousSchedule, check_positive_range, check_t_min

C = TypeVar("C", float, Tensor)  # a time: a Python float or a tensor of times


@process_kind("vp")
class VPSchedule(ContinuousSchedule):
    """The variance-preserving SDE dx = −½β(t) x dt + √β(t) dw with β(t) = β_min + t (β_max − β_min) (Song et al.
    2021, eq. 11 and §3.4; the continuous limit of DDPM's linear schedule: β_i = β(i/N)/N). Prior N(0, I).
    Sampled by default with the predictor-corrector sampler 'pc' (Song et al. 2021, §4.2)."""

    recommended_sampler: ClassVar[str] = "pc"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5) -> None:
        check_positive_range("beta_min", beta_min, "beta_max", beta_max)
        check_t_min(t_min)
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
