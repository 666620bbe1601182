"""Analytic identities of the schedules, the forward process and the parameterizations."""

from __future__ import annotations

import math

import pytest
import torch

from denoising_diffusion.parameterization import (
    Objective,
    eps_from_v,
    eps_from_x0,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from denoising_diffusion.preconditioning import NetworkOutput, make_preconditioning
from denoising_diffusion.processes import CLEAN, BetaSchedule, NoiseSchedule, make_betas, spaced_timesteps

NAMES = [s.value for s in BetaSchedule]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", [10, 1000])
def test_schedule_endpoints_and_monotonic(name: str, T: int) -> None:
    s = NoiseSchedule.from_name(name, T)
    ab = s.alphas_cumprod
    assert ab.dtype == torch.float64 and len(ab) == T
    assert bool((s.betas > 0).all()) and bool((s.betas < 1).all())
    assert bool((ab[1:] < ab[:-1]).all()), "ᾱ_t must strictly decrease"
    assert ab[0] < 1 and ab[0] > 0.9 if T == 1000 else ab[0] < 1  # t = 0 is slightly noisy, not clean
    assert ab[-1] < 1e-2 if T == 1000 else ab[-1] < 0.5  # the chain ends near pure noise
    assert s.alphabar(CLEAN) == 1.0 and math.isclose(s.alphabar(T - 1), float(ab[-1]))


def test_linear_schedule_matches_ddpm_paper() -> None:
    b = make_betas("linear", 1000)
    assert math.isclose(b[0], 1e-4) and math.isclose(b[-1], 0.02) and math.isclose(b[500] - b[499], b[1] - b[0])


@pytest.mark.parametrize("T", [10, 100, 250])
def test_linear_and_quadratic_schedules_rescale_both_end_points_to_T(T: int) -> None:
    """Nichol & Dhariwal 2021 (§3, App. D): for T != 1000 both end points of the linear betas scale by 1000/T, so
    the chain still ends near pure noise; 'quad' is linear in √β between the same end points. Clipped at 0.999."""
    scale = 1000 / T
    for name in ("linear", "quadratic"):
        b = make_betas(name, T)
        assert float(b[0]) == pytest.approx(scale * 1e-4, rel=1e-12), name
        assert float(b[-1]) == pytest.approx(min(scale * 0.02, 0.999), rel=1e-12), name
    root = make_betas("quadratic", T).sqrt()
    assert float(root[2] - root[1]) == pytest.approx(float(root[1] - root[0]), rel=1e-9)


def test_cosine_schedule_closed_form_and_clipping() -> None:
    T, s = 1000, 0.008
    ab = NoiseSchedule.from_name("cosine", T).alphas_cumprod
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):  # ᾱ_t = f(t + 1) / f(0): index t covers the first t + 1 steps
        assert math.isclose(float(ab[t]), f(t + 1) / f(0), rel_tol=1e-9)
    betas = make_betas("cosine", T)
    assert float(betas.max()) == pytest.approx(0.999), "the last betas are clipped to 0.999"


def test_bad_schedule_names_and_values() -> None:
    with pytest.raises(ValueError, match="unknown beta_schedule 'cosine2'.*'linear'"):
        make_betas("cosine2", 10)
    with pytest.raises(ValueError, match="length timesteps=10"):
        make_betas(torch.full((9,), 0.1), 10)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        make_betas(torch.full((10,), 1.5), 10)


def test_q_sample_mean_and_variance() -> None:
    from torch import nn

    from denoising_diffusion.diffusion import GaussianDiffusion

    net = nn.Identity()
    d = GaussianDiffusion(net, image_size=4, timesteps=100, beta_schedule="linear")
    x0 = torch.full((20000, 1, 2, 2), 0.7)
    t = torch.full((20000,), 60)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  # not the global RNG: no flakes
    xt = d.q_sample(x0, t, noise)
    ab = float(d.schedule.alphas_cumprod[60])
    assert float(xt.mean()) == pytest.approx(math.sqrt(ab) * 0.7, abs=0.01)
    assert float(xt.var()) == pytest.approx(1 - ab, rel=0.03)


