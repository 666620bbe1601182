"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models") against closed forms:
the process (time is σ), the preconditioning and its loss weighting, the log-normal σ draw, the stochastic Heun
sampler (Alg. 2) as options of ``heun``, and EDM through GaussianDiffusion, the Trainer, the pipeline and the CLI.

The Gaussian oracle: data x_0 ~ N(m, s² I) (elementwise) on x = x_0 + σ ε (α = 1) has E[x_0 | x] = m + s²/(s² + σ²)
(x − m) and Var(x_0 | x) = s² σ²/(s² + σ²) per element. With s = σ_data, c_skip = s²/(s² + σ²), so F* =
(D* − c_skip x)/c_out = (1 − c_skip) m / c_out, and the EDM loss of the exact denoiser is λ(σ) Var(x_0 | x) = 1 per
element at every σ.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from oracle import GaussianMixture
from test_score_samplers import check_mixture
from torch import Tensor, nn
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.cli import main
from denoising_diffusion.data.datasets import get_builtin_dataset
from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.losses import LogNormalSigma
from denoising_diffusion.nn import Unet
from denoising_diffusion.parameterization import Objective, append_dims
from denoising_diffusion.pipeline import build, load_pipeline, save_pipeline, spec_of
from denoising_diffusion.preconditioning import EDMPreconditioning, NetworkOutput, edm_coefficients, edm_loss_weight
from denoising_diffusion.processes import CLEAN, EDMSchedule, NoiseSchedule, VPSchedule, index_of_sigma_tilde
from denoising_diffusion.samplers import SAMPLERS, SamplerName, sample_heun
from denoising_diffusion.samplers.common import heun_step, time_batch, time_pairs

F64 = torch.float64
SIGMA_DATA = 0.5
SIGMAS = [0.002, 0.05, 0.5, 2.0, 80.0]
MEAN = 0.3  # the oracle's data N(MEAN, SIGMA_DATA² I)


# ----- the process: time is σ -----------------------------------------------------------------------------------------


def test_the_edm_schedule_is_sigma_as_time() -> None:
    """α = 1, σ_t = t; g(t)² = dσ²/dt = 2t (checked by a central difference); f = 0; prior N(0, σ_max² I); the network
    sees c_noise = ¼ ln σ; the range is [σ_min, σ_max] and CLEAN is (1, 0)."""
    schedule = EDMSchedule()
    assert (schedule.t_min, schedule.t_max, schedule.prior_std) == (0.002, 80.0, 80.0)
    assert schedule.config == {"sigma_min": 0.002, "sigma_max": 80.0}  # the path only (σ_data, P_mean, P_std: below)
    assert EDMSchedule.option_defaults() == {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "p_mean": -1.2,
                                             "p_std": 1.2}  # fmt: skip
    for t in SIGMAS:
        assert schedule.alpha_sigma(t) == (1.0, t)
        f, g = schedule.sde(t)
        h = 1e-6 * t
        assert f == 0.0 and g**2 == pytest.approx(((t + h) ** 2 - (t - h) ** 2) / (2 * h), rel=1e-8)
    assert schedule.alpha_sigma(CLEAN) == (1.0, 0.0)
    t = torch.tensor(SIGMAS, dtype=F64)
    assert torch.allclose(schedule.network_time(t), 0.25 * t.log(), rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="outside"):
        schedule.alpha_sigma(81.0)


def test_the_default_grid_is_karras_eq_5_from_sigma_max_to_sigma_min() -> None:
    """σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ρ = 7 (Karras et al. 2022, eq. 5), not capped at
    80 (σ_max = 100 here); the time of a σ̃ is σ itself."""
    schedule = EDMSchedule(sigma_max=100.0)
    grid = schedule.timesteps(18, "karras")
    i = torch.arange(18, dtype=F64) / 17
    expected = (100.0 ** (1 / 7) + i * (0.002 ** (1 / 7) - 100.0 ** (1 / 7))) ** 7
    assert grid == pytest.approx(expected.tolist(), rel=1e-12)
    assert schedule.time_of_sigma_tilde(3.7) == pytest.approx(3.7, rel=1e-15)
    assert schedule.time_of_sigma_tilde(1e3) == 100.0 and schedule.time_of_sigma_tilde(1e-5) == 0.002  # clamped


