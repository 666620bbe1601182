"""THE time convention of this package, and the Gaussian path every process and sampler is written in.

Time convention (obeyed by every module; tests in ``tests/test_processes/path.py`` pin it), for the discrete ddpm
process (ddpm.py):

* Discrete time t ∈ {0, …, T−1}.
* α_t = 1 − β_t and ᾱ_t = ∏_{s=0}^{t} α_s, so ᾱ_0 = α_0 < 1 (t = 0 is already slightly noisy).
* x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε  (Ho et al. 2020, eq. 4).
* A reverse step maps t → t−1. The step from t = 0 returns the prediction of x_0 with no noise added.
* t = −1 (``CLEAN``) names the clean data itself: ᾱ_{−1} = 1, i.e. ``alphas_cumprod_prev[0]``.

The general Gaussian path used by the samplers (Kingma et al. 2021, "Variational Diffusion Models"):
x_t = α_t x_0 + σ_t ε with λ_t = log(α_t / σ_t). For this discrete variance-preserving schedule
α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t). Note the clash of names with the DDPM α_t = 1 − β_t: in code the DDPM
quantity is always ``alphas`` (plural, per step) and the path coefficient is ``alpha`` (from
:meth:`NoiseSchedule.alpha_sigma`).

Glossary (names used across the package): ``betas`` β_t, ``alphas`` α_t, ``alphas_cumprod`` ᾱ_t,
``alphas_cumprod_prev`` ᾱ_{t−1}, ``x_start`` x_0, ``x_t``, ``noise`` ε, ``pred_x_start`` x̂_0, ``v``
(Salimans & Ho 2022: v = α_t ε − σ_t x_0).

Schedules are computed once in float64 (R2 of STYLE.md). Beta schedules may be added, but are not changed once
released: a checkpoint stores only the schedule's name and length.

**Time that is not an index** (DESIGN.md, Time). A *schedule* is anything with the :class:`Schedule` methods: it maps
a time to (α_t, σ_t), checks and builds the time grid a sampler visits and says what the network sees; it is the
path only (the training times are drawn by the loss, losses/times.py). Every registered process (base.py) is one.
Discrete schedules (ddpm.py's :class:`NoiseSchedule`, ncsn.py's levels) use int indices; continuous-time processes
(vp, subvp, ve, edm) use float times. For every kind, ``CLEAN``
(−1, below every range) names the clean data: α = 1, σ = 0, the target of the last reverse step. Samplers are
written in (α, σ, λ) only and never branch on the kind of time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Generic, Protocol, Sequence, TypeAlias, TypeVar

import torch
from torch import Tensor

from ..parameterization import append_dims
from .spacing import Spacing

CLEAN = -1
"""The time of clean data (α = 1, σ = 0) for every schedule: the target of the last reverse step."""

Time: TypeAlias = int | float
"""A time: an int index of a discrete schedule, or a float time of a continuous one (CLEAN for clean data)."""


class Schedule(Protocol):
    """What samplers, likelihoods and GaussianDiffusion need of a schedule (DESIGN.md, Time)."""

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior x_T ~ N(0, prior_std² I) that sampling starts from."""
        ...

    def alpha_sigma(self, t: Time) -> tuple[float, float]:
        """(α_t, σ_t) of x_t = α_t x_0 + σ_t ε as Python floats; (1, 0) at CLEAN. ValueError outside the range."""
        ...

    def alpha_sigma_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α_t, σ_t) for a batch of times t (B,), float64 tensors on t's device."""
        ...

    def check_times(self, timesteps: Sequence[Time]) -> list[Time]:
        """The grid as a list of this schedule's times, checked strictly decreasing and inside its range."""
        ...

    def timesteps(self, steps: int, spacing: str | Spacing = "linspace", *, rho: float = 7.0) -> list[Time]:
        """A strictly decreasing grid of ``steps`` times to visit, in sampling order (CLEAN not included)."""
        ...

    def time_of_sigma_tilde(self, sigma_tilde: float) -> Time:
        """A time whose σ̃ = σ/α is ``sigma_tilde`` (continuous processes, clamped to their range) or the nearest above
        it (discrete schedules: :func:`index_of_sigma_tilde`). Callers read that time's exact σ̃ back with
        :meth:`alpha_sigma` (the stochastic Heun sampler's raised noise level, Karras et al. 2022, Alg. 2)."""
        ...

    def network_time(self, t: Tensor) -> Tensor:
        """What the network's time input receives for times t (B,)."""
        ...

    def posterior_step(self, t: Time, s: Time | None = None) -> PosteriorStep[float]:
        """q(x_s | x_t, x_0) for the reverse step t → s as floats."""
        ...


