"""The reverse model's variance Σ_θ: the three choices of Ho et al. 2020 and Nichol & Dhariwal 2021, in one place.

* ``fixed_small``: Σ = β̃_t, the posterior variance (the better sampler of Ho et al. 2020, §3.2);
* ``fixed_large``: Σ = β_t (the tighter likelihood bound's choice);
* ``learned_range``: log Σ_θ = v' log β_t + (1 − v') log β̃_t with v' = (v + 1)/2 and v ∈ [−1, 1] a network output
  (Nichol & Dhariwal 2021, eq. 15).

On a respaced chain (a reverse step t → s < t), β_t is the step's β' = 1 − ᾱ_t/ᾱ_s and β̃ its posterior variance
(schedules.posterior_coefficients). At t = 0, the decoder's step into clean data, β̃_0 = 0: the clipped value β̃_1
stands in, for ``fixed_large`` as well (improved-diffusion's convention), so every log variance is finite.
Samplers, the training loss and the likelihood all read Σ_θ from :func:`reverse_log_variance`.
"""

from __future__ import annotations

from torch import Tensor

from .choices import Choice

Coef = Tensor | float


class VarianceType(Choice):
    """Reverse-step variance: β̃ ('fixed_small'), β ('fixed_large'), or the network's interpolation between
    log β and log β̃ ('learned_range')."""

    __option__ = "variance type"

    FIXED_SMALL = "fixed_small"
    FIXED_LARGE = "fixed_large"
    LEARNED_RANGE = "learned_range"


def learned_log_variance(var_interp: Tensor, log_beta: Coef, log_posterior_variance: Coef) -> Tensor:
    """log Σ_θ = v' log β_t + (1 − v') log β̃_t with v' = (v + 1)/2, v ∈ [−1, 1] the network's output
    (Nichol & Dhariwal 2021, eq. 15). var_interp: (B, C, H, W); the logs broadcast against it."""
    frac = (var_interp + 1) / 2
    return frac * log_beta + (1 - frac) * log_posterior_variance


def reverse_log_variance(
    variance: VarianceType,
    log_beta: Coef,
    log_posterior_variance: Coef,
    var_interp: Tensor | None = None,
    *,
    decoder_step: bool = False,
) -> Coef:
    """log Σ_θ of the reverse step, as a float or a tensor broadcastable to the images.

    Args:
        variance: the VarianceType.
        log_beta: log β of the step (β' on a respaced chain).
        log_posterior_variance: log β̃ of the step, clipped at t = 0 (see the module docstring).
        var_interp: the network's v (B, C, H, W), needed for 'learned_range'.
        decoder_step: the step is t = 0 into clean data, where 'fixed_large' uses the clipped β̃ too.
    """
    if variance is VarianceType.FIXED_SMALL or (variance is VarianceType.FIXED_LARGE and decoder_step):
        return log_posterior_variance
    if variance is VarianceType.FIXED_LARGE:
        return log_beta
    if var_interp is None:
        raise ValueError("variance 'learned_range' needs a denoiser that returns var_interp (a learned_variance model)")
    return learned_log_variance(var_interp, log_beta, log_posterior_variance)
