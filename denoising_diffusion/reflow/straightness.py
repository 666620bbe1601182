"""Straightness of a flow (Liu et al. 2023, "Flow Straight and Fast", eq. 5): how far its ODE trajectories are from
straight lines, S(Z) = ∫_0^1 E‖(Z_1 − Z_0) − Ż_t‖² dt, measured along the model's own trajectories.

A flow is straight (S = 0) exactly when every trajectory moves with constant velocity, Z_t = (1 − t) Z_0 + t Z_1: one
Euler step then lands on the ODE's endpoint. Reflow (rectified.py) lowers S (Liu et al. 2023, Thm. 3.7).

Here the ODE dZ/dt = v(Z_t, t) runs from Z_T ~ N(0, I) at T = t_max (the process's start, 0.999) down to t = 0 by
Euler steps in t on a given grid, and S is the time average over [0, T] of the squared deviation from the chord
velocity (Z_T − Z_0)/T (for T = 1 the equation above), per element: the mean over the C·H·W elements of each sample,
so that images of any size compare. Euler on the grid is the ODE the grid defines (for a model on the straight
path, the one the 'euler' sampler integrates: DDIM with η = 0 is Euler's step there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._utils import eval_mode
from ..parameterization import velocity_from_x0_eps
from ..processes import path_derivatives
from ..sampling import runner_of

VelocityField = Callable[[Tensor, Tensor], Tensor]
"""(x (B, C, H, W), t (B,) float64) -> dx/dt (B, C, H, W)."""


@dataclass(frozen=True)
class Trajectory:
    """Euler's path of a velocity field: start Z_T (B, C, H, W), end Z_0 (B, C, H, W), the velocities at each grid
    time (K, B, C, H, W) and the times (K + 1,) from T down to 0."""

    start: Tensor
    end: Tensor
    velocities: Tensor
    times: tuple[float, ...]

    def straightness(self) -> Tensor:
        """S per sample, (B,): Σ_k Δt_k mean_elements(((Z_T − Z_0)/T − v_k)²) / T (the module docstring)."""
        span = self.times[0] - self.times[-1]
        chord = (self.start - self.end) / span
        dts = torch.tensor([a - b for a, b in zip(self.times, self.times[1:])], dtype=self.start.dtype)
        deviation = (chord.unsqueeze(0) - self.velocities).pow(2).flatten(2).mean(2)  # (K, B)
        return (dts.to(deviation.device)[:, None] * deviation).sum(0) / span


@torch.no_grad()
def euler_trajectory(velocity: VelocityField, x_start: Tensor, times: Sequence[float]) -> Trajectory:
    """Euler's method x_{k+1} = x_k + (t_{k+1} − t_k) v(x_k, t_k) for the ODE dx/dt = v on ``times`` (strictly
    decreasing, ending at 0: data), from x_start (B, C, H, W) at times[0]. ValueError for a bad grid."""
    grid = [float(t) for t in times]
    if len(grid) < 2 or grid[-1] != 0.0 or any(a <= b for a, b in zip(grid, grid[1:])):
        raise ValueError(f"times must decrease strictly to 0 with at least one step, got {grid[:5]}")
    x, velocities = x_start, []
    for t, s in zip(grid, grid[1:]):
        v = velocity(x, torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device))
        velocities.append(v)
        x = x + (s - t) * v
    return Trajectory(x_start, x, torch.stack(velocities), tuple(grid))


def velocity_field(model: Any, *, clip_denoised: bool | None = None, **condition: Any) -> VelocityField:
    """A flow model's velocity field v = α'_t x̂_0 + σ'_t ε̂ (parameterization.velocity_from_x0_eps) from its denoiser
    (condition bound, x̂_0 clipped as the model samples unless ``clip_denoised`` says otherwise), in its own space.
    ``model``: a GaussianDiffusion (or runner) on a path that declares its time derivatives (the flow processes)."""
    runner = runner_of(model)
    denoiser = runner.denoiser(clip_denoised, **condition)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        pred = denoiser(x, t)
        return velocity_from_x0_eps(pred.x0, pred.eps, *path_derivatives(runner.schedule, t, x))

    return velocity


def flow_grid(schedule: Any, steps: int) -> list[float]:
    """``steps`` Euler steps uniform in t from the process's t_max to t_min, then the step to 0 (``steps + 1``
    times); one step is t_max -> 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return [*schedule.timesteps(steps, "linspace"), 0.0]


def model_straightness(
    model: Any, num: int, *, steps: int = 32, batch_size: int = 256, generator: torch.Generator | None = None,
    **condition: Any,
) -> Tensor:  # fmt: skip
    """S of a flow model (GaussianDiffusion on a flow path) per noise draw, (num,): ``num`` draws of its prior,
    ``steps`` Euler steps (:func:`flow_grid`), ``batch_size`` at a time, in eval mode without gradients.
    ``condition``: a conditional model's (``classes=``: one label, or a (num,) tensor of labels, one per draw)."""
    runner = runner_of(model)
    grid = flow_grid(runner.schedule, steps)
    values = []
    with torch.inference_mode(), eval_mode(runner.network):
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            per_draw = {k for k, v in condition.items() if isinstance(v, Tensor) and v.ndim and len(v) == num}
            chunk: dict[str, Any] = {k: v[start : start + n] if k in per_draw else v for k, v in condition.items()}
            x_T = runner.prior((n, *runner.shape), generator)
            values.append(euler_trajectory(velocity_field(runner, **chunk), x_T, grid).straightness().cpu())
    return torch.cat(values)
