"""Every registered sampler against closed forms: the mixture at its recommended steps, the order of convergence of
the ODE solvers, DDIM inversion, and the few-step timestep spacings."""

from __future__ import annotations

import math

import pytest
import torch
from test_oracle_samplers import N, check_mixture

from denoising_diffusion.processes import NoiseSchedule, spaced_timesteps
from denoising_diffusion.samplers import SAMPLERS, SamplerName, invert_ddim


def run_registered(name: SamplerName, data, schedule: NoiseSchedule, steps: int, spacing=None, seed: int = 0):
    info = SAMPLERS[name]
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(N, data.dim, 1, 1, generator=g, dtype=torch.float64)
    timesteps = spaced_timesteps(schedule, steps, spacing or info.spacing)
    return info.fn(data.denoiser(schedule), x_T, schedule, timesteps, generator=g)


CHECKED_ELSEWHERE = {
    "euler_maruyama": "needs an SDE (a continuous process): test_score_samplers.py runs it on VP, sub-VP and VE",
    "annealed_langevin": "its spread lags the annealing (+4 % .. +11 % over NCSN levels, more on VP paths): "
    "test_score_samplers.py checks it over NCSN levels with its own tolerance",
}


@pytest.mark.parametrize("schedule_name", ["cosine", "linear"])
@pytest.mark.parametrize("name", [name for name, info in SAMPLERS.items() if not info.needs_sde])  # 'ode': its file
def test_every_sampler_reproduces_the_mixture_at_its_recommended_steps(name, schedule_name, mixture) -> None:
    """Weights within 4 SE + 0.01, mode means within 5 SE + 0.02, spreads within 8% (check_mixture)."""
    if name.value in CHECKED_ELSEWHERE:
        pytest.skip(CHECKED_ELSEWHERE[name.value])
    schedule = NoiseSchedule.from_name(schedule_name, 1000)
    x = run_registered(name, mixture, schedule, SAMPLERS[name].recommended_steps)
    check_mixture(mixture, x, std_rel_tol=0.08)


def exact_ode_state(gaussian, schedule: NoiseSchedule, x_T: torch.Tensor, t_start: int, t: int) -> torch.Tensor:
    """The probability-flow ODE for data N(m, s²I) in x̃ = x/α, σ̃ = σ/α has the solution
    x̃(σ̃) = m + √((s² + σ̃²)/(s² + σ̃_start²)) (x̃_start − m); returned as x = α x̃ at index t."""
    m, s = gaussian.means[0].view(1, -1, 1, 1), float(gaussian.stds[0])
    (a0, s0), (a, sg) = schedule.alpha_sigma(t_start), schedule.alpha_sigma(t)
    ratio = math.sqrt((s * s + (sg / a) ** 2) / (s * s + (s0 / a0) ** 2))
    return a * (m + ratio * (x_T / a0 - m))


