"""The probability-flow ODE of the continuous processes (Song et al. 2021, eq. 13) against closed forms: the adaptive
sampler 'ode' and the ODE log-likelihood (Heun and dopri5) for VP, sub-VP and VE.

For data N(m, s² I) the marginal at t is N(α m, (α² s² + σ²) I) and, in x̃ = x/α, σ̃ = σ/α, the ODE's flow is
x̃(σ̃) = m + √((s² + σ̃²)/(s² + σ̃_0²)) (x̃_0 − m) (x̃ − m scales with the marginal's standard deviation), so both the
samples and the log-density have closed forms; the Gaussian-mixture oracle (oracle.py) checks the sampler on a
multimodal law. VE runs with σ_max = 100: large against the data (the prior N(0, σ_max² I) misses the true marginal
N(m, (s² + σ_max²) I) by the mean m, a log-density error of about m·z/σ_max per sample with z ~ N(0, 1), so at most
0.02 nats for |m| = 0.63 and mean zero), and above the Karras grid's cap σ̃ = 80, so Heun's prior is the carried one.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from oracle import GaussianMixture
from test_oracle_samplers import N, check_mixture

from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.likelihood import ode_log_likelihood
from denoising_diffusion.processes import NCSNSchedule, NoiseSchedule, SubVPSchedule, VESchedule, VPSchedule
from denoising_diffusion.samplers import SAMPLERS, SamplerName, sample_ode
from denoising_diffusion.samplers.ode import load_odeint

PROCESSES = {"vp": VPSchedule(), "subvp": SubVPSchedule(), "ve": VESchedule(sigma_max=100.0)}
MEANS = {1: [0.5], 3: [0.5, -0.25, 0.3]}
STD = 0.4


def gaussian(dim: int) -> GaussianMixture:
    return GaussianMixture(weights=[1.0], means=[MEANS[dim]], stds=[STD])


def sigma_tilde(schedule, t: float) -> float:
    alpha, sigma = schedule.alpha_sigma(t)
    return sigma / alpha


def smoothed_log_density(data: GaussianMixture, schedule, x0: torch.Tensor) -> torch.Tensor:
    """log N(x0; m, (s² + σ̃(t_min)²) I), (N,): the density the ODE defines at its lowest time."""
    var = STD**2 + sigma_tilde(schedule, schedule.t_min) ** 2
    sq = ((x0[:, :, 0, 0] - data.means[0]) ** 2).sum(1)
    return -0.5 * data.dim * math.log(2 * math.pi * var) - 0.5 * sq / var


def exact_flow(data: GaussianMixture, x: torch.Tensor, from_tilde: float, to_tilde: float) -> torch.Tensor:
    """x̃ carried by the exact probability-flow ODE of N(m, s² I) data from σ̃ = from_tilde to σ̃ = to_tilde."""
    m = data.means[0].view(1, -1, 1, 1)
    return m + math.sqrt((STD**2 + to_tilde**2) / (STD**2 + from_tilde**2)) * (x - m)


def counting(denoiser):
    """The denoiser and a one-element list holding its number of calls so far."""
    calls = [0]

    def counted(x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        calls[0] += 1
        return denoiser(x_t, t)

    return counted, calls


# ----- the log-likelihood ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("process", list(PROCESSES))
@pytest.mark.parametrize("solver, mean_tol, max_tol", [("heun", 0.01, 0.04), ("dopri5", 1e-3, 0.03)])
def test_ode_log_likelihood_is_the_smoothed_gaussian_density(
    process: str, dim: int, solver: str, mean_tol: float, max_tol: float
) -> None:
    """log p of 200 draws of N(m, 0.4² I) against log N(x; m, (s² + σ̃(t_min)²) I), exact divergence. Heun, 200
    Karras steps: observed mean error 0.0009-0.0053 (second order: 4 times larger at 100 steps), largest 0.028;
    dopri5 (rtol = atol = 1e-5): mean error <= 1.3e-4, largest 0.022, which is the prior's miss (module docstring)."""
    schedule, data = PROCESSES[process], gaussian(dim)
    x0 = data.sample(200, torch.Generator().manual_seed(0))
    log_p = ode_log_likelihood(data.denoiser(schedule), schedule, x0, steps=200, solver=solver)
    error = log_p - smoothed_log_density(data, schedule, x0)
    assert abs(float(error.mean())) < mean_tol and float(error.abs().max()) < max_tol, (
        float(error.mean()),
        float(error.abs().max()),
    )


