"""Stateless samplers sharing one signature (DESIGN.md, Samplers), and their registry.

``sampler(denoiser, x_T, schedule, timesteps, *, generator=None, callback=None, **options) -> x_0``.
Samplers never import networks or GaussianDiffusion: they see a denoiser callable and a NoiseSchedule.

The registry is the one declaration of every sampler: its name, function, description, cost, recommended steps
and spacing, and the options it takes beyond the shared signature (:class:`SamplerOption`).
``GaussianDiffusion.sample(..., **options)`` and ``denoising-diffusion sample --<option>`` pass options through
generically: an option the chosen sampler does not take is a clear error, and a new sampler option needs no edit
of either. ``SamplerName`` (the names as an option enum) is derived from it.

``sample_repaint`` (inpainting) shares the signature but needs the known image and its mask, so it is not in the
registry: ``editing.inpaint`` runs it.

The score-based samplers (sde.py, langevin.py: Euler–Maruyama, reverse diffusion, predictor–corrector, annealed
Langevin) use the score s_θ = −ε̂/σ_t (parameterization.score_from_eps) of the same denoiser. Euler–Maruyama needs
the forward SDE (``schedule.sde``, the continuous processes only): ``SamplerInfo.serves`` says whether a sampler can
run on a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..choices import Choice
from ..processes import Spacing
from ..variance import VarianceType
from .common import has_sde
from .ddim import invert_ddim, sample_ddim, sample_euler, sample_euler_ancestral
from .ddpm import sample_ddpm
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde
from .heun import sample_heun
from .langevin import DEFAULT_STEPS_PER_LEVEL, langevin_step, sample_annealed_langevin
from .ode import DEFAULT_ATOL, DEFAULT_RTOL, check_tolerance, sample_ode
from .repaint import repaint_schedule, sample_repaint
from .sde import (
    DEFAULT_CORRECTOR_STEPS,
    DEFAULT_SNR,
    Predictor,
    sample_euler_maruyama,
    sample_pc,
    sample_reverse_diffusion,
)


def _non_negative_float(value: Any) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(f"eta must be >= 0, got {value!r}")
    return number


def _positive_float(value: Any) -> float:
    """A finite number > 0 (strings from the command line too)."""
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"expected a finite number > 0, got {value!r}")
    return number


def _integer_at_least(minimum: int) -> Callable[[Any], int]:
    """A parser of integers >= ``minimum`` (ints, or strings of them; not 1.5, not True)."""

    def parse(value: Any) -> int:
        try:
            number = int(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return number

    return parse


def _noise_level(value: Any) -> float:
    """A noise level σ̃ >= 0, ``inf`` allowed (strings from the command line too)."""
    number = float(value)
    if not number >= 0:
        raise ValueError(f"expected a noise level >= 0 (inf allowed), got {value!r}")
    return number


def _finite_non_negative(value: Any) -> float:
    """A finite number >= 0 (strings from the command line too)."""
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"expected a finite number >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class SamplerOption:
    """An option a sampler takes beyond the shared signature: its keyword, how a value (a string from the command
    line too) is checked and converted, and a help line."""

    name: str
    parse: Callable[[Any], Any]
    help: str


ETA = SamplerOption(
    "eta", _non_negative_float, "DDIM's eta: 0 deterministic .. 1 ancestral (default: the model's ddim_sampling_eta)"
)
RTOL = SamplerOption(
    "rtol",
    lambda value: check_tolerance("rtol", value),
    f"the adaptive ODE solver's relative error tolerance, > 0 (default {DEFAULT_RTOL:g})",
)
ATOL = SamplerOption(
    "atol",
    lambda value: check_tolerance("atol", value),
    f"the adaptive ODE solver's absolute error tolerance, > 0 (default {DEFAULT_ATOL:g})",
)
VARIANCE = SamplerOption(
    "variance",
    VarianceType,
    "DDPM's reverse variance: fixed_small, fixed_large or learned_range (default: the model's variance_type)",
)
SNR = SamplerOption(
    "snr", _positive_float, f"the Langevin corrector's signal-to-noise ratio r > 0 (default {DEFAULT_SNR})"
)
CORRECTOR_STEPS = SamplerOption(
    "corrector_steps",
    _integer_at_least(0),
    f"Langevin corrector steps per predictor step, >= 0 (default {DEFAULT_CORRECTOR_STEPS})",
)
PREDICTOR = SamplerOption(
    "predictor", Predictor, "the PC predictor: reverse_diffusion (default, any schedule) or euler_maruyama (an SDE)"
)
STEP_LR = SamplerOption(
    "step_lr",
    _positive_float,
    "annealed Langevin's step size at the lowest level, > 0 (default: Song & Ermon 2020's technique 4 for the grid)",
)
STEPS_PER_LEVEL = SamplerOption(
    "steps_per_level",
    _integer_at_least(1),
    f"annealed Langevin's steps per noise level, >= 1 (default {DEFAULT_STEPS_PER_LEVEL})",
)

S_CHURN = SamplerOption(
    "s_churn",
    _finite_non_negative,
    "Heun's stochasticity S_churn >= 0 (Karras et al. 2022, Alg. 2): gamma = min(S_churn/steps, sqrt(2)-1) per step "
    "(default 0: deterministic Alg. 1)",
)
S_TMIN = SamplerOption(
    "s_tmin", _noise_level, "Heun's churn applies where sigma/alpha >= S_tmin (default 0); S_tmin <= S_tmax"
)
S_TMAX = SamplerOption("s_tmax", _noise_level, "Heun's churn applies where sigma/alpha <= S_tmax (default inf)")
S_NOISE = SamplerOption(
    "s_noise", _finite_non_negative, "Heun's churn noise scale S_noise >= 0 (default 1; EDM used 1.003-1.007)"
)


@dataclass(frozen=True)
class SamplerInfo:
    """A registry entry: name, function, one-line description, whether it draws noise, the step count and
    timestep spacing we recommend (the oracle tests check the sampler there), network evaluations per step (at the
    default options) and beyond them (``extra_evals``: Heun's single-evaluation last step −1, annealed Langevin's
    denoising step +1), its options, ``alias``: what the sampler equals, when it is another one under a name users
    know, and ``evals_with``: the evaluations per step for given options, when an option sets them.

    ``needs_sde``: the sampler needs the forward SDE (``schedule.sde``), so it serves the continuous-time processes
    only (:meth:`serves`). ``adaptive``: the solver chooses its own steps, so its network evaluations are not fixed
    by the step count (:meth:`nfe` refuses; the callback's ``StepRecord.nfe`` reports them)."""

    name: str
    fn: Callable[..., Any]
    description: str
    stochastic: bool
    recommended_steps: int
    spacing: Spacing = Spacing.LINSPACE
    evals_per_step: int = 1
    options: tuple[SamplerOption, ...] = field(default=())
    alias: str | None = None
    extra_evals: int = 0
    needs_sde: bool = False
    adaptive: bool = False
    evals_with: Callable[[Mapping[str, Any]], int] | None = None

    def nfe(self, steps: int, options: Mapping[str, Any] = MappingProxyType({})) -> int:
        """Network evaluations for ``steps`` timesteps with ``options`` (bound; missing ones at their defaults)."""
        if self.adaptive:
            raise ValueError(
                f"sampler {self.name!r} is adaptive: its network evaluations are not fixed by the steps (read "
                "StepRecord.nfe in a callback)"
            )
        per_step = self.evals_per_step if self.evals_with is None else self.evals_with(options)
        return per_step * steps + self.extra_evals

    def serves(self, schedule: object) -> bool:
        """Whether this sampler runs on ``schedule``: every sampler serves every schedule, except that one that
        needs the forward SDE serves only the continuous-time processes (those with ``schedule.sde``), and none
        serves a process that refuses it (``refused_samplers``: annealed Langevin on the straight flow path)."""
        refused = self.name in getattr(schedule, "refused_samplers", {})
        return not refused and (not self.needs_sde or has_sde(schedule))

    @property
    def option_names(self) -> list[str]:
        return [option.name for option in self.options]

    def bind(
        self, given: Mapping[str, Any], defaults: Mapping[str, Any] = MappingProxyType({}), *, also: str = ""
    ) -> dict[str, Any]:
        """The keyword options to call ``fn`` with: each declared option from ``given`` (None means not given),
        else from ``defaults``, checked by its parser. Raises ValueError naming an option this sampler does not
        take, with the options it does take (and ``also``: what else the caller's keywords could have been)."""
        given = {name: value for name, value in given.items() if value is not None}
        unknown = sorted(set(given) - set(self.option_names))
        if unknown:
            takes = ", ".join(self.option_names) or "none"
            raise ValueError(
                f"sampler {self.name!r} takes no option {', '.join(map(repr, unknown))} (its options: {takes})"
                + (f"; {also}" if also else "")
            )
        merged = {**defaults, **given}
        return {option.name: _parse(option, merged[option.name]) for option in self.options if option.name in merged}


def _parse(option: SamplerOption, value: Any) -> Any:
    try:
        return option.parse(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sampler option {option.name}={value!r}: {err}") from None


def _given(options: Mapping[str, Any], name: str, default: int) -> int:
    """The option ``name`` as an int, or ``default`` where it is missing or None."""
    value = options.get(name)
    return default if value is None else int(value)


_REGISTRY = (
    SamplerInfo(
        "ddpm",
        sample_ddpm,
        "ancestral DDPM (Ho et al. 2020), stochastic; respaced betas on fewer steps",
        stochastic=True,
        recommended_steps=1000,
        options=(VARIANCE,),
    ),
    SamplerInfo(
        "ddim",
        sample_ddim,
        "DDIM (Song et al. 2021); eta=0 deterministic ODE, eta=1 ancestral",
        stochastic=True,
        recommended_steps=50,
        options=(ETA,),
    ),
    SamplerInfo(
        "dpmpp_2m",
        sample_dpmpp_2m,
        "DPM-Solver++(2M) (Lu et al. 2022), deterministic 2nd-order multistep: 10-25 steps",
        stochastic=False,
        recommended_steps=20,
        spacing=Spacing.LOGSNR,
    ),
    SamplerInfo(
        "dpmpp_2m_sde",
        sample_dpmpp_2m_sde,
        "SDE-DPM-Solver++(2M) (Lu et al. 2022), stochastic 2nd-order multistep",
        stochastic=True,
        recommended_steps=50,
        spacing=Spacing.LOGSNR,
    ),
    SamplerInfo(
        "heun",
        sample_heun,
        "Heun on the probability-flow ODE (Karras et al. 2022, Alg. 1), 2 evaluations per step; s_churn > 0: "
        "EDM's stochastic sampler (Alg. 2)",
        stochastic=False,
        recommended_steps=25,
        spacing=Spacing.KARRAS,
        evals_per_step=2,
        options=(S_CHURN, S_TMIN, S_TMAX, S_NOISE),
        extra_evals=-1,
    ),
    SamplerInfo(
        "euler",
        sample_euler,
        "Euler on the probability-flow ODE (k-diffusion's name)",
        stochastic=False,
        recommended_steps=50,
        alias="ddim with eta=0",
    ),
    SamplerInfo(
        "euler_ancestral",
        sample_euler_ancestral,
        "Euler-ancestral (k-diffusion's name)",
        stochastic=True,
        recommended_steps=250,
        alias="ddim with eta=1",
    ),
    SamplerInfo(
        "euler_maruyama",
        sample_euler_maruyama,
        "Euler-Maruyama on the reverse-time SDE (Song et al. 2021); continuous processes (vp, subvp, ve) only",
        stochastic=True,
        recommended_steps=1000,
        needs_sde=True,
    ),
    SamplerInfo(
        "reverse_diffusion",
        sample_reverse_diffusion,
        "reverse-diffusion predictor (Song et al. 2021, App. E), stochastic; any schedule",
        stochastic=True,
        recommended_steps=1000,
    ),
    SamplerInfo(
        "pc",
        sample_pc,
        "predictor-corrector (Song et al. 2021): Langevin corrector + reverse-diffusion predictor, 1 + corrector_steps "
        "evaluations per step",
        stochastic=True,
        recommended_steps=1000,
        evals_per_step=1 + DEFAULT_CORRECTOR_STEPS,
        options=(SNR, CORRECTOR_STEPS, PREDICTOR),
        evals_with=lambda options: 1 + _given(options, "corrector_steps", DEFAULT_CORRECTOR_STEPS),
    ),
    SamplerInfo(
        "annealed_langevin",
        sample_annealed_langevin,
        "NCSN's annealed Langevin dynamics (Song & Ermon 2019, 2020) over the noise levels, steps_per_level "
        "evaluations per level + 1",
        stochastic=True,
        recommended_steps=232,
        evals_per_step=DEFAULT_STEPS_PER_LEVEL,
        options=(STEP_LR, STEPS_PER_LEVEL),
        extra_evals=1,
        evals_with=lambda options: _given(options, "steps_per_level", DEFAULT_STEPS_PER_LEVEL),
    ),
    SamplerInfo(
        "ode",
        sample_ode,
        "adaptive dopri5 on the probability-flow ODE (Song et al. 2021, eq. 13), vp/subvp/ve only; steps set output "
        "points, NFE in StepRecord.nfe",
        stochastic=False,
        recommended_steps=2,
        options=(RTOL, ATOL),
        needs_sde=True,
        adaptive=True,
    ),
)

SamplerName = Choice("SamplerName", [(info.name.upper(), info.name) for info in _REGISTRY])  # type: ignore[call-overload]
"""The sampler names as an option enum: ``SamplerName("plms")`` raises "unknown sampler 'plms'; allowed values: ..."."""
SamplerName.__option__ = "sampler"

SAMPLERS: Mapping[Any, SamplerInfo] = MappingProxyType({SamplerName(info.name): info for info in _REGISTRY})
"""SamplerName -> SamplerInfo, in registry order (keys compare equal to their string names)."""


def sampler_options() -> dict[str, SamplerOption]:
    """Every option some sampler takes, by name (what the command line offers as --<name>)."""
    return {option.name: option for info in _REGISTRY for option in info.options}


__all__ = [
    "SAMPLERS",
    "SamplerInfo",
    "SamplerName",
    "SamplerOption",
    "invert_ddim",
    "langevin_step",
    "repaint_schedule",
    "sample_annealed_langevin",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_euler_maruyama",
    "sample_heun",
    "sample_ode",
    "sample_pc",
    "sample_repaint",
    "sample_reverse_diffusion",
    "sampler_options",
]