def test_training_draws_log_normal_sigma() -> None:
    """ln σ ~ N(P_mean, P_std²) (Table 1): mean and std of ln σ within 4 standard errors (n = 40 000), untruncated
    (times beyond σ_max kept), from the loss's distribution and through GaussianDiffusion's process options."""
    torch.manual_seed(0)
    log_sigma = LogNormalSigma(p_mean=-0.4, p_std=0.9).sample(EDMSchedule(), 40_000, "cpu").log()
    d = tiny(process_options={"p_mean": -0.4, "p_std": 0.9})
    assert isinstance(d.loss.times, LogNormalSigma) and (d.loss.times.p_mean, d.loss.times.p_std) == (-0.4, 0.9)
    assert float(LogNormalSigma(p_mean=6.0, p_std=0.1).sample(EDMSchedule(), 10, "cpu").min()) > 80.0
    n = len(log_sigma)
    assert abs(float(log_sigma.mean()) + 0.4) < 4 * 0.9 / math.sqrt(n)
    assert abs(float(log_sigma.std()) / 0.9 - 1) < 4 / math.sqrt(2 * n)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sigma_min": 1.0, "sigma_max": 1.0}, "need 0 < sigma_min < sigma_max"),
        ({"sigma_min": 5.0, "sigma_max": 2.0}, "need 0 < sigma_min < sigma_max"),
        ({"sigma_data": 0.0}, "sigma_data must be a finite number > 0"),
        ({"sigma_data": -1.0}, "sigma_data must be a finite number > 0"),
        ({"p_std": 0.0}, "p_std > 0"),
    ],
)
def test_bad_process_options(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(process_options=options)
    if "sigma_data" in options:
        with pytest.raises(ValueError, match=message):
            EDMPreconditioning(sigma_data=options["sigma_data"])
    elif "p_std" in options:
        with pytest.raises(ValueError, match=message):
            LogNormalSigma(**options)
    else:
        with pytest.raises(ValueError, match=message):
            EDMSchedule(**options)


# ----- the preconditioning and the loss weighting -----------------------------------------------------------------


def test_the_coefficients_are_table_1() -> None:
    for sigma in SIGMAS:
        c_skip, c_out, c_in = edm_coefficients(sigma, SIGMA_DATA)
        total = sigma**2 + SIGMA_DATA**2
        assert c_skip == pytest.approx(SIGMA_DATA**2 / total, rel=1e-14)
        assert c_out == pytest.approx(sigma * SIGMA_DATA / math.sqrt(total), rel=1e-14)
        assert c_in == pytest.approx(1 / math.sqrt(total), rel=1e-14)
        assert edm_loss_weight(sigma, SIGMA_DATA) == pytest.approx(1 / c_out**2, rel=1e-12)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_unit_variance_of_the_networks_input_and_target_when_sigma_data_is_the_datas_spread(sigma: float) -> None:
    """Karras et al. 2022, App. B.6: with Var(x_0) = σ_d², the network's input c_in x and its training target F_target
    = (x_0 − c_skip x)/c_out have unit variance at every σ; the optimal output F* = E[F_target | x] is then the constant
    (1 − c_skip) m/c_out (zero for centred data: c_skip x alone is the exact denoiser of N(0, σ_d²)), and the target's
    variance around it, λ(σ) Var(x_0 | x), is 1: every σ contributes the same expected loss. Closed forms, and a
    Monte-Carlo check of EDMPreconditioning's target and prediction (n = 200 000, 4 standard errors)."""
    s = SIGMA_DATA
    c_skip, c_out, c_in = edm_coefficients(sigma, s)
    assert c_in**2 * (s**2 + sigma**2) == pytest.approx(1.0, rel=1e-12)  # Var(c_in x)
    assert ((1 - c_skip) ** 2 * s**2 + c_skip**2 * sigma**2) / c_out**2 == pytest.approx(1.0, rel=1e-12)  # Var(F_t)
    posterior_var = s**2 * sigma**2 / (s**2 + sigma**2)
    assert edm_loss_weight(sigma, s) * posterior_var == pytest.approx(1.0, rel=1e-12)

    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = MEAN + s * torch.randn(n, 1, 1, 1, generator=g, dtype=F64)
    eps = torch.randn(n, 1, 1, 1, generator=g, dtype=F64)
    x = x0 + sigma * eps
    precond = EDMPreconditioning(sigma_data=s)
    target = precond.target(x0, eps, 1.0, sigma)
    exact_x0 = MEAN + s**2 / (s**2 + sigma**2) * (x - MEAN)  # D* = E[x_0 | x]
    f_star = (exact_x0 - c_skip * x) / c_out
    assert torch.allclose(f_star, torch.full_like(f_star, (1 - c_skip) * MEAN / c_out), rtol=1e-9, atol=1e-9)
    assert abs(float(target.var()) - 1) < 4 * math.sqrt(2 / n)
    assert abs(float((target - f_star).pow(2).mean()) - 1) < 4 * math.sqrt(2 / n)
    one, sig = torch.ones(()), torch.full((), sigma, dtype=F64)
    pred = precond.prediction(x, NetworkOutput(f_star, None, one, sig))  # D = c_skip x + c_out F
    x0_hat, eps_hat = pred.x0, pred.eps
    assert torch.allclose(x0_hat, exact_x0, rtol=1e-12, atol=1e-12)
    assert torch.allclose(eps_hat, (x - exact_x0) / sigma, rtol=1e-9, atol=1e-9)


class OracleF(nn.Module):
    """The exact F* of N(MEAN, SIGMA_DATA² I) data as a network of EDM's inputs: it recovers σ = exp(4 c_noise) and
    x = input/c_in, and returns F* = (E[x_0 | x] − c_skip x)/c_out (optionally plus ``error``)."""

    channels, self_condition, learned_variance = 2, False, False

    def __init__(self, error: float = 0.0) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))
        self.error = error
        self.seen: list[tuple[Tensor, Tensor]] = []

    def forward(self, x_in: Tensor, time: Tensor) -> Tensor:
        self.seen.append((x_in, time))
        sigma = append_dims((4 * time.double()).exp(), x_in.ndim)
        c_skip, c_out, c_in = edm_coefficients(sigma, SIGMA_DATA)
        x = x_in.double() / c_in
        d = MEAN + SIGMA_DATA**2 / (SIGMA_DATA**2 + sigma**2) * (x - MEAN)
        return ((d - c_skip * x) / c_out + self.error).to(x_in.dtype)


