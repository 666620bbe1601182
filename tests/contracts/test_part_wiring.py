"""Which option reaches which part, and the re-housed parts' own contracts, each by what it means (issue 29, part 8:
the mutation list re-derived after the re-housing found these unguarded): the ddpm tables on the device of the
times, the fitted σ_max restored only where it belongs, the training-time distribution and a weighting's options
from the arguments and from the config, the uniform draw's whole range, the spacing a sampling run uses (the call's,
then the model's, then the sampler's recommendation as the process adapts it), and self-conditioning's coin.

The networks here are functions of their input (no Unet), so every test runs in well under a second.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from denoising_diffusion import GaussianDiffusion
from denoising_diffusion.losses import LogNormalSigma, UniformTimes
from denoising_diffusion.processes import NoiseSchedule, VPSchedule

T = 20


class Net(nn.Module):
    """out = x/2 with what GaussianDiffusion reads; records, per call, whether it was given a self-condition."""

    def __init__(self, channels: int = 1, self_condition: bool = False) -> None:
        super().__init__()
        self.channels, self.self_condition, self.learned_variance = channels, self_condition, False
        self.anchor = nn.Parameter(torch.zeros(()))  # a device, a dtype and something to differentiate
        self.fed: list[bool] = []

    def forward(self, x: Tensor, time: Tensor, x_self_cond: Tensor | None = None) -> Tensor:
        self.fed.append(x_self_cond is not None)
        return 0.5 * x + self.anchor


def model(**kwargs) -> GaussianDiffusion:
    kwargs.setdefault("timesteps", T)
    return GaussianDiffusion(Net(), image_size=2, **kwargs)


def test_the_ddpm_tables_follow_the_device_of_the_times() -> None:
    """The per-step tables are kept once per device: a batch of times on another device (here PyTorch's 'meta'
    device, which a CPU-only machine has) reads tables on that device, never the CPU's."""
    schedule = NoiseSchedule.from_name("linear", 10)
    on_cpu = schedule.alpha_sigma_at(torch.arange(10))
    alphabar = torch.cumprod(1 - schedule.betas, 0)
    torch.testing.assert_close(on_cpu, (alphabar.sqrt(), (1 - alphabar).sqrt()), rtol=0, atol=1e-15)
    t = torch.arange(10, device="meta")
    step = schedule.posterior_at(t)
    for value in (*schedule.alpha_sigma_at(t), step.c0, step.ct, step.variance, step.log_variance, step.log_beta):
        assert value.device.type == "meta"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "1.0", True])
def test_process_options_are_finite_numbers(value: object) -> None:
    with pytest.raises(ValueError, match="process_options beta_max must be a finite number"):
        model(process="vp", process_options={"beta_max": value})


def test_a_stored_sigma_max_is_taken_only_by_the_same_process_and_only_while_missing() -> None:
    """restore_data_statistics (a resumed run) takes σ_max from a checkpoint's config of the same process, and only
    when the model has none: never another process's, never over one it was given."""
    stored = {"process": "ve", "process_options": {"sigma_min": 0.01, "sigma_max": 7.0, "t_min": 1e-5}}
    ncsn = model(process="ncsn", timesteps=4)
    assert ncsn.needs_data_statistics
    assert not ncsn.restore_data_statistics(stored) and ncsn.needs_data_statistics
    ve = model(process="ve")
    assert ve.restore_data_statistics(stored) and ve.schedule.sigma_max == 7.0 and not ve.needs_data_statistics
    given = model(process="ve", process_options={"sigma_max": 3.0})
    assert not given.restore_data_statistics(stored) and given.schedule.sigma_max == 3.0


def test_training_times_reach_the_loss_and_survive_the_config() -> None:
    """training_times={'kind': 'log_normal', ...} on the VP process: ln σ̃ of the drawn times is N(P_mean, P_std²)
    (Karras et al. 2022, Table 1), at times inside [t_min, 1]; the config rebuilds the same distribution."""
    times = {"kind": "log_normal", "p_mean": 0.5, "p_std": 0.5}
    d = model(process="vp", training_times=times)
    rebuilt = GaussianDiffusion(Net(), **d.config)
    for diffusion in (d, rebuilt):
        assert isinstance(diffusion.loss.times, LogNormalSigma)
        torch.manual_seed(0)
        t = diffusion.loss.times.sample(diffusion.schedule, 4000, "cpu")
        assert float(t.min()) >= d.schedule.t_min and float(t.max()) <= 1.0
        alpha, sigma = diffusion.schedule.alpha_sigma_at(t)
        log_sigma_tilde = (sigma / alpha).log()
        assert abs(float(log_sigma_tilde.mean()) - 0.5) < 0.05 and abs(float(log_sigma_tilde.std()) - 0.5) < 0.05


