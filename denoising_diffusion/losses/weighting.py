"""Loss weightings λ(t): what multiplies the per-sample loss of the objective at its training time t, as registered
objects (a new weighting joins with ``@weighting_kind("name")`` where it is defined; GaussianDiffusion's
``loss_weighting`` takes its name, or an object).

The denoising score matching loss is E_t λ(t) E‖s_θ(x_t, t) − ∇ log p(x_t | x_0)‖² (Song et al. 2021, eq. 7),
written as a weight on the objective's own loss:

* ``simple``: the objective's own loss, unweighted. For ε-prediction (s = −ε/σ_t) ‖ε̂ − ε‖² = σ_t² ‖s_θ − ∇ log p‖²,
  i.e. λ(t) = σ_t² (Song & Ermon 2019, §4.2; Song et al. 2021, §3.3; Ho et al. 2020's L_simple).
* ``likelihood``: λ(t) = g(t)², which makes the loss a bound on the negative log-likelihood (Song, Durkan et al. 2021,
  "Maximum Likelihood Training of Score-Based Diffusion Models", Thm. 1): the weight g(t)²/σ_t² on ‖ε̂ − ε‖²
  (:func:`likelihood_weight`). Processes with an SDE (vp, subvp, ve, edm) and ε-prediction only.
* ``min_snr``: min-SNR-γ (Hang et al. 2023, :func:`min_snr_weight`); GaussianDiffusion's ``min_snr_loss_weight``
  multiplies it onto the weighting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from ..parameterization import Objective
from ..registry import KindTable

WEIGHTINGS = KindTable("loss_weighting", describe=lambda cls: cls.summary)  # type: ignore[attr-defined]
"""The registered loss weightings."""

weighting_kind = WEIGHTINGS.register
"""Class decorator: ``@weighting_kind("name")`` registers a :class:`Weighting` under that name."""


class PathSchedule(Protocol):
    """What a weighting may read of a process: its path at a batch of times."""

    def alpha_sigma_at(self, t: Tensor) -> tuple[Tensor, Tensor]: ...


class Weighting:
    """A loss weighting λ(t). Subclasses give :meth:`weight` and may refuse a process or objective in
    :meth:`check`; their constructor's keyword arguments are their config."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # a few words for error messages and --help

    def check(self, schedule_class: type, objective: Objective) -> None:
        """ValueError when this weighting does not apply to the process class or objective (default: it does)."""

    def weight(self, schedule: Any, t: Tensor, objective: Objective) -> Tensor | None:
        """(B,) weights at times t (B,) (float64), or None for none at all."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds it: ``{"kind": name, **constructor arguments}`` (see :func:`make_weighting`)."""
        return {"kind": self.name, **vars(self)}


@weighting_kind("simple")
class SimpleWeighting(Weighting):
    """The objective's own loss, unweighted (λ(t) = σ_t² on the score for ε-prediction)."""

    summary = "the objective's own loss"

    def weight(self, schedule: Any, t: Tensor, objective: Objective) -> Tensor | None:
        return None


@weighting_kind("likelihood")
class LikelihoodWeighting(Weighting):
    """λ(t) = g(t)², the likelihood weighting of Song, Durkan et al. 2021 (a bound on the negative log-likelihood)."""

    summary = "g(t)^2, a likelihood bound (vp, subvp, ve; pred_noise)"

    def check(self, schedule_class: type, objective: Objective) -> None:
        if not hasattr(schedule_class, "diffusion_sq_at"):
            raise ValueError(
                f"loss_weighting='likelihood' (λ(t) = g(t)², Song et al. 2021) needs a continuous-time SDE (process "
                f"'vp', 'subvp' or 've'); {getattr(schedule_class, 'name', '?')!r} has discrete noise levels only and "
                "trains with 'simple' (ddpm's learned variances with the VLB)"
            )
        if objective is not Objective.PRED_NOISE:
            raise ValueError(
                "loss_weighting='likelihood' weights ‖ε̂ − ε‖² and needs objective='pred_noise', got "
                f"{objective.value!r}"
            )

    def weight(self, schedule: Any, t: Tensor, objective: Objective) -> Tensor | None:
        return likelihood_weight(schedule, t)


@weighting_kind("min_snr")
class MinSNRWeighting(Weighting):
    """min(SNR, γ) in x_0 space (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting", eq. 9)."""

    summary = "min-SNR-gamma (gamma=5)"

    def __init__(self, gamma: float = 5.0) -> None:
        if not (isinstance(gamma, (int, float)) and gamma > 0):
            raise ValueError(f"min_snr_gamma must be a number > 0, got {gamma!r}")
        self.gamma = float(gamma)

    def check(self, schedule_class: type, objective: Objective) -> None:
        if objective is Objective.EDM:
            raise ValueError("min_snr_loss_weight does not apply to objective 'edm': EDM weights its loss by λ(σ)")
        if objective is Objective.PRED_VELOCITY:
            raise ValueError(
                "min_snr_loss_weight converts x_0-space weights by the SNR factors of 'pred_noise', 'pred_x0' and "
                "'pred_v'; for 'pred_velocity' (x̂_0 error = σ_t/(α_t σ'_t − σ_t α'_t) × velocity error) it is not "
                "defined: use loss_weighting='simple' (flow matching's own loss)"
            )

    def weight(self, schedule: Any, t: Tensor, objective: Objective) -> Tensor | None:
        alpha, sigma = schedule.alpha_sigma_at(t)
        return min_snr_weight(alpha**2 / sigma**2, objective, self.gamma)


def make_weighting(spec: str | Mapping[str, Any] | Weighting) -> Weighting:
    """A weighting from its name, its config ``{"kind": name, **options}`` or itself; ValueError for an unknown
    name (naming the registered ones) or options its class does not take."""
    if isinstance(spec, Weighting):
        return spec
    options = dict(spec) if isinstance(spec, Mapping) else {"kind": spec}
    cls = WEIGHTINGS.get(options.pop("kind", None))
    try:
        return cls(**options)
    except TypeError as err:
        raise ValueError(f"loss weighting {cls.name!r}: {err}") from None  # type: ignore[attr-defined]


def likelihood_weight(schedule: Any, t: Tensor) -> Tensor:
    """g(t)²/σ_t² for times t (B,) float: the likelihood weighting λ(t) = g(t)² of the score loss written as a
    weight on ‖ε̂ − ε‖². Returns (B,) float64 on t's device.

    g(t)² comes from the process's SDE on the whole batch at once (no per-time Python loop, no device sync)."""
    g2 = schedule.diffusion_sq_at(t.to(torch.float64))
    sigma = schedule.alpha_sigma_at(t)[1]
    return g2 / sigma**2


def min_snr_weight(snr: Tensor, objective: Objective, gamma: float = 5.0) -> Tensor:
    """Min-SNR-γ weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting", eq. 9).

    The weight min(SNR, γ) applies to the x_0-space loss; for the other targets it is divided by the factor that
    converts their squared error into x_0 space: SNR for ε-prediction and SNR + 1 for v-prediction.

    Args:
        snr: (B,) ᾱ_t / (1 − ᾱ_t) at the sampled timesteps.
    Returns:
        (B,) weights.
    """
    clipped = snr.clamp(max=gamma)
    if objective is Objective.PRED_NOISE:
        return clipped / snr
    if objective is Objective.PRED_X0:
        return clipped
    return clipped / (snr + 1)
