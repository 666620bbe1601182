"""The flow processes (processes/flow.py) and the velocity objective, against closed forms and finite differences.

* The path's time derivatives and its SDE: α'_t, σ'_t, f(t) = d log α/dt and g(t)² = dσ²/dt − 2fσ² (Kingma et al.
  2021, eq. 30) against central differences of α_t and σ_t alone (h = 1e-6: truncation O(h²) and rounding
  O(1e-16/h) leave about 1e-9, checked to 1e-6 relative).
* The conversions velocity ↔ (x_0, ε) ↔ score on a general path (random α, σ, α', σ') and the straight path's own
  identities (u = ε − x_0, x̂_0 = x_t − t û, ε̂ = x_t + (1 − t) û), and the same conversions through
  GaussianDiffusion's preconditioning and loss.
* The logit-normal training times (Esser et al. 2024, §3.1): logit(t) ~ N(m, s²) by a Kolmogorov-Smirnov test.
* Bad input: another process's option, 'pred_v' on the straight path, 'pred_velocity' off the flow paths, t_max = 1,
  annealed Langevin on the straight path, logit-normal times on EDM's σ, min-SNR weights on the velocity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion import GaussianDiffusion, Unet, load_pipeline
from denoising_diffusion.likelihood import ode_bits_per_dim
from denoising_diffusion.losses import LogitNormalTimes, LogNormalSigma
from denoising_diffusion.parameterization import (
    eps_from_velocity,
    score_from_velocity,
    velocity_from_x0_eps,
    x0_from_velocity,
)
from denoising_diffusion.processes import CosineFlowSchedule, FlowSchedule
from denoising_diffusion.samplers import SAMPLERS, sample_annealed_langevin

F64 = torch.float64
PROCESSES = {"flow": FlowSchedule(), "flow_cosine": CosineFlowSchedule()}


def unet(**kwargs: Any) -> Unet:
    return Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, **kwargs)


# ----- the path and its SDE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROCESSES)
def test_path_derivatives_and_sde_match_finite_differences(name: str) -> None:
    process = PROCESSES[name]
    t = torch.linspace(0.01, 0.99, 25, dtype=F64)
    h = 1e-6
    (a_up, s_up), (a_down, s_down) = process.alpha_sigma_at(t + h), process.alpha_sigma_at(t - h)
    alpha, sigma = process.alpha_sigma_at(t)
    d_alpha, d_sigma = process.path_derivatives_at(t)
    torch.testing.assert_close(d_alpha, (a_up - a_down) / (2 * h), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(d_sigma, (s_up - s_down) / (2 * h), rtol=1e-6, atol=1e-8)
    f_fd = (a_up.log() - a_down.log()) / (2 * h)
    g2_fd = (s_up**2 - s_down**2) / (2 * h) - 2 * f_fd * sigma**2
    f, g = torch.tensor([process.sde(float(s)) for s in t], dtype=F64).T
    torch.testing.assert_close(f, f_fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(g**2, g2_fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(process.diffusion_sq_at(t), g2_fd, rtol=1e-6, atol=1e-8)
    if name == "flow":  # the module's table: α = 1 − t, σ = t, f = −1/(1 − t), g² = 2t/(1 − t)
        torch.testing.assert_close(torch.stack([alpha, sigma]), torch.stack([1 - t, t]))
        torch.testing.assert_close(f, -1 / (1 - t))
        torch.testing.assert_close(g**2, 2 * t / (1 - t))


@pytest.mark.parametrize("name", PROCESSES)
def test_time_of_a_noise_level_inverts_the_path(name: str) -> None:
    """The closed-form inverse of σ̃ = σ/α (sigmoid of log σ̃; (2/π) atan σ̃) against the path, clamped at t_max."""
    process = PROCESSES[name]
    t = torch.linspace(0.002, 0.998, 30, dtype=F64)
    alpha, sigma = process.alpha_sigma_at(t)
    torch.testing.assert_close(process.time_of_log_sigma_tilde((sigma / alpha).log()), t)
    assert process.time_of_sigma_tilde(1e6) == process.t_max == 0.999


# ----- the velocity objective -------------------------------------------------------------------------------------


def test_velocity_conversions_round_trip_on_a_general_path() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(6, 3, 4, 4, generator=g, dtype=F64) for _ in range(2))
    alpha, sigma = (0.05 + torch.rand(6, 1, 1, 1, generator=g, dtype=F64) for _ in range(2))
    d_alpha = -torch.rand(6, 1, 1, 1, generator=g, dtype=F64) - 0.1  # α decreasing, σ increasing: det > 0
    d_sigma = torch.rand(6, 1, 1, 1, generator=g, dtype=F64) + 0.1
    x_t = alpha * x0 + sigma * eps
    u = velocity_from_x0_eps(x0, eps, d_alpha, d_sigma)
    torch.testing.assert_close(u, d_alpha * x0 + d_sigma * eps)
    torch.testing.assert_close(x0_from_velocity(x_t, u, alpha, sigma, d_alpha, d_sigma), x0)
    torch.testing.assert_close(eps_from_velocity(x_t, u, alpha, sigma, d_alpha, d_sigma), eps)
    torch.testing.assert_close(score_from_velocity(x_t, u, alpha, sigma, d_alpha, d_sigma), -eps / sigma)


def test_the_straight_paths_velocity_is_noise_minus_data() -> None:
    process = FlowSchedule()
    g = torch.Generator().manual_seed(1)
    x0, eps = (torch.randn(5, 2, 3, 3, generator=g, dtype=F64) for _ in range(2))
    t = torch.tensor([0.001, 0.2, 0.5, 0.8, 0.999], dtype=F64).view(-1, 1, 1, 1)
    alpha, sigma = process.alpha_sigma_at(t)
    d_alpha, d_sigma = process.path_derivatives_at(t)
    x_t = alpha * x0 + sigma * eps
    u = velocity_from_x0_eps(x0, eps, d_alpha, d_sigma)
    torch.testing.assert_close(u, eps - x0)
    torch.testing.assert_close(x0_from_velocity(x_t, u, alpha, sigma, d_alpha, d_sigma), x_t - t * u)
    torch.testing.assert_close(eps_from_velocity(x_t, u, alpha, sigma, d_alpha, d_sigma), x_t + (1 - t) * u)


class FixedOutput(nn.Module):
    """A 'network' that returns a given tensor (B, C, H, W) whatever its input: the preconditioning's conversions
    (and the loss's target) isolated."""

    def __init__(self, out: Tensor) -> None:
        super().__init__()
        self.out, self.channels = out, out.shape[1] if out.ndim == 4 else 1
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        return self.out + 0 * self.weight


@pytest.mark.parametrize("name", PROCESSES)
def test_gaussian_diffusion_trains_and_predicts_the_velocity(name: str) -> None:
    """GaussianDiffusion(process=flow) defaults to 'pred_velocity'; a network that outputs the true velocity
    α'_t x_0 + σ'_t ε (written out here: ε − x_0, or (π/2)(−sin, cos)(πt/2)·(x_0, ε)) has zero loss and predicts x_0
    and ε exactly."""
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0.01, 0.3, 0.7, 0.99], dtype=F64)
    c = t.float().view(-1, 1, 1, 1)
    if name == "flow":
        alpha, sigma, velocity = 1 - c, c, eps - x0
    else:
        alpha, sigma = torch.cos(math.pi * c / 2), torch.sin(math.pi * c / 2)
        velocity = math.pi / 2 * (-sigma * x0 + alpha * eps)
    d = GaussianDiffusion(FixedOutput(velocity), image_size=8, process=name, clip_denoised=False)
    assert d.objective.value == "pred_velocity" and d.sampler_info(None).name == "euler"
    assert d.p_losses(x0, t, eps).abs().max() < 1e-10
    pred = d.model_predictions(alpha * x0 + sigma * eps, t)
    torch.testing.assert_close(pred.x0, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(pred.eps, eps, atol=1e-5, rtol=0)


# ----- logit-normal training times --------------------------------------------------------------------------------


def ks_normal(u: Tensor, mean: float, std: float) -> float:
    """sup |F_n(u) − Φ((u − mean)/std)| of the sample u (n,): the Kolmogorov-Smirnov statistic."""
    u = u.sort().values
    n = len(u)
    cdf = 0.5 * (1 + torch.erf((u - mean) / (std * math.sqrt(2))))
    above = torch.arange(1, n + 1, dtype=F64) / n - cdf
    below = cdf - torch.arange(0, n, dtype=F64) / n
    return float(torch.maximum(above, below).max())


N_TIMES = 20000
KS_1PCT = 1.63 / math.sqrt(N_TIMES)  # the statistic's 1% critical value (Kolmogorov's limit law)


@pytest.mark.parametrize("location,scale", [(0.0, 1.0), (0.8, 0.5)])
def test_logit_normal_times_match_their_density(location: float, scale: float) -> None:
    """logit(t) of N draws is N(m, s²) by Kolmogorov-Smirnov at the 1% level (Esser et al. 2024, eq. 19); on the
    straight path, EDM's log-normal σ̃ with (P_mean, P_std) = (m, s) is the same law (logit t = ln σ̃ there)."""
    torch.manual_seed(0)
    flow = FlowSchedule()
    t = LogitNormalTimes(location, scale).sample(flow, N_TIMES, "cpu")
    assert t.dtype == F64 and bool(((t >= flow.t_min) & (t <= flow.t_max)).all())
    assert ks_normal(torch.logit(t), location, scale) < KS_1PCT
    t_edm = LogNormalSigma(location, scale).sample(flow, N_TIMES, "cpu")
    assert ks_normal(torch.logit(t_edm), location, scale) < KS_1PCT


def test_logit_normal_is_the_training_times_a_flow_model_is_told() -> None:
    d = GaussianDiffusion(unet(), image_size=8, process="flow", training_times="logit_normal")
    assert isinstance(d.loss.times, LogitNormalTimes)
    assert d.config["training_times"] == {"kind": "logit_normal", "location": 0.0, "scale": 1.0}
    assert GaussianDiffusion(unet(), **d.config).loss.times.config == d.loss.times.config
    assert torch.isfinite(d(torch.rand(2, 3, 8, 8)))


# ----- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(process="flow", process_options={"sigma_max": 80.0}), "process 'flow' takes no option 'sigma_max'"),
        (dict(process="flow", objective="pred_v"), "objective 'pred_v' .* variance-preserving paths"),
        (dict(process="vp", objective="pred_velocity"), "process 'vp' does not declare"),
        (dict(process="flow", process_options={"t_max": 1.0}), "need 0 < t_min < t_max < 1"),
        (dict(process="flow", objective="edm"), "objective 'edm' .* goes with process 'edm' and only with it"),
        (dict(process="flow", min_snr_loss_weight=True), "min_snr_loss_weight .* 'pred_velocity'"),
    ],
)
def test_bad_flow_options_are_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GaussianDiffusion(unet(), image_size=8, **kwargs)


