"""Pure conversions between the three network targets ε, x_0 and v on the Gaussian path.

x_t = α_t x_0 + σ_t ε (schedules.py states the convention); v = α_t ε − σ_t x_0 (Salimans & Ho 2022, §4, eq. 10)
assumes a variance-preserving path (α_t² + σ_t² = 1) for the v formulas, as every discrete schedule here is.
Every function broadcasts: α_t and σ_t are floats or tensors shaped like (B, 1, 1, 1) (see ``append_dims``).
"""

from __future__ import annotations

from torch import Tensor

from .choices import Choice

Coef = Tensor | float


class Objective(Choice):
    """What the network predicts (strings at the edge, this enum inside)."""

    __option__ = "objective"

    PRED_NOISE = "pred_noise"
    PRED_X0 = "pred_x0"
    PRED_V = "pred_v"


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


def x0_eps_from_output(
    objective: Objective, x_t: Tensor, out: Tensor, alpha: Coef, sigma: Coef
) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε̂) from the network output ``out`` under ``objective``. All tensors (B, C, H, W)."""
    if objective is Objective.PRED_NOISE:
        return x0_from_eps(x_t, out, alpha, sigma), out
    if objective is Objective.PRED_X0:
        return out, eps_from_x0(x_t, out, alpha, sigma)
    return x0_from_v(x_t, out, alpha, sigma), eps_from_v(x_t, out, alpha, sigma)


def target_for(objective: Objective, x0: Tensor, eps: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    """The regression target of the network under ``objective`` (ε, x_0 or v)."""
    if objective is Objective.PRED_NOISE:
        return eps
    if objective is Objective.PRED_X0:
        return x0
    return v_from_x0_eps(x0, eps, alpha, sigma)
