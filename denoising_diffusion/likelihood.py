"""Likelihoods of a diffusion model: the variational bound (bits per dimension) and the exact log-likelihood of the
probability-flow ODE.

Both are written against a denoiser and a schedule, like the samplers, so they work with any model (and with the
closed-form oracle in the tests): the VLB needs a discrete NoiseSchedule, the ODE likelihood takes any schedule
(discrete, or the continuous vp, subvp and ve processes). :func:`bits_per_dim` and :func:`ode_bits_per_dim` take a
GaussianDiffusion and images in [0, 1].

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

from .choices import Choice
from .denoiser import Denoiser
from .losses import Decoder, gaussian_log_likelihood, normal_kl, vlb_term
from .processes import NoiseSchedule, Schedule, Spacing, Time
from .samplers.common import heun_step, randn_like, time_batch
from .samplers.ode import DEFAULT_ATOL, DEFAULT_RTOL, check_tolerance, clamp_time, load_odeint, require_ode
from .sampling import runner_of
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


def bits_per_dim(
    diffusion: Any, images: Tensor, *, generator: torch.Generator | None = None, **condition: Any
) -> Tensor:
    """The variational bound of a GaussianDiffusion on 8-bit images (B, C, H, W) in [0, 1], in bits/dim, (B,).

    Uses the diffusion's variance type and x̂_0 clipping, and the discretized decoder; ``condition`` is a conditional
    model's (``classes=`` ...: the bound of p(x | y)). The bound is that of the discrete chain: for another process
    (vp, subvp, ve, ncsn) a ValueError points to :func:`ode_bits_per_dim`.
    """
    runner = runner_of(diffusion)
    if not isinstance(runner.schedule, NoiseSchedule):
        raise ValueError(
            f"the variational bound is the discrete DDPM chain's (process 'ddpm'); this model's process is "
            f"{getattr(runner.schedule, 'name', '?')!r}: use ode_bits_per_dim (the probability-flow ODE likelihood)"
        )
    with torch.inference_mode():
        return vlb_terms(
            runner.denoiser(**condition),
            runner.schedule,
            runner.data.normalize(images),
            variance=runner.defaults.variance,
            generator=generator,
        ).total


class ODESolver(Choice):
    """How :func:`ode_log_likelihood` integrates the probability-flow ODE: ``heun`` on a Karras grid of the schedule's
    times (any schedule), or ``dopri5``, adaptive (continuous-time processes only)."""

    __option__ = "ODE solver"

    HEUN = "heun"
    DOPRI5 = "dopri5"


def _eps_and_divergence(
    denoiser: Denoiser, x_tilde: Tensor, t: Time, alpha: float, probes: Tensor | None
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
    denoiser: Denoiser, t: Time, alpha: float, probes: Tensor | None
) -> Callable[[list[Tensor]], list[Tensor]]:
    """The augmented ODE's slope (dx̃/dσ̃, d∫/dσ̃) = (ε̂, div ε̂) at time t, as heun_step calls it (on [x̃, ∫])."""
    return lambda y: list(_eps_and_divergence(denoiser, y[0], t, alpha, probes))


DEFAULT_ODE_STEPS = 100
"""Heun's grid points of the ODE likelihood when none are given (2·100 − 1 = 199 network evaluations)."""


def default_ode_steps(schedule: Schedule, steps: int | None = None) -> int:
    """``steps`` if given, else :data:`DEFAULT_ODE_STEPS`, capped at T for a discrete schedule (ddpm, ncsn): its
    Karras grid holds at most T distinct indices, so a model of T < 100 steps takes T (an explicit ``steps`` above T
    is still refused, naming T)."""
    if steps is not None:
        return steps
    return min(DEFAULT_ODE_STEPS, getattr(schedule, "num_timesteps", DEFAULT_ODE_STEPS))


def _heun(
    denoiser: Denoiser, schedule: Schedule, x_start: Tensor, steps: int, probes: Tensor | None
) -> tuple[Tensor, Tensor, Time]:
    """(x̃, ∫ div ε̂ dσ̃, the top time) by Heun in σ̃ upwards over ``steps`` times of the Karras spacing, reversed."""
    grid = schedule.timesteps(max(2, steps), Spacing.KARRAS)[::-1]  # ascending: the smallest time first
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
    return x_tilde, integral, grid[-1]


