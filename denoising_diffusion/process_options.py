"""GaussianDiffusion's ``process`` option: the options each process takes, checked, and the schedule they build.

One GaussianDiffusion serves every process of processes.py (DESIGN.md, Time): ``process='ddpm'`` keeps the discrete
NoiseSchedule built from ``beta_schedule``; ``vp``, ``subvp`` and ``ve`` build a continuous-time SDE and ``ncsn``
its noise levels from ``process_options``, the schedule's constructor arguments:

=========  ==================================  ===================================================================
process    process_options (defaults)          ``timesteps``
=========  ==================================  ===================================================================
vp, subvp  beta_min=0.1, beta_max=20, t_min=   the default number of sampling steps
           1e-5
ve         sigma_min=0.01, sigma_max, t_min=   the default number of sampling steps
           1e-5
ncsn       sigma_min=0.01, sigma_max           L, the number of noise levels
edm        sigma_min=0.002, sigma_max=80,      the default number of sampling steps
           sigma_data=0.5, p_mean=-1.2,
           p_std=1.2
=========  ==================================  ===================================================================

σ_max of ``ve`` and ``ncsn`` has no default: it should be about the largest distance between two training images
(Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative Models", technique 1), so it is either
given, or computed once from the data (GaussianDiffusion.fit_data_statistics; the Trainer does it before the first
step) and then stored in the config.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from .losses import LossWeighting
from .parameterization import Objective
from .processes import EDMSchedule, NCSNSchedule, Process, SubVPSchedule, VESchedule, VPSchedule
from .schedules import Spacing
from .variance import VarianceType

FITTED_OPTION = "sigma_max"
"""The option of ``ve`` and ``ncsn`` that may be computed from the training data."""

_SCHEDULES: dict[Process, type] = {
    Process.VP: VPSchedule,
    Process.SUBVP: SubVPSchedule,
    Process.VE: VESchedule,
    Process.NCSN: NCSNSchedule,
    Process.EDM: EDMSchedule,
}
_FROM_TIMESTEPS = {Process.NCSN: "num_levels"}  # set from ``timesteps``, never a process option
_NO_DEFAULT = {Process.VE: (FITTED_OPTION,), Process.NCSN: (FITTED_OPTION,)}


def option_defaults(process: Process) -> dict[str, float | None]:
    """The options ``process`` takes and their defaults (None: no default), from its schedule's constructor."""
    if process is Process.DDPM:
        return {}
    params = inspect.signature(_SCHEDULES[process]).parameters
    skip = {_FROM_TIMESTEPS.get(process)}
    return {
        name: None if name in _NO_DEFAULT.get(process, ()) else float(param.default)
        for name, param in params.items()
        if name not in skip
    }


def resolve_process_options(process: Process, options: Mapping[str, Any] | None) -> dict[str, float]:
    """``options`` with every default filled in, as floats (σ_max of ve/ncsn stays absent when not given).

    Raises ValueError for options given to ``ddpm`` (its schedule is ``beta_schedule``), an option the process does
    not take (naming those it takes) and a value that is not a finite number.
    """
    given = dict(options or {})
    if process is Process.DDPM:
        if given:
            raise ValueError(
                f"process_options {sorted(given)} are for the continuous processes (vp, subvp, ve, ncsn); "
                "process='ddpm' takes its schedule from beta_schedule"
            )
        return {}
    defaults = option_defaults(process)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"process {process.value!r} takes no option {', '.join(map(repr, unknown))}; its process_options: "
            f"{', '.join(defaults)}"
        )
    resolved: dict[str, float] = {}
    for name, default in defaults.items():
        value = given.get(name, default)
        if value is None:
            continue
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        if not math.isfinite(number):
            raise ValueError(f"process_options {name} must be a finite number, got {value!r}")
        resolved[name] = number
    return resolved


def needs_fit(process: Process, options: Mapping[str, float]) -> bool:
    """Whether a statistic of the data (σ_max) is still missing from ``options``."""
    return FITTED_OPTION in _NO_DEFAULT.get(process, ()) and FITTED_OPTION not in options


