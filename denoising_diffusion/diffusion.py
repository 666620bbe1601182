"""GaussianDiffusion: the forward process, the training loss and the denoiser a network defines.

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models"), with the improvements of Nichol & Dhariwal 2021
(cosine schedule, learned variances, respacing) and Song et al. 2021 (DDIM). The time convention is in
schedules.py. Images enter and leave the public API in [0, 1]; inside, data lives in [−1, 1].
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn

from . import editing
from ._utils import eval_mode, normalize_image_size
from .batch import Batch, describe_extras, split_batch
from .conditioning import (
    Condition,
    ConditionSpec,
    batch_condition,
    broadcast_condition,
    check_class_names,
    check_condition,
    class_indices,
    condition_spec_of,
    repeat_condition,
)
from .denoiser import Callback, Denoiser, Prediction, StepRecord
from .guidance import classifier_guidance, guided_prediction
from .losses import LossType, LossWeighting, likelihood_weight, min_snr_weight, per_sample_loss, vlb_term
from .parameterization import Objective, append_dims, edm_coefficients, target_for, x0_eps_from_output
from .process_options import (
    FITTED_OPTION,
    build_process_schedule,
    check_process_arguments,
    default_sampler,
    needs_fit,
    resolve_process_options,
)
from .processes import ContinuousSchedule, Process, sigma_max_from_data
from .registry import model_kind
from .samplers import SAMPLERS, SamplerInfo, SamplerName, invert_ddim
from .schedules import NoiseSchedule, PosteriorStep, Schedule, Spacing, Time, spaced_timesteps
from .variance import VarianceType, reverse_log_variance


def extract(table: Tensor, t: Tensor, ndim: int) -> Tensor:
    """Gather table[t] for a (B,) index tensor and shape it (B, 1, …) to broadcast over ``ndim`` dims."""
    return append_dims(table.gather(0, t), ndim)


@model_kind(parts=("model",))
class GaussianDiffusion(nn.Module):
    """A denoising diffusion model around a network ``model(x, t, x_self_cond=None) -> output``, for every
    diffusion process: one object with a ``process`` option rather than a class per process (docs/api.md, "One
    GaussianDiffusion for every process"), so that conditioning, guidance, self-conditioning, the Trainer, the
    samplers, checkpoints and the command line serve them all unchanged.

    * ``process='ddpm'`` (default): discrete time t ∈ {0, …, T−1} with the β schedule ``beta_schedule`` (Ho et al.
      2020). Everything below that says "T" or "index" is about this case.
    * ``'vp'``, ``'subvp'``, ``'ve'``: the continuous-time SDEs of Song et al. 2021 (t ∈ [t_min, 1], processes.py);
      training draws t ~ U(t_min, 1) and the loss is denoising score matching (eq. 7) with the weighting
      ``loss_weighting``; ``timesteps`` is the default number of sampling steps.
    * ``'ncsn'``: NCSN's L = ``timesteps`` geometric noise levels (Song & Ermon 2019, 2020), a level drawn uniformly.
    * ``'edm'``: Karras et al. 2022 ("Elucidating the Design Space"): time is σ ∈ [σ_min, σ_max] (α = 1), training
      draws ln σ ~ N(P_mean, P_std²), and the network is preconditioned (objective 'edm'): it sees c_in x and
      c_noise = ¼ ln σ, its output F gives D = c_skip x + c_out F, and the 'l2' loss ‖F − F_target‖² is EDM's
      λ(σ) ‖D − x_0‖² (parameterization.edm_coefficients). Default sampler: 'heun' on the Karras grid.

    The network's time input is ``schedule.network_time(t)``: the index for ddpm, 999·t for vp/subvp, log σ for
    ve/ncsn (as float32). σ_max of ve and ncsn, when not in ``process_options``, is computed from the training data
    (Song & Ermon 2020, technique 1) by :meth:`fit_data_statistics` (the Trainer calls it before the first step) and
    then stored in the config; until then the model cannot compute a loss or sample.

    Args:
        model: the network; it must expose ``channels``, ``self_condition`` and ``learned_variance`` (as Unet does);
            with learned_variance its output has 2·channels: the prediction, then v ∈ [−1, 1] of eq. 15 of
            Nichol & Dhariwal 2021.
        image_size: int or (height, width) of the images.
        timesteps: T, the length of the forward chain.
        sampling_timesteps: default number of reverse steps in ``sample``; None means T. Below T the default
            sampler is DDIM, otherwise ancestral DDPM.
        loss_type: 'l1', 'l2' or 'huber' distance between network output and target.
        objective: 'pred_noise' (ε), 'pred_x0', 'pred_v' (Salimans & Ho 2022) or 'edm' (EDM's preconditioned F, with
            process 'edm' only); None: 'edm' for process 'edm', else 'pred_noise'.
        beta_schedule: 'linear', 'cosine', 'sigmoid', 'quadratic', or a tensor/sequence of T betas.
        ddim_sampling_eta: η of DDIM when the sampler is 'ddim' and ``sample`` gets no eta.
        clip_denoised: clamp x̂_0 to [−1, 1] during sampling (and recompute ε̂ from it, see rederive_eps).
        rederive_eps: with clip_denoised, recompute ε̂ = (x_t − α_t x̂_0)/σ_t from the clamped x̂_0 (True: GLIDE's
            and denoising-diffusion-pytorch's DDIM) or keep the network's ε̂ (False: diffusers' DDIMScheduler with
            its default use_clipped_model_output=False). Only samplers that read ε̂ see a difference (DDIM, Heun,
            Euler, the SDE and Langevin samplers); DDPM and DPM-Solver++ read x̂_0 alone.
        min_snr_loss_weight: weight the loss by min-SNR-γ (Hang et al. 2023).
        min_snr_gamma: γ of min-SNR.
        auto_normalize: map [0, 1] input to [−1, 1] and samples back; turn off for data already in [−1, 1] (samples
            then come back in that range, clamped to [−1, 1] only with clip_denoised).
        timestep_spacing: which steps a sampler visits: 'linspace', 'trailing', 'leading', 'logsnr' or 'karras'
            (see schedules.spaced_timesteps); None: each sampler's recommended spacing (SAMPLERS[name].spacing).
        variance_type: DDPM's reverse variance: 'fixed_small' (β̃), 'fixed_large' (β) or 'learned_range'; None:
            'learned_range' for a learned_variance network, else 'fixed_small'.
        vlb_weight: λ of the hybrid loss L_simple + λ L_vlb for learned variances (Nichol & Dhariwal 2021, §3.1).
        class_names: the names of a class-conditional network's classes (index order), so that samples can be asked
            for by name; None: names are the indices. Stored in the config (and so in checkpoints).
        process: 'ddpm', 'vp', 'subvp', 've', 'ncsn' or 'edm' (processes.Process; see above). Learned variances and the
            VLB need 'ddpm'; ``beta_schedule`` is for 'ddpm' only.
        process_options: the schedule's constructor arguments (process_options.py): beta_min, beta_max, t_min for
            vp/subvp; sigma_min, sigma_max, t_min for ve; sigma_min, sigma_max for ncsn; sigma_min, sigma_max,
            sigma_data, p_mean, p_std for edm. Omitted ones take the
            schedule's defaults, except σ_max (see above). Recorded in the config with the defaults filled in.
        loss_weighting: λ(t) of the score-matching loss (losses.LossWeighting): 'simple' (the objective's own loss;
            for pred_noise λ(t) = σ_t², Song et al. 2021, §3.3) or 'likelihood' (λ(t) = g(t)², Song, Durkan et al.
            2021: the weight g(t)²/σ_t² on ‖ε̂ − ε‖²; vp, subvp and ve with pred_noise only).

    The config records ``process``, ``process_options`` and ``loss_weighting`` only for processes other than ddpm,
    so the configs and checkpoints of discrete models stay as they were.

    A network that takes a condition (``model.condition_spec``: class labels, a context sequence, an image, a
    level; conditioning.py) trains with it (``diffusion(images, classes=y)``, or from (image, label) and dict
    batches) and samples with it (``sample(n, classes=y, guidance_scale=s)``); the training loss replaces classes
    and contexts by the network's learned nulls at the rate ``model.cond_drop_prob`` (Ho & Salimans 2021).
    """

    # The schedule tables (schedules.NoiseSchedule.buffers), registered as non-persistent float32 buffers.
    betas: Tensor
    alphas_cumprod: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor
    snr: Tensor
    model: nn.Module

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
        process: str = "ddpm",
        process_options: Mapping[str, float] | None = None,
        loss_weighting: str = "simple",
    ) -> None:
        super().__init__()
        self.model = model
        self.channels: int = int(getattr(model, "channels", 3))
        self.self_condition: bool = bool(getattr(model, "self_condition", False))
        self.learned_variance: bool = bool(getattr(model, "learned_variance", False))
        self.image_size = normalize_image_size(image_size)
        check = getattr(model, "check_image_size", None)
        if check is not None:
            check(*self.image_size)
        self.loss_type = LossType(loss_type)
        self.timestep_spacing = None if timestep_spacing is None else Spacing(timestep_spacing)
        self.process = Process(process)
        if objective is None:
            objective = Objective.EDM.value if self.process is Process.EDM else Objective.PRED_NOISE.value
        self.objective = Objective(objective)
        if min_snr_loss_weight and self.objective is Objective.EDM:
            raise ValueError("min_snr_loss_weight does not apply to objective 'edm': EDM weights its loss by λ(σ)")
        self.loss_weighting = LossWeighting(loss_weighting)
        self.process_options = resolve_process_options(self.process, process_options)
        check_process_arguments(self.process, self.loss_weighting, self.objective, self.learned_variance,
                                beta_schedule, variance_type, self.timestep_spacing)  # fmt: skip
        self._schedule: Schedule | None
        if self.process is Process.DDPM:
            self._schedule = ddpm = NoiseSchedule.from_name(beta_schedule, timesteps)
            self.num_timesteps = ddpm.num_timesteps
        else:
            if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
                raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
            self.num_timesteps = timesteps
            self._schedule = build_process_schedule(self.process, self.process_options, timesteps)
        self.sampling_timesteps = self.num_timesteps if sampling_timesteps is None else sampling_timesteps
        if self._continuous:
            if (
                isinstance(self.sampling_timesteps, bool)
                or not isinstance(self.sampling_timesteps, int)
                or (self.sampling_timesteps < 1)
            ):
                raise ValueError(f"sampling_timesteps must be a positive integer, got {self.sampling_timesteps!r}")
        else:
            spaced_timesteps(self.num_timesteps, self.sampling_timesteps)  # validates the range, with a clear message
        self.variance_type = _variance_type(variance_type, self.learned_variance)
        self.ddim_sampling_eta = float(ddim_sampling_eta)
        self.clip_denoised = bool(clip_denoised)
        self.rederive_eps = bool(rederive_eps)
        self.min_snr_loss_weight = bool(min_snr_loss_weight)
        self.min_snr_gamma = float(min_snr_gamma)
        self.auto_normalize = bool(auto_normalize)
        self.vlb_weight = float(vlb_weight)
        self.condition_spec = condition_spec_of(model)
        self.class_names = check_class_names(class_names, self.condition_spec)
        self._warned_dropped = False  # forward() names dropped batch entries once
        if isinstance(self._schedule, NoiseSchedule):
            for name, table in self._schedule.buffers().items():  # derived from the config: never saved, never EMA'd
                self.register_buffer(name, table.float(), persistent=False)
        schedule_config = (
            beta_schedule if isinstance(beta_schedule, str) else cast(NoiseSchedule, self._schedule).betas.tolist()
        )
        self.config: dict[str, Any] = dict(
            image_size=list(self.image_size),
            timesteps=self.num_timesteps,
            sampling_timesteps=self.sampling_timesteps,
            loss_type=self.loss_type.value,
            objective=self.objective.value,
            beta_schedule=schedule_config,
            ddim_sampling_eta=self.ddim_sampling_eta,
            clip_denoised=self.clip_denoised,
            rederive_eps=self.rederive_eps,
            min_snr_loss_weight=self.min_snr_loss_weight,
            min_snr_gamma=self.min_snr_gamma,
            auto_normalize=self.auto_normalize,
            timestep_spacing=None if self.timestep_spacing is None else self.timestep_spacing.value,
            variance_type=variance_type and self.variance_type.value,
            vlb_weight=self.vlb_weight,
        )
        if self.class_names is not None:  # recorded only when given: unconditional configs stay as they were
            self.config["class_names"] = list(self.class_names)
        if self.process is not Process.DDPM:  # likewise: the configs of discrete models stay as they were
            self.config.update(
                process=self.process.value,
                process_options=dict(self.process_options),
                loss_weighting=self.loss_weighting.value,
            )

    @property
    def cond_drop_prob(self) -> float:
        """How often training replaces classes and contexts by their nulls: the network's ``cond_drop_prob`` (0 for
        a network without droppable conditions)."""
        return float(getattr(self.model, "cond_drop_prob", 0.0)) if self.condition_spec.droppable else 0.0

    def with_model(self, model: nn.Module) -> GaussianDiffusion:
        """A new GaussianDiffusion with this one's config around another network (e.g. the EMA copy)."""
        return GaussianDiffusion(model, **self.config).to(self.device)

    @property
    def device(self) -> torch.device:
        """Where the network (and the ddpm tables) live: the first parameter's or buffer's device, else the CPU."""
        tensor = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    # ----- the process --------------------------------------------------------------------------------------------

    @property
    def schedule(self) -> Schedule:
        """The process's schedule: a NoiseSchedule (ddpm), a continuous SDE (vp, subvp, ve) or NCSN's levels.
        ValueError while σ_max of a ve/ncsn model is still to be fitted from data."""
        if self._schedule is None:
            raise ValueError(
                f"this {self.process.value!r} model has no sigma_max yet: give process_options={{'sigma_max': ...}} "
                "(about the largest distance between two training images in [-1, 1], Song & Ermon 2020), or "
                "compute it from the data with fit_data_statistics(images), or train it with the Trainer, which "
                "does so before the first step"
            )
        return self._schedule

    @property
    def _continuous(self) -> bool:
        """Whether time is a float t ∈ [t_min, t_max] (vp, subvp, ve, edm) rather than an index (ddpm, ncsn)."""
        return self.process in (Process.VP, Process.SUBVP, Process.VE, Process.EDM)

    @property
    def sigma_data(self) -> float | None:
        """σ_data of EDM's preconditioning (process 'edm'), else None."""
        return self.process_options.get("sigma_data") if self.objective is Objective.EDM else None

    @property
    def needs_data_statistics(self) -> bool:
        """Whether σ_max is still to be computed from the training data (training/trainable.py, FitsData)."""
        return needs_fit(self.process, self.process_options)

    def fit_data_statistics(self, images: Tensor) -> dict[str, float]:
        """Compute σ_max of a ve or ncsn model from training images (B, C, H, W) in [0, 1] (normalized here) as the
        largest distance between two of them (Song & Ermon 2020, technique 1; processes.sigma_max_from_data),
        rebuild the schedule with it and store it in the config (and so in checkpoints). Returns {'sigma_max': σ}.

        ValueError for another process, for images of the wrong shape, and when σ_max would not exceed σ_min.
        """
        if self.process not in (Process.VE, Process.NCSN):
            raise ValueError(
                f"only the 've' and 'ncsn' processes take a statistic of the data, not {self.process.value!r}"
            )
        self._check_batch(images)
        sigma_max = sigma_max_from_data(self.normalize(images.detach().cpu()))
        self._set_process_option(FITTED_OPTION, sigma_max)
        return {FITTED_OPTION: sigma_max}

    def restore_data_statistics(self, config: Mapping[str, Any]) -> bool:
        """Take σ_max from a stored config of the same process (a checkpoint's), when this model still needs it
        and the config has it; returns whether it did (training/trainable.py, FitsData)."""
        stored = config.get("process_options") or {}
        if not self.needs_data_statistics or config.get("process") != self.process.value or FITTED_OPTION not in stored:
            return False
        self._set_process_option(FITTED_OPTION, float(stored[FITTED_OPTION]))
        return True

    def _set_process_option(self, name: str, value: float) -> None:
        options = {**self.process_options, name: value}
        self._schedule = build_process_schedule(self.process, options, self.num_timesteps)
        self.process_options = options
        self.config["process_options"] = dict(options)

    def alpha_sigma(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(α_t, σ_t) of x_t = α_t x_0 + σ_t ε at times t (B,), shaped (B, 1, …) to broadcast over ``like``
        (B, C, H, W): gathered from the float32 tables for ddpm (exactly as ever), else the schedule's float64 values
        in ``like``'s dtype."""
        if self.process is Process.DDPM:
            alpha = extract(self.sqrt_alphas_cumprod, t, like.ndim)
            return alpha, extract(self.sqrt_one_minus_alphas_cumprod, t, like.ndim)
        alpha, sigma = self.schedule.alpha_sigma_at(t)
        return append_dims(alpha.to(like.dtype), like.ndim), append_dims(sigma.to(like.dtype), like.ndim)

    def network_time(self, t: Tensor) -> Tensor:
        """What the network's time input receives for times t (B,): ``schedule.network_time(t)`` (the int index for
        ddpm; 999·t for vp/subvp, log σ for ve/ncsn, c_noise = ¼ ln σ for edm), floating values as float32."""
        time = self.schedule.network_time(t)
        return time.float() if time.is_floating_point() else time

    def snr_at(self, t: Tensor) -> Tensor:
        """α_t²/σ_t² at times t (B,): the ddpm table ``snr`` (float32), else from the schedule (float64)."""
        if self.process is Process.DDPM:
            return self.snr.gather(0, t)
        alpha, sigma = self.schedule.alpha_sigma_at(t)
        return alpha**2 / sigma**2

    # ----- data range -------------------------------------------------------------------------------------------

    def normalize(self, img: Tensor) -> Tensor:
        """[0, 1] -> [−1, 1] (identity when auto_normalize is off)."""
        return img * 2 - 1 if self.auto_normalize else img

    def unnormalize(self, x: Tensor) -> Tensor:
        """[−1, 1] -> [0, 1] (identity when auto_normalize is off)."""
        return (x + 1) * 0.5 if self.auto_normalize else x

    # ----- forward process --------------------------------------------------------------------------------------

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(α_t x_0, σ_t² I) (Ho et al. 2020, eq. 4: α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t) for ddpm;
        Song et al. 2021, eq. 29 and App. B for the SDEs).

        x_start: (B, C, H, W) in the model's space ([−1, 1]); t: (B,) the process's times (int64 indices in [0, T)
        for ddpm and ncsn, float times in [t_min, 1] for vp, subvp, ve); noise: like x_start.
        """
        noise = torch.randn_like(x_start) if noise is None else noise
        alpha, sigma = self.alpha_sigma(t, x_start)
        return alpha * x_start + sigma * noise

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x_0) (Ho et al. 2020, eqs. 6–7).

        All (B, C, H, W) (variances broadcast as (B, 1, 1, 1)).
        """
        step = self.posterior_step(t, x_t.ndim)
        return step.mean(x_start, x_t), step.variance, step.log_variance

    def posterior_step(self, t: Tensor, ndim: int) -> PosteriorStep[Tensor]:
        """The posterior q(x_{t−1} | x_t, x_0) at a batch of indices t (B,), coefficients shaped (B, 1, …) for
        ``ndim``-dimensional images (from the float32 tables; schedules.PosteriorStep). ddpm only (ValueError
        otherwise: the samplers take a continuous process's posteriors from ``schedule.posterior_step``)."""
        if self.process is not Process.DDPM:
            raise ValueError(f"posterior_step reads the ddpm tables; this model's process is {self.process.value!r}")
        return PosteriorStep(
            c0=extract(self.posterior_mean_coef1, t, ndim),
            ct=extract(self.posterior_mean_coef2, t, ndim),
            variance=extract(self.posterior_variance, t, ndim),
            log_variance=extract(self.posterior_log_variance_clipped, t, ndim),
            beta=extract(self.betas, t, ndim),
            log_beta=extract(self.betas, t, ndim).log(),
        )

    # ----- the network's predictions ----------------------------------------------------------------------------

    def _network(
        self, x_t: Tensor, t: Tensor, x_self_cond: Tensor | None, condition: Condition, drop: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """The network's output split into (prediction, learned-variance output or None), and (α_t, σ_t) shaped
        (B, 1, 1, 1). ``condition`` is checked; ``drop`` (B,) bool asks for the null class/context. With objective
        'edm' the network sees c_in(σ̃) x̃ (x̃ = x_t/α; Karras et al. 2022, eq. 7), and its time input is c_noise."""
        kwargs: dict[str, Any] = dict(condition)
        if drop is not None:
            kwargs["drop"] = drop
        alpha, sigma = self.alpha_sigma(t, x_t)
        x_in = x_t
        if self.objective is Objective.EDM:
            x_in = edm_coefficients(sigma / alpha, cast(float, self.sigma_data))[2] * (x_t / alpha)
        time = self.network_time(t)
        out = self.model(x_in, time, x_self_cond, **kwargs) if self.self_condition else self.model(x_in, time, **kwargs)
        var_interp = None
        if self.learned_variance:
            out, var_interp = out.chunk(2, dim=1)
        return out, var_interp, alpha, sigma

    def _predict(
        self, x_t: Tensor, t: Tensor, x_self_cond: Tensor | None, condition: Condition, drop: Tensor | None = None
    ) -> Prediction:
        """The network's (x̂_0, ε̂[, v]) under the objective, unclipped."""
        out, var_interp, alpha, sigma = self._network(x_t, t, x_self_cond, condition, drop)
        x0, eps = x0_eps_from_output(self.objective, x_t, out, alpha, sigma, self.sigma_data)
        return Prediction(x0=x0, eps=eps, var_interp=var_interp)

    def _clipped(self, pred: Prediction, x_t: Tensor, t: Tensor) -> Prediction:
        """x̂_0 clamped to [−1, 1] and, with rederive_eps, ε̂ recomputed from the clamped x̂_0."""
        x0 = pred.x0.clamp(-1.0, 1.0)
        if not self.rederive_eps:
            return Prediction(x0=x0, eps=pred.eps, var_interp=pred.var_interp)
        alpha, sigma = self.alpha_sigma(t, x_t)
        return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma, var_interp=pred.var_interp)

    def model_predictions(
        self,
        x_t: Tensor,
        t: Tensor,
        x_self_cond: Tensor | None = None,
        clip_x_start: bool = False,
        **condition: Any,
    ) -> Prediction:
        """Run the network and convert its output to (x̂_0, ε̂[, v]) under the objective.

        x_t: (B, C, H, W); t: (B,) int64; ``condition``: what the network takes (classes=, context=, ...). With
        ``clip_x_start``, x̂_0 is clamped to [−1, 1] and ε̂ recomputed from it (kept with rederive_eps=False).
        """
        pred = self._predict(x_t, t, x_self_cond, self.check_condition(condition, x_t.shape[0]))
        return self._clipped(pred, x_t, t) if clip_x_start else pred

    def check_condition(self, condition: Mapping[str, Any], batch_size: int) -> Condition:
        """``condition`` checked against the network's (conditioning.check_condition), class names resolved, on
        this model's device. Raises ValueError naming a missing, unexpected or malformed entry."""
        resolved = dict(condition)
        if "classes" in resolved:
            resolved["classes"] = class_indices(resolved["classes"], self.class_names)
        checked = check_condition(self.condition_spec, resolved, batch_size, self.image_size)
        return {name: value.to(self.device) for name, value in checked.items()}

    def denoiser(
        self,
        clip_denoised: bool | None = None,
        *,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        **condition: Any,
    ) -> Denoiser:
        """A fresh denoiser callable (x_t, t) -> Prediction for the samplers, with the condition bound.

        ``guidance_scale`` s ≠ 1: classifier-free guidance (guidance.py), both branches in one batched network
        call ([x_t; x_t] with the condition and with the nulls); x̂_0 clipping applies to the guided prediction,
        a learned variance comes from the conditional branch. With a self-conditioned network each call gets the
        previous call's x̂_0 (Chen et al. 2022, "Analog Bits", §3): that history lives in this closure, so make a
        new denoiser per sampling run.
        """
        clip = self.clip_denoised if clip_denoised is None else clip_denoised
        if "classes" in condition:  # class names, as sample() takes them
            condition["classes"] = class_indices(condition["classes"], self.class_names)
        batch = next((len(v) for v in condition.values() if isinstance(v, Tensor) and v.ndim), None)
        # Checked now, so errors come before sampling; a condition of scalars (classes=3) is repeated to each call's
        # batch once it is known.
        checked = {batch or 1: self.check_condition(broadcast_condition(condition, batch or 1), batch or 1)}
        guided = self._check_guidance(guidance_scale, guidance_rescale)
        last_x0: list[Tensor | None] = [None]

        def bound(size: int) -> Condition:
            if batch is not None and size != batch:
                raise ValueError(f"the denoiser's condition is for {batch} images, but x_t holds {size}")
            if size not in checked:
                checked[size] = self.check_condition(broadcast_condition(condition, size), size)
            return checked[size]

        def denoise(x_t: Tensor, t: Tensor) -> Prediction:
            cond = bound(x_t.shape[0])
            if guided:
                pred = self._guided(x_t, t, last_x0[0], cond, guidance_scale, guidance_rescale)
            else:
                pred = self._predict(x_t, t, last_x0[0], cond)
            if clip:
                pred = self._clipped(pred, x_t, t)
            if self.self_condition:
                last_x0[0] = pred.x0
            return pred

        return denoise

    def _guided(
        self, x_t: Tensor, t: Tensor, x_self_cond: Tensor | None, condition: Condition, scale: float, rescale: float
    ) -> Prediction:
        """The classifier-free-guided Prediction: one network call on [x_t; x_t], conditional then null."""
        batch = x_t.shape[0]
        if scale == 0.0 and rescale == 0.0:  # ε̃ = ε̂(x_t | ∅): the conditional half would be thrown away
            null = torch.ones(batch, dtype=torch.bool, device=x_t.device)
            return self._predict(x_t, t, x_self_cond, condition, null)
        drop = torch.arange(2 * batch, device=x_t.device) >= batch  # (2B,): the second half takes the nulls
        self_cond = None if x_self_cond is None else x_self_cond.repeat(2, 1, 1, 1)
        both = self._predict(x_t.repeat(2, 1, 1, 1), t.repeat(2), self_cond, repeat_condition(condition, 2), drop)
        var = both.var_interp
        cond = Prediction(both.x0[:batch], both.eps[:batch], None if var is None else var[:batch])
        uncond = Prediction(both.x0[batch:], both.eps[batch:], None if var is None else var[batch:])
        alpha, sigma = self.alpha_sigma(t, x_t)
        return guided_prediction(cond, uncond, x_t, alpha, sigma, scale, rescale)

    def _check_guidance(self, scale: float, rescale: float) -> bool:
        """Whether guidance is on; ValueError when the model cannot be guided, a warning when its null branch was
        never trained."""
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"guidance_rescale must be in [0, 1], got {rescale}")
        if not math.isfinite(scale):
            raise ValueError(f"guidance_scale must be a finite number, got {scale}")
        if scale == 1.0:
            return False
        if not self.condition_spec.droppable:
            raise ValueError(
                f"classifier-free guidance needs a model with classes or a context (num_classes= or "
                f"context_dim=); this one takes {self.condition_spec.describe()}"
            )
        if self.cond_drop_prob == 0.0:
            warnings.warn(
                "guidance_scale != 1 with a network built with cond_drop_prob=0: its null class/context "
                "was never trained, so the unconditional branch is arbitrary",
                UserWarning,
                stacklevel=3,
            )
        return True

    # ----- training ---------------------------------------------------------------------------------------------

    def p_losses(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None, **condition: Any) -> Tensor:
        """Per-sample training loss (B,) at timesteps t (B,) (the process's times, see q_sample) for x_start
        (B, C, H, W) in [−1, 1].

        L_simple (Ho et al. 2020, eq. 14) generalized to the objective and distance (objective 'edm': EDM's
        λ(σ) ‖D − x_0‖², folded into the target, Karras et al. 2022, eq. 8), optionally min-SNR weighted
        (SNR = α_t²/σ_t²) and, with loss_weighting='likelihood', weighted by g(t)²/σ_t² (losses.LossWeighting);
        plus λ·T·L_t^vlb for learned variances (Nichol & Dhariwal 2021, eq. 16). ``condition`` is what the network
        takes; classes and contexts are replaced by their nulls at the rate cond_drop_prob (Ho & Salimans 2021).
        """
        return self._losses(x_start, t, noise, self.check_condition(condition, x_start.shape[0]))

    def _losses(self, x_start: Tensor, t: Tensor, noise: Tensor | None, condition: Condition) -> Tensor:
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)
        drop = None
        if condition and self.cond_drop_prob > 0:
            drop = torch.rand(x_start.shape[0], device=x_start.device) < self.cond_drop_prob
        x_self_cond = None
        if self.self_condition and torch.rand(()) < 0.5:
            with torch.no_grad():
                x_self_cond = self._predict(x_t, t, None, condition, drop).x0.detach()
        out, var_interp, alpha, sigma = self._network(x_t, t, x_self_cond, condition, drop)
        target = target_for(self.objective, x_start, noise, alpha, sigma, self.sigma_data)
        loss = per_sample_loss(self.loss_type, out, target)
        if self.min_snr_loss_weight:
            loss = loss * min_snr_weight(self.snr_at(t), self.objective, self.min_snr_gamma).to(loss.dtype)
        if self.loss_weighting is LossWeighting.LIKELIHOOD:
            loss = loss * likelihood_weight(cast(ContinuousSchedule, self.schedule), t).to(loss.dtype)
        if var_interp is not None:
            x0 = x0_eps_from_output(self.objective, x_t, out.detach(), alpha, sigma)[0]  # stop-grad on the mean
            loss = loss + self.vlb_weight * self.num_timesteps * self.vlb_term(x_start, x_t, t, x0, var_interp)
        return loss

    def vlb_term(self, x_start: Tensor, x_t: Tensor, t: Tensor, pred_x0: Tensor, var_interp: Tensor) -> Tensor:
        """L_t of the variational bound in bits per dimension, (B,), for the learned-range variance (Ho et al. 2020,
        eq. 5; Nichol & Dhariwal 2021, eq. 15): KL to the posterior for t > 0, discretized decoder NLL at t = 0."""
        step = self.posterior_step(t, x_t.ndim)
        model_log_var = reverse_log_variance(VarianceType.LEARNED_RANGE, step.log_beta, step.log_variance, var_interp)
        return vlb_term(x_start, x_t, pred_x0, step, model_log_var, t == 0)

    def forward(self, batch: Batch, **condition: Any) -> Tensor:
        """The training loss (a scalar) for a batch of images (B, C, H, W) in [0, 1]: uniform t (an index for ddpm
        and ncsn, t ~ U(t_min, 1) for the SDEs: ``schedule.sample_times``), Gaussian ε.

        ``condition``: what the network takes (``classes=``, ``context=``, ...). ``batch`` may also be what a
        Trainer collates from (image, label) pairs or dicts (batch.py): the label is ``classes``, and a dict's
        ``label``, ``context``, ``context_mask``, ``cond_image`` and ``cond_level`` entries are those conditions;
        whatever the network does not take is dropped, with a warning naming it (once per model).
        """
        img, extras = split_batch(batch)
        from_batch, dropped = batch_condition(extras, self.condition_spec)
        if dropped and not self._warned_dropped:
            self._warned_dropped = True
            warnings.warn(
                f"this GaussianDiffusion takes {self.condition_spec.describe()}, so the batch's "
                f"{describe_extras(dropped)} is dropped",
                UserWarning,
                stacklevel=2,
            )
        self._check_batch(img)
        checked = self.check_condition({**from_batch, **condition}, img.shape[0])
        t = self.schedule.sample_times(img.shape[0], device=img.device)
        return self._losses(self.normalize(img), t, None, checked).mean()

    def _check_batch(self, img: Tensor) -> None:
        expected = (self.channels, *self.image_size)
        if not isinstance(img, Tensor) or img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(
                f"expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) "
                f"(channels, height, width from the model and image_size), got {tuple(img.shape)}"
            )

    # ----- sampling ---------------------------------------------------------------------------------------------

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
        classes: Any = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cond_image: Tensor | None = None,
        cond_level: Tensor | None = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        classifier: nn.Module | None = None,
        classifier_scale: float = 1.0,
        **options: Any,
    ) -> Tensor:
        """Generate images in [0, 1] (with auto_normalize off: in the data's range, clamped to [−1, 1] only when
        clip_denoised).

        Args:
            batch_size: B.
            sampler: a name from SAMPLERS ('ddpm', 'ddim', 'dpmpp_2m', 'dpmpp_2m_sde', 'heun', 'euler',
                'euler_ancestral', ...); None: the process's default (:meth:`sampler_info`).
            steps: number of timesteps visited (network evaluations, except Heun: 2·steps − 1); None:
                sampling_timesteps.
            generator: draws all noise, for reproducible samples.
            return_all_timesteps: also return the trajectory.
            callback: receives a StepRecord per step; its tensors are in the model's space ([−1, 1]).
            spacing: which timesteps to visit; None: timestep_spacing, or else the sampler's recommendation.
            classes, context, context_mask, cond_image, cond_level: the condition a conditional network takes
                (conditioning.py), for all B images: ``classes`` may be an int, a class name, a sequence of
                either, or a (B,) tensor; a single label (or any entry with a batch of 1) is repeated B times.
            guidance_scale: s of classifier-free guidance (guidance.py): 1 (default) samples the conditional model
                as it is, 0 the unconditional one, s > 1 guides towards the condition.
            guidance_rescale: φ in [0, 1] of Lin et al. 2024 (0: off).
            classifier, classifier_scale: classifier guidance (guidance.classifier_guidance) with a
                NoiseAwareClassifier trained on this model's schedule, towards ``classes`` (required), at scale s:
                ε̂ − s σ_t ∇ log f(y | x_t). Works with unconditional and conditional models (then combined with
                classifier-free guidance).
            options: the sampler's own options (``SAMPLERS[name].options``; None means "not given"): ``eta`` for
                'ddim' (default: ddim_sampling_eta), ``variance`` for 'ddpm' (default: variance_type). An
                option the sampler does not take is a ValueError.
        Returns:
            (B, C, H, W), or (B, S + 1, C, H, W) with return_all_timesteps (x_T first, the sample last).
        """
        info = self.sampler_info(sampler)
        bound = info.bind(options, self.sampler_defaults())
        condition = {"classes": classes, "context": context, "context_mask": context_mask, "cond_image": cond_image,
                     "cond_level": cond_level}  # fmt: skip
        denoiser = self.sampling_denoiser(
            batch_size, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, classifier=classifier,
            classifier_scale=classifier_scale, **condition,
        )  # fmt: skip
        timesteps = self.sampling_times(steps, spacing, info)
        x_T = self.prior_noise((batch_size, self.channels, *self.image_size), generator)
        run = partial(info.fn, denoiser, schedule=self.schedule, **bound)
        return self.run_sampler(run, x_T, timesteps, generator=generator, callback=callback,
                                return_all_timesteps=return_all_timesteps, also_eval=(classifier,))  # fmt: skip

    def sampling_times(
        self, steps: int | None = None, spacing: str | None = None, info: SamplerInfo | None = None
    ) -> list[Time]:
        """The times a sampler visits, decreasing (``schedule.timesteps``): ``steps`` of them (None:
        sampling_timesteps), spaced by ``spacing``, else the model's timestep_spacing, else the sampler's recommended
        spacing (``info.spacing``; an index spacing, 'trailing' or 'leading', becomes 'linspace' in continuous time),
        else 'linspace'. On process 'edm', whose time is σ itself, every recommendation but 'logsnr' becomes
        'karras' (ρ = 7, Karras et al. 2022, eq. 5): uniform steps in σ ∈ [0.002, 80] would waste nearly all of them
        at high noise."""
        chosen = spacing or self.timestep_spacing
        if chosen is None:
            chosen = Spacing.LINSPACE if info is None else info.spacing
            if self._continuous and chosen in (Spacing.TRAILING, Spacing.LEADING):
                chosen = Spacing.LINSPACE
            if self.process is Process.EDM and chosen is not Spacing.LOGSNR:
                chosen = Spacing.KARRAS
        return list(self.schedule.timesteps(self.sampling_timesteps if steps is None else steps, chosen))

    def prior_noise(self, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ N(0, prior_std² I) of the shape given, in the network's dtype on its device: N(0, I) for ddpm, vp and
        subvp, N(0, σ_max² I) for ve, ncsn and edm (Song et al. 2021, §3.4; Karras et al. 2022, Alg. 1)."""
        x = torch.randn(tuple(shape), generator=generator, device=self.device, dtype=self.dtype)
        std = self.schedule.prior_std
        return x if std == 1.0 else x * std

    @property
    def dtype(self) -> torch.dtype:
        """The network's parameter dtype: what samples are drawn in."""
        return next(self.model.parameters()).dtype

    def sampling_denoiser(
        self,
        batch_size: int,
        *,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        classifier: nn.Module | None = None,
        classifier_scale: float = 1.0,
        **condition: Any,
    ) -> Denoiser:
        """The denoiser ``sample`` (and inpainting, img2img) runs: ``condition`` (class names resolved, a single
        entry repeated to ``batch_size``) checked and bound, guided with classifier-free guidance when
        guidance_scale ≠ 1 and with ``classifier`` towards ``classes`` (see ``sample``). ValueError for any
        condition that does not fit ``batch_size`` images, and for a classifier that does not fit this model."""
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
        return classifier_guidance(denoiser, partial(_log_prob, classifier, labels), self.schedule, classifier_scale)

    def _classifier_labels(self, classifier: Any, condition: dict[str, Any], batch_size: int) -> Tensor:
        """The (B,) labels a classifier guides towards, from ``classes`` (names by the classifier's class names),
        after checking that the classifier fits this model."""
        check = getattr(classifier, "check_matches", None)
        if check is None:
            raise ValueError(
                "classifier= must be a NoiseAwareClassifier (classifier.py), trained on this model's noise "
                f"schedule; got a {type(classifier).__name__}"
            )
        check(self)
        if condition.get("classes") is None:
            raise ValueError("classifier guidance needs classes=: the labels the classifier should steer towards")
        names = getattr(classifier, "class_names", None) or self.class_names
        labels = broadcast_condition({"classes": class_indices(condition["classes"], names)}, batch_size)["classes"]
        k = int(classifier.num_classes)
        spec = ConditionSpec(num_classes=k)
        checked = check_condition(spec, {"classes": labels}, batch_size, self.image_size)["classes"]
        device = next(classifier.parameters()).device
        if device != self.device:
            raise ValueError(f"the classifier is on {device} and this model on {self.device}; move it with .to()")
        return checked.to(self.device)

    def run_sampler(
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
        restored after; returns the samples in the caller's range (:meth:`output`), or the trajectory
        (B, S + 1, C, H, W) with ``return_all_timesteps``."""
        trajectory = [x_start] if return_all_timesteps else None

        def on_step(record: StepRecord) -> None:
            if trajectory is not None:
                trajectory.append(record.x_next)
            if callback is not None:
                callback(record)

        with eval_mode(self.model, *also_eval), torch.inference_mode():
            x_0 = run(x_start, timesteps=timesteps, generator=generator, callback=on_step)
        return self.output(torch.stack(trajectory, dim=1) if trajectory is not None else x_0)

    def output(self, x: Tensor) -> Tensor:
        """Samples from the model's space to the caller's: [0, 1] images with auto_normalize; else the data's own
        range, clamped to [−1, 1] only with clip_denoised (a latent model's samples must not be clamped)."""
        if self.auto_normalize:
            return self.unnormalize(x).clamp(0.0, 1.0)
        return x.clamp(-1.0, 1.0) if self.clip_denoised else x

    def sampler_info(self, name: str | None) -> SamplerInfo:
        """The registry entry for ``name``. None: for ddpm, DDIM when sampling_timesteps < timesteps, else DDPM;
        for the other processes process_options.default_sampler ('pc' for vp, subvp, ve and 'annealed_langevin'
        for ncsn once registered; meanwhile 'ddim', and 'ddpm' for ncsn)."""
        if name is None and self.process is Process.DDPM:
            name = "ddim" if self.sampling_timesteps < self.num_timesteps else "ddpm"
        elif name is None:
            name = default_sampler(self.process, SAMPLERS)
        return SAMPLERS[SamplerName(name)]

    def sampler_defaults(self) -> dict[str, Any]:
        """This model's defaults for sampler options: ``eta`` (ddim_sampling_eta), ``variance`` (variance_type)."""
        return {"eta": self.ddim_sampling_eta, "variance": self.variance_type}

    def inpaint(self, images: Tensor, mask: Tensor, **kwargs: Any) -> Tensor:
        """RePaint inpainting (Lugmayr et al. 2022) of ``images`` (B, C, H, W) in [0, 1] where ``mask`` is 0 (1 = keep);
        the options are editing.inpaint's (jump_length, resample, steps, conditions, guidance ...)."""
        return editing.inpaint(self, images, mask, **kwargs)

    def img2img(self, images: Tensor, strength: float, **kwargs: Any) -> Tensor:
        """SDEdit (Meng et al. 2022): ``images`` noised to ``strength`` ∈ [0, 1] of the sampler's steps and sampled
        back; the options are editing.img2img's (sampler, steps, conditions, guidance, sampler options ...)."""
        return editing.img2img(self, images, strength, **kwargs)

    def invert(self, img: Tensor, *, steps: int | None = None, spacing: str | None = None, **condition: Any) -> Tensor:
        """DDIM inversion: images (B, C, H, W) in [0, 1] -> the latent x_T (model space) from which
        ``sample(sampler='ddim', eta=0, steps=steps)``'s update reconstructs them (see samplers.invert_ddim).

        Uses the network without x̂_0 clipping, so that the map stays smooth and invertible; ``condition`` is the
        network's (as for ``sample``).
        """
        self._check_batch(img)
        timesteps = self.sampling_times(steps, spacing, self.sampler_info("ddim"))
        if "classes" in condition:  # class names, as sample() takes them
            condition["classes"] = class_indices(condition["classes"], self.class_names)
        with torch.inference_mode():
            denoiser = self.denoiser(clip_denoised=False, **broadcast_condition(condition, img.shape[0]))
            return invert_ddim(denoiser, self.normalize(img), self.schedule, timesteps)


def _variance_type(variance_type: str | None, learned_variance: bool) -> VarianceType:
    if variance_type is None:
        return VarianceType.LEARNED_RANGE if learned_variance else VarianceType.FIXED_SMALL
    chosen = VarianceType(variance_type)
    if chosen is VarianceType.LEARNED_RANGE and not learned_variance:
        raise ValueError("variance_type 'learned_range' needs a network built with learned_variance=True")
    return chosen


def _log_prob(classifier: nn.Module, labels: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """log f(labels | x_t) (B,) from a NoiseAwareClassifier."""
    return cast(Tensor, classifier.log_prob(x_t, t, labels))  # type: ignore[operator]
