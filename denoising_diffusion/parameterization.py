"""Pure conversions between the three network targets ε, x_0 and v on the Gaussian path.

x_t = α_t x_0 + σ_t ε (schedules.py states the convention); v = α_t ε − σ_t x_0 (Salimans & Ho 2022, §4, eq. 10)
assumes a variance-preserving path (α_t² + σ_t² = 1) for the v formulas, as every discrete schedule here is.
Every function broadcasts: α_t and σ_t are floats or tensors shaped like (B, 1, 1, 1) (see ``append_dims``).

The objective ``edm`` is Karras et al. 2022's preconditioned network ("Elucidating the Design Space of
Diffusion-Based Generative Models", eq. 7 and Table 1): the denoiser is D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x;
c_noise(σ)), so the network output F is converted to x̂_0 = D and trained on F_target = (x_0 − c_skip x)/c_out, whose
squared error is λ(σ) ‖D − x_0‖² with EDM's λ(σ) = 1/c_out². It is written in the scaled variables x̃ = x/α,
σ̃ = σ/α (Karras et al. 2022, eq. 4), which are x and σ on EDM's own process (α = 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .choices import Choice

Coef = Tensor | float


class Objective(Choice):
    """What the network predicts (strings at the edge, this enum inside)."""

    __option__ = "objective"

    PRED_NOISE = "pred_noise"
    PRED_X0 = "pred_x0"
    PRED_V = "pred_v"
    EDM = "edm"


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a (B,) tensor broadcasts against a (B, ...) tensor of ``ndim`` dims."""
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(f"cannot broadcast a {x.ndim}-d tensor against {ndim} dims")
    return x.reshape(*x.shape, *([1] * missing))


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    """x̂_0 = (x_t − σ_t ε̂) / α_t."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    """ε̂ = (x_t − α_t x̂_0) / σ_t (undefined at σ_t = 0)."""
    return (x_t - alpha * x0) / sigma


def v_from_x0_eps(x0: Tensor, eps: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    """v = α_t ε − σ_t x_0 (Salimans & Ho 2022, eq. 10)."""
    return alpha * eps - sigma * x0


def x0_from_v(x_t: Tensor, v: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    """x̂_0 = α_t x_t − σ_t v̂ (variance preserving: α_t² + σ_t² = 1)."""
    return alpha * x_t - sigma * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    """ε̂ = σ_t x_t + α_t v̂ (variance preserving)."""
    return sigma * x_t + alpha * v


def edm_coefficients(sigma: Coef, sigma_data: float) -> tuple[Coef, Coef, Coef]:
    """(c_skip, c_out, c_in) of EDM's preconditioning at noise level σ (Karras et al. 2022, Table 1 and eq. 7):
    c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²), with σ_d = ``sigma_data``. They make
    the network's input c_in x̃ and its ideal target F* of unit variance when the data's spread is σ_d (App. B.6)."""
    total = sigma**2 + sigma_data**2
    root = torch.sqrt(total) if isinstance(total, Tensor) else total**0.5
    return sigma_data**2 / total, sigma * sigma_data / root, 1 / root


def edm_loss_weight(sigma: Coef, sigma_data: float) -> Coef:
    """λ(σ) = (σ² + σ_d²)/(σ σ_d)² = 1/c_out² (Karras et al. 2022, Table 1): EDM's weight on ‖D − x_0‖², which
    :func:`target_for` folds into the target F_target so that ‖F − F_target‖² is the weighted loss."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _require_sigma_data(sigma_data: float | None) -> float:
    if sigma_data is None:
        raise ValueError("objective 'edm' needs sigma_data (the EDM process's option)")
    return sigma_data


def x0_eps_from_output(
    objective: Objective, x_t: Tensor, out: Tensor, alpha: Coef, sigma: Coef, sigma_data: float | None = None
) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε̂) from the network output ``out`` under ``objective``. All tensors (B, C, H, W).

    ``edm``: x̂_0 = D = c_skip(σ̃) x̃ + c_out(σ̃) F with x̃ = x_t/α, σ̃ = σ/α (:func:`edm_coefficients`, ``sigma_data``
    required), and ε̂ = (x̃ − x̂_0)/σ̃."""
    if objective is Objective.EDM:
        x_tilde, sigma_tilde = x_t / alpha, sigma / alpha
        c_skip, c_out, _ = edm_coefficients(sigma_tilde, _require_sigma_data(sigma_data))
        x0 = c_skip * x_tilde + c_out * out
        return x0, (x_tilde - x0) / sigma_tilde
    if objective is Objective.PRED_NOISE:
        return x0_from_eps(x_t, out, alpha, sigma), out
    if objective is Objective.PRED_X0:
        return out, eps_from_x0(x_t, out, alpha, sigma)
    return x0_from_v(x_t, out, alpha, sigma), eps_from_v(x_t, out, alpha, sigma)


def target_for(
    objective: Objective, x0: Tensor, eps: Tensor, alpha: Coef, sigma: Coef, sigma_data: float | None = None
) -> Tensor:
    """The regression target of the network under ``objective`` (ε, x_0, v, or EDM's F_target).

    ``edm``: F_target = (x_0 − c_skip x̃)/c_out with x̃ = x_t/α = x_0 + σ̃ ε (Karras et al. 2022, eq. 8), so that
    ‖F − F_target‖² = λ(σ̃) ‖D − x_0‖² with λ = 1/c_out² (:func:`edm_loss_weight`)."""
    if objective is Objective.EDM:
        sigma_tilde = sigma / alpha
        c_skip, c_out, _ = edm_coefficients(sigma_tilde, _require_sigma_data(sigma_data))
        return (x0 - c_skip * (x0 + sigma_tilde * eps)) / c_out
    if objective is Objective.PRED_NOISE:
        return eps
    if objective is Objective.PRED_X0:
        return x0
    return v_from_x0_eps(x0, eps, alpha, sigma)
