"""The score of the noisy marginals from a noise prediction, and back: s_θ(x_t, t) = −ε̂(x_t, t)/σ_t.

On the Gaussian path x_t = α_t x_0 + σ_t ε (schedules.py), p_t(x_t | x_0) = N(α_t x_0, σ_t² I) has the score
∇ log p_t(x_t | x_0) = −(x_t − α_t x_0)/σ_t² = −ε/σ_t. Denoising score matching (Vincent 2011, §4.2) says that the
minimizer of E‖s(x_t) − ∇ log p_t(x_t | x_0)‖² is the score of the marginal, ∇ log p_t(x_t) = E[−ε/σ_t | x_t], and the
minimizer of the ε-loss is ε̂ = E[ε | x_t]; hence s_θ = −ε̂/σ_t (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", eq. 7 and App. C: the noise-prediction model is a score model up to this
scale). It holds for every α_t, so VE (α = 1), VP and sub-VP paths share it.

The one conversion every score-based sampler uses (samplers/sde.py, samplers/langevin.py). σ_t is a float or a
tensor broadcastable to ε (e.g. (B, 1, 1, 1)); σ_t = 0 (clean data) has no score.
"""

from __future__ import annotations

from torch import Tensor

Coef = Tensor | float


def score_from_eps(eps: Tensor, sigma: Coef) -> Tensor:
    """s_θ(x_t, t) = ∇_x log p_t(x_t) = −ε̂(x_t, t)/σ_t (Song et al. 2021, eq. 7; Vincent 2011).

    Args:
        eps: ε̂ (B, C, H, W), the denoiser's noise prediction at time t.
        sigma: σ_t > 0, a float or a tensor broadcastable to ``eps``.
    Returns:
        (B, C, H, W), same dtype as ``eps``.
    """
    return -eps / sigma


def eps_from_score(score: Tensor, sigma: Coef) -> Tensor:
    """ε̂ = −σ_t s_θ(x_t, t), the inverse of :func:`score_from_eps` (a score model as a noise predictor).

    Args:
        score: s_θ (B, C, H, W) at time t.
        sigma: σ_t, a float or a tensor broadcastable to ``score``.
    Returns:
        (B, C, H, W), same dtype as ``score``.
    """
    return -sigma * score
