"""Samplers of the reverse-time SDE (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations"): Euler–Maruyama, the reverse-diffusion predictor, and predictor–corrector sampling.

The forward SDE dx = f(t) x dt + g(t) dw has the reverse-time SDE dx = [f(t) x − g(t)² ∇ log p_t(x)] dt + g(t) dw̄
(eq. 6; Anderson 1982), run from t = 1 down to t_min with the score s_θ = −ε̂/σ_t (parameterization.score_from_eps).
Every sampler here ends with the step to CLEAN, which returns the denoiser's x̂_0 without noise (the "denoising" last
step of Song et al. 2021, App. G: Tweedie's formula, x̂_0 = (x + σ² s_θ)/α).

Glossary: t → s < t is one step of the grid (s = CLEAN after its last entry); a = α_t/α_s and b² = σ_t² − a² σ_s² are
the forward step x_t = a x_s + b z of the Gaussian path (schedules.gaussian_posterior_step calls them α_{t|s} and β').
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from ..choices import Choice
from ..denoiser import Callback, Denoiser, StepRecord
from ..parameterization import score_from_eps
from ..processes import CLEAN, Schedule, Time, forward_step
from .common import randn_like, require_sde, time_batch, time_pairs
from .langevin import langevin_step

DEFAULT_SNR = 0.16
"""r of the Langevin corrector: Song et al. 2021's value for their VE models (App. G, Table 4's configs)."""
DEFAULT_CORRECTOR_STEPS = 1
"""M: one corrector step per predictor step, as in the paper's PC samplers (App. G)."""


class Predictor(Choice):
    """The predictor of :func:`sample_pc`: the reverse-diffusion step (any schedule) or Euler–Maruyama (an SDE)."""

    __option__ = "predictor"

    REVERSE_DIFFUSION = "reverse_diffusion"
    EULER_MARUYAMA = "euler_maruyama"


def check_sde(schedule: Any, sampler: str) -> None:
    """ValueError naming ``sampler`` and the schedule unless the schedule has an SDE (a continuous process)."""
    require_sde(
        schedule,
        f"sampler {sampler}",
        "the reverse-time SDE",
        ": on discrete times use 'reverse_diffusion' or 'pc' (with predictor 'reverse_diffusion')",
    )


def euler_maruyama_step(
    x: Tensor, score: Tensor, schedule: Any, t: Time, s: Time, generator: torch.Generator | None
) -> Tensor:
    """One Euler–Maruyama step t → s < t of the reverse SDE (Song et al. 2021, eq. 6; App. D.1 with Δt = t − s):
    x_s = x_t − [f(t) x_t − g(t)² s_θ] Δt + g(t) √Δt z. x, score: (B, C, H, W); needs ``schedule.sde``."""
    f, g = schedule.sde(t)
    dt = float(t) - float(s)
    return x - (f * x - g**2 * score) * dt + g * math.sqrt(dt) * randn_like(x, generator)


def reverse_diffusion_step(
    x: Tensor, score: Tensor, schedule: Schedule, t: Time, s: Time, generator: torch.Generator | None
) -> Tensor:
    """One reverse-diffusion step t → s < t (Song et al. 2021, App. E, eq. 45), for any Gaussian path.

    The forward process from s to t is x_t = a x_s + b z, a = α_t/α_s, b² = σ_t² − a² σ_s², i.e. the discretization
    x_{i+1} = x_i + f_i(x_i) + G_i z with f_i(x) = (a − 1) x and G_i = b. Its reverse-diffusion discretization is
    x_s = x_t − f(x_t) + G² s_θ(x_t, t) + G z = x_t − (a − 1) x_t + b² s_θ + b z:

    * VE (α = 1, f = 0, G = √(σ_t² − σ_s²)): x_s = x_t + (σ_t² − σ_s²) s_θ + √(σ_t² − σ_s²) z (eq. 46);
    * VP (a = √(1 − β), b² = β with β = 1 − ᾱ_t/ᾱ_s): x_s = (2 − √(1 − β)) x_t + β s_θ + √β z (eq. 47), DDPM's
      ancestral step to first order in β.

    x, score: (B, C, H, W). Uses only ``schedule.alpha_sigma``, so it serves discrete schedules as well.
    """
    alpha_t, sigma_t = schedule.alpha_sigma(t)
    alpha_s, sigma_s = schedule.alpha_sigma(s)
    a, b2 = forward_step(alpha_t, sigma_t, alpha_s, sigma_s)
    return x - (a - 1) * x + b2 * score + math.sqrt(b2) * randn_like(x, generator)


PREDICTOR_STEPS = {Predictor.REVERSE_DIFFUSION: reverse_diffusion_step, Predictor.EULER_MARUYAMA: euler_maruyama_step}


