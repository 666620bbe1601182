"""The variance-exploding SDE of Song et al. 2021 (eq. 9): α = 1, σ_t = σ_min (σ_max/σ_min)^t; and σ_max from the
data (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative Models", technique 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import process_kind
from .continuous import ContinuousSchedule, check_positive_range, check_t_min


class FitsSigmaMax:
    """The declarations of a process whose σ_max, when not given, is the largest distance between two training
    images (Song & Ermon 2020, technique 1): ve and ncsn."""

    fitted_option: ClassVar[str | None] = "sigma_max"

    @classmethod
    def stand_in(cls, resolved: Mapping[str, float]) -> float:
        """2 σ_min: lets σ_min and the other options be checked before the data is seen (σ_min must be positive)."""
        sigma_min = resolved["sigma_min"]
        if not sigma_min > 0:
            raise ValueError(f"process_options sigma_min must be positive, got {sigma_min}")
        return 2 * sigma_min

    @classmethod
    def fit(cls, images: Tensor) -> float:
        return sigma_max_from_data(images)


@process_kind("ve")
class VESchedule(FitsSigmaMax, ContinuousSchedule):
    """The variance-exploding SDE dx = √(dσ²/dt) dw with σ_t = σ_min (σ_max/σ_min)^t (Song et al. 2021, eq. 9 and
    §3.4): α = 1, g(t) = σ_t √(2 log(σ_max/σ_min)); prior N(0, σ_max² I). σ_max should be about the largest
    distance between two training images (Song & Ermon 2020, technique 1; :func:`sigma_max_from_data`): without
    one, GaussianDiffusion computes it from the training data (``fitted_option``)."""

    recommended_sampler: ClassVar[str] = "pc"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5) -> None:
        check_positive_range("sigma_min", sigma_min, "sigma_max", sigma_max)
        check_t_min(t_min)
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


def sigma_max_from_data(images: Tensor, *, max_images: int = 2000) -> float:
    """σ_max as large as the maximum Euclidean distance between two training images (Song & Ermon 2020,
    technique 1), for images (N, C, H, W) in the model's space ([−1, 1]); at most ``max_images`` are compared
    (all pairs, O(N²) in memory of N² floats)."""
    if images.ndim < 2 or len(images) < 2:
        raise ValueError(f"sigma_max_from_data needs at least 2 images, got a tensor of shape {tuple(images.shape)}")
    flat = images[:max_images].flatten(1).double()
    return float(torch.cdist(flat, flat).max())