def oracle_diffusion(error: float = 0.0, **kwargs) -> GaussianDiffusion:
    return GaussianDiffusion(OracleF(error), image_size=1, timesteps=kwargs.pop("timesteps", 20), process="edm",
                             auto_normalize=False, clip_denoised=False, **kwargs)  # fmt: skip


def test_the_oracle_loss_is_one_at_every_sigma_through_gaussian_diffusion() -> None:
    """p_losses at fixed σ (objective 'edm', loss_type 'l2') for the oracle network: mean 1 within 4 standard errors
    (n = 20 000 samples of 2 elements); a constant error δ on F adds δ². The network receives c_in x and c_noise."""
    d = oracle_diffusion()
    assert d.objective is Objective.EDM and d.sigma_data == SIGMA_DATA
    g = torch.Generator().manual_seed(0)
    n = 20_000
    for sigma in SIGMAS:
        x0 = MEAN + SIGMA_DATA * torch.randn(n, 2, 1, 1, generator=g, dtype=F64)
        noise = torch.randn(x0.shape, generator=g, dtype=F64)
        t = torch.full((n,), sigma, dtype=F64)
        losses = d.p_losses(x0, t, noise)
        assert abs(float(losses.mean()) - 1) < 4 * math.sqrt(2 / (2 * n)) + 1e-6, (sigma, float(losses.mean()))
        x_in, time = d.model.seen[-1]
        assert torch.allclose(x_in, (x0 + sigma * noise) / math.sqrt(sigma**2 + SIGMA_DATA**2), rtol=1e-12)
        assert time.dtype == torch.float32 and torch.allclose(time.double(), torch.full_like(t, math.log(sigma) / 4))
        shifted = oracle_diffusion(error=0.25).p_losses(x0, t, noise)
        assert float((shifted - losses).mean()) == pytest.approx(0.25**2, abs=4 * 0.5 / math.sqrt(2 * n))


