"""GaussianDiffusion's options turned into its parts: strings (and legacy spellings) at the edge, objects inside.

:func:`build_parts` checks every constructor argument of GaussianDiffusion together and returns the process class
and object (processes/), the preconditioning (preconditioning.py), the loss (losses/) and the config that records
the arguments; the face (diffusion.py) keeps only what it composes. The config is exactly what the constructor
takes back, so ``GaussianDiffusion(model, **config)`` rebuilds a model; entries that only non-default choices need
(``process``, ``process_options``, ``loss_weighting``, ``training_times``, ``class_names``) are recorded only when
they matter, so the configs of plain ddpm models stay as they always were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ._utils import normalize_image_size
from .conditioning import ConditionSpec, check_class_names, condition_spec_of
from .losses import DenoisingLoss, LossType, MinSNRWeighting, TimeDistribution, Weighting, make_times, make_weighting
from .parameterization import Objective
from .preconditioning import Preconditioning, make_preconditioning
from .processes import NoiseSchedule, ProcessDeclarations, Spacing, process_class, spaced_timesteps
from .variance import VarianceType


@dataclass(frozen=True)
class Parts:
    """What :func:`build_parts` returns: the process's class, its options with defaults filled in (and the schedule
    built from them, None while a fitted option is missing), the preconditioning, the loss, the reverse variance,
    the sampling steps and spacing, and the config."""

    channels: int
    image_size: tuple[int, int]
    condition_spec: ConditionSpec
    class_names: list[str] | None
    process_class: type[ProcessDeclarations]
    process_options: dict[str, float]
    schedule: Any
    num_timesteps: int
    preconditioning: Preconditioning
    loss: DenoisingLoss
    variance_type: VarianceType
    sampling_timesteps: int
    timestep_spacing: Spacing | None
    config: dict[str, Any]


def build_parts(
    model: Any,
    *,
    image_size: int | Sequence[int],
    timesteps: int,
    sampling_timesteps: int | None,
    loss_type: str,
    objective: str | None,
    beta_schedule: str | Tensor | Sequence[float],
    ddim_sampling_eta: float,
    clip_denoised: bool,
    rederive_eps: bool,
    min_snr_loss_weight: bool,
    min_snr_gamma: float,
    auto_normalize: bool,
    timestep_spacing: str | None,
    variance_type: str | None,
    vlb_weight: float,
    class_names: Sequence[str] | None,
    process: str | ProcessDeclarations,
    process_options: Mapping[str, float] | None,
    loss_weighting: str | Mapping[str, Any] | Weighting,
    training_times: str | Mapping[str, Any] | TimeDistribution | None,
) -> Parts:
    """Check GaussianDiffusion's arguments together and build its parts (see the module docstring). ValueError
    naming the argument for anything that does not fit."""
    size = normalize_image_size(image_size)
    check = getattr(model, "check_image_size", None)
    if check is not None:
        check(*size)
    spec = condition_spec_of(model)
    names = check_class_names(class_names, spec)
    cls, options, schedule = _process(process, process_options, timesteps, beta_schedule)
    if isinstance(process, NoiseSchedule):
        beta_schedule = process.betas.tolist()
    learned_variance = bool(getattr(model, "learned_variance", False))
    chosen_objective = Objective(objective if objective is not None else (cls.objective or "pred_noise"))
    cls.check_objective(chosen_objective.value)
    if (chosen_objective is Objective.EDM) != (cls.objective == Objective.EDM.value):
        raise ValueError(
            f"objective 'edm' (Karras et al. 2022's preconditioned network F) goes with process 'edm' and only with "
            f"it (its σ_data is a process option); got process {cls.name!r} with objective {chosen_objective.value!r}"
        )
    spacing = None if timestep_spacing is None else Spacing(timestep_spacing)
    cls.check_spacing(spacing)
    discrete = schedule is not None and not cls.continuous
    num_timesteps = schedule.num_timesteps if discrete else _positive("timesteps", timesteps)
    steps = num_timesteps if sampling_timesteps is None else sampling_timesteps
    if cls.continuous:
        _positive("sampling_timesteps", steps)
    else:
        spaced_timesteps(num_timesteps, steps)  # validates the range, with a clear message
    weightings = [make_weighting(loss_weighting)]
    if min_snr_loss_weight:
        weightings.append(MinSNRWeighting(min_snr_gamma))
    times = make_times(cls.training_times if training_times is None else training_times, **options)
    loss = DenoisingLoss(LossType(loss_type), tuple(weightings), times, float(vlb_weight))
    loss.check(cls, chosen_objective, learned_variance or variance_type == VarianceType.LEARNED_RANGE.value)
    preconditioning = make_preconditioning(
        chosen_objective, options.get("sigma_data"), self_condition=bool(getattr(model, "self_condition", False)),
        learned_variance=learned_variance, clip_denoised=bool(clip_denoised), rederive_eps=bool(rederive_eps),
    )  # fmt: skip
    variance = _variance_type(variance_type, learned_variance)
    config: dict[str, Any] = dict(
        image_size=list(size),
        timesteps=num_timesteps,
        sampling_timesteps=steps,
        loss_type=loss.distance.value,
        objective=chosen_objective.value,
        beta_schedule=beta_schedule if isinstance(beta_schedule, (str, list)) else schedule.betas.tolist(),
        ddim_sampling_eta=float(ddim_sampling_eta),
        clip_denoised=bool(clip_denoised),
        rederive_eps=bool(rederive_eps),
        min_snr_loss_weight=bool(min_snr_loss_weight),
        min_snr_gamma=float(min_snr_gamma),
        auto_normalize=bool(auto_normalize),
        timestep_spacing=None if spacing is None else spacing.value,
        variance_type=variance_type and variance.value,
        vlb_weight=float(vlb_weight),
    )
    if names is not None:
        config["class_names"] = list(names)
    if cls is not NoiseSchedule:
        config.update(process=cls.name, process_options=dict(options))
    weighting = weightings[0]
    if cls is not NoiseSchedule or weighting.name != "simple":
        config["loss_weighting"] = weighting.config if len(weighting.config) > 1 else weighting.name
    if training_times is not None:
        config["training_times"] = times.config
    channels = int(getattr(model, "channels", 3))
    return Parts(
        channels,
        size,
        spec,
        names,
        cls,
        options,
        schedule,
        num_timesteps,
        preconditioning,
        loss,
        variance,
        steps,
        spacing,
        config,
    )


def _process(
    process: Any, options: Mapping[str, float] | None, timesteps: int, beta_schedule: Any
) -> tuple[Any, dict[str, float], Any]:
    """(class, resolved options, schedule or None) of ``process``: a registered name, or a process object (whose
    config is its options; ``process_options`` must then be empty)."""
    if isinstance(process, ProcessDeclarations):
        if options:
            raise ValueError("process_options is for a process given by name; a process object carries its own")
        cls = type(process)
        return cls, cls.resolve_options(cls.options_of(process)), process
    cls = process_class(process)
    resolved = cls.resolve_options(options)
    return cls, resolved, cls.from_arguments(resolved, timesteps, beta_schedule)


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _variance_type(variance_type: str | None, learned_variance: bool) -> VarianceType:
    if variance_type is None:
        return VarianceType.LEARNED_RANGE if learned_variance else VarianceType.FIXED_SMALL
    chosen = VarianceType(variance_type)
    if chosen is VarianceType.LEARNED_RANGE and not learned_variance:
        raise ValueError("variance_type 'learned_range' needs a network built with learned_variance=True")
    return chosen


class Recorded:
    """A read-only attribute of GaussianDiffusion read from its config (an option recorded there): changing it on a
    built model would not reach its parts, so setting it is an AttributeError."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else obj.config[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"{self.name} is fixed when a GaussianDiffusion is built: build a new one with it")
