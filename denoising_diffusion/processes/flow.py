"""Flow matching's paths (Lipman et al. 2023, "Flow Matching for Generative Modeling", §4.1 with σ_min = 0; Liu et
al. 2023, "Flow Straight and Fast", eq. 1; Albergo & Vanden-Eijnden 2023, "Building Normalizing Flows with
Stochastic Interpolants", the trigonometric interpolant): x_t = α_t x_0 + σ_t ε with t = 0 the data and t = 1 the
noise, N(0, I) (the time convention of every process here, the reverse of Lipman et al.'s).

=============  ==========  ==========  ==========================  =====================  =====================
process        α_t         σ_t         (α'_t, σ'_t)                f(t) = α'/α            g(t)² = dσ²/dt − 2fσ²
=============  ==========  ==========  ==========================  =====================  =====================
flow           1 − t       t           (−1, 1)                     −1/(1 − t)             2t/(1 − t)
flow_cosine    cos(πt/2)   sin(πt/2)   (π/2)(−sin, cos)(πt/2)      −(π/2) tan(πt/2)       π tan(πt/2)
=============  ==========  ==========  ==========================  =====================  =====================

The velocity of the path, v = dx_t/dt = α'_t x_0 + σ'_t ε (ε − x_0 on the straight path), is what the objective
``pred_velocity`` trains (parameterization.py); :meth:`FlowSchedule.path_derivatives_at` gives (α'_t, σ'_t), and
f and g² follow from them (Kingma et al. 2021, eq. 30: f = d log α/dt, g² = dσ²/dt − 2fσ²), so that every SDE-based
sampler, the adaptive ODE and the ODE likelihood run on these paths too.

**The time range.** At t = 1, α = 0: f and g² are infinite (the forward SDE exists on [0, 1) only), and the
scaled variables σ̃ = σ/α and λ = log(α/σ), in which Heun, DPM-Solver++, the likelihood and the Karras and log-SNR
grids are written, are infinite. Samplers therefore start at t_max = 0.999 (σ̃ = 999, λ = −6.9, like the VP
process's λ(1) = −5), where the prior N(0, I) misses the true marginal by α_{t_max} x_0, 0.001 of the data
(a KL of about 5·10⁻⁷ nats per dimension for data in [−1, 1]). They end at t_min = 0.001 (σ = 0.001, like the VP
process's σ(t_min = 10⁻⁵) ≈ 0.001 and EDM's σ_min = 0.002; Liu et al. 2023's code integrates from ε = 10⁻³), then
take the final step to clean data. Training times lie in the same range.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import process_kind
from .continuous import ContinuousSchedule

DEFAULT_T_MIN = 1e-3
DEFAULT_T_MAX = 0.999


@process_kind("flow")
class FlowSchedule(ContinuousSchedule):
    """The straight path of flow matching and rectified flow: α_t = 1 − t, σ_t = t, t ∈ [t_min, t_max] (Lipman et al.
    2023, eq. 20 with σ_min = 0; Liu et al. 2023, eq. 1); prior N(0, I); the network is told 999·t (the VP
    process's convention) and predicts the velocity v = ε − x_0 (``pred_velocity``) by default. Trained with t
    uniform by default (``training_times='logit_normal'``: Esser et al. 2024's logit-normal); sampled by Euler in t
    (``euler``: DDIM with η = 0 is exactly Euler's step x_s = x_t + (s − t) v̂ on this path).

    Args:
        t_min: the smallest time samplers visit before the final step to clean data, in (0, t_max).
        t_max: the time sampling starts from, in (t_min, 1): below 1, where α = 0 (see the module docstring).
    """

    recommended_sampler: ClassVar[str] = "euler"
    objective: ClassVar[str | None] = "pred_velocity"
    variance_preserving: ClassVar[bool] = False  # α² + σ² = 1, which the objective 'pred_v' needs
    refused_samplers: ClassVar[dict[str, str]] = {
        "annealed_langevin": "annealed Langevin dynamics carries its chain from level to level with Langevin steps "
        "of size ∝ σ_t² (Song & Ermon 2019, §4.3), which assumes that consecutive marginals differ only in their "
        "noise (α = 1 on NCSN's levels, 1 − α_t = O(σ_t²) on variance-preserving paths); on the straight path "
        "α_t = 1 − σ_t, so the marginals' mean α_t x_0 moves at first order in σ_t, where those steps can no longer "
        "follow it (with the exact score of a Gaussian mixture the means come out 15-20% short at 100 and at 400 "
        "levels, against 5-7% on the VP path). Use 'pc' or "
        "'euler_maruyama' for a score-based sampler, or process 'flow_cosine'"
    }

    def __init__(self, t_min: float = DEFAULT_T_MIN, t_max: float = DEFAULT_T_MAX) -> None:
        if not (0.0 < t_min < t_max < 1.0):
            raise ValueError(
                f"need 0 < t_min < t_max < 1 (at t = 1 α = 0 and f, g², σ/α are infinite), got t_min={t_min}, "
                f"t_max={t_max}"
            )
        self.t_min, self.t_max = float(t_min), float(t_max)

    @classmethod
    def check_objective(cls, objective: str) -> None:
        """As every process's, and: 'pred_v' (Salimans & Ho's v = α ε − σ x_0) converts with α² + σ² = 1, which
        the straight path does not have."""
        super().check_objective(objective)
        if objective == "pred_v" and not cls.variance_preserving:
            raise ValueError(
                f"objective 'pred_v' (v = α ε − σ x_0, Salimans & Ho 2022) converts only on variance-preserving paths "
                f"(α² + σ² = 1); process {cls.name!r} is not one: use 'pred_velocity' (v = dx_t/dt = ε − x_0), "
                "'pred_noise' or 'pred_x0', or process 'flow_cosine'"
            )

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1.0 - t, t

    def path_derivatives_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α'_t, σ'_t) = (dα_t/dt, dσ_t/dt) at float64 times t (any shape): (−1, 1)."""
        return -torch.ones_like(t), torch.ones_like(t)

    def drift_coef(self, t: float) -> float:
        """f(t) = α'_t/α_t = d log α_t/dt."""
        time = torch.tensor(float(t), dtype=torch.float64)
        return float(self.path_derivatives_at(time)[0] / self._alpha_sigma(time)[0])

    def diffusion_sq_at(self, t: Tensor) -> Tensor:
        """g(t)² = dσ²/dt − 2fσ² = 2σ(α σ' − σ α')/α."""
        alpha, sigma = self._alpha_sigma(t)
        d_alpha, d_sigma = self.path_derivatives_at(t)
        return 2.0 * sigma * (alpha * d_sigma - sigma * d_alpha) / alpha

    @property
    def prior_std(self) -> float:
        return 1.0

    def network_time(self, t: Tensor) -> Tensor:
        """999·t, as the VP process (a network sees the range of a 1000-step DDPM's indices)."""
        return 999.0 * t

    def time_of_log_sigma_tilde(self, targets: Tensor) -> Tensor:
        """σ̃ = t/(1 − t), so t = sigmoid(log σ̃), clamped to [t_min, t_max]."""
        return torch.sigmoid(targets.to(torch.float64)).clamp(self.t_min, self.t_max)

    @property
    def config(self) -> dict[str, Any]:
        return {"t_min": self.t_min, "t_max": self.t_max}


@process_kind("flow_cosine")
class CosineFlowSchedule(FlowSchedule):
    """The trigonometric interpolant α_t = cos(πt/2), σ_t = sin(πt/2) (Albergo & Vanden-Eijnden 2023, §3; Nichol &
    Dhariwal 2021's cosine schedule without its offset, in continuous time): a variance-preserving path, so the
    objective 'pred_v' (Salimans & Ho 2022) is allowed here and equals (2/π)·v of 'pred_velocity'. Otherwise as
    :class:`FlowSchedule` (same options, defaults, prior and network time).

    A second registered process rather than an option of 'flow': process options are numbers (they go through
    ``resolve_options`` and checkpoint configs as floats), the two paths differ in what they declare (which
    objectives convert), and one class per path is the house rule (processes/base.py)."""

    variance_preserving: ClassVar[bool] = True
    refused_samplers: ClassVar[dict[str, str]] = {}  # 1 − α_t = O(σ_t²), as on VP paths: annealed Langevin serves it

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        angle = 0.5 * math.pi * t
        return torch.cos(angle), torch.sin(angle)

    def path_derivatives_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α'_t, σ'_t) = (π/2)(−sin(πt/2), cos(πt/2))."""
        angle = 0.5 * math.pi * t
        return -0.5 * math.pi * torch.sin(angle), 0.5 * math.pi * torch.cos(angle)

    def time_of_log_sigma_tilde(self, targets: Tensor) -> Tensor:
        """σ̃ = tan(πt/2), so t = (2/π) atan(σ̃), clamped to [t_min, t_max]."""
        return (2.0 / math.pi * torch.atan(targets.to(torch.float64).exp())).clamp(self.t_min, self.t_max)