@pytest.mark.parametrize("t", [0, 1, 37, 99])
def test_q_posterior_matches_brute_force_gaussian_conditioning(t: int) -> None:
    """q(x_{t-1} | x_t, x_0) from the joint Gaussian of (x_{t-1}, x_t) given x_0, for scalar data."""
    s = NoiseSchedule.from_name("cosine", 100)
    ab, beta = s.alphas_cumprod, s.betas
    ab_prev = 1.0 if t == 0 else float(ab[t - 1])
    a_t = 1 - float(beta[t])
    # Given x_0: x_{t-1} ~ N(√ab_prev x0, 1 − ab_prev); x_t = √a_t x_{t-1} + √(1 − a_t) z.
    var_prev, cov, var_t = 1 - ab_prev, math.sqrt(a_t) * (1 - ab_prev), a_t * (1 - ab_prev) + (1 - a_t)
    x0, xt = 0.3, -1.1
    mean_brute = math.sqrt(ab_prev) * x0 + cov / var_t * (xt - math.sqrt(a_t * ab_prev) * x0)
    var_brute = var_prev - cov**2 / var_t
    mean = float(s.posterior_mean_coef1[t]) * x0 + float(s.posterior_mean_coef2[t]) * xt
    assert mean == pytest.approx(mean_brute, abs=1e-10)
    assert float(s.posterior_variance[t]) == pytest.approx(var_brute, abs=1e-12)


def test_parameterization_round_trips() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64),
        torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64),
    )
    ab = torch.rand(4, 1, 1, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    xt = alpha * x0 + sigma * eps
    v = v_from_x0_eps(x0, eps, alpha, sigma)
    torch.testing.assert_close(x0_from_eps(xt, eps, alpha, sigma), x0)
    torch.testing.assert_close(eps_from_x0(xt, x0, alpha, sigma), eps)
    torch.testing.assert_close(x0_from_v(xt, v, alpha, sigma), x0)
    torch.testing.assert_close(eps_from_v(xt, v, alpha, sigma), eps)
    d_alpha, d_sigma = -0.7 * torch.ones_like(alpha), 1.3 + alpha  # path derivatives: only pred_velocity reads them
    for objective in Objective:  # EDM's through its preconditioning (it needs sigma_data)
        precond = make_preconditioning(objective, sigma_data=0.7)
        out = precond.target(x0, eps, alpha, sigma, d_alpha, d_sigma)
        pred = precond.prediction(xt, NetworkOutput(out, None, alpha, sigma, d_alpha, d_sigma))
        torch.testing.assert_close(pred.x0, x0)
        torch.testing.assert_close(pred.eps, eps)


def test_unknown_objective_message() -> None:
    with pytest.raises(ValueError, match="unknown objective 'pred_eps'; allowed values: 'pred_noise'"):
        Objective("pred_eps")


@pytest.mark.parametrize("spacing", ["linspace", "trailing", "leading"])
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_spaced_timesteps(spacing: str, steps: int) -> None:
    ts = spaced_timesteps(1000, steps, spacing)
    assert len(ts) == steps and all(a > b for a, b in zip(ts, ts[1:])) and 0 <= ts[-1] and ts[0] <= 999
    if spacing == "linspace":
        assert ts[0] == 999 and ts[-1] == 0 or steps == 1
    if spacing == "trailing":
        assert ts[0] == 999
    if spacing == "leading":
        assert ts[-1] == 0


def test_uniform_spacings_closed_form() -> None:
    """The three uniform spacings at T = 1000, 10 steps, written out (Lin et al. 2024, Table 2, for 'trailing' and
    'leading'; 'linspace' is round(linspace(999, 0, 10)))."""
    assert spaced_timesteps(1000, 10, "trailing") == list(range(999, 0, -100))
    assert spaced_timesteps(1000, 10, "leading") == list(range(900, -1, -100))
    assert spaced_timesteps(1000, 10, "linspace") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert spaced_timesteps(20, 5, "linspace") == [19, 14, 10, 5, 0]


def test_spaced_timesteps_errors() -> None:
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 100\]"):
        spaced_timesteps(100, 101)
    with pytest.raises(ValueError, match="unknown timestep spacing 'log'"):
        spaced_timesteps(100, 10, "log")
