"""The sampling runner: choosing times, drawing the prior, binding conditions and guidance, running a registered
sampler, and the output range, in one module below its users (DESIGN.md, "sampling.py").

``GaussianDiffusion.sample``, editing (inpainting, img2img), DDIM inversion, the likelihoods and the command line
all run through a :class:`SamplingRunner`, a frozen view of a model's parts (its network, preconditioning, process,
conditions and defaults) that a model hands out as ``model.runner``; nothing here calls back into the model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn

from ._utils import eval_mode, module_device
from .conditioning import (
    Condition,
    ConditionSpec,
    broadcast_condition,
    check_condition,
    class_indices,
)
from .denoiser import Callback, Denoiser, StepRecord
from .guidance import classifier_guidance
from .preconditioning import Preconditioning
from .processes import Schedule, Spacing, Time
from .samplers import SAMPLERS, SamplerInfo, SamplerName
from .variance import VarianceType


@dataclass(frozen=True)
class DataRange:
    """Where data lives: images enter and leave the public API in [0, 1], and with ``auto_normalize`` the model works
    in [−1, 1]; otherwise (latents, data already centred) in the data's own range, clamped to [−1, 1] on output
    only with ``clip``."""

    auto_normalize: bool = True
    clip: bool = True

    def normalize(self, img: Tensor) -> Tensor:
        """[0, 1] -> [−1, 1] (identity when auto_normalize is off)."""
        return img * 2 - 1 if self.auto_normalize else img

    def unnormalize(self, x: Tensor) -> Tensor:
        """[−1, 1] -> [0, 1] (identity when auto_normalize is off)."""
        return (x + 1) * 0.5 if self.auto_normalize else x

    def output(self, x: Tensor) -> Tensor:
        """Samples from the model's space to the caller's: [0, 1] images with auto_normalize; else the data's own
        range, clamped to [−1, 1] only with clip (a latent model's samples must not be clamped)."""
        if self.auto_normalize:
            return self.unnormalize(x).clamp(0.0, 1.0)
        return x.clamp(-1.0, 1.0) if self.clip else x


@dataclass(frozen=True)
class SamplingDefaults:
    """A model's sampling defaults: ``steps`` (sampling_timesteps), ``spacing`` (timestep_spacing, None: each
    sampler's own), DDIM's ``eta`` and DDPM's reverse ``variance``."""

    steps: int
    spacing: Spacing | None
    eta: float
    variance: VarianceType


@dataclass(frozen=True)
class SamplingRunner:
    """Everything sampling needs of a model, as parts (no model behind it).

    Args:
        network: the network, (x, t, [x_self_cond], **condition) -> output.
        preconditioning: network -> denoiser (preconditioning.py).
        schedule: the process (a registered processes/ class).
        condition_spec, class_names, cond_drop_prob: what the network takes, its classes' names and how often its
            null branch was trained.
        shape: (C, H, W) of one sample.
        data: the data range.
        defaults: the sampling defaults.
        num_timesteps: T of the model (ddpm's default sampler compares the steps with it).
    """

    network: nn.Module
    preconditioning: Preconditioning
    schedule: Schedule
    condition_spec: ConditionSpec
    class_names: list[str] | None
    cond_drop_prob: float
    shape: tuple[int, int, int]
    data: DataRange
    defaults: SamplingDefaults
    num_timesteps: int

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]

    @property
    def device(self) -> torch.device:
        """The network's device (its first parameter's or buffer's; the CPU without either)."""
        return module_device(self.network)

    @property
    def dtype(self) -> torch.dtype:
        """The network's parameter dtype: what samples are drawn in."""
        return next(self.network.parameters()).dtype

    # ----- the sampler, its options and its times -------------------------------------------------------------

    def sampler_info(self, name: str | None) -> SamplerInfo:
        """The registry entry for ``name``; None: the process's default (ProcessDeclarations.default_sampler)."""
        if name is None:
            name = type(self.schedule).default_sampler(self.defaults.steps, self.num_timesteps, SAMPLERS)  # type: ignore[attr-defined]
        return SAMPLERS[SamplerName(name)]

    def sampler_defaults(self) -> dict[str, Any]:
        """The model's defaults for sampler options: ``eta`` and ``variance``."""
        return {"eta": self.defaults.eta, "variance": self.defaults.variance}

    def times(
        self, steps: int | None = None, spacing: str | None = None, info: SamplerInfo | None = None
    ) -> list[Time]:
        """The times a sampler visits, decreasing: ``steps`` of them (None: the default), spaced by ``spacing``, else
        the model's spacing, else the process's choice for the sampler's recommendation (``spacing_for``)."""
        chosen = spacing or self.defaults.spacing
        if chosen is None:
            recommended = Spacing.LINSPACE if info is None else info.spacing
            chosen = type(self.schedule).spacing_for(recommended)  # type: ignore[attr-defined]
        return list(self.schedule.timesteps(self.defaults.steps if steps is None else steps, chosen))

    def prior(self, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ N(0, prior_std² I) of the shape given, in the network's dtype on its device (N(0, I) on VP paths,
        N(0, σ_max² I) on VE paths: Song et al. 2021, §3.4; Karras et al. 2022, Alg. 1)."""
        x = torch.randn(tuple(shape), generator=generator, device=self.device, dtype=self.dtype)
        std = self.schedule.prior_std
        return x if std == 1.0 else x * std

    # ----- conditions and guidance ------------------------------------------------------------------------------

    def check_condition(self, condition: dict[str, Any], batch_size: int) -> Condition:
        """``condition`` checked against the network's (conditioning.check_condition), class names resolved, on the
        network's device. ValueError naming a missing, unexpected or malformed entry."""
        resolved = dict(condition)
        if "classes" in resolved:
            resolved["classes"] = class_indices(resolved["classes"], self.class_names)
        checked = check_condition(self.condition_spec, resolved, batch_size, self.image_size)
        device = self.device
        return {name: value.to(device) for name, value in checked.items()}

    def denoiser(
        self, clip_denoised: bool | None = None, *, guidance_scale: float = 1.0, guidance_rescale: float = 0.0,
        **condition: Any,
    ) -> Denoiser:  # fmt: skip
        """A fresh denoiser (x_t, t) -> Prediction with ``condition`` bound (checked now, so errors come before
        sampling; a condition of scalars is repeated to each call's batch) and classifier-free guidance at scale s
        (preconditioning.Preconditioning.denoiser)."""
        if "classes" in condition:  # class names, as sample() takes them
            condition["classes"] = class_indices(condition["classes"], self.class_names)
        batch = next((len(v) for v in condition.values() if isinstance(v, Tensor) and v.ndim), None)
        checked = {batch or 1: self.check_condition(broadcast_condition(condition, batch or 1), batch or 1)}
        self._check_guidance(guidance_scale, guidance_rescale)

        def condition_for(size: int) -> Condition:
            if batch is not None and size != batch:
                raise ValueError(f"the denoiser's condition is for {batch} images, but x_t holds {size}")
            if size not in checked:
                checked[size] = self.check_condition(broadcast_condition(condition, size), size)
            return checked[size]

        return self.preconditioning.denoiser(
            self.network, self.schedule, condition_for, clip=clip_denoised, guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
        )  # fmt: skip

    def _check_guidance(self, scale: float, rescale: float) -> None:
        """ValueError when the model cannot be guided so; a warning when its null branch was never trained."""
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"guidance_rescale must be in [0, 1], got {rescale}")
        if not math.isfinite(scale):
            raise ValueError(f"guidance_scale must be a finite number, got {scale}")
        if scale == 1.0:
            return
        if not self.condition_spec.droppable:
            raise ValueError(
                f"classifier-free guidance needs a model with classes, a context or an image with a null "
                f"(num_classes=, context_dim= or image_null=); this one takes {self.condition_spec.describe()}"
            )
        if self.cond_drop_prob == 0.0:
            warnings.warn(
                "guidance_scale != 1 with a network built with cond_drop_prob=0: its null class/context "
                "was never trained, so the unconditional branch is arbitrary",
                UserWarning,
                stacklevel=4,
            )

    def sampling_denoiser(
        self, batch_size: int, *, guidance_scale: float = 1.0, guidance_rescale: float = 0.0,
        classifier: nn.Module | None = None, classifier_scale: float = 1.0, **condition: Any,
    ) -> Denoiser:  # fmt: skip
        """The denoiser a sampling run uses: ``condition`` (class names resolved, a single entry repeated to
        ``batch_size``) checked and bound, with classifier-free guidance and, given a ``classifier``, classifier
        guidance towards ``classes``. ValueError for a condition or a classifier that does not fit."""
        condition = {name: value for name, value in condition.items() if value is not None}
        labels = None
        if classifier is not None:
            labels = self._classifier_labels(classifier, condition, batch_size)
            if self.condition_spec.num_classes is None:
                condition.pop("classes")  # the labels are the classifier's only
        elif classifier_scale != 1.0:
            raise ValueError("classifier_scale was given without a classifier (classifier=)")
        if "classes" in condition:
            condition["classes"] = class_indices(condition["classes"], self.class_names)
        condition = broadcast_condition(condition, batch_size)
        self.check_condition(condition, batch_size)  # a label count other than batch_size is named here
        denoiser = self.denoiser(guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, **condition)
        if classifier is None or labels is None:
            return denoiser
        log_prob = partial(_log_prob, classifier, labels)
        return classifier_guidance(denoiser, log_prob, self.schedule, classifier_scale)

    def _classifier_labels(self, classifier: Any, condition: dict[str, Any], batch_size: int) -> Tensor:
        """The (B,) labels a classifier guides towards, from ``classes``, after checking the classifier fits."""
        check = getattr(classifier, "check_matches", None)
        if check is None:
            raise ValueError(
                "classifier= must be a NoiseAwareClassifier (noise_aware_classifier.py), trained on this model's "
                f"noise schedule; got a {type(classifier).__name__}"
            )
        check(self)
        if condition.get("classes") is None:
            raise ValueError("classifier guidance needs classes=: the labels the classifier should steer towards")
        names = getattr(classifier, "class_names", None) or self.class_names
        labels = broadcast_condition({"classes": class_indices(condition["classes"], names)}, batch_size)["classes"]
        spec = ConditionSpec(num_classes=int(classifier.num_classes))
        checked = check_condition(spec, {"classes": labels}, batch_size, self.image_size)["classes"]
        device = next(classifier.parameters()).device
        if device != self.device:
            raise ValueError(f"the classifier is on {device} and this model on {self.device}; move it with .to()")
        return checked.to(self.device)

    # ----- running --------------------------------------------------------------------------------------------

    def run(
        self,
        run: Callable[..., Tensor],
        x_start: Tensor,
        timesteps: Sequence[Time],
        *,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        return_all_timesteps: bool = False,
        also_eval: Sequence[nn.Module | None] = (),
    ) -> Tensor:
        """``run(x_start, timesteps, generator=, callback=)`` (a sampler with its denoiser and options bound) in eval
        mode under ``torch.inference_mode()``, the network's mode (and ``also_eval``'s: a guiding classifier)
        restored after; returns the samples in the caller's range, or the trajectory (B, S + 1, C, H, W) with
        ``return_all_timesteps``."""
        trajectory = [x_start] if return_all_timesteps else None

        def on_step(record: StepRecord) -> None:
            if trajectory is not None:
                trajectory.append(record.x_next)
            if callback is not None:
                callback(record)

        with eval_mode(self.network, *also_eval), torch.inference_mode():
            x_0 = run(x_start, timesteps=timesteps, generator=generator, callback=on_step)
        return self.data.output(torch.stack(trajectory, dim=1) if trajectory is not None else x_0)

    def sample(
        self,
        batch_size: int = 16,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        return_all_timesteps: bool = False,
        callback: Callback | None = None,
        spacing: str | None = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        classifier: nn.Module | None = None,
        classifier_scale: float = 1.0,
        condition: dict[str, Any] | None = None,
        **options: Any,
    ) -> Tensor:
        """Samples (B, C, H, W) in the caller's range, or the trajectory (B, S + 1, C, H, W) with
        ``return_all_timesteps`` (GaussianDiffusion.sample documents the arguments)."""
        info = self.sampler_info(sampler)
        bound = info.bind(options, self.sampler_defaults())
        denoiser = self.sampling_denoiser(
            batch_size, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, classifier=classifier,
            classifier_scale=classifier_scale, **(condition or {}),
        )  # fmt: skip
        timesteps = self.times(steps, spacing, info)
        x_T = self.prior((batch_size, *self.shape), generator)
        run = partial(info.fn, denoiser, schedule=self.schedule, **bound)
        return self.run(run, x_T, timesteps, generator=generator, callback=callback,
                        return_all_timesteps=return_all_timesteps, also_eval=(classifier,))  # fmt: skip


def runner_of(model: Any) -> SamplingRunner:
    """``model`` itself if it is a runner, else its ``runner`` (GaussianDiffusion and every composed model hand
    one out)."""
    return model if isinstance(model, SamplingRunner) else cast(SamplingRunner, model.runner)


def _log_prob(classifier: nn.Module, labels: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """log f(labels | x_t) (B,) from a NoiseAwareClassifier."""
    return cast(Tensor, classifier.log_prob(x_t, t, labels))  # type: ignore[operator]
