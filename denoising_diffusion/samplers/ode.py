"""The probability-flow ODE solved by an adaptive Runge-Kutta method (Song et al. 2021, "Score-Based Generative
Modeling through Stochastic Differential Equations", eq. 13 and §4.3):

    dx/dt = f(t) x − ½ g(t)² s_θ(x, t),   s_θ(x, t) = −ε̂(x, t)/σ_t,

in the SDE's own time t, from timesteps[0] down to timesteps[-1] by Dormand-Prince 5(4) (torchdiffeq's ``dopri5``,
Chen et al. 2018) with error tolerances ``rtol`` and ``atol`` (1e-5 each, as in Song et al. 2021's code), then the
final denoising step to clean data (x̂_0 at the last time, Song et al. 2021, App. D.1). It needs the forward SDE
(``schedule.sde(t)``): the continuous-time processes vp, subvp and ve of processes/.

The batch is one ODE state (flattened, B·C·H·W values), so one error norm and one step size serve the whole batch,
as in Song et al. 2021. The step count only sets output points: each grid interval is one call of the solver, whose
steps land exactly on the interval's end (torchdiffeq's ``step_t``), so the state there is integrated, not
interpolated; the step size is chosen afresh in each interval (two evaluations), so extra output points cost a little.
torchdiffeq's initial step heuristic probes one point that may lie beyond the interval; the vector field clamps its
time into the interval there (a time outside [0, 1] has no α_t, σ_t), and every accepted or rejected step's stages
lie inside it.

torchdiffeq is an optional dependency (the ``sde`` extra): it is imported when the solver runs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol, Sequence, cast

import torch
from torch import Tensor

from ..denoiser import Callback, Denoiser, Prediction, StepRecord
from ..parameterization import score_from_eps
from ..processes import CLEAN, Schedule, Time
from .common import require_sde, time_batch, time_pairs

DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-5


class SDESchedule(Schedule, Protocol):
    """A schedule with a forward SDE dx = f(t) x dt + g(t) dw (processes.ContinuousSchedule)."""

    def sde(self, t: Time) -> tuple[float, float]:
        """(f(t), g(t))."""
        ...


def load_odeint() -> Callable[..., Any]:
    """torchdiffeq's ``odeint``, imported here so that the package runs without it; ImportError naming the extra."""
    try:
        from torchdiffeq import odeint
    except ImportError as err:
        raise ImportError(
            "the adaptive probability-flow ODE (sampler 'ode', likelihood solver 'dopri5') needs torchdiffeq: "
            "pip install 'denoising-diffusion[sde]'"
        ) from err
    return odeint


def check_tolerance(name: str, value: Any) -> float:
    """``value`` as a positive finite float; ValueError naming ``name`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive float (an error tolerance of the ODE solver), got {value!r}")
    return number


def require_ode(schedule: Schedule, user: str) -> SDESchedule:
    """``schedule`` if it has a forward SDE; else ValueError naming ``user`` (common.require_sde)."""
    return cast(SDESchedule, require_sde(schedule, user, "the probability-flow ODE dx/dt = f(t) x − ½ g(t)² s(x, t)"))


def clamp_time(t: Tensor, lo: float, hi: float) -> float:
    """The solver's time as a float inside [lo, hi] (see the module docstring: only the initial step's probe can
    fall outside)."""
    return min(max(float(t), lo), hi)


@torch.no_grad()
def sample_ode(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """The probability-flow ODE dx/dt = f(t) x − ½ g(t)² s_θ(x, t) with s_θ = −ε̂/σ_t (Song et al. 2021, eq. 13),
    integrated adaptively by dopri5 through the times ``timesteps``, then x̂_0 at the last time (one evaluation).

    The callback fires once per grid interval and once for the final step (``len(timesteps)`` records), each with
    ``StepRecord.nfe``: the network evaluations so far. The last record's ``nfe`` is the sampler's total, what the
    caller reads to know the cost (it falls as rtol and atol loosen). ``pred_x0`` of an interval's record is the
    prediction at its start (the solver's first evaluation there).

    Args:
        denoiser: (x_t, t) -> Prediction, t a (B,) float64 time.
        x_T: (B, C, H, W) start at timesteps[0], e.g. N(0, prior_std² I) at t = 1.
        schedule: a continuous process (vp, subvp, ve: it needs ``schedule.sde``); ValueError otherwise.
        timesteps: strictly decreasing times in [t_min, 1]; they set the output points only (2 is enough: the
            solver picks its own steps).
        rtol, atol: dopri5's relative and absolute error tolerances, positive floats.
        generator: accepted for the shared signature; this solver draws no noise.
        callback: receives a StepRecord per interval and for the final step.
    Returns:
        (B, C, H, W) samples, x_T's dtype and device.
    """
    sde_schedule = require_ode(schedule, "sampler 'ode'")
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    steps = list(time_pairs(timesteps, schedule))  # checks the grid before torchdiffeq is imported
    odeint = load_odeint()
    nfe = 0
    first: list[Prediction] = []  # the prediction at the current interval's start

    def evaluate(x: Tensor, t: float) -> Prediction:
        nonlocal nfe
        nfe += 1
        return denoiser(x, time_batch(x, t))

    def velocity_on(start: float, end: float) -> Callable[[Tensor, Tensor], Tensor]:
        def velocity(t: Tensor, y: Tensor) -> Tensor:
            time = clamp_time(t, end, start)
            f, g = sde_schedule.sde(time)
            sigma = schedule.alpha_sigma(time)[1]
            x = y.view(x_T.shape)
            pred = evaluate(x, time)
            if not first and math.isclose(time, start, rel_tol=1e-6):  # t0 (float32 when y is)
                first.append(pred)
            score = score_from_eps(pred.eps, sigma)  # s_θ = ∇ log p_t ≈ −ε̂/σ_t
            return (f * x - 0.5 * g**2 * score).flatten()

        return velocity

    x = x_T
    for i, t, s in steps:
        if s == CLEAN:  # the final denoising step: x̂_0 with no noise
            pred = evaluate(x, t)
            x_next = pred.x0
        else:
            first.clear()
            span = torch.tensor([t, s], dtype=torch.float64, device=x.device)
            path = odeint(
                velocity_on(float(t), float(s)),
                x.flatten(),
                span,
                rtol=rtol,
                atol=atol,
                method="dopri5",
                options={"step_t": span[1:]},
            )
            x_next = path[-1].view(x.shape)
            pred = first[0] if first else evaluate(x, t)
        if callback is not None:
            callback(StepRecord(index=i, t=t, x_t=x, x_next=x_next, pred_x0=pred.x0, nfe=nfe))
        x = x_next
    return x