def build_process_schedule(process: Process, options: Mapping[str, float], timesteps: int) -> Any:
    """The schedule of a continuous process (or NCSN's levels, L = ``timesteps``) from resolved options.

    With σ_max still unfitted, the other options are checked (against a stand-in σ_max = 2 σ_min) and None comes
    back. ValueError for options the schedule refuses (σ_min ≥ σ_max, t_min outside (0, 1), ...).
    """
    cls = _SCHEDULES[process]
    extra = {_FROM_TIMESTEPS[process]: timesteps} if process in _FROM_TIMESTEPS else {}
    if needs_fit(process, options):
        sigma_min = options["sigma_min"]
        if not sigma_min > 0:
            raise ValueError(f"process_options sigma_min must be positive, got {sigma_min}")
        cls(**options, **{FITTED_OPTION: 2 * sigma_min}, **extra)  # the other options' checks
        return None
    return cls(**options, **extra)


def check_process_arguments(
    process: Process,
    weighting: LossWeighting,
    objective: Objective,
    learned_variance: bool,
    beta_schedule: Any,
    variance_type: str | None,
    spacing: Spacing | None,
) -> None:
    """ValueError for options that do not fit the process: learned variances and the VLB (ddpm only), a
    beta_schedule other than the default with another process, an index spacing in continuous time, and the
    likelihood weighting anywhere but vp/subvp/ve with pred_noise, and the objective 'edm' with another process
    than 'edm' (and the reverse: process 'edm' trains EDM's preconditioned network, objective 'edm')."""
    if (objective is Objective.EDM) != (process is Process.EDM):
        raise ValueError(
            f"objective 'edm' (Karras et al. 2022's preconditioned network F) goes with process 'edm' and only with "
            f"it (its σ_data is a process option); got process {process.value!r} with objective {objective.value!r}"
        )
    if process is Process.DDPM:
        if weighting is LossWeighting.LIKELIHOOD:
            raise ValueError(
                "loss_weighting='likelihood' (λ(t) = g(t)², Song et al. 2021) needs a continuous-time SDE: process "
                "'vp', 'subvp' or 've'; process='ddpm' trains with 'simple' (and learned variances with the VLB)"
            )
        return
    if learned_variance or variance_type == VarianceType.LEARNED_RANGE.value:
        raise ValueError(
            f"learned variances and their VLB term are defined on the discrete ddpm chain; process "
            f"{process.value!r} needs a network built with learned_variance=False"
        )
    if not (isinstance(beta_schedule, str) and beta_schedule == "cosine"):
        raise ValueError(
            f"beta_schedule is for process='ddpm'; process {process.value!r} takes its schedule from process_options"
        )
    if weighting is LossWeighting.LIKELIHOOD and process is Process.NCSN:
        raise ValueError(
            "loss_weighting='likelihood' needs the diffusion coefficient g(t) of an SDE (process 'vp', 'subvp' or "
            "'ve'); 'ncsn' has discrete noise levels only and trains with 'simple'"
        )
    if weighting is LossWeighting.LIKELIHOOD and objective is not Objective.PRED_NOISE:
        raise ValueError(
            f"loss_weighting='likelihood' weights ‖ε̂ − ε‖² and needs objective='pred_noise', got {objective.value!r}"
        )
    if spacing in (Spacing.TRAILING, Spacing.LEADING) and process is not Process.NCSN:
        raise ValueError(
            f"timestep_spacing {spacing.value!r} picks discrete indices; process {process.value!r} has continuous "
            "time and takes 'linspace', 'logsnr' or 'karras'"
        )


def default_sampler(process: Process, registered: Any) -> str:
    """The sampler a process samples with when none is asked for (DDPM's own rule is GaussianDiffusion's).

    vp, subvp, ve: the predictor-corrector sampler 'pc' of Song et al. 2021 (§4.2) when it is registered, else
    'ddim' (its η = 0 update is the probability-flow ODE's exponential-integrator step). edm: 'heun' (Karras et
    al. 2022, Alg. 1; its options s_churn ... give Alg. 2). ncsn: annealed Langevin
    dynamics, 'annealed_langevin' (Song & Ermon 2019, Alg. 1) when registered, else 'ddpm': ancestral steps between
    adjacent levels (Song et al. 2021, eq. 47, their ancestral sampler for SMLD).
    """
    if process is Process.EDM:
        return "heun"
    wanted, fallback = ("annealed_langevin", "ddpm") if process is Process.NCSN else ("pc", "ddim")
    return wanted if wanted in registered else fallback
