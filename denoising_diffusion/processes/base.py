"""What a diffusion process declares, and the table of registered processes.

A *process* is one class in its own file of this package, registered under a name with :func:`process_kind`::

    @process_kind("vp")
    class VPSchedule(ContinuousSchedule): ...

It is the :class:`~.path.Schedule` the samplers see (its path t → (α_t, σ_t), its time range and sampling grid,
what the network is told about time) and it declares, as class attributes of :class:`ProcessDeclarations`, what
GaussianDiffusion needs to use it without a switch on its name: the sampler and spacing it samples with by
default, the option fitted from the training data when not given (VE's σ_max, Song & Ermon 2020, technique 1), the
training-time distribution the loss draws by default, and the options that configure the loss and the
preconditioning rather than the path (EDM's σ_data, P_mean, P_std, kept with the process so that
``process_options`` describes EDM as Table 1 of Karras et al. 2022 does).

A process is built from GaussianDiffusion's arguments by :meth:`ProcessDeclarations.from_arguments`: its
constructor's keyword arguments are its ``process_options`` (with their defaults), and ``timesteps`` is either the
default number of sampling steps or, where the class names it in ``timesteps_option``, one of its options (NCSN's
number of levels). The string ``process="vp"`` is a constructor at the edge (:func:`process_class`); a process
object is accepted too.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Container, Mapping
from typing import Any, ClassVar, TypeVar, cast

import torch
from torch import Tensor

from ..registry import KindTable
from .spacing import Spacing

P = TypeVar("P", bound=type)


class ProcessDeclarations:
    """The declarations every registered process makes (class attributes with defaults), and the option handling
    built on its constructor's signature. Subclasses are schedules (path.Schedule) as well."""

    name: ClassVar[str] = ""  # set by @process_kind
    continuous: ClassVar[bool] = True  # float times (vp, ve, edm, ...) rather than int indices (ddpm, ncsn)
    recommended_sampler: ClassVar[str] = "ddim"  # the sampler used when none is asked for (see default_sampler)
    fallback_sampler: ClassVar[str] = "ddim"  # ... when the recommended one is not registered
    fitted_option: ClassVar[str | None] = None  # an option computed from the training data when not given
    timesteps_option: ClassVar[str | None] = None  # an option that GaussianDiffusion's ``timesteps`` sets
    training_times: ClassVar[str] = "uniform"  # the loss's default training-time distribution (losses/times.py)
    companion_options: ClassVar[dict[str, float]] = {}  # options for the loss and preconditioning, with defaults
    objective: ClassVar[str | None] = None  # the process's own objective: its default (flow), the only one (edm)
    refused_samplers: ClassVar[dict[str, str]] = {}  # sampler name -> why it cannot sample this process

    # ----- policy ---------------------------------------------------------------------------------------------------

    @classmethod
    def default_sampler(cls, sampling_steps: int, num_timesteps: int, registered: Container[str]) -> str:
        """The sampler ``sample()`` runs when none is asked for: ``recommended_sampler`` when registered, else
        ``fallback_sampler``."""
        return cls.recommended_sampler if cls.recommended_sampler in registered else cls.fallback_sampler

    @classmethod
    def spacing_for(cls, recommended: Spacing) -> Spacing:
        """The spacing used when neither the call nor the model chooses one, from the sampler's recommendation: an
        index spacing ('trailing', 'leading') becomes 'linspace' in continuous time."""
        if cls.continuous and recommended in (Spacing.TRAILING, Spacing.LEADING):
            return Spacing.LINSPACE
        return recommended

    @classmethod
    def check_spacing(cls, spacing: Spacing | None) -> None:
        """ValueError for an index spacing chosen for a continuous process."""
        if cls.continuous and spacing in (Spacing.TRAILING, Spacing.LEADING):
            assert spacing is not None
            raise ValueError(
                f"timestep_spacing {spacing.value!r} picks discrete indices; process {cls.name!r} has continuous "
                "time and takes 'linspace', 'logsnr' or 'karras'"
            )

    @classmethod
    def check_objective(cls, objective: str) -> None:
        """ValueError when this process cannot train ``objective`` (an Objective's value): 'pred_velocity' (v =
        dx_t/dt = α'_t x_0 + σ'_t ε) needs the path's time derivatives, which a process declares with
        ``path_derivatives_at(t) -> (α'_t, σ'_t)`` (the flow processes do)."""
        if objective == "pred_velocity" and not hasattr(cls, "path_derivatives_at"):
            raise ValueError(
                f"objective 'pred_velocity' (v = dx_t/dt = α'_t x_0 + σ'_t ε) needs the time derivatives of the path, "
                f"which process {cls.name!r} does not declare (path_derivatives_at): use process 'flow' or "
                "'flow_cosine', or another objective"
            )

    # ----- options ----------------------------------------------------------------------------------------------------

    @classmethod
    def option_defaults(cls) -> dict[str, float | None]:
        """The process_options this process takes and their defaults (None: no default, fitted from data): its
        constructor's keyword arguments (less ``timesteps_option``), then its companion options."""
        params = inspect.signature(cls).parameters
        own = {
            name: None if name == cls.fitted_option or param.default is inspect.Parameter.empty else param.default
            for name, param in params.items()
            if name != cls.timesteps_option and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        }
        return {**own, **cls.companion_options}

    @classmethod
    def describe_options(cls) -> str:
        """'beta_min=0.1, beta_max=20.0, t_min=1e-05' (a fitted option without a default as ``sigma_max=<data>``)."""
        return (
            ", ".join(
                f"{name}={'<data>' if value is None else f'{value:g}'}" for name, value in cls.option_defaults().items()
            )
            or "none"
        )

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any] | None) -> dict[str, float]:
        """``options`` with every default filled in, as finite floats (a fitted option stays absent when not given).
        ValueError naming an option the process does not take (with those it takes) or a value that is not a
        finite number."""
        given = dict(options or {})
        defaults = cls.option_defaults()
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ValueError(
                f"process {cls.name!r} takes no option {', '.join(map(repr, unknown))}; its process_options: "
                f"{', '.join(defaults) or 'none'}"
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

    @classmethod
    def options_of(cls, process: Any) -> dict[str, Any]:
        """The process_options that describe ``process`` (an instance): its config (the path's options)."""
        return dict(process.config)

    @classmethod
    def path_options(cls, resolved: Mapping[str, float]) -> dict[str, float]:
        """The resolved options that are the path's (the constructor's), without the companion options."""
        return {name: value for name, value in resolved.items() if name not in cls.companion_options}

    @classmethod
    def needs_fit(cls, resolved: Mapping[str, float]) -> bool:
        """Whether the fitted option is still missing from ``resolved``."""
        return cls.fitted_option is not None and cls.fitted_option not in resolved

    @classmethod
    def from_arguments(cls, resolved: Mapping[str, float], timesteps: int, beta_schedule: Any = "cosine") -> Any:
        """The process for GaussianDiffusion's resolved ``process_options`` and ``timesteps``; None while the fitted
        option is missing (the other options are checked against a stand-in value). ``beta_schedule`` belongs to
        the ddpm process only: anything but the default is a ValueError here."""
        if not (isinstance(beta_schedule, str) and beta_schedule == "cosine"):
            raise ValueError(
                f"beta_schedule is for process='ddpm'; process {cls.name!r} takes its schedule from process_options"
            )
        kwargs: dict[str, Any] = cls.path_options(resolved)
        if cls.timesteps_option is not None:
            kwargs[cls.timesteps_option] = timesteps
        if cls.needs_fit(resolved):
            assert cls.fitted_option is not None
            cls(**kwargs, **{cls.fitted_option: cls.stand_in(resolved)})  # the other options' checks
            return None
        return cls(**kwargs)

    @classmethod
    def stand_in(cls, resolved: Mapping[str, float]) -> float:
        """A value of the fitted option that lets the other options be checked before the data is seen."""
        raise NotImplementedError(f"process {cls.name!r} declares no stand-in for {cls.fitted_option!r}")

    @classmethod
    def fit(cls, images: Tensor) -> float:
        """The fitted option's value from training images (N, C, H, W) in the model's space."""
        raise NotImplementedError(f"process {cls.name!r} fits nothing from data")

    # ----- the path, for every process ---------------------------------------------------------------------------

    def times_at_sigma_tilde(self, sigma_tilde: Tensor) -> Tensor:
        """Times (B,) whose σ̃ = σ/α are ``sigma_tilde`` (B,) float64 (clamped to the time range; discrete processes:
        the nearest index at or above): how a noise-level distribution (losses/times.py) becomes times."""
        return torch.tensor(
            [self.time_of_sigma_tilde(float(s)) for s in sigma_tilde],  # type: ignore[attr-defined]
            device=sigma_tilde.device,
            dtype=torch.float64 if self.continuous else torch.long,
        )


class FittedProcess:
    """A process class with GaussianDiffusion's resolved options, and the schedule built from them once its fitted
    option (σ_max of ve and ncsn) is known: given, computed from training data (:meth:`fit`), or taken from a
    checkpoint's config (:meth:`restore`)."""

    def __init__(self, cls: type[ProcessDeclarations], options: Mapping[str, float], schedule: Any, timesteps: int):
        self.cls, self.options, self._schedule, self.timesteps = cls, dict(options), schedule, timesteps

    @property
    def schedule(self) -> Any:
        """The process object; ValueError while the fitted option is missing."""
        if self._schedule is None:
            raise ValueError(
                f"this {self.cls.name!r} model has no {self.cls.fitted_option} yet: give process_options="
                f"{{'{self.cls.fitted_option}': ...}} (about the largest distance between two training images in "
                "[-1, 1], Song & Ermon 2020), or compute it from the data with fit_data_statistics(images), or train "
                "it with the Trainer, which does so before the first step"
            )
        return self._schedule

    @property
    def needs_fit(self) -> bool:
        return self.cls.needs_fit(self.options)

    def fit(self, images: Tensor) -> dict[str, float]:
        """Compute the fitted option from images (N, C, H, W) in the model's space and build the process."""
        name = self.cls.fitted_option
        if name is None:
            raise ValueError(f"only the 've' and 'ncsn' processes take a statistic of the data, not {self.cls.name!r}")
        return self._set(name, self.cls.fit(images))

    def restore(self, process: Any, stored: Mapping[str, Any]) -> bool:
        """Take the fitted option from a stored config (``process`` name and options) of the same process when it is
        still missing; returns whether it did."""
        name = self.cls.fitted_option
        if name is None or not self.needs_fit or process != self.cls.name or name not in stored:
            return False
        self._set(name, float(stored[name]))
        return True

    def _set(self, name: str, value: float) -> dict[str, float]:
        self.options = {**self.options, name: value}
        self._schedule = self.cls.from_arguments(self.options, self.timesteps)
        return {name: value}


PROCESSES = KindTable("process", describe=lambda cls: f"options: {cls.describe_options()}")  # type: ignore[attr-defined]
"""The registered processes: ``@process_kind("name")`` adds one (see the module docstring)."""


def process_kind(name: str) -> Callable[[P], P]:
    """Class decorator: register a process class (a :class:`ProcessDeclarations` and a Schedule) as ``name``.

    Raises ValueError when another class already holds the name (re-registering the same class, as a module reload
    does, is allowed), TypeError for a class that is not a ProcessDeclarations."""

    def register(cls: P) -> P:
        if not issubclass(cls, ProcessDeclarations):
            raise TypeError(f"{cls.__qualname__} must derive from ProcessDeclarations to be a process")
        return PROCESSES.register(name)(cls)

    return register


def process_class(name: Any) -> type[ProcessDeclarations]:
    """The class registered as ``name``; ValueError listing every registered process with its options."""
    return cast(type[ProcessDeclarations], PROCESSES.get(name))


def registered_processes() -> list[str]:
    """The registered process names, sorted."""
    return PROCESSES.names()
