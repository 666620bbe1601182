"""GaussianDiffusion: the face that composes a network with a process, a preconditioning and a loss.

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models"), with the improvements of Nichol & Dhariwal 2021
(cosine schedule, learned variances, respacing), Song et al. 2021 (DDIM, score SDEs) and Karras et al. 2022 (EDM).
The parts live below it (docs/architecture.md): processes/ (the path and time), preconditioning.py (network →
denoiser), losses/ (training times, weighting, distance), sampling.py (the runner every sampler call goes through);
this class turns its options into them (diffusion_options.py) and delegates. Images enter and leave the public API
in [0, 1]; inside, data lives in [−1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import editing
from ._utils import module_device
from .conditioning import BatchSplitter, Condition
from .data.batch import Batch, check_images, check_training_images
from .denoiser import Callback, Denoiser, Prediction
from .diffusion_options import Recorded as _Recorded
from .diffusion_options import build_parts
from .losses import TimeDistribution, Weighting, hybrid_vlb_term
from .processes import FittedProcess, ProcessDeclarations, Schedule, path_coefficients, q_sample
from .registry import PretrainedMixin, model_kind
from .samplers import SamplerInfo
from .sampling import DataRange, SamplingDefaults, SamplingRunner


@model_kind(parts=("model",))
class GaussianDiffusion(PretrainedMixin, nn.Module):
    """A denoising diffusion model around a network ``model(x, t, [x_self_cond], **condition) -> output``, for every
    registered diffusion process (docs/api.md lists every argument with its default and why).

    Args:
        model: the network; it exposes ``channels``, ``self_condition`` and ``learned_variance`` (as Unet does).
        image_size: int or (height, width).
        timesteps: T of the discrete chain (ddpm), NCSN's number of levels, or the continuous processes' default
            number of sampling steps.
        sampling_timesteps: default number of reverse steps in ``sample``; None: T.
        loss_type: 'l1', 'l2' or 'huber'.
        objective: 'pred_noise', 'pred_x0', 'pred_v' or 'edm' (None: the process's own, else 'pred_noise').
        beta_schedule: ddpm's β schedule: 'linear', 'cosine', 'sigmoid', 'quadratic', or T betas.
        ddim_sampling_eta: DDIM's η when ``sample`` gets none.
        clip_denoised, rederive_eps: clamp x̂_0 to [−1, 1] when sampling, and then recompute ε̂ from it
            (preconditioning.Preconditioning).
        min_snr_loss_weight, min_snr_gamma: multiply the loss by min-SNR-γ (Hang et al. 2023).
        auto_normalize: map [0, 1] input to [−1, 1] and samples back (off: data in its own range, e.g. latents).
        timestep_spacing: which times samplers visit ('linspace', 'trailing', 'leading', 'logsnr', 'karras'); None:
            each sampler's recommendation, as the process adapts it.
        variance_type: DDPM's reverse variance 'fixed_small', 'fixed_large', 'learned_range' (None: learned_range for
            a learned-variance network, else fixed_small).
        vlb_weight: λ of the hybrid loss L_simple + λ L_vlb for learned variances (Nichol & Dhariwal 2021, §3.1).
        class_names: the names of a class-conditional network's classes, in index order.
        process: a registered process name ('ddpm', 'vp', 'subvp', 've', 'ncsn', 'edm', or one registered with
            ``processes.process_kind``) or a process object.
        process_options: the named process's options (defaults filled in; σ_max of ve/ncsn fitted from the data
            when missing: :meth:`fit_data_statistics`).
        loss_weighting: a registered weighting's name ('simple', 'likelihood', 'min_snr', ...), its config, or a
            losses.Weighting.
        training_times: the training-time distribution ('uniform', 'log_normal', ...); None: the process's own.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        image_size: int | Sequence[int],
        timesteps: int = 1000,
        sampling_timesteps: int | None = None,
        loss_type: str = "l2",
        objective: str | None = None,
        beta_schedule: str | Tensor | Sequence[float] = "cosine",
        ddim_sampling_eta: float = 0.0,
        clip_denoised: bool = True,
        rederive_eps: bool = True,
        min_snr_loss_weight: bool = False,
        min_snr_gamma: float = 5.0,
        auto_normalize: bool = True,
        timestep_spacing: str | None = None,
        variance_type: str | None = None,
        vlb_weight: float = 0.001,
        class_names: Sequence[str] | None = None,
        process: str | ProcessDeclarations = "ddpm",
        process_options: Mapping[str, float] | None = None,
        loss_weighting: str | Mapping[str, Any] | Weighting = "simple",
        training_times: str | Mapping[str, Any] | TimeDistribution | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        parts = build_parts(
            model, image_size=image_size, timesteps=timesteps, sampling_timesteps=sampling_timesteps,
            loss_type=loss_type, objective=objective, beta_schedule=beta_schedule,
            ddim_sampling_eta=ddim_sampling_eta, clip_denoised=clip_denoised, rederive_eps=rederive_eps,
            min_snr_loss_weight=min_snr_loss_weight, min_snr_gamma=min_snr_gamma, auto_normalize=auto_normalize,
            timestep_spacing=timestep_spacing, variance_type=variance_type, vlb_weight=vlb_weight,
            class_names=class_names, process=process, process_options=process_options, loss_weighting=loss_weighting,
            training_times=training_times,
        )  # fmt: skip
        self.channels, self.image_size, self.condition_spec = parts.channels, parts.image_size, parts.condition_spec
        self.class_names = parts.class_names
        self.fitted = FittedProcess(parts.process_class, parts.process_options, parts.schedule, parts.num_timesteps)
        self.preconditioning, self.loss = parts.preconditioning, parts.loss
        self.num_timesteps, self.sampling_timesteps = parts.num_timesteps, parts.sampling_timesteps
        self.timestep_spacing, self.variance_type = parts.timestep_spacing, parts.variance_type
        self.data = DataRange(bool(auto_normalize), bool(clip_denoised))
        self.config: dict[str, Any] = parts.config
        self._split = BatchSplitter("this GaussianDiffusion")  # forward() names dropped batch entries once
        self._quiet_range = not auto_normalize  # forward() warns once of training images outside [0, 1]

    # ----- what the parts say -------------------------------------------------------------------------------------

    loss_type = _Recorded()
    clip_denoised = _Recorded()
    rederive_eps = _Recorded()
    auto_normalize = _Recorded()
    ddim_sampling_eta = _Recorded()
    min_snr_loss_weight = _Recorded()
    min_snr_gamma = _Recorded()
    vlb_weight = _Recorded()

    @property
    def loss_weighting(self) -> Weighting:
        return self.loss.weightings[0]

    @property
    def process(self) -> str:
        """The registered name of the process ('ddpm', 'vp', ...)."""
        return self.fitted.cls.name

    @property
    def process_options(self) -> dict[str, float]:
        return self.fitted.options

    @property
    def objective(self) -> Any:
        return self.preconditioning.objective

    @property
    def sigma_data(self) -> float | None:
        """σ_data of EDM's preconditioning, else None."""
        return getattr(self.preconditioning, "sigma_data", None)

    @property
    def cond_drop_prob(self) -> float:
        """How often training replaces classes and contexts by their nulls: the network's ``cond_drop_prob``."""
        return float(getattr(self.model, "cond_drop_prob", 0.0)) if self.condition_spec.droppable else 0.0

    @property
    def schedule(self) -> Schedule:
        """The process object (the path the samplers see). ValueError while σ_max is still to be fitted."""
        return self.fitted.schedule

    @property
    def runner(self) -> SamplingRunner:
        """The sampling runner over this model's parts (sampling.py): what sample, editing and likelihoods use."""
        defaults = SamplingDefaults(self.sampling_timesteps, self.timestep_spacing, self.ddim_sampling_eta,
                                    self.variance_type)  # fmt: skip
        return SamplingRunner(self.model, self.preconditioning, self.schedule, self.condition_spec, self.class_names,
                              self.cond_drop_prob, (self.channels, *self.image_size), self.data, defaults,
                              self.num_timesteps)  # fmt: skip

    def with_model(self, model: nn.Module) -> GaussianDiffusion:
        """A new GaussianDiffusion with this one's config around another network (e.g. the EMA copy)."""
        return GaussianDiffusion(model, **self.config).to(self.device)

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    # ----- data statistics (training/trainable.py, FitsData) ------------------------------------------------------

    @property
    def needs_data_statistics(self) -> bool:
        """Whether the process's fitted option (σ_max of ve, ncsn) is still to be computed from the training data."""
        return self.fitted.needs_fit

    def fit_data_statistics(self, images: Tensor) -> dict[str, float]:
        """Compute the fitted option from training images (B, C, H, W) in [0, 1] (σ_max: the largest distance
        between two of them, Song & Ermon 2020, technique 1), rebuild the process and record it in the config."""
        if self.fitted.cls.fitted_option is not None:
            check_images(images, (self.channels, *self.image_size))
        fitted = self.fitted.fit(self.normalize(images.detach().cpu()))
        self.config["process_options"] = dict(self.process_options)
        return fitted

    def restore_data_statistics(self, config: Mapping[str, Any]) -> bool:
        """Take the fitted option from a stored config of the same process (a checkpoint's) when still needed."""
        restored = self.fitted.restore(config.get("process"), config.get("process_options") or {})
        if restored:
            self.config["process_options"] = dict(self.process_options)
        return restored

    # ----- the forward process and the path -----------------------------------------------------------------------

    def normalize(self, img: Tensor) -> Tensor:
        return self.data.normalize(img)

    def unnormalize(self, x: Tensor) -> Tensor:
        return self.data.unnormalize(x)

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """x_t ~ q(x_t | x_0) = N(α_t x_0, σ_t² I) (Ho et al. 2020, eq. 4): processes.q_sample."""
        return q_sample(self.schedule, x_start, t, torch.randn_like(x_start) if noise is None else noise)

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x_0) (Ho et al. 2020, eqs. 6–7), ddpm only."""
        step = self.schedule.posterior_at(t).shaped_like(x_t)  # type: ignore[attr-defined]
        return step.mean(x_start, x_t), step.variance, step.log_variance

    # ----- predictions and losses ---------------------------------------------------------------------------------

    def check_condition(self, condition: Mapping[str, Any], batch_size: int) -> Condition:
        """``condition`` checked against the network's (class names resolved, on the model's device)."""
        return self.runner.check_condition(dict(condition), batch_size)

    def model_predictions(
        self, x_t: Tensor, t: Tensor, x_self_cond: Tensor | None = None, clip_x_start: bool = False, **condition: Any
    ) -> Prediction:
        """The network's (x̂_0, ε̂[, v]) at (x_t, t) under the objective; with ``clip_x_start`` x̂_0 clamped."""
        checked, precond = self.check_condition(condition, x_t.shape[0]), self.preconditioning
        pred = precond.predict(self.model, self.schedule, x_t, t, x_self_cond, checked)
        return precond.clipped(pred, x_t, *path_coefficients(self.schedule, t, x_t)) if clip_x_start else pred

    def denoiser(
        self, clip_denoised: bool | None = None, *, guidance_scale: float = 1.0, guidance_rescale: float = 0.0,
        **condition: Any,
    ) -> Denoiser:  # fmt: skip
        """A fresh denoiser (x_t, t) -> Prediction for the samplers, with the condition bound and classifier-free
        guidance at scale s ≠ 1 (sampling.SamplingRunner.denoiser)."""
        return self.runner.denoiser(clip_denoised, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
                                    **condition)  # fmt: skip

    def p_losses(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None, **condition: Any) -> Tensor:
        """Per-sample training loss (B,) at times t (B,) for x_start (B, C, H, W) in [−1, 1] (losses.DenoisingLoss)."""
        return self._losses(x_start, t, noise, self.check_condition(condition, x_start.shape[0]))

    def _losses(self, x_start: Tensor, t: Tensor, noise: Tensor | None, condition: Condition) -> Tensor:
        return self.loss.per_sample(self.model, self.preconditioning, self.schedule, x_start, t, noise, condition,
                                    self.cond_drop_prob)  # fmt: skip

    def vlb_term(self, x_start: Tensor, x_t: Tensor, t: Tensor, pred_x0: Tensor, var_interp: Tensor) -> Tensor:
        """L_t of the variational bound in bits/dim, (B,), for the learned-range variance (losses.hybrid_vlb_term)."""
        return hybrid_vlb_term(self.schedule, x_start, x_t, t, pred_x0, var_interp)

    def forward(self, batch: Batch, **condition: Any) -> Tensor:
        """The training loss (a scalar) for images (B, C, H, W) in [0, 1], or what a Trainer collates from
        (image, label) pairs or dicts (data/batch.py: the label is ``classes``; what the network does not take is
        dropped, with a warning once). Times come from the loss's training-time distribution, ε is Gaussian."""
        img, from_batch = self._split(batch, self.condition_spec)
        self._quiet_range |= check_training_images(img, (self.channels, *self.image_size), warn=not self._quiet_range)
        checked = self.check_condition({**from_batch, **condition}, img.shape[0])
        t = self.loss.times.sample(self.schedule, img.shape[0], img.device)
        return self._losses(self.normalize(img), t, None, checked).mean()

    # ----- sampling -------------------------------------------------------------------------------------------------

    def sample(
        self, batch_size: int = 16, *, sampler: str | None = None, steps: int | None = None,
        generator: torch.Generator | None = None, return_all_timesteps: bool = False, callback: Callback | None = None,
        spacing: str | None = None, classes: Any = None, context: Tensor | None = None,
        context_mask: Tensor | None = None, cond_image: Tensor | None = None, cond_level: Tensor | None = None,
        guidance_scale: float = 1.0, guidance_rescale: float = 0.0, classifier: nn.Module | None = None,
        classifier_scale: float = 1.0, **options: Any,
    ) -> Tensor:  # fmt: skip
        """Generate images (B, C, H, W) in [0, 1] (with auto_normalize off: in the data's range), or the trajectory
        (B, S + 1, C, H, W) with ``return_all_timesteps`` (x_T first). docs/api.md and docs/samplers.md describe every
        argument: the sampler (None: the process's default) and its own options, the steps and spacing, the
        condition, classifier-free guidance (s = 1: the conditional model) and classifier guidance."""
        condition = dict(classes=classes, context=context, context_mask=context_mask, cond_image=cond_image,
                         cond_level=cond_level)  # fmt: skip
        return self.runner.sample(
            batch_size, sampler=sampler, steps=steps, generator=generator, return_all_timesteps=return_all_timesteps,
            callback=callback, spacing=spacing, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
            classifier=classifier, classifier_scale=classifier_scale, condition=condition, **options,
        )  # fmt: skip

    def sampler_info(self, name: str | None) -> SamplerInfo:
        """The registry entry for ``name`` (None: the process's default sampler)."""
        return self.runner.sampler_info(name)

    def inpaint(self, images: Tensor, mask: Tensor, **kwargs: Any) -> Tensor:
        """RePaint inpainting (Lugmayr et al. 2022) where ``mask`` is 0 (1 = keep): editing.inpaint."""
        return editing.inpaint(self, images, mask, **kwargs)

    def img2img(self, images: Tensor, strength: float, **kwargs: Any) -> Tensor:
        """SDEdit (Meng et al. 2022) at ``strength`` ∈ [0, 1]: editing.img2img."""
        return editing.img2img(self, images, strength, **kwargs)

    def invert(self, img: Tensor, *, steps: int | None = None, spacing: str | None = None, **condition: Any) -> Tensor:
        """DDIM inversion of images (B, C, H, W) in [0, 1] to x_T: editing.invert."""
        return editing.invert(self, img, steps=steps, spacing=spacing, **condition)