C = TypeVar("C", float, Tensor)  # a coefficient: a Python float, or a tensor broadcastable to the images


@dataclass(frozen=True)
class PosteriorStep(Generic[C]):
    """The forward process's posterior q(x_s | x_t, x_0) = N(c_0 x_0 + c_t x_t, β̃ I) for a reverse step t → s.

    ``beta`` is the step's β' = 1 − ᾱ_t/ᾱ_s (β_t when s = t − 1); ``log_variance`` is log β̃, clipped to log β̃_1
    at t = 0 where β̃_0 = 0 (Nichol & Dhariwal 2021, §3.1). Coefficients are floats (one step) or tensors
    (B, 1, 1, 1) (a batch of steps). The one place where the posterior mean is formed: samplers, the training
    loss and the likelihood all call :meth:`mean`.
    """

    c0: C
    ct: C
    variance: C
    log_variance: C
    beta: C
    log_beta: C

    def mean(self, x_start: Tensor, x_t: Tensor) -> Tensor:
        """μ̃(x_t, x_0) = c_0 x_0 + c_t x_t (Ho et al. 2020, eq. 7). x_start, x_t: (B, C, H, W)."""
        return self.c0 * x_start + self.ct * x_t

    def shaped_like(self, like: Tensor) -> PosteriorStep[Tensor]:
        """A batch of steps with coefficients (B,) as (B, 1, …) tensors in ``like``'s dtype, to broadcast over
        ``like`` (B, C, H, W)."""
        return PosteriorStep(*(append_dims(getattr(self, f.name).to(like.dtype), like.ndim) for f in fields(self)))


def forward_step(alpha_t: C, sigma_t: C, alpha_s: C, sigma_s: C) -> tuple[C, C]:
    """(α_{t|s}, σ²_{t|s}) of the forward step q(x_t | x_s) = N(α_{t|s} x_s, σ²_{t|s} I), s < t, on a Gaussian path
    with Markov forward steps (Kingma et al. 2021, "Variational Diffusion Models", eq. 33): α_{t|s} = α_t/α_s and
    σ²_{t|s} = σ_t² − α²_{t|s} σ_s², clamped at 0 against rounding. The one home of the forward step's variance
    (floats or tensors): the posterior below, SDEdit's and RePaint's noising (samplers/common.diffuse), DDIM's η and
    the reverse-diffusion predictor use it. On a discrete chain σ²_{t|s} is the respaced β' = 1 − ᾱ_t/ᾱ_s."""
    a = alpha_t / alpha_s
    variance = sigma_t**2 - a**2 * sigma_s**2
    return a, variance.clamp(min=0.0) if isinstance(variance, Tensor) else max(variance, 0.0)


def posterior_terms(alpha_t: C, sigma_t: C, alpha_s: C, sigma_s: C) -> tuple[C, C, C, C]:
    """(c_0, c_t, β̃, β') of the posterior q(x_s | x_t, x_0) = N(c_0 x_0 + c_t x_t, β̃ I) for s < t on any Gaussian path
    (Kingma et al. 2021, eqs. 3 and 33; Ho et al. 2020, eqs. 6–7 on a variance-preserving chain), the one home of
    the posterior (floats or tensors): with (α_{t|s}, β' = σ²_{t|s}) from :func:`forward_step`, c_0 = α_s β'/σ_t²,
    c_t = α_{t|s} σ_s²/σ_t² and β̃ = β' σ_s²/σ_t². At s = CLEAN (α_s = 1, σ_s = 0): c_0 = 1, c_t = 0, β̃ = 0."""
    a, beta = forward_step(alpha_t, sigma_t, alpha_s, sigma_s)
    return alpha_s * beta / sigma_t**2, a * sigma_s**2 / sigma_t**2, beta * sigma_s**2 / sigma_t**2, beta


