"""From a network to a denoiser: what the network sees, how its output becomes (x̂_0, ε̂), its training target,
self-conditioning, x̂_0 clipping and classifier-free batching, in one place (DESIGN.md, "preconditioning.py";
NVlabs/edm's ``EDMPrecond``, generalised to every objective).

A network maps (x, c_noise, [x_self_cond], **condition) to an output; it knows nothing about noise. A
:class:`Preconditioning` wraps it for a process (processes/): the network's input is c_in·x_t and its time input
c_noise = ``process.network_time(t)``; its output F becomes the prediction by the objective:

=============  ===================================  =====================================  ======================
objective      x̂_0                                  ε̂                                       training target
=============  ===================================  =====================================  ======================
pred_noise     (x_t − σ_t F)/α_t                     F                                       ε
pred_x0        F                                    (x_t − α_t F)/σ_t                       x_0
pred_v         α_t x_t − σ_t F                       σ_t x_t + α_t F                         α_t ε − σ_t x_0
pred_velocity  (σ'_t x_t − σ_t F)/d                  (α_t F − α'_t x_t)/d                    α'_t x_0 + σ'_t ε
edm            c_skip x̃ + c_out F (x̃ = x_t/α_t)      (x̃ − x̂_0)/σ̃                            (x_0 − c_skip x̃)/c_out
=============  ===================================  =====================================  ======================

(d = α_t σ'_t − σ_t α'_t, with the path's time derivatives α'_t, σ'_t; parameterization.py holds the first four
rows; :class:`EDMPreconditioning` the last, with c_in = 1/√(σ̃² + σ_d²),
Karras et al. 2022, Table 1 and eq. 7, in the scaled variables x̃ = x/α, σ̃ = σ/α of their eq. 4.) The samplers see
only the :class:`~.denoiser.Denoiser` that :meth:`Preconditioning.denoiser` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .conditioning import Condition, repeat_condition
from .denoiser import Denoiser, Prediction
from .guidance import guided_prediction
from .parameterization import Coef, Objective, target_for, x0_eps_from_output
from .processes import Schedule, path_coefficients, path_derivatives


class NetworkOutput(NamedTuple):
    """The network's output split into the prediction F and the learned-variance output v (or None), with the path
    coefficients (α_t, σ_t) shaped (B, 1, …) it was evaluated at."""

    out: Tensor
    var_interp: Tensor | None
    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor | None = None  # α'_t, σ'_t: the path's time derivatives, for the objective 'pred_velocity'
    d_sigma: Tensor | None = None


@dataclass(frozen=True)
class Preconditioning:
    """The network → denoiser adapter of the objectives 'pred_noise', 'pred_x0', 'pred_v' and 'pred_velocity'
    (c_in = 1).

    Args:
        objective: what the network predicts.
        self_condition: the network takes the previous x̂_0 as ``x_self_cond`` (Chen et al. 2022, "Analog Bits").
        learned_variance: the network's output has 2·C channels: F, then v ∈ [−1, 1] of Nichol & Dhariwal 2021,
            eq. 15.
        clip_denoised: clamp x̂_0 to [−1, 1] when sampling (:meth:`clipped`).
        rederive_eps: with clipping, recompute ε̂ = (x_t − α_t x̂_0)/σ_t from the clamped x̂_0 (True: GLIDE's and
            denoising-diffusion-pytorch's DDIM) or keep the network's ε̂ (False: diffusers' DDIMScheduler).
    """

    objective: Objective = Objective.PRED_NOISE
    self_condition: bool = False
    learned_variance: bool = False
    clip_denoised: bool = True
    rederive_eps: bool = True

    # ----- the network's input and output ---------------------------------------------------------------------

    def network_input(self, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """c_in·x_t: the network sees x_t itself (EDM scales it)."""
        return x_t

    def prediction(self, x_t: Tensor, output: NetworkOutput) -> Prediction:
        """(x̂_0, ε̂[, v]) from the network's output under the objective, unclipped."""
        x0, eps = x0_eps_from_output(
            self.objective, x_t, output.out, output.alpha, output.sigma, output.d_alpha, output.d_sigma
        )
        return Prediction(x0=x0, eps=eps, var_interp=output.var_interp)

    def target(
        self,
        x_start: Tensor,
        noise: Tensor,
        alpha: Coef,
        sigma: Coef,
        d_alpha: Coef | None = None,
        d_sigma: Coef | None = None,
    ) -> Tensor:
        """The regression target of the network's output F for x_t = α x_0 + σ ε (the table above; 'pred_velocity'
        needs the path's derivatives ``d_alpha``, ``d_sigma``)."""
        return target_for(self.objective, x_start, noise, alpha, sigma, d_alpha, d_sigma)

    def network_output(
        self,
        network: nn.Module,
        schedule: Schedule,
        x_t: Tensor,
        t: Tensor,
        x_self_cond: Tensor | None,
        condition: Condition,
        drop: Tensor | None = None,
    ) -> NetworkOutput:
        """Run the network at times t (B,) on x_t (B, C, H, W) with a checked ``condition``; ``drop`` (B,) bool asks
        for the null class/context. Its time input is ``schedule.network_time(t)`` (floating values as float32)."""
        kwargs: dict[str, Any] = dict(condition)
        if drop is not None:
            kwargs["drop"] = drop
        alpha, sigma = path_coefficients(schedule, t, x_t)
        time = schedule.network_time(t)
        time = time.float() if time.is_floating_point() else time
        x_in = self.network_input(x_t, alpha, sigma)
        out = network(x_in, time, x_self_cond, **kwargs) if self.self_condition else network(x_in, time, **kwargs)
        var_interp = None
        if self.learned_variance:
            out, var_interp = out.chunk(2, dim=1)
        if self.objective is Objective.PRED_VELOCITY:
            return NetworkOutput(out, var_interp, alpha, sigma, *path_derivatives(schedule, t, x_t))
        return NetworkOutput(out, var_interp, alpha, sigma)

    def predict(
        self,
        network: nn.Module,
        schedule: Schedule,
        x_t: Tensor,
        t: Tensor,
        x_self_cond: Tensor | None,
        condition: Condition,
        drop: Tensor | None = None,
    ) -> Prediction:
        """The network's prediction at (x_t, t), unclipped."""
        return self.prediction(x_t, self.network_output(network, schedule, x_t, t, x_self_cond, condition, drop))

    def clipped(self, pred: Prediction, x_t: Tensor, alpha: Coef, sigma: Coef) -> Prediction:
        """x̂_0 clamped to [−1, 1] and, with rederive_eps, ε̂ recomputed from the clamped x̂_0."""
        x0 = pred.x0.clamp(-1.0, 1.0)
        eps = (x_t - alpha * x0) / sigma if self.rederive_eps else pred.eps
        return Prediction(x0=x0, eps=eps, var_interp=pred.var_interp)

    # ----- training -------------------------------------------------------------------------------------------

    def training_output(
        self,
        network: nn.Module,
        schedule: Schedule,
        x_t: Tensor,
        t: Tensor,
        condition: Condition,
        cond_drop_prob: float,
    ) -> NetworkOutput:
        """The network's output for the training loss: classes and contexts replaced by their nulls at the rate
        ``cond_drop_prob`` (Ho & Salimans 2021); with self-conditioning, half the time a first no-grad pass gives
        x̂_0 as the input of the second (Chen et al. 2022, §3)."""
        drop = None
        if condition and cond_drop_prob > 0:
            drop = torch.rand(x_t.shape[0], device=x_t.device) < cond_drop_prob
        x_self_cond = None
        if self.self_condition and torch.rand(()) < 0.5:
            with torch.no_grad():
                x_self_cond = self.predict(network, schedule, x_t, t, None, condition, drop).x0.detach()
        return self.network_output(network, schedule, x_t, t, x_self_cond, condition, drop)

    # ----- sampling -------------------------------------------------------------------------------------------

    def guided(
        self,
        network: nn.Module,
        schedule: Schedule,
        x_t: Tensor,
        t: Tensor,
        x_self_cond: Tensor | None,
        condition: Condition,
        scale: float,
        rescale: float,
    ) -> Prediction:
        """The classifier-free-guided prediction (guidance.guided_prediction): one network call on [x_t; x_t], the
        conditional half then the null half; the learned variance from the conditional half."""
        batch = x_t.shape[0]
        if scale == 0.0 and rescale == 0.0:  # ε̃ = ε̂(x_t | ∅): the conditional half would be thrown away
            null = torch.ones(batch, dtype=torch.bool, device=x_t.device)
            return self.predict(network, schedule, x_t, t, x_self_cond, condition, null)
        drop = torch.arange(2 * batch, device=x_t.device) >= batch  # (2B,): the second half takes the nulls
        self_cond = None if x_self_cond is None else x_self_cond.repeat(2, 1, 1, 1)
        both = self.predict(
            network, schedule, x_t.repeat(2, 1, 1, 1), t.repeat(2), self_cond, repeat_condition(condition, 2), drop
        )
        var = both.var_interp
        cond = Prediction(both.x0[:batch], both.eps[:batch], None if var is None else var[:batch])
        uncond = Prediction(both.x0[batch:], both.eps[batch:], None if var is None else var[batch:])
        alpha, sigma = path_coefficients(schedule, t, x_t)
        return guided_prediction(cond, uncond, x_t, alpha, sigma, scale, rescale)

    def denoiser(
        self,
        network: nn.Module,
        schedule: Schedule,
        condition_for: Callable[[int], Condition],
        *,
        clip: bool | None = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
    ) -> Denoiser:
        """A fresh denoiser (x_t, t) -> Prediction for the samplers; ``condition_for(B)`` gives the checked condition
        for a batch of B. guidance_scale ≠ 1 (or a rescale) guides with both branches in one batched call; x̂_0
        clipping (default ``clip_denoised``) applies to the guided prediction. With a self-conditioned network each
        call gets the previous call's x̂_0: that history lives in this closure, so make a new denoiser per run."""
        clip = self.clip_denoised if clip is None else clip
        guided = guidance_scale != 1.0
        last_x0: list[Tensor | None] = [None]

        def denoise(x_t: Tensor, t: Tensor) -> Prediction:
            condition = condition_for(x_t.shape[0])
            if guided:
                pred = self.guided(network, schedule, x_t, t, last_x0[0], condition, guidance_scale, guidance_rescale)
            else:
                pred = self.predict(network, schedule, x_t, t, last_x0[0], condition)
            if clip:
                pred = self.clipped(pred, x_t, *path_coefficients(schedule, t, x_t))
            if self.self_condition:
                last_x0[0] = pred.x0
            return pred

        return denoise


@dataclass(frozen=True)
class EDMPreconditioning(Preconditioning):
    """EDM's preconditioning (Karras et al. 2022, Table 1 and eq. 7): D(x̃; σ̃) = c_skip x̃ + c_out F(c_in x̃; c_noise),
    in the scaled variables x̃ = x_t/α, σ̃ = σ/α (eq. 4; x and σ themselves on EDM's process, α = 1); c_noise is
    the process's network time (¼ ln σ on EDM's). The target F_target = (x_0 − c_skip x̃)/c_out makes ‖F − F_target‖²
    EDM's λ(σ̃)‖D − x_0‖² with λ = 1/c_out² (:func:`edm_loss_weight`), so 'l2' on F is EDM's loss.

    Args:
        sigma_data: σ_d, the data's standard deviation (0.5 in EDM): the c's make the network's input c_in x̃ and
            its ideal target F* of unit variance when the data's spread is σ_d (App. B.6).
    """

    objective: Objective = Objective.EDM
    sigma_data: float = 0.5

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma_data, (int, float)) and 0 < self.sigma_data < float("inf")):
            raise ValueError(
                f"sigma_data must be a finite number > 0 (the data's standard deviation), got {self.sigma_data}"
            )

    def network_input(self, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        return edm_coefficients(sigma / alpha, self.sigma_data)[2] * (x_t / alpha)

    def prediction(self, x_t: Tensor, output: NetworkOutput) -> Prediction:
        x_tilde, sigma_tilde = x_t / output.alpha, output.sigma / output.alpha
        c_skip, c_out, _ = edm_coefficients(sigma_tilde, self.sigma_data)
        x0 = c_skip * x_tilde + c_out * output.out
        return Prediction(x0=x0, eps=(x_tilde - x0) / sigma_tilde, var_interp=output.var_interp)

    def target(
        self,
        x_start: Tensor,
        noise: Tensor,
        alpha: Coef,
        sigma: Coef,
        d_alpha: Coef | None = None,
        d_sigma: Coef | None = None,
    ) -> Tensor:
        sigma_tilde = sigma / alpha
        c_skip, c_out, _ = edm_coefficients(sigma_tilde, self.sigma_data)
        return (x_start - c_skip * (x_start + sigma_tilde * noise)) / c_out


def edm_coefficients(sigma: Coef, sigma_data: float) -> tuple[Coef, Coef, Coef]:
    """(c_skip, c_out, c_in) of EDM's preconditioning at noise level σ (Karras et al. 2022, Table 1 and eq. 7):
    c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²), with σ_d = ``sigma_data``."""
    total = sigma**2 + sigma_data**2
    root = torch.sqrt(total) if isinstance(total, Tensor) else total**0.5
    return sigma_data**2 / total, sigma * sigma_data / root, 1 / root


def edm_loss_weight(sigma: Coef, sigma_data: float) -> Coef:
    """λ(σ) = (σ² + σ_d²)/(σ σ_d)² = 1/c_out² (Karras et al. 2022, Table 1): EDM's weight on ‖D − x_0‖², folded into
    :meth:`EDMPreconditioning.target`."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def make_preconditioning(
    objective: Objective,
    sigma_data: float | None = None,
    *,
    self_condition: bool = False,
    learned_variance: bool = False,
    clip_denoised: bool = True,
    rederive_eps: bool = True,
) -> Preconditioning:
    """The preconditioning of ``objective``: :class:`EDMPreconditioning` for 'edm' (``sigma_data`` required), else
    :class:`Preconditioning`, with the flags of :class:`Preconditioning`."""
    if objective is Objective.EDM:
        if sigma_data is None:
            raise ValueError("objective 'edm' needs sigma_data (the EDM process's option)")
        return EDMPreconditioning(
            self_condition=self_condition,
            learned_variance=learned_variance,
            clip_denoised=clip_denoised,
            rederive_eps=rederive_eps,
            sigma_data=sigma_data,
        )
    return Preconditioning(objective, self_condition, learned_variance, clip_denoised, rederive_eps)