@pytest.mark.parametrize("process", list(PROCESSES))
def test_dopri5_likelihood_is_the_change_of_variables_through_the_exact_flow(process: str) -> None:
    """With the prior's miss taken out, what is left is the solver's error: the model's log-density is exactly
    log N(Φ(x̃); 0, prior_std²/α_1² I) + (D/2) log((s² + σ̃_1²)/(s² + σ̃_min²)) with Φ the exact flow from t_min to
    t = 1 (D = 3). Per sample within 1e-3 nats at the default tolerances (observed 1.5e-4-2e-4; 0.009-0.023 at 1e-3),
    and closer at 1e-7 (observed 2e-6)."""
    schedule, data = PROCESSES[process], gaussian(3)
    x0 = data.sample(100, torch.Generator().manual_seed(1))
    low, top = sigma_tilde(schedule, schedule.t_min), sigma_tilde(schedule, 1.0)
    prior_var = schedule.prior_std**2 / schedule.alpha_sigma(1.0)[0] ** 2
    x_top = exact_flow(data, x0, low, top)[:, :, 0, 0]
    log_prior = -0.5 * 3 * math.log(2 * math.pi * prior_var) - 0.5 * (x_top**2).sum(1) / prior_var
    expected = log_prior + 1.5 * math.log((STD**2 + top**2) / (STD**2 + low**2))
    errors = {}
    for tol in (1e-5, 1e-7):
        log_p = ode_log_likelihood(data.denoiser(schedule), schedule, x0, solver="dopri5", rtol=tol, atol=tol)
        errors[tol] = float((log_p - expected).abs().max())
    assert errors[1e-5] < 1e-3 and errors[1e-7] < errors[1e-5], errors


def test_heun_likelihood_on_a_continuous_grid_converges_at_second_order() -> None:
    schedule, data = PROCESSES["vp"], gaussian(3)
    x0 = data.sample(100, torch.Generator().manual_seed(2))
    exact = smoothed_log_density(data, schedule, x0)
    errors = [
        float((ode_log_likelihood(data.denoiser(schedule), schedule, x0, steps=n) - exact).mean()) for n in (50, 100)
    ]
    assert errors[0] / errors[1] > 3.0, errors


def test_dopri5_likelihood_with_hutchinson_probes_is_unbiased(mixture) -> None:
    """Rademacher probes (2, fixed for the whole integration) on the mixture (an isotropic Gaussian's Jacobian is a
    multiple of I, where Rademacher probes are exact): the mean over samples of the estimate minus the exact trace's
    result is within 4 standard errors (+1e-3) of zero."""
    schedule = PROCESSES["ve"]
    x0 = mixture.sample(300, torch.Generator().manual_seed(3))
    exact = ode_log_likelihood(mixture.denoiser(schedule), schedule, x0, solver="dopri5", exact_trace=True)
    estimate = ode_log_likelihood(mixture.denoiser(schedule), schedule, x0, solver="dopri5", exact_trace=False,
                                  num_probes=2, generator=torch.Generator().manual_seed(4))  # fmt: skip
    diff = estimate - exact
    assert float(diff.std()) > 0, "the probes must make a difference"
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(diff)) + 1e-3


# ----- the sampler ---------------------------------------------------------------------------------------------------