@torch.no_grad()
def sample_euler_maruyama(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler–Maruyama on the reverse-time SDE dx = [f(t) x − g(t)² s_θ] dt + g(t) dw̄ (Song et al. 2021, eq. 6):
    x_s = x_t − [f(t) x_t − g(t)² s_θ(x_t, t)] (t − s) + g(t) √(t − s) z; the step to CLEAN returns x̂_0.

    Needs the forward SDE (``schedule.sde``: the continuous processes of processes/); ValueError for a schedule
    without one. One network evaluation per step.

    Args: as sample_ddim (timesteps: ``schedule.timesteps(steps)``, from 1 down to t_min).
    Returns: (B, C, H, W), same dtype and device as x_T.
    """
    return _predictor_loop(denoiser, x_T, schedule, timesteps, "'euler_maruyama'", Predictor.EULER_MARUYAMA, 0,
                           DEFAULT_SNR, generator, callback)  # fmt: skip


@torch.no_grad()
def sample_reverse_diffusion(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """The reverse-diffusion predictor alone (Song et al. 2021, App. E, eqs. 45-47): x_s = x_t − (a − 1) x_t +
    b² s_θ(x_t, t) + b z (see :func:`reverse_diffusion_step`); the step to CLEAN returns x̂_0.

    Serves every schedule (only α_t, σ_t at the grid times are used). One network evaluation per step.

    Args: as sample_ddim. Returns: (B, C, H, W), same dtype and device as x_T.
    """
    return _predictor_loop(denoiser, x_T, schedule, timesteps, "'reverse_diffusion'", Predictor.REVERSE_DIFFUSION, 0,
                           DEFAULT_SNR, generator, callback)  # fmt: skip


def check_pc_options(snr: float, corrector_steps: int) -> None:
    """ValueError unless ``snr`` > 0 and ``corrector_steps`` is an integer >= 0."""
    if not (isinstance(snr, (int, float)) and math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a finite number > 0 (the corrector's signal-to-noise ratio r), got {snr!r}")
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be an integer >= 0, got {corrector_steps!r}")


@torch.no_grad()
def sample_pc(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    snr: float = DEFAULT_SNR,
    corrector_steps: int = DEFAULT_CORRECTOR_STEPS,
    predictor: str | Predictor = Predictor.REVERSE_DIFFUSION,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Predictor–corrector sampling (Song et al. 2021, Alg. 2 (VE) and 3 (VP); App. G, Alg. 4-5 for the corrector).

    At each grid time t (step t → s): M = ``corrector_steps`` Langevin corrector steps at t,
    x ← x + ε s_θ + √(2ε) z with ε = 2 α (r ‖z‖/‖s_θ‖)², the norms per sample averaged over the batch
    (:func:`corrector_step_size`; r = ``snr``; α = a² = (α_t/α_s)², the step's 1 − β of Alg. 5, and 1 on VE paths as
    in Alg. 4), then one predictor step t → s from the corrected state: the reverse-diffusion step (default; any
    schedule) or Euler–Maruyama (needs ``schedule.sde``). The step to CLEAN returns x̂_0 of the corrected state.

    The samples of a batch share the corrector's step size, so each depends (weakly) on the others in its batch.

    One callback per grid step (x_t: the state before the corrector, x_next: after the predictor; nfe: evaluations
    so far, 1 + M per step).

    Args:
        denoiser, x_T, schedule, timesteps, generator, callback: as sample_ddim.
        snr: r > 0 (default 0.16, the paper's for VE).
        corrector_steps: M ≥ 0 (0: the predictor alone).
        predictor: 'reverse_diffusion' or 'euler_maruyama'.
    Returns:
        (B, C, H, W), same dtype and device as x_T.
    """
    check_pc_options(snr, corrector_steps)
    predictor = Predictor(predictor)
    return _predictor_loop(denoiser, x_T, schedule, timesteps, f"'pc' (predictor {predictor.value!r})", predictor,
                           corrector_steps, snr, generator, callback)  # fmt: skip


def corrector_step_size(score: Tensor, noise: Tensor, snr: float, alpha: float) -> Tensor:
    """ε = 2 α (r ‖z‖/‖s‖)² (Song et al. 2021, Alg. 4-5, line 4), with ‖z‖ and ‖s‖ each sample's norm averaged over the
    batch, as in the paper's code (sampling.py, LangevinCorrector): one step size for the batch, a 0-d tensor.

    Why not each sample's own ratio: a step size that depends on the state x (through ‖s(x)‖) is no longer a Langevin
    chain of p, and its bias is of order 1/D for D elements per sample. With the exact score of a Gaussian mixture
    the per-sample ratio made the samples' spread 25 % too wide in 8 dimensions, 7.5 % in 32, and blew up in 2
    (‖z‖²/‖s‖² is then F(2, 2)-distributed, whose mean is infinite); the batch mean gives the spread within 3 % in 2-D.
    For images (D in the thousands) the two agree.

    score, noise: (B, C, H, W)."""
    noise_norm = noise.flatten(1).norm(dim=1).mean()
    score_norm = score.flatten(1).norm(dim=1).mean()
    return 2 * alpha * (snr * noise_norm / score_norm) ** 2


def _predictor_loop(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    name: str,
    predictor: Predictor,
    corrector_steps: int,
    snr: float,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> Tensor:
    """The loop of the three samplers: per grid step, ``corrector_steps`` Langevin corrections, then the predictor."""
    pairs = list(time_pairs(timesteps, schedule))  # checks the grid first
    if predictor is Predictor.EULER_MARUYAMA:
        check_sde(schedule, name)
    step_fn = PREDICTOR_STEPS[predictor]
    x, nfe = x_T, 0
    for i, t, s in pairs:
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        alpha_s = schedule.alpha_sigma(s)[0]
        times, x_t = time_batch(x, t), x
        for _ in range(corrector_steps):
            score = score_from_eps(denoiser(x, times).eps, sigma_t)
            z = randn_like(x, generator)
            step = corrector_step_size(score, z, snr, (alpha_t / alpha_s) ** 2)
            x = langevin_step(x, score, step, generator, noise=z)
        pred = denoiser(x, times)
        nfe += corrector_steps + 1
        if s == CLEAN:  # the final denoising step: x̂_0 without noise
            x_next = pred.x0
        else:
            x_next = step_fn(x, score_from_eps(pred.eps, sigma_t), schedule, t, s, generator)
        if callback is not None:
            callback(StepRecord(index=i, t=t, x_t=x_t, x_next=x_next, pred_x0=pred.x0, nfe=nfe))
        x = x_next
    return x
