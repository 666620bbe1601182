"""Pieces the samplers (and the likelihood's ODE integration) share: the step loop's time pairs, noise draws, time
batches, forward jumps q(x_t | x_s) and Heun's step."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..processes import CLEAN, Schedule, Time, forward_step


def time_pairs(timesteps: Sequence[Time], schedule: Schedule) -> Iterator[tuple[int, Time, Time]]:
    """Yield (index, t, s) for each reverse step t → s, where s is the next entry or CLEAN (−1) after the last.

    ``timesteps`` must be the schedule's times (int indices of a discrete schedule, floats of a continuous one),
    strictly decreasing and in its range (``schedule.check_times``); a clear ValueError says otherwise.
    """
    ts = schedule.check_times(timesteps)
    for i, t in enumerate(ts):
        yield i, t, ts[i + 1] if i + 1 < len(ts) else CLEAN


def has_sde(schedule: Any) -> bool:
    """Whether the schedule gives its forward SDE's (f(t), g(t)) (processes.ContinuousSchedule.sde)."""
    return callable(getattr(schedule, "sde", None))


def schedule_kind(schedule: Any) -> str:
    """A short name of the schedule's process for messages ('vp', 'ncsn', ...; NoiseSchedule: 'discrete ddpm')."""
    describe = getattr(schedule, "describe", None)
    return describe() if callable(describe) else f"discrete ddpm ({type(schedule).__name__})"


def require_sde(schedule: Any, user: str, integrates: str, hint: str = "") -> Any:
    """``schedule`` if it has a forward SDE (:func:`has_sde`); else a ValueError naming ``user`` (a sampler, a solver),
    what it ``integrates``, the processes it serves and the schedule it was given, then ``hint``."""
    if not has_sde(schedule):
        raise ValueError(
            f"{user} integrates {integrates}, which needs the forward SDE's f(t), g(t) (schedule.sde): it serves the "
            f"continuous-time processes vp, subvp and ve, not the {schedule_kind(schedule)} schedule{hint}"
        )
    return schedule


def check_not_refused(schedule: Any, sampler: str) -> None:
    """ValueError naming ``sampler``, the process and the reason when the process refuses the sampler (its
    ``refused_samplers``, processes/base.py)."""
    reason = getattr(schedule, "refused_samplers", {}).get(sampler)
    if reason:
        raise ValueError(f"sampler {sampler!r} cannot sample the {schedule_kind(schedule)} process: {reason}")


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise with x's shape, dtype and device, drawn from ``generator`` when given."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def diffuse(x_s: Tensor, schedule: Schedule, s: Time, t: Time, generator: torch.Generator | None) -> Tensor:
    """A draw of x_t ~ q(x_t | x_s) = N(α_{t|s} x_s, σ²_{t|s} I) with α_{t|s} = α_t/α_s and
    σ²_{t|s} = σ_t² − α²_{t|s} σ_s² (Kingma et al. 2021, eq. 33): the forward process from s up to t > s in one draw
    (it is Markov, so the skipped steps' Gaussians compose into this one, on any respaced chain). On a VP path this
    is N(√(ᾱ_t/ᾱ_s) x_s, (1 − ᾱ_t/ᾱ_s) I); s = CLEAN draws q(x_t | x_0) (Ho et al. 2020, eq. 4).

    x_s: (B, C, H, W); the noise has its shape, dtype and device and comes from ``generator``.
    """
    try:
        if not s < t:
            raise ValueError("s is not below t")
        alpha_s, sigma_s = schedule.alpha_sigma(s)
        alpha_t, sigma_t = schedule.alpha_sigma(t)
    except (IndexError, ValueError) as err:
        raise ValueError(
            f"a forward jump goes from s to t > s inside the schedule (s = -1 is clean data), got s={s}, t={t}: {err}"
        ) from None
    a, variance = forward_step(alpha_t, sigma_t, alpha_s, sigma_s)
    return a * x_s + math.sqrt(variance) * randn_like(x_s, generator)


def time_batch(x: Tensor, t: Time) -> Tensor:
    """(B,) tensor filled with t on x's device: int64 for an int index (discrete schedules), float64 for a float
    time (continuous processes)."""
    dtype = torch.long if isinstance(t, int) else torch.float64
    return torch.full((x.shape[0],), t, device=x.device, dtype=dtype)


def heun_step(
    slope_at: Callable[[list[Tensor]], Sequence[Tensor]], y: Sequence[Tensor], slope: Sequence[Tensor], h: float
) -> list[Tensor]:
    """One step of Heun's method (the explicit trapezoidal rule) on a system of tensors y' = f(y):
    ŷ = y + h f(y) (Euler predictor), then y + h (f(y) + f(ŷ))/2 (Karras et al. 2022, Alg. 1, lines 5-7).

    ``slope`` is f(y), already computed by the caller; ``slope_at`` evaluates f at the predictor. Used on the
    probability-flow ODE in the scaled variables x̃ = x/α, σ̃ = σ/α, where the step is in σ̃ and f = ε̂ (sampling,
    downwards) or (ε̂, div ε̂) (the likelihood, upwards).
    """
    predictor = [value + h * d for value, d in zip(y, slope)]
    slope_end = slope_at(predictor)
    return [value + h * 0.5 * (d + d_end) for value, d, d_end in zip(y, slope, slope_end)]
