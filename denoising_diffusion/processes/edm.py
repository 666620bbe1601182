"""EDM's process (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Table 1):
time IS the noise level, σ_t = t, α = 1."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import process_kind
from .continuous import ContinuousSchedule, check_positive_range
from .spacing import Spacing


@process_kind("edm")
class EDMSchedule(ContinuousSchedule):
    """EDM's path (Karras et al. 2022, Table 1): time IS the noise level, σ_t = t, α = 1, t ∈ [σ_min, σ_max]; the VE
    SDE dx = √(dσ²/dt) dw = √(2t) dw; prior N(0, σ_max² I); the network is told c_noise = ¼ ln σ (eq. 7).
    Defaults σ_min = 0.002, σ_max = 80 (Table 1).

    The rest of EDM is not the path: its preconditioning with σ_data (preconditioning.py) and its training
    distribution ln σ ~ N(P_mean, P_std²) (losses/times.py, not truncated to [σ_min, σ_max], as in EDM). Their
    options are declared here as ``companion_options`` (σ_data = 0.5, P_mean = −1.2, P_std = 1.2, Table 1's CIFAR-10
    values), so that ``process_options`` of process 'edm' (and a checkpoint's config) describe EDM as Table 1 does.
    Sampled by Heun on the Karras grid (Alg. 1; its options s_churn ... give Alg. 2)."""

    karras_sigma_cap = math.inf  # the grid starts at σ_max itself
    recommended_sampler: ClassVar[str] = "heun"
    training_times: ClassVar[str] = "log_normal"
    companion_options: ClassVar[dict[str, float]] = {"sigma_data": 0.5, "p_mean": -1.2, "p_std": 1.2}
    objective: ClassVar[str | None] = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        check_positive_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.t_min, self.t_max = self.sigma_min, self.sigma_max

    @classmethod
    def spacing_for(cls, recommended: Spacing) -> Spacing:
        """Every recommendation but 'logsnr' becomes 'karras' (ρ = 7, eq. 5): time is σ itself, and uniform steps in
        σ ∈ [0.002, 80] would waste nearly all of them at high noise."""
        return recommended if recommended is Spacing.LOGSNR else Spacing.KARRAS

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

    def times_at_sigma_tilde(self, sigma_tilde: Tensor) -> Tensor:
        """σ itself, unclamped: EDM's training σ is not truncated to [σ_min, σ_max] (the path holds at any σ > 0)."""
        return sigma_tilde.to(torch.float64)

    @property
    def config(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}