def _dopri5(
    denoiser: Denoiser, schedule: Schedule, x_start: Tensor, probes: Tensor | None, rtol: float, atol: float
) -> tuple[Tensor, Tensor, Time]:
    """(x̃, ∫ div ε̂ dσ̃, the top time) by dopri5 in the SDE's time t, from the schedule's smallest time to its top.

    The probability-flow ODE (Song et al. 2021, eq. 13) in x̃ = x/α is dx̃/dt = (dσ̃/dt) ε̂ with dσ̃/dt = g²/(2ασ)
    (from α' = f α and (σ²)' = g² + 2 f σ², processes/), so the pair (x̃, ∫) moves with slope (dσ̃/dt)(ε̂, div ε̂):
    the same integral as Heun's, in another variable. One ODE state for the batch, (x̃ flattened, ∫ (B,)); the
    error norm is the larger of the two parts' RMS norms (torchdiffeq's tuple norm)."""
    sde_schedule = require_ode(schedule, "ode_log_likelihood with solver='dopri5'")
    odeint = load_odeint()
    top, bottom = schedule.timesteps(2)
    shape = x_start.shape

    def slope(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        time = clamp_time(t, bottom, top)  # samplers/ode.py: only the initial step's probe can fall outside
        alpha, sigma = schedule.alpha_sigma(time)
        rate = sde_schedule.sde(time)[1] ** 2 / (2 * alpha * sigma)  # dσ̃/dt
        eps, div = _eps_and_divergence(denoiser, state[0].view(shape), time, alpha, probes)
        return rate * eps.flatten(), rate * div

    span = torch.tensor([bottom, top], dtype=torch.float64, device=x_start.device)
    x_tildes, integrals = odeint(
        slope,
        (x_start.flatten(), x_start.new_zeros(shape[0])),
        span,
        rtol=rtol,
        atol=atol,
        method="dopri5",
        options={"step_t": span[1:]},
    )
    return x_tildes[-1].view(shape), integrals[-1], top


def prior_log_density(schedule: Schedule, x_tilde: Tensor, t: Time) -> Tensor:
    """log N(x̃; 0, v I) summed over each sample's elements, (B,), for x̃ = x/α at time t (the top of an integration).

    The prior x ~ N(0, prior_std² I) holds at the schedule's top time T (its first timestep: index T−1, or t = 1),
    where x̃ ~ N(0, prior_std²/α_T² I). Below T it is carried down by the flow of unit-variance data, whose x̃ has
    variance 1 + σ̃² at every time: v = (prior_std²/α_T²) (1 + σ̃_t²)/(1 + σ̃_T²). At t = T this is the prior itself;
    on a variance-preserving path (prior_std = 1, 1/α_T² = 1 + σ̃_T²) it is 1 + σ̃_t² at every t, the marginal of
    N(0, I) data; for VE with σ_max above the Karras grid's cap (σ̃ = 80) it is about σ_t², not σ_max².
    """
    top = schedule.timesteps(1)[0]
    alpha_top, sigma_top = schedule.alpha_sigma(top)
    alpha, sigma = schedule.alpha_sigma(t)
    prior_var = schedule.prior_std**2 / alpha_top**2
    var = prior_var * (1 + (sigma / alpha) ** 2) / (1 + (sigma_top / alpha_top) ** 2)
    log_var = x_tilde.new_tensor(math.log(var))
    return gaussian_log_likelihood(x_tilde, x_tilde.new_zeros(()), log_var).flatten(1).sum(1)


def ode_log_likelihood(
    denoiser: Denoiser,
    schedule: Schedule,
    x_start: Tensor,
    *,
    steps: int | None = None,
    solver: str | ODESolver = ODESolver.HEUN,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    exact_trace: bool | None = None,
    num_probes: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """log p(x_start) in nats under the probability-flow ODE, (B,) (Song et al. 2021, SDE paper, §4.3 and App. D.2).

    In x̃ = x/α, σ̃ = σ/α the ODE is dx̃/dσ̃ = ε̂, and log p_{σ̃_0}(x̃(σ̃_0)) = log p_top(x̃(σ̃_top)) +
    ∫ div ε̂ dσ̃, x̃ and the integral moving together upwards from the schedule's smallest time (index 0, or t_min):

    * ``heun``: Heun's method over ``steps`` times of the Karras spacing (``schedule.timesteps(steps, 'karras')``,
      reversed), up to σ̃ ≈ min(σ̃_top, 80); any schedule, discrete or continuous.
    * ``dopri5``: adaptive Dormand-Prince in the SDE's time up to t = 1, tolerances ``rtol`` and ``atol``; the
      continuous processes (vp, subvp, ve) only: ValueError on a discrete schedule.

    The prior at the top is :func:`prior_log_density` (N(0, prior_std² I) in x at the schedule's top time). The
    density returned is that of the data smoothed by σ̃_0 (σ_0 ≈ 0.006-0.01 for the built-in discrete schedules,
    σ(t_min) for the continuous ones), which is what the model defines.

    Args:
        x_start: (B, C, H, W) in [−1, 1]. Use a denoiser without x̂_0 clipping: the ODE must be smooth.
        steps: Heun's grid points (2·steps − 1 network evaluations, each with its vector-Jacobian products); None:
            :func:`default_ode_steps` (100, or T for a discrete schedule of fewer steps).
        solver: ``heun`` or ``dopri5``.
        rtol, atol: dopri5's error tolerances, positive floats (1e-5 each, as in Song et al. 2021's code).
        exact_trace: exact divergence (a backward pass per dimension); None: exact when C·H·W <= 16.
        num_probes: Rademacher probes for Hutchinson's estimator, fixed for the whole integration.
        generator: draws the probes.
    """
    solver = ODESolver(solver)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
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
    if solver is ODESolver.HEUN:
        x_tilde, integral, top = _heun(denoiser, schedule, x_start, default_ode_steps(schedule, steps), probes)
    else:
        x_tilde, integral, top = _dopri5(denoiser, schedule, x_start, probes, rtol, atol)
    return prior_log_density(schedule, x_tilde, top) + integral


def ode_bits_per_dim(
    diffusion: Any,
    images: Tensor,
    *,
    steps: int | None = None,
    solver: str | ODESolver = ODESolver.HEUN,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    exact_trace: bool | None = None,
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    **condition: Any,
) -> Tensor:
    """The probability-flow ODE's negative log-likelihood of images (B, C, H, W) in [0, 1], as bits/dim of 8-bit
    data, (B,); ``condition`` as for :func:`bits_per_dim`. See :func:`ode_log_likelihood`."""
    runner = runner_of(diffusion)
    x = runner.data.normalize(images)
    log_p = ode_log_likelihood(
        runner.denoiser(clip_denoised=False, **condition),
        runner.schedule,
        x,
        steps=steps,
        solver=solver,
        rtol=rtol,
        atol=atol,
        exact_trace=exact_trace,
        num_probes=num_probes,
        generator=generator,
    )
    return -log_p / (x[0].numel() * math.log(2.0)) + 7.0
