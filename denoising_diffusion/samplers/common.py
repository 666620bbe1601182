"""Pieces the samplers (and the likelihood's ODE integration) share: the step loop's time pairs, noise draws, time
batches, forward jumps q(x_t | x_s) and Heun's step."""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..schedules import CLEAN, NoiseSchedule


def time_pairs(timesteps: Sequence[int], schedule: NoiseSchedule) -> Iterator[tuple[int, int, int]]:
    """Yield (index, t, s) for each reverse step t → s, where s is the next entry or CLEAN (−1) after the last.

    ``timesteps`` must be strictly decreasing indices in [0, T); a clear ValueError says otherwise.
    """
    ts = [int(t) for t in timesteps]
    if not ts:
        raise ValueError("timesteps is empty: a sampler needs at least one step")
    if any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] < 0 or ts[0] >= schedule.num_timesteps:
        raise ValueError(
            f"timesteps must be strictly decreasing integers in [0, {schedule.num_timesteps - 1}], "
            f"got {ts[:5]}{'...' if len(ts) > 5 else ''}"
        )
    for i, t in enumerate(ts):
        yield i, t, ts[i + 1] if i + 1 < len(ts) else CLEAN


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise with x's shape, dtype and device, drawn from ``generator`` when given."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def diffuse(x_s: Tensor, schedule: NoiseSchedule, s: int, t: int, generator: torch.Generator | None) -> Tensor:
    """A draw of x_t ~ q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, (1 − ᾱ_t/ᾱ_s) I): the forward process from index s up to
    t > s in one draw (it is Markov, so the skipped steps' Gaussians compose into this one, on any respaced chain).
    s = CLEAN (ᾱ = 1) draws q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) (Ho et al. 2020, eq. 4).

    x_s: (B, C, H, W); the noise has its shape, dtype and device and comes from ``generator``.
    """
    if not CLEAN <= s < t < schedule.num_timesteps:
        raise ValueError(
            f"a forward jump goes from s to t > s (s >= -1, t < {schedule.num_timesteps}), got s={s}, t={t}"
        )
    ratio = schedule.alphabar(t) / schedule.alphabar(s)
    return math.sqrt(ratio) * x_s + math.sqrt(1.0 - ratio) * randn_like(x_s, generator)


def time_batch(x: Tensor, t: int) -> Tensor:
    """(B,) int64 tensor filled with t, on x's device."""
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


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