def test_the_oracle_samples_the_data() -> None:
    """Sampling the preconditioned oracle (default sampler: heun, Karras grid) gives N(MEAN, SIGMA_DATA²): mean within
    0.03, std within 5%, with and without churn."""
    d = oracle_diffusion(timesteps=40)
    assert d.sampler_info(None).name == "heun" and d.runner.times() == d.schedule.timesteps(40, "karras")
    assert d.runner.times(info=SAMPLERS[SamplerName.DDIM]) == d.schedule.timesteps(40, "karras")  # not linspace
    assert d.runner.times(info=SAMPLERS[SamplerName.DPMPP_2M]) == d.schedule.timesteps(40, "logsnr")
    for options in ({}, {"s_churn": 40}):
        x = d.sample(4000, generator=torch.Generator().manual_seed(0), **options).double()
        assert float(x.mean()) == pytest.approx(MEAN, abs=0.03)
        assert float(x.std()) == pytest.approx(SIGMA_DATA, rel=0.05)


# ----- the stochastic Heun sampler (Alg. 2) -------------------------------------------------------------------------


def heun_alg1_reference(denoiser, x_T: Tensor, schedule, timesteps) -> Tensor:
    """``sample_heun`` as it was before the churn options (Alg. 1 in x̃ = x/α, σ̃ = σ/α), for the bit-identity check."""
    x = x_T
    for _, t, s in time_pairs(timesteps, schedule):
        pred = denoiser(x, time_batch(x, t))
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        alpha_s, sigma_s = schedule.alpha_sigma(s)
        step = sigma_s / alpha_s - sigma_t / alpha_t
        if s == CLEAN:
            x = alpha_s * (x / alpha_t + step * pred.eps)
        else:

            def slope(y, s=s, alpha_s=alpha_s):
                return [denoiser(alpha_s * y[0], time_batch(y[0], s)).eps]

            x = alpha_s * heun_step(slope, [x / alpha_t], [pred.eps], step)[0]
    return x