def test_uniform_training_times_cover_the_whole_range() -> None:
    """'uniform' draws every index 0 … T−1 of a discrete chain, and t ~ U(t_min, 1) in continuous time."""
    torch.manual_seed(0)
    ddpm = NoiseSchedule.from_name("linear", 4)
    assert set(UniformTimes().sample(ddpm, 400, "cpu").tolist()) == {0, 1, 2, 3}
    t = UniformTimes().sample(VPSchedule(t_min=0.5), 4000, "cpu")
    assert float(t.min()) >= 0.5 and abs(float(t.mean()) - 0.75) < 0.01


def test_a_weightings_options_survive_a_ddpm_models_config() -> None:
    """loss_weighting={'kind': 'min_snr', 'gamma': 2} on ddpm: the weight on ‖ε̂ − ε‖² is min(SNR, 2)/SNR (Hang et
    al. 2023, eq. 9) with SNR = ᾱ/(1 − ᾱ) from the betas, and the model rebuilt from its config weights the same."""
    d = model(loss_weighting={"kind": "min_snr", "gamma": 2.0})
    rebuilt = GaussianDiffusion(Net(), **d.config)
    t = torch.arange(T)
    alphabar = torch.cumprod(1 - d.schedule.betas, 0)
    snr = alphabar / (1 - alphabar)
    expected = snr.clamp(max=2.0) / snr
    for diffusion in (d, rebuilt):
        weight = diffusion.loss.weightings[0].weight(diffusion.schedule, t, diffusion.objective)
        torch.testing.assert_close(weight, expected)


def test_the_grid_comes_from_the_call_then_the_model_then_the_samplers_recommendation() -> None:
    """The times a run visits: the call's steps and spacing; else the model's sampling_timesteps and
    timestep_spacing; else the sampler's recommended spacing as the process adapts it (EDM: Karras et al. 2022,
    eq. 5, with ρ = 7, for samplers that recommend linspace)."""
    spaced = model(sampling_timesteps=5, timestep_spacing="leading").runner
    assert spaced.times() == [16, 12, 8, 4, 0]  # leading: 0, T/5, … reversed
    assert spaced.times(spacing="trailing") == [19, 15, 11, 7, 3]  # round(T − i T/5) − 1
    assert spaced.times(steps=4, spacing="linspace") == [19, 13, 6, 0]  # round(linspace(T − 1, 0, 4))
    plain = model(sampling_timesteps=5).runner
    logsnr = plain.times(info=plain.sampler_info("dpmpp_2m"))  # DPM-Solver recommends uniform steps in λ
    assert logsnr[0] == T - 1 and logsnr[-1] == 0 and logsnr != plain.times()
    lam = [math.log(a / s) for a, s in map(plain.schedule.alpha_sigma, logsnr)]
    gaps = [b - a for a, b in zip(lam, lam[1:])]
    assert max(gaps[1:]) - min(gaps[1:]) < 0.5 * abs(sum(gaps[1:]) / len(gaps[1:]))  # nearly uniform in λ
    edm = model(process="edm", sampling_timesteps=4).runner
    sigma_min, sigma_max = 0.002, 80.0
    karras = [(sigma_max ** (1 / 7) + i / 3 * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7 for i in range(4)]
    assert edm.times(info=edm.sampler_info("ddim")) == pytest.approx(karras, rel=1e-9)


@pytest.mark.parametrize(
    ("process", "options", "std"),
    [("vp", {}, 1.0), ("ve", {"sigma_max": 20.0}, 20.0), ("ncsn", {"sigma_max": 20.0}, 20.0), ("edm", {}, 80.0)],
)
def test_sampling_starts_from_the_prior_of_the_process(process: str, options: dict, std: float) -> None:
    """x_T ~ N(0, prior_std² I): N(0, I) on VP paths, N(0, σ_max² I) on VE paths (Song et al. 2021, §3.4; Karras
    et al. 2022, Alg. 1), as the first step's record shows it (in the model's space, before any output clamp)."""
    d = model(process=process, process_options=options, timesteps=4, sampling_timesteps=2)
    first: list[Tensor] = []
    d.sample(512, sampler="ddim", generator=torch.Generator().manual_seed(0),
             callback=lambda record: first.append(record.x_t) if record.index == 0 else None)  # fmt: skip
    assert float(first[0].std()) == pytest.approx(std, rel=0.05)


def test_self_conditioning_trains_on_its_own_estimate_about_half_the_time() -> None:
    """Chen et al. 2022, §3: a self-conditioned network trains with a first no-grad pass's x̂_0 half the time, and
    without one otherwise (as sampling's first step has none)."""
    net = Net(self_condition=True)
    d = GaussianDiffusion(net, image_size=2, timesteps=T)
    torch.manual_seed(0)
    for _ in range(40):
        d(torch.rand(2, 1, 2, 2))
    first_passes = len(net.fed) - 40  # a training call is one pass, or a first pass and a fed second one
    assert 10 <= first_passes <= 30
    assert net.fed.count(True) == first_passes  # every first pass feeds the second
