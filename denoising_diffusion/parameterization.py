"""Pure conversions between the network targets ε, x_0, v and the velocity, and the score, on the Gaussian path.

x_t = α_t x_0 + σ_t ε (processes/path.py states the convention); v = α_t ε − σ_t x_0 (Salimans & Ho 2022, §4,
eq. 10) assumes a variance-preserving path (α_t² + σ_t² = 1) for the v formulas, as every discrete schedule here is.
Every function broadcasts: α_t and σ_t are floats or tensors shaped like (B, 1, 1, 1) (see ``append_dims``).

The *velocity* u = dx_t/dt = α'_t x_0 + σ'_t ε (flow matching, Lipman et al. 2023, eq. 15; rectified flow, Liu et
al. 2023, eq. 1: u = ε − x_0 on the straight path α = 1 − t, σ = t) holds on any differentiable path; with the
path's time derivatives α'_t, σ'_t it converts back through the 2×2 system [x_t; u] = [[α, σ], [α', σ']] [x_0; ε],
whose determinant α σ' − σ α' is 1 on the straight path, π/2 on the cosine one (and > 0 wherever σ/α increases).

The score of the noisy marginals is s_θ(x_t, t) = −ε̂(x_t, t)/σ_t: p_t(x_t | x_0) = N(α_t x_0, σ_t² I) has the score
−ε/σ_t, and denoising score matching (Vincent 2011, §4.2) says the minimizer of the ε-loss, ε̂ = E[ε | x_t], gives
the score of the marginal, E[−ε/σ_t | x_t] (Song et al. 2021, eq. 7 and App. C). It holds for every α_t, so VE
(α = 1), VP and sub-VP paths share it; every score-based sampler uses :func:`score_from_eps`.

The objective ``edm`` (Karras et al. 2022's preconditioned network) is preconditioning.py's
:class:`~denoising_diffusion.preconditioning.EDMPreconditioning`: its conversions need σ_data.
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
    PRED_VELOCITY = "pred_velocity"
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


def velocity_from_x0_eps(x0: Tensor, eps: Tensor, d_alpha: Coef, d_sigma: Coef) -> Tensor:
    """u = dx_t/dt = α'_t x_0 + σ'_t ε (Lipman et al. 2023, eq. 15; = ε − x_0 on the straight path, Liu et al. 2023,
    eq. 1). x0, eps: (B, C, H, W); d_alpha, d_sigma: α'_t, σ'_t broadcastable to them."""
    return d_alpha * x0 + d_sigma * eps


def x0_from_velocity(x_t: Tensor, u: Tensor, alpha: Coef, sigma: Coef, d_alpha: Coef, d_sigma: Coef) -> Tensor:
    """x̂_0 = (σ'_t x_t − σ_t û)/(α_t σ'_t − σ_t α'_t) (= x_t − t û on the straight path). x_t, u: (B, C, H, W)."""
    return (d_sigma * x_t - sigma * u) / (alpha * d_sigma - sigma * d_alpha)


def eps_from_velocity(x_t: Tensor, u: Tensor, alpha: Coef, sigma: Coef, d_alpha: Coef, d_sigma: Coef) -> Tensor:
    """ε̂ = (α_t û − α'_t x_t)/(α_t σ'_t − σ_t α'_t) (= x_t + (1 − t) û on the straight path). x_t, u: (B, C, H, W)."""
    return (alpha * u - d_alpha * x_t) / (alpha * d_sigma - sigma * d_alpha)


def x0_eps_from_output(
    objective: Objective,
    x_t: Tensor,
    out: Tensor,
    alpha: Coef,
    sigma: Coef,
    d_alpha: Coef | None = None,
    d_sigma: Coef | None = None,
) -> tuple[Tensor, Tensor]:
    """(x̂_0, ε̂) from the network output ``out`` under ``objective`` ('pred_noise', 'pred_x0', 'pred_v',
    'pred_velocity': that one needs the path's derivatives ``d_alpha`` = α'_t, ``d_sigma`` = σ'_t). All tensors
    (B, C, H, W)."""
    _require_plain(objective)
    if objective is Objective.PRED_NOISE:
        return x0_from_eps(x_t, out, alpha, sigma), out
    if objective is Objective.PRED_X0:
        return out, eps_from_x0(x_t, out, alpha, sigma)
    if objective is Objective.PRED_VELOCITY:
        d_alpha, d_sigma = _require_derivatives(d_alpha, d_sigma)
        return (
            x0_from_velocity(x_t, out, alpha, sigma, d_alpha, d_sigma),
            eps_from_velocity(x_t, out, alpha, sigma, d_alpha, d_sigma),
        )
    return x0_from_v(x_t, out, alpha, sigma), eps_from_v(x_t, out, alpha, sigma)


def target_for(
    objective: Objective,
    x0: Tensor,
    eps: Tensor,
    alpha: Coef,
    sigma: Coef,
    d_alpha: Coef | None = None,
    d_sigma: Coef | None = None,
) -> Tensor:
    """The regression target of the network under ``objective``: ε, x_0, v or the velocity α'_t x_0 + σ'_t ε."""
    _require_plain(objective)
    if objective is Objective.PRED_NOISE:
        return eps
    if objective is Objective.PRED_X0:
        return x0
    if objective is Objective.PRED_VELOCITY:
        return velocity_from_x0_eps(x0, eps, *_require_derivatives(d_alpha, d_sigma))
    return v_from_x0_eps(x0, eps, alpha, sigma)


def _require_derivatives(d_alpha: Coef | None, d_sigma: Coef | None) -> tuple[Coef, Coef]:
    if d_alpha is None or d_sigma is None:
        raise ValueError("objective 'pred_velocity' needs the path's time derivatives d_alpha = α'_t, d_sigma = σ'_t")
    return d_alpha, d_sigma


def _require_plain(objective: Objective) -> None:
    if objective is Objective.EDM:
        raise ValueError("objective 'edm' converts through preconditioning.EDMPreconditioning (it needs sigma_data)")


def score_from_eps(eps: Tensor, sigma: Coef) -> Tensor:
    """s_θ(x_t, t) = ∇_x log p_t(x_t) = −ε̂(x_t, t)/σ_t (Song et al. 2021, eq. 7; Vincent 2011).

    Args:
        eps: ε̂ (B, C, H, W), the denoiser's noise prediction at time t.
        sigma: σ_t > 0, a float or a tensor broadcastable to ``eps``.
    Returns:
        (B, C, H, W), same dtype as ``eps``.
    """
    return -eps / sigma


def score_from_velocity(x_t: Tensor, u: Tensor, alpha: Coef, sigma: Coef, d_alpha: Coef, d_sigma: Coef) -> Tensor:
    """∇ log p_t(x_t) = −ε̂/σ_t with ε̂ from the velocity û (:func:`eps_from_velocity`): a velocity model's score, for
    the SDE samplers. x_t, u: (B, C, H, W); σ_t > 0."""
    return score_from_eps(eps_from_velocity(x_t, u, alpha, sigma, d_alpha, d_sigma), sigma)


def eps_from_score(score: Tensor, sigma: Coef) -> Tensor:
    """ε̂ = −σ_t s_θ(x_t, t), the inverse of :func:`score_from_eps` (a score model as a noise predictor).

    Args:
        score: s_θ (B, C, H, W) at time t.
        sigma: σ_t, a float or a tensor broadcastable to ``score``.
    Returns:
        (B, C, H, W), same dtype as ``score``.
    """
    return -sigma * score
