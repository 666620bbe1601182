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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..choices import Choice
from ..schedules import Spacing
from ..variance import VarianceType
from .ddim import invert_ddim, sample_ddim, sample_euler, sample_euler_ancestral
from .ddpm import sample_ddpm
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde
from .heun import sample_heun
from .ode import DEFAULT_ATOL, DEFAULT_RTOL, check_tolerance, sample_ode
from .repaint import repaint_schedule, sample_repaint


def _non_negative_float(value: Any) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(f"eta must be >= 0, got {value!r}")
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


@dataclass(frozen=True)
class SamplerInfo:
    """A registry entry: name, function, one-line description, whether it draws noise, the step count and
    timestep spacing we recommend (the oracle tests check the sampler there), network evaluations per step, its
    options, and ``alias``: what the sampler equals, when it is another one under a name users know.

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
    needs_sde: bool = False
    adaptive: bool = False

    def nfe(self, steps: int) -> int:
        """Network evaluations for ``steps`` timesteps (Heun's final step is a single Euler evaluation)."""
        if self.adaptive:
            raise ValueError(
                f"sampler {self.name!r} is adaptive: its network evaluations are not fixed by the steps (read "
                "StepRecord.nfe in a callback)"
            )
        return self.evals_per_step * steps - (self.evals_per_step - 1)

    def serves(self, schedule: object) -> bool:
        """Whether this sampler runs on ``schedule``: every sampler serves every schedule, except that one that
        needs the forward SDE serves only the continuous-time processes (those with ``schedule.sde``)."""
        return not self.needs_sde or callable(getattr(schedule, "sde", None))

    @property
    def option_names(self) -> list[str]:
        return [option.name for option in self.options]

    def bind(self, given: Mapping[str, Any], defaults: Mapping[str, Any] = MappingProxyType({})) -> dict[str, Any]:
        """The keyword options to call ``fn`` with: each declared option from ``given`` (None means not given),
        else from ``defaults``, checked by its parser. Raises ValueError naming an option this sampler does not
        take, with the options it does take."""
        given = {name: value for name, value in given.items() if value is not None}
        unknown = sorted(set(given) - set(self.option_names))
        if unknown:
            takes = ", ".join(self.option_names) or "none"
            raise ValueError(
                f"sampler {self.name!r} takes no option {', '.join(map(repr, unknown))} (its options: {takes})"
            )
        merged = {**defaults, **given}
        return {option.name: _parse(option, merged[option.name]) for option in self.options if option.name in merged}


def _parse(option: SamplerOption, value: Any) -> Any:
    try:
        return option.parse(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sampler option {option.name}={value!r}: {err}") from None


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
        "Heun on the probability-flow ODE (Karras et al. 2022), 2 evaluations per step",
        stochastic=False,
        recommended_steps=25,
        spacing=Spacing.KARRAS,
        evals_per_step=2,
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
    "repaint_schedule",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_ode",
    "sample_repaint",
    "sampler_options",
]
