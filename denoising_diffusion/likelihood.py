"""Likelihoods of a diffusion model: the variational bound (bits per dimension) and the exact log-likelihood of the
probability-flow ODE.

Both are written against a denoiser and a NoiseSchedule, like the samplers, so they work with any model (and with
the closed-form oracle in the tests); :func:`bits_per_dim` and :func:`ode_bits_per_dim` take a GaussianDiffusion
and images in [0, 1].

Units: the VLB is in bits per dimension of 8-bit data (discretized decoder, Ho et al. 2020, eq. 13). The ODE gives a
density log p(x) in nats for data in [−1, 1]; as bits per dimension of 8-bit data it is
−log p / (D ln 2) + log2(128), the log-volume of one quantization bin (width 2/256) per dimension (Song et al.
2021, "Score-Based Generative Modeling through SDEs", App. D.2), without dequantization noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .denoiser import Denoiser
from .losses import Decoder, gaussian_log_likelihood, normal_kl, vlb_term
from .samplers.common import heun_step, randn_like, time_batch
from .schedules import NoiseSchedule, Spacing, spaced_timesteps
from .variance import VarianceType, reverse_log_variance


@dataclass(frozen=True)
class VLBResult:
    """The variational bound per sample. total: (B,) bits/dim = Σ_t terms + prior; terms: (B, T), L_t by index t
    (terms[:, 0] is the decoder's −log p(x_0 | x_t=0)); prior: (B,) KL(q(x_{T−1} | x_0) || N(0, I))."""

    total: Tensor
    terms: Tensor
    prior: Tensor


@torch.no_grad()
def vlb_terms(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x_start: Tensor,
    *,
    variance: str | VarianceType = VarianceType.FIXED_SMALL,
    decoder: str | Decoder = Decoder.DISCRETIZED,
    generator: torch.Generator | None = None,
) -> VLBResult:
    """Every term of the variational bound for x_start (B, C, H, W) in [−1, 1] (Ho et al. 2020, eq. 5; Nichol &
    Dhariwal 2021, §3): one network evaluation per t at x_t ~ q(x_t | x_0), T in all."""
    variance, decoder = VarianceType(variance), Decoder(decoder)
    terms = []
    batch = x_start.shape[0]
    for t in range(schedule.num_timesteps):
        alpha, sigma = schedule.alpha_sigma(t)
        x_t = alpha * x_start + sigma * randn_like(x_start, generator)
        pred = denoiser(x_t, time_batch(x_t, t))
        step = schedule.posterior_step(t)
        model_log_var = reverse_log_variance(
            variance, step.log_beta, step.log_variance, pred.var_interp, decoder_step=t == 0
        )
        is_decoder = torch.full((batch,), t == 0, device=x_start.device)
        terms.append(vlb_term(x_start, x_t, pred.x0, step, model_log_var, is_decoder, decoder))
    alpha_T, sigma_T = schedule.alpha_sigma(schedule.num_timesteps - 1)
    zero = x_start.new_zeros(())
    prior = normal_kl(alpha_T * x_start, x_start.new_tensor(2 * math.log(sigma_T)), zero, zero)
    prior = prior.flatten(1).mean(1) / math.log(2.0)
    stacked = torch.stack(terms, dim=1)
    return VLBResult(total=stacked.sum(1) + prior, terms=stacked, prior=prior)


def bits_per_dim(diffusion, images: Tensor, *, generator: torch.Generator | None = None, **condition: Any) -> Tensor:
    """The variational bound of a GaussianDiffusion on 8-bit images (B, C, H, W) in [0, 1], in bits/dim, (B,).

    Uses the diffusion's variance type and x̂_0 clipping, and the discretized decoder; ``condition`` is a conditional
    model's (``classes=`` ...: the bound of p(x | y)).
    """
    with torch.inference_mode():
        return vlb_terms(
            diffusion.denoiser(**condition),
            diffusion.schedule,
            diffusion.normalize(images),
            variance=diffusion.variance_type,
            generator=generator,
        ).total


def _eps_and_divergence(
    denoiser: Denoiser, x_tilde: Tensor, t: int, alpha: float, probes: Tensor | None
) -> tuple[Tensor, Tensor]:
    """ε̂ at x = α x̃ and its divergence with respect to x̃, (B,): exact (one backward pass per dimension) when
    ``probes`` is None, else Hutchinson's estimate mean_k z_kᵀ (∂ε̂/∂x̃) z_k (Grathwohl et al. 2019, FFJORD)."""
    with torch.enable_grad():
        x = x_tilde.detach().requires_grad_(True)
        eps = denoiser(alpha * x, time_batch(x, t)).eps
        if probes is None:
            flat = eps.flatten(1)
            div = torch.stack(
                [
                    torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)[0].flatten(1)[:, i]
                    for i in range(flat.shape[1])
                ]
            ).sum(0)
        else:
            div = torch.stack(
                [(torch.autograd.grad((eps * z).sum(), x, retain_graph=True)[0] * z).flatten(1).sum(1) for z in probes]
            ).mean(0)
    return eps.detach(), div.detach()


