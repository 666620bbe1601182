"""Classifier-free guidance (Ho & Salimans 2021), as a combination of two predictions and as a denoiser wrapper
that every sampler can use.

A conditional model p(x | y) trained with the condition dropped at some rate (replaced by a learned null ∅) also
models p(x). Guidance sharpens the conditional towards y with the implicit classifier p(y | x_t) ∝ p(x_t | y) /
p(x_t): the guided score ∇ log p(x_t) + s ∇ log p(y | x_t) = (1 − s) ∇ log p(x_t) + s ∇ log p(x_t | y). With
ε̂ = −σ_t ∇ log p(x_t) this is, in the model's noise prediction,

    ε̃ = ε̂(x_t | ∅) + s (ε̂(x_t | y) − ε̂(x_t | ∅))            (Ho & Salimans 2021, eq. 6)

so s = 1 is the conditional model and s = 0 the unconditional one. With guidance rescale φ (Lin et al. 2024,
"Common Diffusion Noise Schedules and Sample Steps are Flawed", §3.4, Alg. 2), the guided ε̃ is rescaled towards
the conditional prediction's standard deviation, which large s inflates: ε̃ ← ε̃ (φ std(ε̂_y)/std(ε̃) + 1 − φ),
std taken per sample over all its elements. Lin et al. rescale their v-model's output v, and diffusers rescales
whatever the network outputs (ε for an ε-model, v for a v-model); this package always rescales ε̂, whatever the
objective, so the same φ means the same thing for every objective (for an ε-model it is diffusers' operation).

The combined x̂_0 is recomputed from ε̃, so clipping x̂_0 (GaussianDiffusion's clip_denoised) applies to the
guided prediction; a learned variance comes from the conditional branch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser, Prediction
from .parameterization import x0_from_eps
from .processes import Schedule

Coef = Tensor | float


def guided_eps(eps_cond: Tensor, eps_uncond: Tensor, scale: float, rescale: float = 0.0) -> Tensor:
    """ε̃ = ε̂_∅ + s (ε̂_y − ε̂_∅), then rescaled by φ = ``rescale`` (see the module docstring). All (B, ...)."""
    eps = eps_uncond + scale * (eps_cond - eps_uncond)
    if rescale:
        dims = tuple(range(1, eps.ndim))
        factor = eps_cond.std(dim=dims, keepdim=True) / eps.std(dim=dims, keepdim=True)
        eps = eps * (rescale * factor + (1.0 - rescale))
    return eps


def guided_prediction(
    cond: Prediction, uncond: Prediction, x_t: Tensor, alpha: Coef, sigma: Coef, scale: float, rescale: float = 0.0
) -> Prediction:
    """The guided Prediction: ε̃ from :func:`guided_eps`, x̂_0 = (x_t − σ_t ε̃)/α_t, the conditional branch's
    learned variance. x_t: (B, C, H, W); alpha, sigma: floats or (B, 1, 1, 1)."""
    eps = guided_eps(cond.eps, uncond.eps, scale, rescale)
    return Prediction(x0=x0_from_eps(x_t, eps, alpha, sigma), eps=eps, var_interp=cond.var_interp)


def classifier_free_guidance(
    branches: Callable[[Tensor, Tensor], tuple[Prediction, Prediction]],
    schedule: Schedule,
    scale: float,
    rescale: float = 0.0,
) -> Denoiser:
    """A denoiser that guides with ``branches(x_t, t) -> (conditional, unconditional)`` Predictions.

    For denoisers the caller builds (an oracle, another model's adapter); GaussianDiffusion's own
    ``denoiser(guidance_scale=...)`` evaluates both branches in one batched network call and clips the guided x̂_0.
    """

    def denoise(x_t: Tensor, t: Tensor) -> Prediction:
        cond, uncond = branches(x_t, t)
        alpha, sigma = schedule.alpha_sigma(t[0].item())
        return guided_prediction(cond, uncond, x_t, alpha, sigma, scale, rescale)

    return denoise


def classifier_guidance(
    denoiser: Denoiser, log_prob: Callable[[Tensor, Tensor], Tensor], schedule: Schedule, scale: float
) -> Denoiser:
    """A denoiser guided by a classifier (Dhariwal & Nichol 2021, §4 and Alg. 2, in the score form that every
    sampler can use): ε̃ = ε̂ − s σ_t ∇_{x_t} log f(y | x_t), x̂_0 recomputed from ε̃ (the base prediction's learned
    variance kept).

    ``log_prob(x_t, t) -> (B,)`` is log f(y | x_t) for the labels the caller bound (noise_aware_classifier.py's
    ``NoiseAwareClassifier.log_prob``). The gradient is taken here, with gradients enabled for the classifier's
    input only (:func:`log_prob_gradient`), so sampling can stay under ``torch.inference_mode()``. s = 0 returns
    the base prediction unchanged.
    """

    def denoise(x_t: Tensor, t: Tensor) -> Prediction:
        pred = denoiser(x_t, t)
        if scale == 0.0:
            return pred
        alpha, sigma = schedule.alpha_sigma(t[0].item())
        eps = pred.eps - scale * sigma * log_prob_gradient(log_prob, x_t, t)
        return Prediction(x0=x0_from_eps(x_t, eps, alpha, sigma), eps=eps, var_interp=pred.var_interp)

    return denoise


def log_prob_gradient(log_prob: Callable[[Tensor, Tensor], Tensor], x_t: Tensor, t: Tensor) -> Tensor:
    """∇_{x_t} Σ_b log f(y_b | x_t,b), (B, C, H, W). Sampling runs under inference mode, whose tensors cannot enter
    autograd: gradients are enabled here only, on a normal-tensor copy of x_t."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x_t.detach().clone().requires_grad_(True)
        return torch.autograd.grad(log_prob(x, t.clone()).sum(), x)[0]
