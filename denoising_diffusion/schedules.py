"""Noise schedules and THE time convention of this package.

Time convention (obeyed by every module; tests in ``tests/test_schedules.py`` pin it):

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
a time to (α_t, σ_t), checks and builds the time grid a sampler visits, draws training times and says what the
network sees. Discrete schedules (:class:`NoiseSchedule`, and the NCSN levels of processes.py) use int indices;
continuous-time processes (VP, sub-VP, VE in processes.py) use float t ∈ [t_min, 1]. For every kind, ``CLEAN``
(−1, below every range) names the clean data: α = 1, σ = 0, the target of the last reverse step. Samplers are
written in (α, σ, λ) only and never branch on the kind of time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, Sequence, TypeAlias, TypeVar

import torch
from torch import Tensor

from .choices import Choice

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

    def sample_times(self, n: int, *, device: torch.device | str = "cpu") -> Tensor:
        """n training times (B,) drawn from the global RNG, on ``device``."""
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


def posterior_coefficients(alphabar_t: C, alphabar_s: C) -> tuple[C, C, C, C]:
    """(c_0, c_t, β̃, β') of q(x_s | x_t, x_0) for s < t on any chain, from ᾱ_t and ᾱ_s (floats or tensors).

    Respacing recomputes β from the kept ᾱ values: β' = 1 − ᾱ_t/ᾱ_s (Nichol & Dhariwal 2021, App. B). Then
    c_0 = √ᾱ_s β'/(1 − ᾱ_t), c_t = √(1 − β') (1 − ᾱ_s)/(1 − ᾱ_t) and β̃ = β' (1 − ᾱ_s)/(1 − ᾱ_t) (Ho et al. 2020,
    eqs. 6–7). With ᾱ_s = 1 (s = −1, clean data): c_0 = 1, c_t = 0, β̃ = 0.
    """
    beta = 1 - alphabar_t / alphabar_s
    c0 = alphabar_s**0.5 * beta / (1 - alphabar_t)
    ct = (1 - beta) ** 0.5 * (1 - alphabar_s) / (1 - alphabar_t)
    return c0, ct, beta * (1 - alphabar_s) / (1 - alphabar_t), beta


def gaussian_posterior_step(alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float) -> PosteriorStep[float]:
    """q(x_s | x_t, x_0) for s < t on any Gaussian path x_t = α_t x_0 + σ_t ε with Markov forward steps (Kingma et
    al. 2021, "Variational Diffusion Models", eqs. 3 and 33): with α_{t|s} = α_t/α_s and σ²_{t|s} = σ_t² − α²_{t|s} σ_s²
    (the forward step's variance, β' below), the mean is (α_s σ²_{t|s}/σ_t²) x_0 + (α_{t|s} σ_s²/σ_t²) x_t and the
    variance σ²_{t|s} σ_s²/σ_t². On a variance-preserving path this is :func:`posterior_coefficients`; with α = 1
    (VE) the step is the one of the reverse-diffusion predictor. At s = CLEAN (σ_s = 0) the variance is 0 and the
    log-variance falls back to log β' (never used: the step to clean data adds no noise)."""
    a = alpha_t / alpha_s
    beta = max(sigma_t**2 - a**2 * sigma_s**2, 0.0)
    variance = beta * sigma_s**2 / sigma_t**2
    log_beta = math.log(beta) if beta > 0 else -math.inf
    return PosteriorStep(
        c0=alpha_s * beta / sigma_t**2,
        ct=a * sigma_s**2 / sigma_t**2,
        variance=variance,
        log_variance=math.log(variance) if variance > 0 else log_beta,
        beta=beta,
        log_beta=log_beta,
    )


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
            f"{ts[:5]}{'...' if len(ts) > 5 else ''} (continuous times need a continuous process: processes.py)"
        )
    if any(a <= b for a, b in zip(ints, ints[1:])) or ints[-1] < 0 or ints[0] >= num_timesteps:
        raise ValueError(
            f"timesteps must be strictly decreasing integers in [0, {num_timesteps - 1}], "
            f"got {ints[:5]}{'...' if len(ints) > 5 else ''}"
        )
    return ints


