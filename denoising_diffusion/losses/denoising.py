"""The denoising loss: a training-time distribution, a distance, loss weightings and the hybrid VLB term together
(EDM's loss objects, NVlabs/edm ``training/loss.py``, generalised): L = E_t λ(t) d(F(x_t, t), F_target) (Ho et al.
2020, eq. 14 as L_simple, with the objective's target, preconditioning.py), plus λ_vlb·T·L_t^vlb for a network with
learned variances (Nichol & Dhariwal 2021, eq. 16).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..conditioning import Condition
from ..parameterization import Objective
from ..preconditioning import Preconditioning
from ..processes import path_coefficients, q_sample
from ..variance import VarianceType, reverse_log_variance
from .distance import LossType, per_sample_loss
from .times import TimeDistribution, UniformTimes
from .vlb import vlb_term
from .weighting import Weighting


@dataclass(frozen=True)
class DenoisingLoss:
    """Per-sample denoising losses of a network on a process.

    Args:
        distance: d of the network's output and its target ('l1', 'l2', 'huber').
        weightings: λ(t) factors, multiplied (none: the objective's own loss).
        times: the training-time distribution.
        vlb_weight: λ_vlb of the hybrid loss, for a network with learned variances (discrete ddpm only).
    """

    distance: LossType = LossType.L2
    weightings: tuple[Weighting, ...] = ()
    times: TimeDistribution = field(default_factory=UniformTimes)
    vlb_weight: float = 0.001

    def check(self, schedule_class: type, objective: Objective, learned_variance: bool) -> None:
        """ValueError for a weighting that does not fit the process or objective, or learned variances off the
        discrete ddpm chain (their VLB term needs its posterior tables)."""
        for weighting in self.weightings:
            weighting.check(schedule_class, objective)
        if learned_variance and not hasattr(schedule_class, "posterior_at"):
            raise ValueError(
                f"learned variances and their VLB term are defined on the discrete ddpm chain; process "
                f"{getattr(schedule_class, 'name', '?')!r} needs a network built with learned_variance=False"
            )

    def per_sample(
        self,
        network: nn.Module,
        preconditioning: Preconditioning,
        schedule: Any,
        x_start: Tensor,
        t: Tensor,
        noise: Tensor | None,
        condition: Condition,
        cond_drop_prob: float = 0.0,
    ) -> Tensor:
        """(B,) losses for x_start (B, C, H, W) in the model's space at times t (B,) (``noise`` ε: drawn when
        None), x_t = α_t x_0 + σ_t ε; ``condition`` checked."""
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = q_sample(schedule, x_start, t, noise)
        alpha, sigma = path_coefficients(schedule, t, x_start)
        output = preconditioning.training_output(network, schedule, x_t, t, condition, cond_drop_prob)
        target = preconditioning.target(x_start, noise, alpha, sigma, output.d_alpha, output.d_sigma)
        loss = per_sample_loss(self.distance, output.out, target)
        for weighting in self.weightings:
            weight = weighting.weight(schedule, t, preconditioning.objective)
            if weight is not None:
                loss = loss * weight.to(loss.dtype)
        if output.var_interp is not None:  # stop-grad on the mean (Nichol & Dhariwal 2021, §3.1)
            x0 = preconditioning.prediction(x_t, output._replace(out=output.out.detach())).x0
            hybrid = hybrid_vlb_term(schedule, x_start, x_t, t, x0, output.var_interp)
            loss = loss + self.vlb_weight * schedule.num_timesteps * hybrid
        return loss


def hybrid_vlb_term(
    schedule: Any, x_start: Tensor, x_t: Tensor, t: Tensor, pred_x0: Tensor, var_interp: Tensor
) -> Tensor:
    """L_t of the variational bound in bits per dimension, (B,), for the learned-range variance (Ho et al. 2020,
    eq. 5; Nichol & Dhariwal 2021, eq. 15) at indices t (B,) of a discrete process: KL to the posterior for t > 0,
    discretized decoder NLL at t = 0. x_start, x_t, pred_x0, var_interp: (B, C, H, W)."""
    step = schedule.posterior_at(t).shaped_like(x_t)
    model_log_var = reverse_log_variance(VarianceType.LEARNED_RANGE, step.log_beta, step.log_variance, var_interp)
    return vlb_term(x_start, x_t, pred_x0, step, model_log_var, t == 0)