def prior_draw(schedule, n: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return schedule.prior_std * torch.randn(n, dim, 1, 1, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("process", list(PROCESSES))
def test_ode_sampler_recovers_the_mixture(process: str, mixture) -> None:
    """4000 draws from the prior through the registry's 'ode' at its recommended steps (2: one ODE interval from
    t = 1 to t_min, then x̂_0): weights within 4 SE + 0.01, mode means within 5 SE + 0.02, spreads within 8%."""
    schedule, info = PROCESSES[process], SAMPLERS[SamplerName.ODE]
    x_T = prior_draw(schedule, N, mixture.dim, seed=0)
    x = info.fn(mixture.denoiser(schedule), x_T, schedule, schedule.timesteps(info.recommended_steps))
    check_mixture(mixture, x, std_rel_tol=0.08)


@pytest.mark.parametrize("process", list(PROCESSES))
def test_ode_sampler_follows_the_exact_flow(process: str) -> None:
    """Each sample is the exact flow of its x_T from t = 1 to the grid's last time followed by E[x_0 | x_t] there,
    within 1e-3 at the default tolerances (observed 7e-6 to 3e-5); the state at every output point too (checked
    through the callback). The grid stops at t = 0.05, where x_t is still off x̂_0 by up to 0.24 (vp), 0.018 (subvp)
    and 0.0023 (ve), so a missing final denoising step shows."""
    schedule, data = PROCESSES[process], gaussian(3)
    x_T = prior_draw(schedule, 500, 3, seed=1)
    timesteps = [1.0, 0.6, 0.3, 0.05]
    records = []
    x = sample_ode(data.denoiser(schedule), x_T, schedule, timesteps, callback=records.append)
    top = sigma_tilde(schedule, 1.0)
    for record in records[:-1]:
        alpha = schedule.alpha_sigma(record.t)[0]
        want = alpha * exact_flow(data, x_T / schedule.alpha_sigma(1.0)[0], top, sigma_tilde(schedule, record.t))
        assert float((record.x_t - want).abs().max()) < 1e-3 * max(1.0, float(want.abs().max())), record.t
    alpha, sigma = schedule.alpha_sigma(timesteps[-1])
    x_low = alpha * exact_flow(data, x_T / schedule.alpha_sigma(1.0)[0], top, sigma / alpha)
    want = data.posterior_mean(x_low, alpha, sigma)
    assert float((x - want).abs().max()) < 1e-3, float((x - want).abs().max())


@pytest.mark.parametrize("process", list(PROCESSES))
def test_nfe_is_reported_and_falls_as_the_tolerances_loosen(process: str) -> None:
    """StepRecord.nfe counts every network evaluation (it equals the calls the denoiser saw, and rises by one on the
    final step); looser tolerances take fewer and err more (observed on [1, 0.5, t_min]: 29-65 evaluations at 1e-3,
    71-113 at 1e-5, 137-251 at 1e-7)."""
    schedule, data = PROCESSES[process], gaussian(3)
    x_T = prior_draw(schedule, 200, 3, seed=2)
    reference = sample_ode(data.denoiser(schedule), x_T, schedule, [1.0, schedule.t_min], rtol=1e-9, atol=1e-9)
    nfe, error = {}, {}
    for tol in (1e-3, 1e-5, 1e-7):
        denoiser, calls = counting(data.denoiser(schedule))
        records = []
        x = sample_ode(denoiser, x_T, schedule, [1.0, 0.5, schedule.t_min], rtol=tol, atol=tol,
                       callback=records.append)  # fmt: skip
        assert [r.index for r in records] == [0, 1, 2] and [r.t for r in records] == [1.0, 0.5, schedule.t_min]
        assert records[-1].nfe == calls[0] and records[-1].nfe == records[-2].nfe + 1
        assert 0 < records[0].nfe < records[1].nfe, [r.nfe for r in records]
        nfe[tol], error[tol] = calls[0], float((x - reference).abs().max())
    assert nfe[1e-3] < nfe[1e-5] < nfe[1e-7], nfe
    assert error[1e-3] > error[1e-7], error


def test_ode_sampler_keeps_the_sampler_contracts() -> None:
    """The contracts of test_sampler_contracts.py on a continuous process: shape, dtype (float32 too) and device
    kept; no noise drawn (the generator changes nothing); callback once per step with each record's x_next the next
    x_t; one step is the final denoising step alone; bad timesteps refused."""
    schedule, data = PROCESSES["vp"], gaussian(3)
    for dtype in (torch.float32, torch.float64):

        def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
            assert t.shape == (x_t.shape[0],) and t.dtype == torch.float64
            pred = data.denoiser(schedule)(x_t.double(), t)
            return Prediction(x0=pred.x0.to(x_t.dtype), eps=pred.eps.to(x_t.dtype))

        x_T = torch.randn(4, 3, 1, 1, dtype=dtype, generator=torch.Generator().manual_seed(0))
        records = []
        once = sample_ode(denoiser, x_T, schedule, schedule.timesteps(3), generator=torch.Generator().manual_seed(0),
                          callback=records.append)  # fmt: skip
        again = sample_ode(denoiser, x_T, schedule, schedule.timesteps(3), generator=torch.Generator().manual_seed(1))
        assert once.shape == x_T.shape and once.dtype == dtype and once.device == x_T.device
        assert torch.equal(once, again) and torch.equal(records[-1].x_next, once)
        assert all(torch.equal(a.x_next, b.x_t) for a, b in zip(records, records[1:]))
    records = []
    one = sample_ode(data.denoiser(schedule), x_T.double(), schedule, [1.0], callback=records.append)
    assert len(records) == 1 and records[0].nfe == 1 and torch.equal(one, records[0].pred_x0)
    for bad in ([], [0.5, 0.5], [0.2, 0.6], [1.5, 0.5], [0.5, 0.0]):
        with pytest.raises(ValueError, match="timesteps"):
            sample_ode(data.denoiser(schedule), x_T, schedule, bad)


# ----- the registry and the errors ----------------------------------------------------------------------------------


def test_registry_entry() -> None:
    info = SAMPLERS[SamplerName("ode")]
    assert info.fn is sample_ode and not info.stochastic and info.needs_sde and info.adaptive
    assert info.option_names == ["rtol", "atol"] and info.recommended_steps == 2
    assert info.bind({"rtol": "1e-3"}) == {"rtol": 1e-3} and info.bind({}, {"atol": 2e-4}) == {"atol": 2e-4}
    with pytest.raises(ValueError, match="sampler option rtol='-1': rtol must be a positive float"):
        info.bind({"rtol": "-1"})
    assert info.serves(PROCESSES["ve"]) and not info.serves(NoiseSchedule.from_name("linear", 10))
    assert SAMPLERS[SamplerName.DDIM].serves(NoiseSchedule.from_name("linear", 10))
    with pytest.raises(ValueError, match="adaptive"):
        info.nfe(2)


@pytest.mark.parametrize("schedule", [NoiseSchedule.from_name("linear", 100), NCSNSchedule(num_levels=10)])
def test_discrete_schedules_are_refused_naming_what_is_served(schedule) -> None:
    data = gaussian(1)
    with pytest.raises(ValueError, match="sampler 'ode' .* serves the continuous-time processes vp, subvp and ve"):
        sample_ode(data.denoiser(schedule), torch.zeros(2, 1, 1, 1), schedule, [5, 0])
    x0 = torch.zeros(2, 1, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="solver='dopri5' .* vp, subvp and ve"):
        ode_log_likelihood(data.denoiser(schedule), schedule, x0, solver="dopri5")


@pytest.mark.parametrize("name", ["rtol", "atol"])
@pytest.mark.parametrize("bad", [0.0, -1e-5, math.nan, math.inf, "x", None, True])
def test_tolerances_must_be_positive_floats(name: str, bad) -> None:
    schedule, data = PROCESSES["vp"], gaussian(1)
    x = torch.zeros(2, 1, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=f"{name} must be a positive float"):
        sample_ode(data.denoiser(schedule), x, schedule, [1.0, 0.5], **{name: bad})
    with pytest.raises(ValueError, match=f"{name} must be a positive float"):
        ode_log_likelihood(data.denoiser(schedule), schedule, x, solver="dopri5", **{name: bad})


def test_unknown_solver_is_refused() -> None:
    schedule, data = PROCESSES["vp"], gaussian(1)
    with pytest.raises(ValueError, match="unknown ODE solver 'rk4'; allowed values: 'heun', 'dopri5'"):
        ode_log_likelihood(data.denoiser(schedule), schedule, torch.zeros(1, 1, 1, 1), solver="rk4")


def test_missing_torchdiffeq_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # makes `import torchdiffeq` raise ImportError
    with pytest.raises(ImportError, match=r"needs torchdiffeq: pip install 'denoising-diffusion\[sde\]'"):
        load_odeint()
    schedule, data = PROCESSES["vp"], gaussian(1)
    with pytest.raises(ImportError, match="sde"):
        sample_ode(data.denoiser(schedule), torch.zeros(1, 1, 1, 1), schedule, [1.0, 0.5])
