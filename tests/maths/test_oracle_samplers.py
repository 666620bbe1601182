"""Samplers driven by the closed-form ideal denoiser must reproduce the data distribution (DESIGN.md, Tests).

With the exact E[x_0 | x_t] no training is involved: any deviation of the samples' statistics from the truth is a
sampler bug (a wrong index, variance or coefficient), not a modelling error. Tolerances are stated per check:
with N samples a mode mean has standard error s/√(N w), a weight √(w(1−w)/N), a std about s/√(2 N w).
"""

from __future__ import annotations

import math

import pytest
import torch

from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.processes import NoiseSchedule, spaced_timesteps
from denoising_diffusion.samplers import sample_ddim, sample_ddpm

N = 4000


def run(sampler: str, data, schedule: NoiseSchedule, steps: int, seed: int = 0, **options) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(N, data.dim, 1, 1, generator=g, dtype=torch.float64)
    fn = {"ddpm": sample_ddpm, "ddim": sample_ddim}[sampler]
    return fn(
        data.denoiser(schedule), x_T, schedule, spaced_timesteps(schedule.num_timesteps, steps), generator=g, **options
    )


def check_mixture(data, x: torch.Tensor, std_rel_tol: float) -> None:
    """Per-mode mean within 5 standard errors + 0.02, std within std_rel_tol, weights within 4 SE + 0.01."""
    k = data.assign(x)
    for j in range(len(data.weights)):
        w, s = float(data.weights[j]), float(data.stds[j])
        xs = x[k == j][:, :, 0, 0]
        n = len(xs)
        assert abs(n / N - w) < 4 * math.sqrt(w * (1 - w) / N) + 0.01, f"mode {j} weight {n / N:.3f} != {w}"
        mean_err = (xs.mean(0) - data.means[j]).abs().max().item()
        assert mean_err < 5 * s / math.sqrt(n) + 0.02, f"mode {j} mean off by {mean_err:.4f}"
        std = xs.std(0)
        assert torch.allclose(std, torch.full_like(std, s), rtol=std_rel_tol), f"mode {j} std {std.tolist()} != {s}"


SCHEDULES = ["linear", "cosine"]


@pytest.mark.parametrize("schedule_name", SCHEDULES)
def test_ddpm_1000_steps_reproduces_gaussian_and_mixture(schedule_name: str, gaussian, mixture) -> None:
    schedule = NoiseSchedule.from_name(schedule_name, 1000)
    for data in (gaussian, mixture):
        check_mixture(data, run("ddpm", data, schedule, 1000), std_rel_tol=0.06)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize(
    "steps,eta,std_rel_tol", [(50, 0.0, 0.08), (1000, 0.0, 0.06), (50, 1.0, 0.2), (1000, 1.0, 0.06)]
)
def test_ddim_reproduces_gaussian_and_mixture(
    schedule_name: str, steps: int, eta: float, std_rel_tol: float, gaussian, mixture
) -> None:
    """Tolerances: at 1000 steps only sampling error remains. At 50 steps the method itself is biased: the ODE
    (η = 0) by its first-order discretization, and η = 1 under-disperses because each step's variance β̃ omits
    c_0² Var[x_0 | x_t]; ``test_ddim_few_steps_matches_exact_variance_propagation`` checks those biases exactly."""
    schedule = NoiseSchedule.from_name(schedule_name, 1000)
    for data in (gaussian, mixture):
        check_mixture(data, run("ddim", data, schedule, steps, eta=eta), std_rel_tol=std_rel_tol)


def exact_ddim_variance(schedule: NoiseSchedule, timesteps: list[int], s: float, eta: float) -> float:
    """Var of DDIM's output per dim for data N(m, s²), from x_T ~ N(0, 1): every step is affine in x_t,
    x_s = A x_t + b + c z, so V_s = A² V_t + c² with A = α_s k + d (1 − α_t k)/σ_t, k = α_t s²/(α_t² s² + σ_t²)."""
    var = 1.0
    for i, t in enumerate(timesteps):
        u = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        (a_t, sig_t), (a_s, sig_s) = schedule.alpha_sigma(t), schedule.alpha_sigma(u)
        c = eta * sig_s / sig_t * math.sqrt(max(1 - (a_t / a_s) ** 2, 0.0))
        d = math.sqrt(max(sig_s**2 - c**2, 0.0))
        k = a_t * s**2 / (a_t**2 * s**2 + sig_t**2)
        var = (a_s * k + d * (1 - a_t * k) / sig_t) ** 2 * var + c**2
    return var


@pytest.mark.parametrize("steps", [5, 50])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_few_steps_matches_exact_variance_propagation(steps: int, eta: float, gaussian) -> None:
    """The empirical std equals the closed-form std of the method within sampling error (std SE ≈ 1.1% at N=4000)."""
    schedule = NoiseSchedule.from_name("cosine", 1000)
    x = run("ddim", gaussian, schedule, steps, eta=eta)
    expected = math.sqrt(exact_ddim_variance(schedule, spaced_timesteps(1000, steps), float(gaussian.stds[0]), eta))
    assert float(x.std(0).mean()) == pytest.approx(expected, rel=0.04)


def test_ddim_eta0_gaussian_is_exact_to_discretization(gaussian) -> None:
    """For one Gaussian the DDIM update is linear: x_0 = m + c (x_T) with c → s as steps grow; check the spread."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    x = run("ddim", gaussian, schedule, 1000, eta=0.0)
    torch.testing.assert_close(x.mean(dim=0)[:, 0, 0], gaussian.means[0], atol=0.03, rtol=0)
    assert float(x.std(0).mean()) == pytest.approx(float(gaussian.stds[0]), rel=0.03)


def test_ddim_eta1_all_steps_equals_ancestral_ddpm_fixed_small(mixture) -> None:
    schedule = NoiseSchedule.from_name("cosine", 100)
    a = run("ddim", mixture, schedule, 100, seed=3, eta=1.0)
    b = run("ddpm", mixture, schedule, 100, seed=3, variance="fixed_small")
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "sampler,options",
    [
        ("ddpm", {"variance": "fixed_small"}),
        ("ddpm", {"variance": "fixed_large"}),
        ("ddim", {"eta": 1.0}),
        ("ddim", {"eta": 0.0}),
    ],
)
def test_last_step_adds_no_noise(sampler: str, options: dict) -> None:
    """The step from t = 0 (or from any final index) returns x̂_0 exactly, whatever the generator draws."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    x0 = torch.randn(8, 3, 4, 4)

    def denoiser(x_t, t):
        alpha, sigma = schedule.alpha_sigma(t[0].item())
        return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)

    fn = {"ddpm": sample_ddpm, "ddim": sample_ddim}[sampler]
    for timesteps in ([0], [5, 0], [999, 500, 3]):
        out = fn(
            denoiser,
            torch.randn(8, 3, 4, 4),
            schedule,
            timesteps,
            generator=torch.Generator().manual_seed(1),
            **options,
        )
        torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_ddpm_fixed_large_overdisperses_at_few_steps(gaussian) -> None:
    """β instead of β̃ adds extra variance: a sanity check that the variance choice is actually used."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    small = run("ddpm", gaussian, schedule, 20, variance="fixed_small").std()
    large = run("ddpm", gaussian, schedule, 20, variance="fixed_large").std()
    assert float(large) > float(small) * 1.05