@pytest.mark.parametrize(
    "name,order", [(SamplerName.DDIM, 1), (SamplerName.EULER, 1), (SamplerName.HEUN, 2), (SamplerName.DPMPP_2M, 2)]
)
def test_ode_solvers_converge_at_their_order(name: SamplerName, order: int, gaussian) -> None:
    """Error at t = 0 against the exact ODE solution falls by ≈ 2^order when the number of steps doubles
    (uniform in log-SNR, linear schedule). Bounds: first order 1.7-2.4, second order > 3.3."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    x_T = torch.randn(500, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = exact_ode_state(gaussian, schedule, x_T, 999, 0)
    errors = []
    for steps in (20, 40, 80):
        records: list = []
        SAMPLERS[name].fn(
            gaussian.denoiser(schedule),
            x_T,
            schedule,
            spaced_timesteps(schedule, steps, "logsnr"),
            callback=records.append,
        )
        at_zero = next(r.x_t for r in records if r.t == 0)
        errors.append(float((at_zero - exact).abs().mean()))
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    for ratio in ratios:
        assert (1.7 < ratio < 2.4) if order == 1 else ratio > 3.3, f"{name.value}: errors {errors}, ratios {ratios}"


def test_ddim_inversion_round_trip(mixture) -> None:
    """invert_ddim then sample_ddim over the same steps returns the data, with an error that shrinks with the steps."""
    schedule = NoiseSchedule.from_name("linear", 1000)
    x0 = mixture.sample(500, torch.Generator().manual_seed(2))
    denoiser = mixture.denoiser(schedule)
    errors = []
    for steps in (50, 200):
        timesteps = spaced_timesteps(schedule, steps, "logsnr")
        latent = invert_ddim(denoiser, x0, schedule, timesteps)
        assert float(latent.std()) > 0.8, "the latent should look like unit noise"
        back = SAMPLERS[SamplerName.DDIM].fn(denoiser, latent, schedule, timesteps, eta=0.0)
        errors.append(float((back - x0).abs().mean()))
    assert errors[1] < 0.02 and errors[1] < errors[0] / 2, errors


@pytest.mark.parametrize("spacing", ["logsnr", "karras"])
@pytest.mark.parametrize("schedule_name", ["cosine", "linear", "sigmoid"])
@pytest.mark.parametrize("steps", [1, 5, 25, 250, 1000])
def test_continuous_spacings(spacing: str, schedule_name: str, steps: int) -> None:
    schedule = NoiseSchedule.from_name(schedule_name, 1000)
    ts = spaced_timesteps(schedule, steps, spacing)
    assert len(ts) == steps and all(a > b for a, b in zip(ts, ts[1:])) and ts[0] <= 999 and ts[-1] >= 0
    if steps > 1:
        assert ts[-1] == 0, "the last network evaluation is at t = 0"
    sigma_tilde = ((1 - schedule.alphas_cumprod) / schedule.alphas_cumprod).sqrt()
    if spacing == "logsnr":
        assert ts[0] == 999
    elif steps <= 5:  # (no crowding at the top) karras starts at the index nearest σ̃ = min(σ̃_{T−1}, 80) (in log σ̃)
        cap = math.log(min(float(sigma_tilde[-1]), 80.0))
        assert ts[0] == int((sigma_tilde.log() - cap).abs().argmin())


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_karras_spacing_follows_equation_5(schedule_name: str) -> None:
    """Karras et al. 2022, eq. 5 with ρ = 7: σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..n−1,
    σ̃ = √((1 − ᾱ)/ᾱ), σ_min = σ̃_0, σ_max = min(σ̃_{T−1}, 80). With 10 steps no two targets share an index, so each
    visited index must be the one whose σ̃ is nearest σ_i in log (checked against both neighbours)."""
    schedule = NoiseSchedule.from_name(schedule_name, 1000)
    ab = torch.cumprod(1 - schedule.betas, 0)
    log_sigma = 0.5 * torch.log((1 - ab) / ab)
    rho, n = 7.0, 10
    s_max, s_min = min(math.exp(float(log_sigma[-1])), 80.0) ** (1 / rho), math.exp(float(log_sigma[0])) ** (1 / rho)
    targets = [rho * math.log(s_max + i / (n - 1) * (s_min - s_max)) for i in range(n)]
    ts = spaced_timesteps(schedule, n, "karras")
    for t, target in zip(ts, targets):
        here = abs(float(log_sigma[t]) - target)
        for neighbour in (t - 1, t + 1):
            if 0 <= neighbour < 1000:
                assert here <= abs(float(log_sigma[neighbour]) - target), (ts, t, math.exp(target))


def test_logsnr_spacing_is_uniform_in_log_snr() -> None:
    schedule = NoiseSchedule.from_name("linear", 1000)
    ts = spaced_timesteps(schedule, 10, "logsnr")
    lam = [0.5 * math.log(schedule.alphabar(t) / (1 - schedule.alphabar(t))) for t in ts]
    gaps = [b - a for a, b in zip(lam, lam[1:])][1:]  # the first step, from T−1 to the σ̃ = 80 cap, is longer
    assert max(gaps) / min(gaps) < 1.1, gaps


def test_spacing_needs_a_schedule() -> None:
    with pytest.raises(ValueError, match="'karras' needs the schedule, not just T"):
        spaced_timesteps(1000, 10, "karras")


def test_nfe_counts() -> None:
    assert SAMPLERS[SamplerName.HEUN].nfe(25) == 49 and SAMPLERS[SamplerName.DPMPP_2M].nfe(20) == 20
    pc, annealed = SAMPLERS[SamplerName.PC], SAMPLERS[SamplerName.ANNEALED_LANGEVIN]
    assert pc.nfe(10) == 20 and pc.nfe(10, {"corrector_steps": 0}) == 10 and pc.nfe(10, {"corrector_steps": 3}) == 40
    assert annealed.nfe(10) == 51 and annealed.nfe(10, {"steps_per_level": 2}) == 21
