"""The one interface where networks and samplers meet (DESIGN.md, Denoiser).

A denoiser maps (x_t, t) to a :class:`Prediction` of x_0 and ε. GaussianDiffusion builds one from its network and
objective; samplers call nothing else, so they work with any model, schedule or guidance wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from torch import Tensor


@dataclass(frozen=True)
class Prediction:
    """What a denoiser returns. x0, eps: (B, C, H, W). ``var_interp``: optional (B, C, H, W) learned-variance
    output v ∈ [−1, 1] of Nichol & Dhariwal 2021, eq. 15, for models that have one; None otherwise."""

    x0: Tensor
    eps: Tensor
    var_interp: Tensor | None = None


class Denoiser(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor) -> Prediction:
        """x_t: (B, C, H, W); t: (B,) times of the schedule (schedules.Schedule): int64 indices in [0, T) of a
        discrete schedule, float64 times in [t_min, 1] of a continuous process. Returns the prediction at t."""
        ...


@dataclass(frozen=True)
class StepRecord:
    """What a sampler's callback receives once per network evaluation step.

    index: 0-based step number; t: the time the step started from (an int index of a discrete schedule, a float
    time of a continuous one); x_t: the state at t, (B, C, H, W); x_next: the state after the step (at the next
    time, or the final sample); pred_x0: the prediction of x_0; nfe: the network evaluations used so far, for
    samplers whose count is not fixed by the steps (adaptive solvers, correctors), else None.
    """

    index: int
    t: int | float
    x_t: Tensor
    x_next: Tensor
    pred_x0: Tensor
    nfe: int | None = None


Callback = Callable[[StepRecord], None]
