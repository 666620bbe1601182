"""The ancestral step on the continuous paths (VP, sub-VP, VE, EDM, NCSN's levels): DDPM's step t → s draws from
q(x_s | x_t, x_0) of the path x_t = α_t x_0 + σ_t ε, and so does DDIM at η = 1 (euler_ancestral).

The posterior is derived here from the path alone, by Gaussian conditioning: the forward process is Markov, so
x_t = (α_t/α_s) x_s + independent noise, whence Cov(x_s, x_t | x_0) = (α_t/α_s) σ_s², Var(x_t | x_0) = σ_t², and

    E[x_s | x_t, x_0] = α_s x_0 + Σ_st Σ_tt⁻¹ (x_t − α_t x_0),    Var[x_s | x_t, x_0] = Σ_ss − Σ_st Σ_tt⁻¹ Σ_ts.

Its variance is (σ_t² − (α_t/α_s)² σ_s²) σ_s²/σ_t²: the forward step's variance, not σ_t², scaled by σ_s²/σ_t².
Every other test of the samplers passes with that variance wrong on these paths; these do not.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import GaussianMixture

from denoising_diffusion import (
    NCSNSchedule,
    Prediction,
    StepRecord,
    SubVPSchedule,
    VESchedule,
    VPSchedule,
    sample_ddim,
    sample_ddpm,
    sample_euler_ancestral,
)
from denoising_diffusion.processes import EDMSchedule

F64 = torch.float64
SCHEDULES = {
    "vp": (VPSchedule(), [(0.5, 0.3), (0.2, 0.1), (1.0, 0.05)]),
    "subvp": (SubVPSchedule(), [(0.5, 0.3), (0.2, 0.1)]),
    "ve": (VESchedule(sigma_min=0.01, sigma_max=50.0), [(0.5, 0.4), (0.3, 0.1)]),
    "edm": (EDMSchedule(), [(2.0, 1.0), (0.5, 0.2)]),
    "ncsn": (NCSNSchedule(sigma_min=0.01, sigma_max=50.0, num_levels=20), [(11, 10), (18, 15)]),
}


def brute_force_posterior(alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float) -> tuple[float, float, float]:
    """(c_0, c_t, variance) of q(x_s | x_t, x_0) = N(c_0 x_0 + c_t x_t, variance) by Gaussian conditioning of the
    joint (x_s, x_t) given x_0 (module docstring)."""
    ratio = alpha_t / alpha_s
    cov = torch.tensor([[sigma_s**2, ratio * sigma_s**2], [ratio * sigma_s**2, sigma_t**2]], dtype=F64)
    gain = float(cov[0, 1] / cov[1, 1])
    variance = float(cov[0, 0] - cov[0, 1] * gain)
    return alpha_s - gain * alpha_t, gain, variance


@pytest.mark.parametrize("name", SCHEDULES)
def test_the_posterior_step_is_gaussian_conditioning_on_the_path(name: str) -> None:
    schedule, pairs = SCHEDULES[name]
    for t, s in pairs:
        step = schedule.posterior_step(t, s)
        c0, ct, variance = brute_force_posterior(*schedule.alpha_sigma(t), *schedule.alpha_sigma(s))
        assert step.c0 == pytest.approx(c0, rel=1e-9, abs=1e-12), (t, s)
        assert step.ct == pytest.approx(ct, rel=1e-9, abs=1e-12), (t, s)
        assert step.variance == pytest.approx(variance, rel=1e-9, abs=1e-15), (t, s)
        assert step.log_variance == pytest.approx(math.log(variance), rel=1e-9), (t, s)


SAMPLERS = {
    "ddpm": sample_ddpm,
    "euler_ancestral": sample_euler_ancestral,
    "ddim_eta_1": lambda *args, **kwargs: sample_ddim(*args, eta=1.0, **kwargs),
}


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("name", SCHEDULES)
def test_one_ancestral_step_draws_the_posterior(name: str, sampler: str) -> None:
    """20 000 draws of one step t → s from the same x_t with a denoiser that predicts a fixed x̂_0 (and the ε̂ it
    implies): their mean and variance are the brute-force posterior's (mean within 5 standard errors, variance within
    4 %, 5.7 standard errors of a sample variance), on each path at pairs where σ_s²/σ_t² is far from 1."""
    schedule, pairs = SCHEDULES[name]
    n = 20_000
    x0_value = 0.7
    for t, s in pairs:
        alpha_t, sigma_t = schedule.alpha_sigma(t)
        x_t = torch.full((n, 1, 1, 1), 0.4 * alpha_t + 1.3 * sigma_t, dtype=F64)

        def denoiser(x, time, alpha_t=alpha_t, sigma_t=sigma_t):
            x0 = torch.full_like(x, x0_value)
            return Prediction(x0=x0, eps=(x - alpha_t * x0) / sigma_t)

        records: list[StepRecord] = []
        SAMPLERS[sampler](denoiser, x_t, schedule, [t, s], generator=torch.Generator().manual_seed(0),
                          callback=records.append)  # fmt: skip
        x_s = records[0].x_next.flatten()
        c0, ct, variance = brute_force_posterior(alpha_t, sigma_t, *schedule.alpha_sigma(s))
        mean = c0 * x0_value + ct * float(x_t[0])
        assert abs(float(x_s.mean()) - mean) < 5 * math.sqrt(variance / n), (t, s, float(x_s.mean()), mean)
        assert float(x_s.var()) == pytest.approx(variance, rel=0.04), (t, s)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_ddpm_on_a_continuous_path_reproduces_gaussian_data(name: str) -> None:
    """The ancestral sampler, driven by the exact denoiser of N(m, 0.4² I) in 2-D over 1000 uniform steps from the
    prior, returns that distribution: mean within 5 standard errors + 0.02, std within 5 % (N = 4000; the step's
    point estimate of x_0 leaves the spread about 0.5 % narrow at 1000 steps, 3.5 % at 200)."""
    schedule = SCHEDULES[name][0]
    data = GaussianMixture(weights=[1.0], means=[[0.5, -0.25]], stds=[0.4])
    g = torch.Generator().manual_seed(1)
    x_T = schedule.prior_std * torch.randn(4000, 2, 1, 1, generator=g, dtype=F64)
    x = sample_ddpm(data.denoiser(schedule), x_T, schedule, schedule.timesteps(1000), generator=g)[:, :, 0, 0]
    assert float((x.mean(0) - data.means[0]).abs().max()) < 5 * 0.4 / math.sqrt(4000) + 0.02
    torch.testing.assert_close(x.std(0), torch.full((2,), 0.4, dtype=F64), rtol=0.05, atol=0)
