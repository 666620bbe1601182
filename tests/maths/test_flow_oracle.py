"""Every registered sampler on the flow paths, driven by the ideal velocity field, reproduces the data (DESIGN.md,
Tests: oracle samplers); the probability-flow ODE's likelihood on the straight path equals its closed form.

The ideal velocity of Gaussian-mixture data is α'_t x̂_0 + σ'_t ε̂ with x̂_0 = E[x_0 | x_t] in closed form
(oracle.GaussianMixture.velocity). It enters as a *network* (:class:`VelocityNetwork`: (x, 999·t) -> velocity), so
the whole path a trained flow model takes is under test: GaussianDiffusion(process='flow') with its default
objective 'pred_velocity', the preconditioning's conversions to (x̂_0, ε̂), the runner, each sampler at its step
count and spacing. Tolerances as in test_oracle_samplers.check_mixture (per-mode weights within 4 standard errors +
0.01, means within 5 SE + 0.02, spreads within the relative tolerance given per sampler: 8% where the method's own
error at that step count is below ~5%, measured).
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import GaussianMixture
from test_oracle_samplers import check_mixture
from torch import Tensor, nn

from denoising_diffusion import GaussianDiffusion
from denoising_diffusion.likelihood import ode_log_likelihood
from denoising_diffusion.processes import FlowSchedule

N = 4000  # check_mixture's sample count (test_oracle_samplers.N)
STEPS = {  # steps per sampler (its recommended count where the method's error there is small on these paths)
    "ddpm": 250,
    "ddim": 50,
    "dpmpp_2m": 50,
    "dpmpp_2m_sde": 50,
    "heun": 25,
    "euler": 50,
    "euler_ancestral": 250,
    "euler_maruyama": 250,
    "reverse_diffusion": 250,
    "pc": 125,
    "annealed_langevin": 100,  # refused on the straight path
    "ode": 2,
}
STD_TOL = {"ddpm": 0.1, "reverse_diffusion": 0.1, "pc": 0.1}  # else 0.08


class VelocityNetwork(nn.Module):
    """The ideal velocity as a network: (x (N, D, 1, 1), c_noise = 999·t (N,)) -> E[dx_t/dt | x_t], float64."""

    def __init__(self, data: GaussianMixture, process: object) -> None:
        super().__init__()
        self.channels = data.dim
        self.velocity = data.velocity(process)
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # the runner draws noise in this dtype

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        return self.velocity(x, time.double() / 999.0)


def flow_model(data: GaussianMixture, process: str) -> GaussianDiffusion:
    d = GaussianDiffusion(
        VelocityNetwork(data, None), image_size=1, process=process, auto_normalize=False, clip_denoised=False
    )
    d.model.velocity = data.velocity(d.schedule)
    return d


@pytest.mark.parametrize("sampler", list(STEPS))
def test_every_sampler_reproduces_gaussian_and_mixture_on_the_straight_path(
    sampler: str, gaussian: GaussianMixture, mixture: GaussianMixture
) -> None:
    if sampler == "annealed_langevin":
        pytest.skip("refused on the straight path (test_flow_process.py)")
    if sampler == "ode":
        pytest.importorskip("torchdiffeq")
    for data in (gaussian, mixture):
        x = flow_model(data, "flow").sample(N, sampler=sampler, steps=STEPS[sampler], generator=_seed())
        check_mixture(data, x, std_rel_tol=STD_TOL.get(sampler, 0.08))


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun", "euler_maruyama"])
def test_samplers_reproduce_the_mixture_on_the_cosine_path(sampler: str, mixture: GaussianMixture) -> None:
    x = flow_model(mixture, "flow_cosine").sample(N, sampler=sampler, steps=STEPS[sampler], generator=_seed())
    check_mixture(mixture, x, std_rel_tol=STD_TOL.get(sampler, 0.08))


def _seed() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ----- likelihood -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver, mean_tol, max_tol", [("heun", 0.01, 0.04), ("dopri5", 1e-3, 0.03)])
def test_ode_log_likelihood_on_the_straight_path_is_the_closed_form(
    solver: str, mean_tol: float, max_tol: float
) -> None:
    """For data N(m, s² I) the flow's ODE carries the density exactly: log p at the lowest time is that of
    N(m, s² + σ̃(t_min)² I) in x̃ = x/α (the smoothed data), up to the solver's error, per sample in nats (D = 2),
    with test_ode_flow.py's tolerances for the VP process: Heun on 200 Karras points (observed mean error 0.004,
    largest 0.027: the prior carried down from σ̃ = 80, where the grid starts), dopri5 at its default tolerances."""
    if solver == "dopri5":
        pytest.importorskip("torchdiffeq")
    data = GaussianMixture([1.0], [[0.5, -0.25]], [0.4])
    process = FlowSchedule()
    d = flow_model(data, "flow")
    x0 = data.sample(32, torch.Generator().manual_seed(3))
    log_p = ode_log_likelihood(d.denoiser(clip_denoised=False), process, x0, steps=200, solver=solver)
    alpha, sigma = process.alpha_sigma(process.t_min)
    var = 0.4**2 + (sigma / alpha) ** 2
    exact = -math.log(2 * math.pi * var) - 0.5 * ((x0[:, :, 0, 0] - data.means[0]) ** 2).sum(1) / var
    assert float((log_p - exact).mean().abs()) < mean_tol and float((log_p - exact).abs().max()) < max_tol