def _slope_at(
    denoiser: Denoiser, t: int, alpha: float, probes: Tensor | None
) -> Callable[[list[Tensor]], list[Tensor]]:
    """The augmented ODE's slope (dx̃/dσ̃, d∫/dσ̃) = (ε̂, div ε̂) at index t, as heun_step calls it (on [x̃, ∫])."""
    return lambda y: list(_eps_and_divergence(denoiser, y[0], t, alpha, probes))


def ode_log_likelihood(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x_start: Tensor,
    *,
    steps: int = 100,
    exact_trace: bool | None = None,
    num_probes: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """log p(x_start) in nats under the probability-flow ODE, (B,) (Song et al. 2021, SDE paper, §4.3 and App. D.2).

    In x̃ = x/α, σ̃ = σ/α the ODE is dx̃/dσ̃ = ε̂, and log p_{σ̃_0}(x̃(σ̃_0)) = log p_top(x̃(σ̃_top)) +
    ∫ div ε̂ dσ̃. Heun's method integrates x̃ and the divergence together upwards over ``steps`` indices of the
    Karras spacing (reversed: from t = 0 to the index where σ̃ ≈ min(σ̃_{T−1}, 80)), where the prior is
    x ~ N(0, I), i.e. x̃ ~ N(0, (1 + σ̃_top²) I). The density returned is that of the data smoothed by σ̃_0
    (σ_0 ≈ 0.006-0.01 for the built-in schedules), which is what the model defines.

    Args:
        x_start: (B, C, H, W) in [−1, 1]. Use a denoiser without x̂_0 clipping: the ODE must be smooth.
        steps: grid points (2·steps − 1 network evaluations, each with its vector-Jacobian products).
        exact_trace: exact divergence (a backward pass per dimension); None: exact when C·H·W <= 16.
        num_probes: Rademacher probes for Hutchinson's estimator, fixed for the whole integration.
        generator: draws the probes.
    """
    dims = x_start[0].numel()
    exact = dims <= 16 if exact_trace is None else exact_trace
    probes = None
    if not exact:
        probes = (
            torch.randint(0, 2, (num_probes, *x_start.shape), generator=generator, device=x_start.device).to(
                x_start.dtype
            )
            * 2
            - 1
        )
    grid = spaced_timesteps(schedule, max(2, steps), Spacing.KARRAS)[::-1]  # ascending: 0 first
    sigma_tilde = {t: schedule.alpha_sigma(t)[1] / schedule.alpha_sigma(t)[0] for t in grid}
    x_tilde = x_start
    integral = x_start.new_zeros(x_start.shape[0])
    eps, div = _eps_and_divergence(denoiser, x_tilde, grid[0], schedule.alpha_sigma(grid[0])[0], probes)
    for a, b in zip(grid, grid[1:]):
        alpha_b = schedule.alpha_sigma(b)[0]
        x_tilde, integral = heun_step(
            _slope_at(denoiser, b, alpha_b, probes), [x_tilde, integral], [eps, div], sigma_tilde[b] - sigma_tilde[a]
        )
        eps, div = _eps_and_divergence(denoiser, x_tilde, b, alpha_b, probes)
    prior_log_var = x_tilde.new_tensor(math.log(1 + sigma_tilde[grid[-1]] ** 2))
    log_prior = gaussian_log_likelihood(x_tilde, x_tilde.new_zeros(()), prior_log_var).flatten(1).sum(1)
    return log_prior + integral


def ode_bits_per_dim(
    diffusion,
    images: Tensor,
    *,
    steps: int = 100,
    exact_trace: bool | None = None,
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    **condition: Any,
) -> Tensor:
    """The probability-flow ODE's negative log-likelihood of images (B, C, H, W) in [0, 1], as bits/dim of 8-bit
    data, (B,); ``condition`` as for :func:`bits_per_dim`. See :func:`ode_log_likelihood`."""
    x = diffusion.normalize(images)
    log_p = ode_log_likelihood(
        diffusion.denoiser(clip_denoised=False, **condition),
        diffusion.schedule,
        x,
        steps=steps,
        exact_trace=exact_trace,
        num_probes=num_probes,
        generator=generator,
    )
    return -log_p / (x[0].numel() * math.log(2.0)) + 7.0
