"""The sub-VP SDE of Song et al. 2021 (eq. 29): the VP's drift with a smaller diffusion, σ_t = 1 − α_t²."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import process_kind
from .vp import VPSchedule


@process_kind("subvp")
class SubVPSchedule(VPSchedule):
    """The sub-VP SDE dx = −½β(t) x dt + √(β(t)(1 − e^{−2B(t)})) dw (Song et al. 2021, eq. 29): σ_t = 1 − α_t²,
    below the VP's √(1 − α_t²) at every t; prior N(0, I)."""

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        b = self.integral_beta(t)
        return torch.exp(-0.5 * b), -torch.expm1(-b)

    def diffusion_sq_at(self, t: Tensor) -> Tensor:
        return self.beta(t) * -torch.expm1(-2.0 * self.integral_beta(t))