def posterior_coefficients(alphabar_t: C, alphabar_s: C) -> tuple[C, C, C, C]:
    """:func:`posterior_terms` on a variance-preserving chain, from ᾱ_t and ᾱ_s (floats or tensors): α = √ᾱ,
    σ = √(1 − ᾱ). Respacing recomputes β from the kept ᾱ values: β' = 1 − ᾱ_t/ᾱ_s (Nichol & Dhariwal 2021, App. B)."""
    return posterior_terms(alphabar_t**0.5, (1 - alphabar_t) ** 0.5, alphabar_s**0.5, (1 - alphabar_s) ** 0.5)


def gaussian_posterior_step(alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float) -> PosteriorStep[float]:
    """q(x_s | x_t, x_0) for one step s < t as floats (:func:`posterior_terms`), with the log-variances; with α = 1
    (VE) it is the step of the reverse-diffusion predictor. At s = CLEAN (σ_s = 0) the variance is 0 and the
    log-variance falls back to log β' (never used: the step to clean data adds no noise)."""
    c0, ct, variance, beta = posterior_terms(alpha_t, sigma_t, alpha_s, sigma_s)
    log_beta = math.log(beta) if beta > 0 else -math.inf
    log_variance = math.log(variance) if variance > 0 else log_beta
    return PosteriorStep(c0=c0, ct=ct, variance=variance, log_variance=log_variance, beta=beta, log_beta=log_beta)


def check_index_times(timesteps: Sequence[Time], num_timesteps: int) -> list[int]:
    """``timesteps`` as ints, checked to be strictly decreasing indices in [0, T); ValueError otherwise (a
    discrete schedule's :meth:`Schedule.check_times`)."""
    ts = list(timesteps)
    if not ts:
        raise ValueError("timesteps is empty: a sampler needs at least one step")
    ints = [int(t) for t in ts]
    if any(float(t) != i for t, i in zip(ts, ints)):
        raise ValueError(
            f"this schedule is discrete: timesteps must be integer indices in [0, {num_timesteps - 1}], got "
            f"{ts[:5]}{'...' if len(ts) > 5 else ''} (continuous times need a continuous process: processes/)"
        )
    if any(a <= b for a, b in zip(ints, ints[1:])) or ints[-1] < 0 or ints[0] >= num_timesteps:
        raise ValueError(
            f"timesteps must be strictly decreasing integers in [0, {num_timesteps - 1}], "
            f"got {ints[:5]}{'...' if len(ints) > 5 else ''}"
        )
    return ints


def path_coefficients(schedule: Schedule, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(α_t, σ_t) at times t (B,), from the schedule's float64 values, in ``like``'s dtype and shaped (B, 1, …) to
    broadcast over ``like`` (B, C, H, W)."""
    alpha, sigma = schedule.alpha_sigma_at(t)
    return append_dims(alpha.to(like.dtype), like.ndim), append_dims(sigma.to(like.dtype), like.ndim)


def path_derivatives(schedule: Schedule, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(α'_t, σ'_t) = (dα_t/dt, dσ_t/dt) at times t (B,), from the schedule's ``path_derivatives_at`` (float64), in
    ``like``'s dtype and shaped (B, 1, …) to broadcast over ``like`` (B, C, H, W): what the velocity objective needs.
    ValueError for a schedule that does not declare them."""
    derivatives = getattr(schedule, "path_derivatives_at", None)
    if derivatives is None:
        raise ValueError(
            f"the {type(schedule).__name__} schedule does not declare its path's time derivatives "
            "(path_derivatives_at), which the velocity objective 'pred_velocity' needs"
        )
    d_alpha, d_sigma = derivatives(t.to(torch.float64))
    return append_dims(d_alpha.to(like.dtype), like.ndim), append_dims(d_sigma.to(like.dtype), like.ndim)


def q_sample(schedule: Schedule, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = α_t x_0 + σ_t ε ~ q(x_t | x_0) at times t (B,) (Ho et al. 2020, eq. 4; Song et al. 2021, eq. 29 and
    App. B): the one home of the forward process's draw. x_start, noise: (B, C, H, W) in the model's space."""
    alpha, sigma = path_coefficients(schedule, t, x_start)
    return alpha * x_start + sigma * noise