class BetaSchedule(Choice):
    """Names of the built-in β schedules (strings at the edge, this enum inside)."""

    __option__ = "beta_schedule"
    __hint__ = ", or a 1-D tensor of betas"

    LINEAR = "linear"
    COSINE = "cosine"
    SIGMOID = "sigmoid"
    QUADRATIC = "quadratic"


def linear_beta_schedule(timesteps: int, max_beta: float = 0.999) -> Tensor:
    """Linear β from 1e-4 to 0.02, both scaled by 1000/T (Ho et al. 2020, §4; Nichol & Dhariwal 2021, §3).

    Below T = 50 the scaled end point exceeds 1, so β is clipped to ``max_beta`` as the cosine schedule is.
    """
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(max=max_beta)


def quadratic_beta_schedule(timesteps: int, max_beta: float = 0.999) -> Tensor:
    """β linear in √β between the linear schedule's end points (the 'quad' schedule of the DDPM code release)."""
    scale = 1000 / timesteps
    betas = torch.linspace(math.sqrt(scale * 1e-4), math.sqrt(scale * 0.02), timesteps, dtype=torch.float64) ** 2
    return betas.clamp(max=max_beta)


def cosine_beta_schedule(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule, ᾱ(t) = f(t)/f(0) with f(t) = cos²(((t/T + s)/(1 + s)) · π/2).

    Nichol & Dhariwal 2021, eq. 17; β_t is clipped to ``max_beta`` to avoid the singularity at t = T.
    """
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, max_beta)


def sigmoid_beta_schedule(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999
) -> Tensor:
    """Sigmoid schedule of ᾱ (Jabri et al. 2022, "Scalable Adaptive Computation", Alg. 1; good for > 64x64)."""
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.tensor(start / tau, dtype=torch.float64).sigmoid()
    v_end = torch.tensor(end / tau, dtype=torch.float64).sigmoid()
    alphas_cumprod = (-((t * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, max_beta)


_BUILDERS: dict[BetaSchedule, Callable[[int], Tensor]] = {
    BetaSchedule.LINEAR: linear_beta_schedule,
    BetaSchedule.COSINE: cosine_beta_schedule,
    BetaSchedule.SIGMOID: sigmoid_beta_schedule,
    BetaSchedule.QUADRATIC: quadratic_beta_schedule,
}


def make_betas(schedule: str | BetaSchedule | Tensor | Sequence[float], timesteps: int) -> Tensor:
    """β_0..β_{T−1} as float64 from a schedule name or explicit values.

    Args:
        schedule: one of ``BetaSchedule``'s names, or a 1-D tensor/sequence of T betas in (0, 1).
        timesteps: T, the number of diffusion steps (ignored when explicit betas decide it... and then checked).

    Returns:
        (T,) float64 tensor.
    """
    if isinstance(schedule, (str, BetaSchedule)):
        if not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
        return _BUILDERS[BetaSchedule(schedule)](timesteps)
    betas = torch.as_tensor(schedule, dtype=torch.float64).detach().cpu()
    if betas.ndim != 1 or len(betas) != timesteps:
        raise ValueError(
            f"explicit betas must be a 1-D tensor of length timesteps={timesteps}, got shape {tuple(betas.shape)}"
        )
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("explicit betas must all lie strictly between 0 and 1")
    return betas


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete variance-preserving schedule, all values float64 on the CPU.

    Everything is derived from ``betas`` (T,). Samplers read it through :meth:`alpha_sigma`, which maps an index
    t ∈ {−1, 0, …, T−1} to the Python floats (α_t, σ_t) of the Gaussian path, with (1, 0) at t = −1.
    """

    betas: Tensor

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        object.__setattr__(self, "betas", betas)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        object.__setattr__(self, "_ac", alphas_cumprod)
        object.__setattr__(self, "_ac_list", [1.0] + alphas_cumprod.tolist())  # index t + 1; [0] is t = -1

    @classmethod
    def from_name(cls, schedule: str | BetaSchedule | Tensor | Sequence[float], timesteps: int) -> NoiseSchedule:
        return cls(make_betas(schedule, timesteps))

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> Tensor:
        return 1 - self.betas

    @property
    def alphas_cumprod(self) -> Tensor:
        return self._ac  # type: ignore[attr-defined]

    @property
    def alphas_cumprod_prev(self) -> Tensor:
        return torch.cat([self.betas.new_ones(1), self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> Tensor:
        """β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) (Ho et al. 2020, eq. 7); β̃_0 = 0."""
        return posterior_coefficients(self.alphas_cumprod, self.alphas_cumprod_prev)[2]

    @property
    def posterior_log_variance_clipped(self) -> Tensor:
        """log β̃_t with β̃_0 replaced by β̃_1, so the log is finite (Nichol & Dhariwal 2021, §3.1)."""
        var = self.posterior_variance
        return torch.log(torch.cat([var[1:2], var[1:]]))

    @property
    def posterior_mean_coef1(self) -> Tensor:
        """Coefficient c_0 of x_0 in μ̃_t(x_t, x_0) (Ho et al. 2020, eq. 7)."""
        return posterior_coefficients(self.alphas_cumprod, self.alphas_cumprod_prev)[0]

    @property
    def posterior_mean_coef2(self) -> Tensor:
        """Coefficient c_t of x_t in μ̃_t(x_t, x_0) (Ho et al. 2020, eq. 7)."""
        return posterior_coefficients(self.alphas_cumprod, self.alphas_cumprod_prev)[1]

    def posterior_step(self, t: Time, s: Time | None = None) -> PosteriorStep[float]:
        """q(x_s | x_t, x_0) as floats for the reverse step t → s (default s = t − 1; s = −1 is clean data)."""
        t = _index(t, self.num_timesteps)
        s = t - 1 if s is None else _index(s, self.num_timesteps)
        if not CLEAN <= s < t:
            raise ValueError(f"a reverse step goes from t to s < t (s >= -1), got t={t}, s={s}")
        c0, ct, variance, beta = posterior_coefficients(self.alphabar(t), self.alphabar(s))
        clipped = variance if variance > 0 else posterior_coefficients(self.alphabar(1), self.alphabar(0))[2]
        return PosteriorStep(c0, ct, variance, math.log(clipped), beta, math.log(beta))

    @property
    def snr(self) -> Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) = exp(2 λ_t)."""
        return self.alphas_cumprod / (1 - self.alphas_cumprod)

    def alphabar(self, t: int) -> float:
        """ᾱ_t as a Python float, with ᾱ_{−1} = 1."""
        if not CLEAN <= t < self.num_timesteps:
            raise IndexError(f"time index {t} outside [-1, {self.num_timesteps - 1}]")
        return self._ac_list[t + 1]  # type: ignore[attr-defined]

    def alpha_sigma(self, t: Time) -> tuple[float, float]:
        """(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)) of the Gaussian path; (1, 0) at t = −1."""
        ab = self.alphabar(_index(t, self.num_timesteps))
        return math.sqrt(ab), math.sqrt(1.0 - ab)

    def alpha_sigma_at(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(√ᾱ_t, √(1 − ᾱ_t)) for indices t (B,) int64, float64 on t's device."""
        ac = self.alphas_cumprod.to(t.device).gather(0, t.long())
        return ac.sqrt(), (1 - ac).sqrt()

    @property
    def prior_std(self) -> float:
        """1: sampling starts from x_T ~ N(0, I)."""
        return 1.0

    @property
    def log_sigma_tilde(self) -> Tensor:
        """log σ̃_t = log(σ_t/α_t) = −λ_t for each index (T,), float64, increasing (what the continuous spacings use)."""
        return 0.5 * torch.log((1 - self.alphas_cumprod) / self.alphas_cumprod)

    def check_times(self, timesteps: Sequence[Time]) -> list[Time]:
        """Strictly decreasing int indices in [0, T) (see :func:`check_index_times`)."""
        return list(check_index_times(timesteps, self.num_timesteps))

    def timesteps(self, steps: int, spacing: str | Spacing = "linspace", *, rho: float = 7.0) -> list[Time]:
        """:func:`spaced_timesteps` of this schedule."""
        return list(spaced_timesteps(self, steps, spacing, rho=rho))

    def time_of_sigma_tilde(self, sigma_tilde: float) -> Time:
        """The index whose σ̃ is the nearest ≥ ``sigma_tilde`` (T − 1 above them all): :func:`index_of_sigma_tilde`."""
        return index_of_sigma_tilde(self.log_sigma_tilde, sigma_tilde)

    def sample_times(self, n: int, *, device: torch.device | str = "cpu") -> Tensor:
        """Uniform indices in [0, T), (n,) int64 (Ho et al. 2020, Alg. 1)."""
        return torch.randint(0, self.num_timesteps, (n,), device=device)

    def network_time(self, t: Tensor) -> Tensor:
        """The index itself: the network's time input is t ∈ {0, …, T−1}."""
        return t

    def buffers(self) -> dict[str, Tensor]:
        """The per-step tables GaussianDiffusion registers as (non-persistent) buffers, float64."""
        ac = self.alphas_cumprod
        return {
            "betas": self.betas,
            "alphas_cumprod": ac,
            "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(),
            "posterior_variance": self.posterior_variance,
            "posterior_log_variance_clipped": self.posterior_log_variance_clipped,
            "posterior_mean_coef1": self.posterior_mean_coef1,
            "posterior_mean_coef2": self.posterior_mean_coef2,
            "snr": self.snr,
        }


def index_of_sigma_tilde(log_sigma_tilde: Tensor, sigma_tilde: float) -> int:
    """The first index i of an increasing table log σ̃_i (T,) with σ̃_i ≥ ``sigma_tilde``, or T − 1 when none is.

    A discrete schedule has no time at an arbitrary noise level, so the stochastic Heun sampler (Karras et al. 2022,
    Alg. 2) raises the noise to the next level up and then uses THAT level's exact σ̃ as σ̂, so that the noise it
    adds, √(σ̂² − σ̃_i²), brings x̃ exactly to the marginal the denoiser is evaluated at.
    """
    if not sigma_tilde > 0:
        raise ValueError(f"sigma_tilde must be positive, got {sigma_tilde}")
    target = torch.tensor([math.log(sigma_tilde)], dtype=torch.float64)
    index = int(torch.searchsorted(log_sigma_tilde, target, side="left")[0])
    return min(index, len(log_sigma_tilde) - 1)


def _index(t: Time, num_timesteps: int) -> int:
    """t as an int index of a discrete schedule; ValueError for a non-integer time."""
    if isinstance(t, int):
        return t
    if float(t) != int(t):
        raise ValueError(f"this schedule is discrete (indices 0..{num_timesteps - 1}); got the non-integer time {t}")
    return int(t)


class IndexSchedule(Protocol):
    """What :func:`spaced_timesteps` needs of a discrete schedule: its length and log σ̃ per index."""

    @property
    def num_timesteps(self) -> int: ...

    @property
    def log_sigma_tilde(self) -> Tensor: ...


class Spacing(Choice):
    """How a few-step sampler picks its timesteps from {0, …, T−1}."""

    __option__ = "timestep spacing"

    LINSPACE = "linspace"
    TRAILING = "trailing"
    LEADING = "leading"
    LOGSNR = "logsnr"
    KARRAS = "karras"


def spaced_timesteps(
    schedule: NoiseSchedule | IndexSchedule | int,
    steps: int,
    spacing: str | Spacing = "linspace",
    *,
    rho: float = 7.0,
    sigma_max: float = 80.0,
) -> list[int]:
    """A strictly decreasing list of ``steps`` time indices to visit, in sampling order.

    * ``linspace`` (default): round(linspace(T−1, 0, steps)); starts at T−1 and ends exactly on t = 0.
    * ``trailing``: T−1, T−1−T/steps, … (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
      Flawed", Table 2); starts at T−1, may end above 0.
    * ``leading``: the DDIM paper's 0, T/steps, 2T/steps, … reversed; ends on 0 but starts below T−1.
    * ``logsnr``: uniform in λ_t = log(α_t/σ_t) between t = T−1 and t = 0 (the DPM-Solver paper's choice, Lu et al.
      2022, §3.3).
    * ``karras``: σ̃ = σ/α spaced as (σ̃_max^{1/ρ} + i/(n−1) (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ (Karras et al. 2022, eq. 5),
      ρ = ``rho``.

    The continuous spacings run from σ̃_min = σ̃_0 to σ̃_max = min(σ̃_{T−1}, ``sigma_max``), σ̃ = σ/α. The cosine
    schedule's clipped tail puts σ̃ above 10^4 in its last few indices, where uniform spacing would waste steps, so
    σ̃ is capped at 80 (Karras et al. 2022, Table 1). ``logsnr`` still starts at T−1 (its first step, first order
    in every solver here, is exact in the nearly linear regime above σ̃ = 80). ``karras`` starts at the index
    nearest σ̃_max, as Karras et al. do: Heun's trapezoidal step across a σ̃ ratio of 250 (T−1 → σ̃ = 80) is badly
    biased, and x_T ~ N(0, I) differs from the true marginal there only by α ≈ 1/80. Values are rounded to the
    nearest index; where rounding makes two entries equal they are pushed apart by one index, so exactly
    ``steps`` distinct indices come back, the last one 0. Every sampler appends the clean target t = −1 itself.

    Args:
        schedule: the NoiseSchedule, or just T for the uniform spacings.
        steps: number of entries, in [1, T].
    """
    num_timesteps = schedule if isinstance(schedule, int) else schedule.num_timesteps
    if not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be an integer in [1, {num_timesteps}] (the model's timesteps), got {steps!r}")
    spacing = Spacing(spacing)
    if spacing is Spacing.TRAILING:
        return _distinct(
            (num_timesteps - torch.arange(steps, dtype=torch.float64) * (num_timesteps / steps)).round().long() - 1,
            num_timesteps,
        )
    if spacing is Spacing.LEADING:
        return _distinct((torch.arange(steps) * (num_timesteps // steps)).flip(0), num_timesteps)
    if spacing is Spacing.LINSPACE:
        return _distinct(torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round().long(), num_timesteps)
    if isinstance(schedule, int):
        raise ValueError(f"timestep spacing {spacing.value!r} needs the NoiseSchedule, not just T")
    log_sigma_tilde = schedule.log_sigma_tilde  # = −λ_t, increasing
    lo, hi = float(log_sigma_tilde[0]), min(float(log_sigma_tilde[-1]), math.log(sigma_max))
    targets = log_sigma_tilde_targets(spacing, lo, hi, steps, rho)
    nearest = (log_sigma_tilde[None, :] - targets[:, None]).abs().argmin(dim=1)
    if spacing is Spacing.LOGSNR:
        nearest[0] = num_timesteps - 1
    return _distinct(nearest, num_timesteps)


def log_sigma_tilde_targets(spacing: Spacing, lo: float, hi: float, steps: int, rho: float) -> Tensor:
    """The ``steps`` decreasing values of log σ̃ that the continuous spacings aim at, from ``hi`` down to ``lo``
    (float64): ``logsnr`` uniform in log σ̃ = −λ (Lu et al. 2022, §3.3); ``karras`` σ̃ = (σ̃_max^{1/ρ} +
    i/(n−1) (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ (Karras et al. 2022, eq. 5). Shared by discrete and continuous schedules."""
    if spacing is Spacing.LOGSNR:
        return torch.linspace(hi, lo, steps, dtype=torch.float64)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    s_max, s_min = math.exp(hi) ** (1 / rho), math.exp(lo) ** (1 / rho)
    return ((s_max + ramp * (s_min - s_max)) ** rho).log()


def _distinct(ts: Tensor, num_timesteps: int) -> list[int]:
    """Sort decreasingly and push equal neighbours apart by one index, staying inside [0, T−1]."""
    asc = sorted(int(t) for t in ts)
    for i in range(1, len(asc)):  # from the bottom: strictly increasing
        asc[i] = max(asc[i], asc[i - 1] + 1)
    asc[-1] = min(asc[-1], num_timesteps - 1)
    for i in range(len(asc) - 2, -1, -1):  # from the top: back inside the range
        asc[i] = min(asc[i], asc[i + 1] - 1)
    return asc[::-1]