def test_pred_v_is_allowed_on_the_variance_preserving_cosine_path() -> None:
    d = GaussianDiffusion(unet(), image_size=8, process="flow_cosine", objective="pred_v")
    assert d.objective.value == "pred_v"


def test_logit_normal_times_refuse_a_process_whose_time_is_not_in_0_1() -> None:
    d = GaussianDiffusion(unet(), image_size=8, process="edm", training_times="logit_normal")
    with pytest.raises(ValueError, match="'logit_normal' draws t = sigmoid.* not 'edm'"):
        d(torch.rand(2, 3, 8, 8))


def test_annealed_langevin_is_refused_on_the_straight_path_only() -> None:
    info = SAMPLERS["annealed_langevin"]
    assert not info.serves(FlowSchedule()) and info.serves(CosineFlowSchedule())
    flow = FlowSchedule()
    with pytest.raises(ValueError, match="'annealed_langevin' cannot sample the flow process: .* first order"):
        sample_annealed_langevin(lambda x, t: None, torch.zeros(1, 2, 1, 1), flow, flow.timesteps(3))  # type: ignore
    d = GaussianDiffusion(unet(), image_size=8, process="flow")
    with pytest.raises(ValueError, match="cannot sample the flow process"):
        d.sample(1, sampler="annealed_langevin", steps=2)


# ----- a trained model ----------------------------------------------------------------------------------------------


def test_a_flow_model_trains_saves_reloads_samples_and_has_a_likelihood(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 8, 8, generator=g) for _ in range(8)]
    d = GaussianDiffusion(unet(), image_size=8, process="flow", sampling_timesteps=3)
    make_trainer(d, images, tmp_path / "r", train_num_steps=2, save_and_sample_every=2).train()
    loaded = load_pipeline(tmp_path / "r" / "model-1.pt")
    assert isinstance(loaded.schedule, FlowSchedule) and loaded.config == d.config
    for sampler in ("euler", "heun", "dpmpp_2m", "ddpm", "ode"):
        x = loaded.sample(2, sampler=sampler, steps=3, generator=torch.Generator().manual_seed(1))
        assert x.shape == (2, 3, 8, 8) and bool(torch.isfinite(x).all()), sampler
    bpd = ode_bits_per_dim(loaded, torch.stack(images[:2]), steps=4)
    assert bpd.shape == (2,) and bool(torch.isfinite(bpd).all())
