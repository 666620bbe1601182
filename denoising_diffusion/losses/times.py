"""The training-time distribution: which times t (noise levels) the loss draws, as registered objects (a new one
joins with ``@times_kind("name")``; GaussianDiffusion's ``training_times`` takes its name, its config or an object;
by default the process's declared one, processes/base.py ``training_times``).

* ``uniform``: t uniform over the process's training range: an index in {0, …, T−1} of a discrete process (Ho et al.
  2020, Alg. 1; NCSN's levels), t ~ U(t_min, t_max) of a continuous one (Song et al. 2021, eq. 7 with ε = t_min).
* ``log_normal``: ln σ̃ ~ N(P_mean, P_std²), σ̃ = σ/α, then the time at that noise level (Karras et al. 2022,
  Table 1, "noise distribution"; EDM's process takes σ itself, untruncated).
* ``logit_normal``: t = sigmoid(u), u ~ N(location, scale²) (Esser et al. 2024, §3.1, eq. 19), for processes whose
  time lies in [0, 1] (the flow paths, vp, subvp). On the straight flow path logit(t) = log(t/(1 − t)) = ln σ̃, so
  it is ``log_normal`` with P_mean = location, P_std = scale there (not on other paths).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..registry import KindTable

TIME_DISTRIBUTIONS = KindTable("training-time distribution")
"""The registered training-time distributions."""

times_kind = TIME_DISTRIBUTIONS.register
"""Class decorator: ``@times_kind("name")`` registers a :class:`TimeDistribution` under that name."""


class TimeDistribution:
    """Draws n training times of a process from the global RNG. Subclasses give :meth:`sample`; their
    constructor's keyword arguments are their config."""

    name: ClassVar[str] = ""

    def sample(self, schedule: Any, n: int, device: torch.device | str) -> Tensor:
        """(n,) times of ``schedule`` on ``device`` (int64 indices of a discrete process, float64 times otherwise)."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """``{"kind": name, **constructor arguments}`` (see :func:`make_times`)."""
        return {"kind": self.name, **vars(self)}


@times_kind("uniform")
class UniformTimes(TimeDistribution):
    """t uniform over the process's training range (an index of a discrete process; U(t_min, t_max) otherwise)."""

    def sample(self, schedule: Any, n: int, device: torch.device | str) -> Tensor:
        if not schedule.continuous:
            return torch.randint(0, schedule.num_timesteps, (n,), device=device)
        return schedule.t_min + (schedule.t_max - schedule.t_min) * torch.rand(n, device=device, dtype=torch.float64)


@times_kind("log_normal")
class LogNormalSigma(TimeDistribution):
    """ln σ̃ ~ N(p_mean, p_std²) (Karras et al. 2022, Table 1: P_mean = −1.2, P_std = 1.2), at the process's time of
    that σ̃ (``schedule.times_at_sigma_tilde``)."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2) -> None:
        if not (math.isfinite(p_mean) and math.isfinite(p_std) and p_std > 0):
            raise ValueError(f"need a finite p_mean and p_std > 0, got p_mean={p_mean}, p_std={p_std}")
        self.p_mean, self.p_std = float(p_mean), float(p_std)

    def sample(self, schedule: Any, n: int, device: torch.device | str) -> Tensor:
        sigma = (self.p_mean + self.p_std * torch.randn(n, device=device, dtype=torch.float64)).exp()
        return schedule.times_at_sigma_tilde(sigma)


@times_kind("logit_normal")
class LogitNormalTimes(TimeDistribution):
    """t = sigmoid(u), u ~ N(location, scale²): the logit-normal density π(t) = exp(−(logit t − m)²/(2s²)) /
    (s √(2π) t (1 − t)) of Esser et al. 2024 (§3.1, eq. 19; m = 0, s = 1 by default, their best "rf/lognorm(0.00,
    1.00)"), which puts the training times in the middle of the path; clamped to the process's [t_min, t_max] (which
    moves only the tails beyond it: for the flow paths' defaults, |u| > 6.9, probability 5·10⁻¹²).

    Args:
        location: m, the mean of logit(t) (> 0 favours the noise end t → 1).
        scale: s > 0, the standard deviation of logit(t).
    """

    def __init__(self, location: float = 0.0, scale: float = 1.0) -> None:
        if not (math.isfinite(location) and math.isfinite(scale) and scale > 0):
            raise ValueError(
                f"logit_normal needs a finite location and scale > 0, got location={location}, scale={scale}"
            )
        self.location, self.scale = float(location), float(scale)

    def sample(self, schedule: Any, n: int, device: torch.device | str) -> Tensor:
        """(n,) float64 times; ValueError for a process whose times are not in [0, 1] (discrete indices, EDM's σ)."""
        low, high = getattr(schedule, "t_min", None), getattr(schedule, "t_max", None)
        if not schedule.continuous or low is None or high is None or not 0.0 <= low < high <= 1.0:
            raise ValueError(
                "training_times 'logit_normal' draws t = sigmoid(u) in (0, 1): it needs a continuous process with "
                f"times in [0, 1] (flow, flow_cosine, vp, subvp), not {getattr(schedule, 'name', '?')!r}"
            )
        u = self.location + self.scale * torch.randn(n, device=device, dtype=torch.float64)
        return torch.sigmoid(u).clamp(low, high)


def make_times(spec: str | Mapping[str, Any] | TimeDistribution, **defaults: float) -> TimeDistribution:
    """A training-time distribution from its name (built with those of ``defaults`` its constructor takes), its config
    ``{"kind": name, **options}`` or itself; ValueError for an unknown name or options its class does not take."""
    if isinstance(spec, TimeDistribution):
        return spec
    options = dict(spec) if isinstance(spec, Mapping) else {"kind": spec}
    cls = TIME_DISTRIBUTIONS.get(options.pop("kind", None))
    if not isinstance(spec, Mapping):
        taken = inspect.signature(cls).parameters
        options = {name: value for name, value in defaults.items() if name in taken}
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(f"training-time distribution {cls.name!r}: {err}") from None  # type: ignore[attr-defined]