@pytest.mark.parametrize("schedule", [NoiseSchedule.from_name("cosine", 1000), EDMSchedule()], ids=["cosine", "edm"])
def test_no_churn_is_bit_identical_to_alg_1(schedule, mixture: GaussianMixture) -> None:
    """S_churn = 0 (default and explicit), and churn confined to a σ̃ range the grid never visits, give exactly the
    deterministic sampler (torch.equal), and draw no noise."""
    x_T = schedule.prior_std * torch.randn(500, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    timesteps = schedule.timesteps(25, "karras")
    reference = heun_alg1_reference(mixture.denoiser(schedule), x_T, schedule, timesteps)
    for options in ({}, {"s_churn": 0.0, "s_noise": 1.003}, {"s_churn": 40, "s_tmin": 1e4, "s_tmax": 1e5}):
        g = torch.Generator().manual_seed(1)
        state = g.get_state()
        x = sample_heun(mixture.denoiser(schedule), x_T, schedule, timesteps, generator=g, **options)
        assert torch.equal(x, reference) and torch.equal(g.get_state(), state)


def heun_alg2_reference(denoiser, x: Tensor, sigmas: list[float], churn, tmin, tmax, noise, g) -> Tensor:
    """Karras et al. 2022, Alg. 2 written literally in (x, σ) for a process with α = 1 and σ = t (EDM's)."""
    n = len(sigmas)
    sigmas = [*sigmas, 0.0]
    for i in range(n):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        gamma = min(churn / n, math.sqrt(2) - 1) if tmin <= t_cur <= tmax else 0.0
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(t_hat**2 - t_cur**2) * noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
        d = (x - denoiser(x, torch.full((len(x),), t_hat, dtype=F64)).x0) / t_hat
        x_next = x + (t_next - t_hat) * d
        if t_next > 0:
            d_next = (x_next - denoiser(x_next, torch.full((len(x),), t_next, dtype=F64)).x0) / t_next
            x_next = x + (t_next - t_hat) * (d + d_next) / 2
        x = x_next
    return x


@pytest.mark.parametrize("churn", [4.0, 30.0], ids=["gamma-0.2", "gamma-capped"])
def test_churn_is_alg_2_on_the_edm_process(churn: float, mixture: GaussianMixture) -> None:
    """On EDM's process (α = 1, σ = t) heun with churn equals Alg. 2 written literally, with the same noise draws
    (S_tmax below σ_max, so that σ̂ stays inside the range), for γ = S_churn/N = 0.2 and for γ capped at √2 − 1:
    within 1e-12."""
    schedule = EDMSchedule()
    x_T = 80 * torch.randn(200, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    timesteps = schedule.timesteps(20, "karras")
    options = dict(s_churn=churn, s_tmin=0.05, s_tmax=50.0, s_noise=1.007)
    x = sample_heun(mixture.denoiser(schedule), x_T, schedule, timesteps, generator=torch.Generator().manual_seed(3),
                    **options)  # fmt: skip
    ref = heun_alg2_reference(mixture.denoiser(schedule), x_T, timesteps, churn, 0.05, 50.0, 1.007,
                              torch.Generator().manual_seed(3))  # fmt: skip
    torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("s_noise", [1.0, 1.5])
def test_the_churn_noise_brings_x_to_the_marginal_at_the_raised_level(s_noise: float) -> None:
    """Start at the exact marginal of N(m, s²) data at index 20 of a 40-step cosine schedule (coarse, so that the
    next level up is far from the requested σ̂) and take one churned step: the denoiser is called at the index t̂
    whose σ̃ is the nearest ≥ σ̃_20 (1 + γ), with x̃ = x/α_t̂ of variance s² + σ̃_20² + S_noise² (σ̃_t̂² − σ̃_20²)
    (= s² + σ̃_t̂² at S_noise = 1) and mean m: within 4 standard errors (n = 100 000)."""
    schedule = NoiseSchedule.from_name("cosine", 40)
    m, s, n = 0.4, 0.7, 100_000
    alpha, sigma = schedule.alpha_sigma(20)
    g = torch.Generator().manual_seed(0)
    x = alpha * (m + s * torch.randn(n, 1, 1, 1, generator=g, dtype=F64)) + sigma * torch.randn(
        n, 1, 1, 1, generator=g, dtype=F64
    )
    calls: list[tuple[int, Tensor]] = []

    def denoiser(x_t: Tensor, t: Tensor) -> Prediction:
        calls.append((int(t[0]), x_t))
        return Prediction(x0=torch.zeros_like(x_t), eps=torch.zeros_like(x_t))

    sample_heun(denoiser, x, schedule, [20], s_churn=0.3, s_noise=s_noise, generator=g)
    t_hat, x_hat = calls[0]
    tilde = (1 - schedule.alphas_cumprod).sqrt() / schedule.alphas_cumprod.sqrt()
    target = float(tilde[20]) * 1.3
    assert float(tilde[t_hat]) >= target > float(tilde[t_hat - 1]) and t_hat > 20
    assert float(tilde[t_hat]) > 1.05 * target  # the exact level differs from the requested one
    a_hat, s_hat = schedule.alpha_sigma(t_hat)
    var = s**2 + (sigma / alpha) ** 2 + s_noise**2 * ((s_hat / a_hat) ** 2 - (sigma / alpha) ** 2)
    x_tilde = x_hat / a_hat
    assert abs(float(x_tilde.var()) / var - 1) < 4 * math.sqrt(2 / n)
    assert abs(float(x_tilde.mean()) - m) < 4 * math.sqrt(var / n)


def test_index_of_sigma_tilde_is_the_nearest_level_above() -> None:
    schedule = NoiseSchedule.from_name("cosine", 1000)
    tilde = schedule.log_sigma_tilde.exp()
    for target in [1e-3, 0.0123, 0.5, 1.0, 7.3, 79.0]:
        i = schedule.time_of_sigma_tilde(target)
        assert float(tilde[i]) >= target and (i == 0 or float(tilde[i - 1]) < target)
    assert schedule.time_of_sigma_tilde(1e9) == 999 and index_of_sigma_tilde(tilde.log(), float(tilde[17])) == 17
    with pytest.raises(ValueError, match="sigma_tilde must be positive"):
        schedule.time_of_sigma_tilde(0.0)
    vp = VPSchedule()  # a continuous process: the time of that σ̃ itself (bisection), clamped to [t_min, 1]
    for target in [0.01, 0.7, 20.0]:
        alpha, sigma = vp.alpha_sigma(vp.time_of_sigma_tilde(target))
        assert sigma / alpha == pytest.approx(target, rel=1e-10)
    assert vp.time_of_sigma_tilde(1e6) == pytest.approx(1.0, rel=1e-12)


CHURN_CASES = {"deterministic": {}, "churn": {"s_churn": 40.0}, "churn_s_noise": {"s_churn": 40.0, "s_noise": 1.003}}


@pytest.mark.parametrize("options", list(CHURN_CASES.values()), ids=list(CHURN_CASES))
@pytest.mark.parametrize(
    "schedule", [EDMSchedule(), NoiseSchedule.from_name("cosine", 1000), VPSchedule()], ids=["edm", "cosine", "vp"]
)
def test_heun_with_churn_reproduces_the_mixture(schedule, options: dict, mixture: GaussianMixture) -> None:
    """The mixture through heun at 50 Karras steps (test_score_samplers' heun case) with and without churn, within
    that case's tolerance: weights within 4 SE + 0.01, means 4 SE + 0.015, stds 4 SE + 3%. Measured (N = 8000):
    deterministic std +0.0 .. +3.1%, churn 40: +2.1 .. +4.1%, weight 0.29 for 0.3. At heun's recommended 25 steps the
    churned sampler's spread is 4-9% wide (deterministic: 1-5%), falling to ±2% by 200 steps, where churn also
    removes the deterministic sampler's +0.01 weight bias: its error is larger at few steps, as Karras et al. 2022
    report (§4, Fig. 4: churn needs more steps)."""
    g = torch.Generator().manual_seed(0)
    x_T = schedule.prior_std * torch.randn(4000, 2, 1, 1, generator=g, dtype=F64)
    x = sample_heun(mixture.denoiser(schedule), x_T, schedule, schedule.timesteps(50, "karras"), generator=g, **options)
    check_mixture(mixture, x, weight=0.01, mean=0.015, std=0.03)


@pytest.mark.parametrize(
    "given, message",
    [
        ({"s_churn": -1.0}, "s_churn must be a finite number >= 0"),
        ({"s_noise": -0.1}, "s_noise must be a finite number >= 0"),
        ({"s_tmin": 2.0, "s_tmax": 1.0}, "need s_tmin <= s_tmax"),
        ({"s_tmin": -1.0}, "s_tmin and s_tmax must be noise levels >= 0"),
    ],
)
def test_bad_churn_options(given: dict, message: str, mixture: GaussianMixture) -> None:
    schedule = EDMSchedule()
    with pytest.raises(ValueError, match=message):
        sample_heun(mixture.denoiser(schedule), torch.zeros(1, 2, 1, 1), schedule, [80.0, 1.0], **given)


def test_the_registry_declares_the_churn_options() -> None:
    info = SAMPLERS[SamplerName.HEUN]
    assert info.option_names == ["s_churn", "s_tmin", "s_tmax", "s_noise"]
    bound = info.bind({"s_churn": "40", "s_tmin": "0.05", "s_tmax": "inf", "s_noise": "1.003"})
    assert bound == {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": math.inf, "s_noise": 1.003}
    for name, value in [("s_churn", "-1"), ("s_noise", "-2"), ("s_churn", "nan"), ("s_tmax", "-1")]:
        with pytest.raises(ValueError, match=f"sampler option {name}="):
            info.bind({name: value})
    with pytest.raises(ValueError, match="need s_tmin <= s_tmax"):
        tiny(sampling_timesteps=3).sample(1, s_tmin=5.0, s_tmax=1.0)


# ----- GaussianDiffusion, pipeline, Trainer, CLI --------------------------------------------------------------------


def tiny(**kwargs) -> GaussianDiffusion:
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, **kwargs.pop("unet", {}))
    return GaussianDiffusion(unet, image_size=8, timesteps=kwargs.pop("timesteps", 10), process="edm", **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(process="edm", objective="pred_noise"), "objective 'edm'.*goes with process 'edm' and only with it"),
        (dict(process="ve", process_options={"sigma_max": 5.0}, objective="edm"), "goes with process 'edm'"),
        (dict(objective="edm"), "goes with process 'edm'"),
        (dict(process="edm", min_snr_loss_weight=True), "min_snr_loss_weight does not apply to objective 'edm'"),
        (dict(process="edm", loss_weighting="likelihood"), "needs objective='pred_noise'"),
        (dict(process="edm", process_options={"t_min": 0.1}), "takes no option 't_min'"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    with pytest.raises(ValueError, match=message):
        GaussianDiffusion(unet, image_size=8, timesteps=10, **kwargs)


def test_config_round_trip_and_saved_pipeline(tmp_path: Path) -> None:
    options = {"sigma_min": 0.01, "sigma_max": 60.0, "sigma_data": 0.4, "p_mean": -1.0, "p_std": 1.1}
    d = tiny(process_options=options, sampling_timesteps=4)
    spec = spec_of(d)
    assert d.config["process"] == "edm" and d.config["objective"] == "edm" and d.config["process_options"] == options
    rebuilt = build(spec)
    assert spec_of(rebuilt) == spec and rebuilt.schedule.config == d.schedule.config
    loaded = load_pipeline(save_pipeline(d, tmp_path / "model.pt"))
    for options in ({}, {"s_churn": 10.0}):
        a = d.sample(2, generator=torch.Generator().manual_seed(0), **options)
        b = loaded.sample(2, generator=torch.Generator().manual_seed(0), **options)
        assert torch.equal(a, b) and torch.isfinite(a).all()


def test_conditions_and_classifier_free_guidance() -> None:
    """A class-conditional network under EDM: trains with labels, samples with guidance (which combines ε̂/x̂_0 and
    never sees the preconditioning), and scale 1 is the conditional model itself."""
    d = tiny(unet={"num_classes": 3, "cond_drop_prob": 0.5}, sampling_timesteps=3)
    assert torch.isfinite(d(torch.rand(4, 3, 8, 8), classes=torch.tensor([0, 1, 2, 0])))
    x = d.sample(2, classes=[1, 2], guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 8, 8) and torch.isfinite(x).all()
    with torch.no_grad():
        x_t, t = torch.randn(2, 3, 8, 8), torch.full((2,), 1.5, dtype=F64)
        plain = d.denoiser(clip_denoised=False, classes=torch.tensor([1, 2]))(x_t, t)
        guided = d.denoiser(clip_denoised=False, classes=torch.tensor([1, 2]), guidance_scale=1.0)(x_t, t)
    assert torch.equal(plain.x0, guided.x0)


def test_a_few_trainer_steps(tmp_path: Path) -> None:
    dataset = get_builtin_dataset("shapes", 8, num_images=32)
    trainer = make_trainer(tiny(sampling_timesteps=3), dataset, tmp_path / "results")
    trainer.train()
    checkpoint = load_checkpoint(tmp_path / "results" / "model-2.pt")
    assert checkpoint["step"] == 4 and checkpoint["config"]["process"] == "edm"
    model = load_pipeline(tmp_path / "results" / "model-2.pt")
    assert model.objective is Objective.EDM and model.sample(2, steps=3, s_churn=5).shape == (2, 3, 8, 8)


def test_cli_trains_and_samples_an_edm_model(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = ["train", "--dim", "8", "--dim-mults", "1,2", "--image-size", "8", "--timesteps", "3", "--batch-size", "4",
            "--steps", "1", "--save-every", "1", "--num-samples", "0", "--no-gif", "--process", "edm",
            "--sigma-max", "40", "--results", str(results), "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    config = load_checkpoint(results / "model-1.pt")["config"]
    assert config["process"] == "edm" and config["objective"] == "edm"
    assert config["process_options"]["sigma_max"] == 40.0
    out = tmp_path / "grid.png"
    sample = ["sample", str(results / "model-1.pt"), "--num", "2", "--out", str(out), "--device", "cpu"]
    assert main([*sample, "--s-churn", "10", "--s-noise", "1.003"]) == 0 and out.exists()


@pytest.mark.parametrize("sampler", [name.value for name in SAMPLERS])
def test_every_sampler_runs_on_an_edm_model(sampler: str) -> None:
    """EDM has an SDE (sde(t) = (0, √(2t))), so every registered sampler serves it, the SDE ones included."""
    if sampler == "ode":
        pytest.importorskip("torchdiffeq")
    d = tiny()
    assert SAMPLERS[SamplerName(sampler)].serves(d.schedule)
    x = d.sample(2, sampler=sampler, steps=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 8, 8) and torch.isfinite(x).all()


def test_editing_runs_on_edm() -> None:
    """img2img at strength 1 is ``sample`` with the same generator (x_T ~ N(0, σ_max² I)); inpainting keeps the known
    pixels; DDIM inversion runs on σ as time."""
    d = tiny(sampling_timesteps=4)
    images, mask = torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8)
    mask[..., :4] = 0
    full = d.img2img(images, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(full, d.sample(2, generator=torch.Generator().manual_seed(0)))
    filled = d.inpaint(images, mask, jump_length=2, resample=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(filled * mask, images * mask, atol=1e-6) and torch.isfinite(filled).all()
    assert torch.isfinite(d.invert(images, steps=3)).all()
