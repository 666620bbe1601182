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
        """x_t: (B, C, H, W); t: (B,) int64 time indices in [0, T). Returns the prediction at t."""
        ...


@dataclass(frozen=True)
class StepRecord:
    """What a sampler's callback receives once per network evaluation step.

    index: 0-based step number; t: the time index the step started from; x_t: the state at t, (B, C, H, W);
    x_next: the state after the step (at the next time index, or the final sample); pred_x0: the prediction of x_0.
    """

    index: int
    t: int
    x_t: Tensor
    x_next: Tensor
    pred_x0: Tensor


Callback = Callable[[StepRecord], None]
