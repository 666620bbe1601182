"""Continuous-time processes (vp, subvp, ve) and NCSN's levels through the one GaussianDiffusion: the denoising
score-matching loss and its weightings against closed forms, the network's time input and the training-time draw,
the VP SDE as the limit of DDPM's linear schedule, config and checkpoint round trips, σ_max from the data, the
Trainer, the command line and the errors.

The oracle network: for data x_0 ~ N(m, s² I) (elementwise) on x_t = α x_0 + σ ε, E[ε | x_t] = σ (x_t − α m) /
(α² s² + σ²) and Var(ε | x_t) = α² s² / (α² s² + σ²) per element (the one-Gaussian case of oracle.GaussianMixture),
so the expected ‖ε̂ − ε‖² of the exact ε̂ is known at every t.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from oracle import GaussianMixture
from torch import Tensor, nn
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.cli import main
from denoising_diffusion.data.datasets import get_builtin_dataset
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.likelihood import bits_per_dim, ode_bits_per_dim
from denoising_diffusion.losses import UniformTimes, likelihood_weight
from denoising_diffusion.nn import Unet
from denoising_diffusion.parameterization import append_dims
from denoising_diffusion.pipeline import build, load_pipeline, save_pipeline, spec_of
from denoising_diffusion.processes import NoiseSchedule, VESchedule, VPSchedule, sigma_max_from_data
from denoising_diffusion.samplers import SAMPLERS, sample_ddim
from denoising_diffusion.viz import save_image_grid

CONTINUOUS = ("vp", "subvp", "ve")
SIGMA_MAX = 20.0
OPTIONS = {"ddpm": None, "vp": {}, "subvp": {}, "ve": {"sigma_max": SIGMA_MAX}, "ncsn": {"sigma_max": SIGMA_MAX}}
MEAN, STD = 0.3, 0.5  # the oracle's data N(MEAN, STD² I)


def tiny(process: str = "ddpm", **kwargs) -> GaussianDiffusion:
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    options = kwargs.pop("process_options", OPTIONS[process])
    return GaussianDiffusion(
        unet, image_size=8, timesteps=kwargs.pop("timesteps", 10), process=process, process_options=options, **kwargs
    )


class OracleEps(nn.Module):
    """The exact ε̂ = E[ε | x_t] of N(MEAN, STD² I) data as a network of the network-time input (999·t for vp and
    subvp, log σ for ve and ncsn), optionally with the score s = −ε/σ shifted: ε̂' = ε̂ − σ δ(x_t, ε̂/σ)."""

    channels, self_condition, learned_variance = 2, False, False

    def __init__(self, process: str, perturb=None) -> None:
        super().__init__()
        self.process, self.perturb = process, perturb
        self.anchor = nn.Parameter(torch.zeros(()))  # a device and a dtype for GaussianDiffusion
        self.schedule = None  # the diffusion's, set after building it (vp/subvp invert 999·t through it)
        self.times: list[Tensor] = []  # every time input seen

    def alpha_sigma(self, time: Tensor) -> tuple[Tensor, Tensor]:
        if self.process in ("vp", "subvp"):
            return self.schedule.alpha_sigma_at(time.double() / 999.0)
        sigma = time.double().exp()
        return torch.ones_like(sigma), sigma

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        self.times.append(time)
        alpha, sigma = (append_dims(v, x.ndim) for v in self.alpha_sigma(time))
        eps = sigma * (x.double() - alpha * MEAN) / (alpha**2 * STD**2 + sigma**2)
        if self.perturb is not None:
            eps = eps - sigma * self.perturb(x.double(), eps / sigma)
        return eps.to(x.dtype)


def oracle_diffusion(process: str, perturb=None, **kwargs) -> GaussianDiffusion:
    oracle = OracleEps(process, perturb)
    diffusion = GaussianDiffusion(
        oracle, image_size=1, timesteps=kwargs.pop("timesteps", 50), process=process,
        process_options=OPTIONS[process], auto_normalize=False, clip_denoised=False, **kwargs,
    )  # fmt: skip
    oracle.schedule = diffusion.schedule
    return diffusion


def expected_oracle_loss(diffusion: GaussianDiffusion, t: float) -> float:
    """w(t) Var(ε | x_t): the oracle's expected loss at t, with w = 1 ('simple') or g(t)²/σ_t² ('likelihood')."""
    alpha, sigma = diffusion.schedule.alpha_sigma(t)
    weight = 1.0
    if diffusion.loss_weighting.name == "likelihood":
        weight = diffusion.schedule.sde(t)[1] ** 2 / sigma**2
    return weight * alpha**2 * STD**2 / (alpha**2 * STD**2 + sigma**2)


def data(n: int, generator: torch.Generator) -> Tensor:
    return MEAN + STD * torch.randn(n, 2, 1, 1, generator=generator, dtype=torch.float64)


WEIGHTED = [(p, "simple") for p in ("vp", "ve", "ncsn")] + [(p, "likelihood") for p in ("vp", "ve")]
PERTURBATIONS = {  # δ(x_t, ŝ) added to the score
    "shift": lambda x, score: torch.full_like(x, 0.5),
    "tanh": lambda x, score: 0.5 * torch.tanh(3 * x),
    "scaled": lambda x, score: -0.3 * score,
}


@pytest.mark.parametrize("process, weighting", WEIGHTED)
def test_the_oracle_loss_is_its_closed_form_at_each_time(process: str, weighting: str) -> None:
    """At fixed t the oracle's mean loss is w(t) Var(ε | x_t) (within 4 standard errors, about 2%)."""
    d = oracle_diffusion(process, loss_weighting=weighting)
    g = torch.Generator().manual_seed(0)
    times = [0, 25, 49] if process == "ncsn" else [0.001, 0.3, 1.0]
    for t in times:
        x0 = data(20000, g)
        noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        losses = d.p_losses(x0, torch.full((len(x0),), t, dtype=torch.long if process == "ncsn" else torch.float64),
                            noise)  # fmt: skip
        expected = expected_oracle_loss(d, t)
        se = float(losses.std()) / math.sqrt(len(losses))
        assert abs(float(losses.mean()) - expected) < 4 * se, (t, float(losses.mean()), expected, se)


@pytest.mark.parametrize("process, weighting", WEIGHTED)
def test_the_dsm_loss_is_minimized_by_the_oracle_score(process: str, weighting: str) -> None:
    """E_t E ‖·‖² over t drawn as training draws it: every perturbed score loses by many standard errors of the
    paired difference (same x_0, t and ε)."""
    g = torch.Generator().manual_seed(1)
    n = 20000
    x0, noise = data(n, g), torch.randn(n, 2, 1, 1, generator=g, dtype=torch.float64)
    oracle = oracle_diffusion(process, loss_weighting=weighting)
    torch.manual_seed(2)
    t = UniformTimes().sample(oracle.schedule, n, "cpu")
    best = oracle.p_losses(x0, t, noise)
    for name, perturb in PERTURBATIONS.items():
        worse = oracle_diffusion(process, perturb, loss_weighting=weighting).p_losses(x0, t, noise)
        diff = worse - best
        z = float(diff.mean()) / (float(diff.std()) / math.sqrt(n))
        assert z > 10, (name, z)


def test_likelihood_weight_is_g_squared_over_sigma_squared() -> None:
    for schedule in (VPSchedule(), VESchedule(sigma_max=SIGMA_MAX)):
        t = torch.tensor([1e-3, 0.25, 0.5, 1.0], dtype=torch.float64)
        expected = [schedule.sde(float(s))[1] ** 2 / schedule.alpha_sigma(float(s))[1] ** 2 for s in t]
        assert likelihood_weight(schedule, t).tolist() == pytest.approx(expected, rel=1e-12)
    assert likelihood_weight(VESchedule(sigma_max=SIGMA_MAX), t).tolist() == pytest.approx(
        [2 * math.log(SIGMA_MAX / 0.01)] * 4, rel=1e-12
    )  # VE: g² = 2 σ² log(σ_max/σ_min), a constant weight


def test_min_snr_uses_alpha_squared_over_sigma_squared() -> None:
    d = oracle_diffusion("vp", min_snr_loss_weight=True)
    plain = oracle_diffusion("vp", perturb=PERTURBATIONS["shift"])
    t = torch.tensor([0.01, 0.2, 0.6, 1.0], dtype=torch.float64)
    b = d.schedule.integral_beta(t)
    alpha, sigma = d.schedule.alpha_sigma_at(t)
    snr = (alpha**2 / sigma**2).tolist()
    assert snr == pytest.approx((1 / torch.expm1(b)).tolist(), rel=1e-12)  # α²/σ² = 1/(e^B − 1)
    g = torch.Generator().manual_seed(3)
    x0, noise = data(4, g), torch.randn(4, 2, 1, 1, generator=g, dtype=torch.float64)
    d.model.perturb = plain.model.perturb  # the same (non-zero) error, weighted and not
    snr = 1 / torch.expm1(b)
    weighted, unweighted = d.p_losses(x0, t, noise), plain.p_losses(x0, t, noise)
    assert weighted.tolist() == pytest.approx((unweighted * snr.clamp(max=5.0) / snr).tolist(), rel=1e-9)


# ----- the network's time and the training-time draw ------------------------------------------------------------------


@pytest.mark.parametrize("process", ["vp", "subvp", "ve", "ncsn"])
def test_training_draws_uniform_times_and_the_network_sees_network_time(process: str) -> None:
    d = oracle_diffusion(process)
    torch.manual_seed(0)
    for _ in range(10):
        d(torch.rand(1000, 2, 1, 1))
    seen = torch.cat(d.model.times)
    assert seen.dtype == torch.float32
    if process == "ncsn":  # the network sees log σ_i of a uniformly drawn level i
        levels = (seen.double()[:, None] - d.schedule.sigmas.log()[None]).abs().argmin(1)
        assert torch.allclose(seen.double(), d.schedule.sigmas.log()[levels], atol=1e-6)
        counts = torch.bincount(levels, minlength=50).double()
        chi2 = float(((counts - 200) ** 2 / 200).sum())
        assert chi2 < 49 + 5 * math.sqrt(2 * 49), chi2  # χ² with 49 degrees of freedom
        return
    if process == "ve":  # log σ_t, σ_t = σ_min (σ_max/σ_min)^t
        t = (seen.double() - math.log(0.01)) / math.log(SIGMA_MAX / 0.01)
    else:
        t = seen.double() / 999.0
    t_min = d.schedule.t_min
    assert float(t.min()) >= t_min * (1 - 1e-6) and float(t.max()) <= 1 + 1e-6
    u = ((t - t_min) / (1 - t_min)).sort().values  # Kolmogorov-Smirnov against U(t_min, 1)
    grid = torch.arange(1, len(u) + 1, dtype=torch.float64) / len(u)
    ks = float(torch.maximum(grid - u, u - (grid - 1 / len(u))).max())
    assert ks < 1.63 / math.sqrt(len(u)), ks  # the 1% critical value


@pytest.mark.parametrize("process", ["ddpm", "vp", "ve", "ncsn"])
def test_the_network_gets_schedule_network_time(process: str) -> None:
    d = tiny(process)
    seen = []
    forward = d.model.forward
    d.model.forward = lambda x, time, *a, **k: seen.append(time) or forward(x, time, *a, **k)
    t = torch.tensor([0, 3, 9]) if process in ("ddpm", "ncsn") else torch.tensor([1e-5, 0.5, 1.0], dtype=torch.float64)
    d.p_losses(torch.rand(3, 3, 8, 8), t)
    expected = d.schedule.network_time(t)
    assert torch.equal(seen[0], expected if process == "ddpm" else expected.float())


# ----- sampling: the prior and the default sampler --------------------------------------------------------------------


@pytest.mark.parametrize("process", ["vp", "ve", "ncsn"])
def test_sample_with_the_oracle_reproduces_the_data(process: str) -> None:
    """x_T ~ N(0, prior_std² I) (σ_max² for ve and ncsn), then the default sampler: the data's mean and spread."""
    d = oracle_diffusion(process, timesteps=100)
    x = d.sample(4000, generator=torch.Generator().manual_seed(0)).double()
    assert float(x.mean()) == pytest.approx(MEAN, abs=0.03)
    # ncsn's default, annealed Langevin, lags the shrinking levels: its spread comes out 4-11% wide
    # (tests/maths/test_score_samplers.py measures it); the SDE and ODE samplers of vp and ve within 5%.
    assert float(x.std()) == pytest.approx(STD, rel=0.12 if process == "ncsn" else 0.05)


@pytest.mark.parametrize("process", ["vp", "ve", "ncsn"])
def test_editing_runs_on_every_process(process: str) -> None:
    """img2img at strength 1 is ``sample`` with the same generator (x_T from the prior, σ_max-wide for ve/ncsn);
    inpainting keeps the known pixels; DDIM inversion runs on the process's times."""
    d = tiny(process, sampling_timesteps=4)
    images, mask = torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8)
    mask[..., :4] = 0
    full = d.img2img(images, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(full, d.sample(2, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(d.img2img(images, 0.5, generator=torch.Generator().manual_seed(0))).all()
    filled = d.inpaint(images, mask, jump_length=2, resample=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(filled * mask, images * mask, atol=1e-6) and torch.isfinite(filled).all()
    assert torch.isfinite(d.invert(images, steps=3)).all()


def test_default_samplers() -> None:
    assert tiny("ddpm").sampler_info(None).name == "ddpm"
    assert tiny("ddpm", sampling_timesteps=5).sampler_info(None).name == "ddim"
    for process in CONTINUOUS:
        assert tiny(process).sampler_info(None).name == ("pc" if "pc" in SAMPLERS else "ddim")
    assert tiny("ncsn").sampler_info(None).name == ("annealed_langevin" if "annealed_langevin" in SAMPLERS else "ddpm")


# ----- the VP SDE is the limit of DDPM's linear schedule --------------------------------------------------------------


def test_continuous_vp_agrees_with_the_discrete_linear_schedule(mixture: GaussianMixture) -> None:
    """ᾱ_i of the linear schedule (T steps) and α(t)² of the VP SDE at t = (i + 1)/T differ by less than 0.8/T
    (tolerance 1e-3 at T = 1000, shrinking as 1/T). DDIM (η = 0, 50 steps) on both with the mixture's oracle, from
    the same x_T on matched grids, gives the same samples within that tolerance: the mean |difference| and the
    samples' mean and standard deviation within 1e-3, 99% of the samples within 3e-3 (the few that start near the
    boundary between the modes, where the flow separates, may land elsewhere)."""
    vp = VPSchedule()
    for T, tol in [(1000, 1e-3), (4000, 2.5e-4)]:
        discrete = NoiseSchedule.from_name("linear", T)
        alpha = vp.alpha_sigma_at((torch.arange(T, dtype=torch.float64) + 1) / T)[0]
        assert float((alpha**2 - discrete.alphas_cumprod).abs().max()) < tol
    discrete = NoiseSchedule.from_name("linear", 1000)
    indices = discrete.timesteps(50)
    x_T = torch.randn(2000, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = sample_ddim(mixture.denoiser(discrete), x_T, discrete, indices)
    b = sample_ddim(mixture.denoiser(vp), x_T, vp, [(i + 1) / 1000 for i in indices])
    difference = (a - b).abs().flatten()
    assert float(difference.mean()) < 1e-3 and float(difference.quantile(0.99)) < 3e-3
    assert float((a.mean(0) - b.mean(0)).abs().max()) < 1e-3 and float((a.std(0) - b.std(0)).abs().max()) < 1e-3


# ----- round trips ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("process", ["ddpm", "vp", "subvp", "ve", "ncsn"])
def test_config_builds_the_same_schedule(process: str) -> None:
    d = tiny(process, process_options={**(OPTIONS[process] or {}), **({"t_min": 1e-4} if process == "vp" else {})})
    spec = spec_of(d)
    assert ("process" in spec) == (process != "ddpm")  # ddpm configs stay as they were
    rebuilt = build(spec)
    assert spec_of(rebuilt) == spec and type(rebuilt.schedule) is type(d.schedule)
    times = rebuilt.schedule.timesteps(7)
    assert times == d.schedule.timesteps(7)
    assert [rebuilt.schedule.alpha_sigma(t) for t in times] == [d.schedule.alpha_sigma(t) for t in times]


@pytest.mark.parametrize("process", ["vp", "subvp", "ve", "ncsn"])
def test_saved_pipeline_samples_the_same(process: str, tmp_path: Path) -> None:
    d = tiny(process, sampling_timesteps=4)
    path = save_pipeline(d, tmp_path / "model.pt")
    loaded = load_pipeline(path)
    assert loaded.process == process and loaded.config == d.config
    for sampler in [None, "ddim", "dpmpp_2m", "heun"]:
        a = d.sample(2, sampler=sampler, generator=torch.Generator().manual_seed(0))
        b = loaded.sample(2, sampler=sampler, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and torch.isfinite(a).all()


@pytest.fixture(scope="module")
def ddpm_pipeline(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pipeline(tiny("ddpm", timesteps=20), tmp_path_factory.mktemp("ddpm") / "model.pt")


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_a_discrete_checkpoint_samples_with_every_sampler(sampler, ddpm_pipeline: Path) -> None:
    """Every registered sampler that serves discrete schedules (SamplerInfo.serves) runs on a ddpm pipeline; one
    that needs continuous time refuses with a ValueError naming itself (the samplers' contract)."""
    model = load_pipeline(ddpm_pipeline)
    if not SAMPLERS[sampler].serves(model.schedule):
        with pytest.raises(ValueError, match=str(sampler.value)):
            model.sample(2, sampler=sampler, steps=3, generator=torch.Generator().manual_seed(0))
        return
    x = model.sample(2, sampler=sampler, steps=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 8, 8) and torch.isfinite(x).all()


# ----- σ_max from the data, the Trainer, the command line -------------------------------------------------------------


def test_fit_data_statistics_sets_sigma_max_from_normalized_images() -> None:
    d = tiny("ve", process_options={})
    assert d.needs_data_statistics and "sigma_max" not in d.config["process_options"]
    images = torch.rand(40, 3, 8, 8)
    fitted = d.fit_data_statistics(images)
    expected = sigma_max_from_data(images * 2 - 1)
    assert fitted == {"sigma_max": expected} and d.config["process_options"]["sigma_max"] == expected
    assert not d.needs_data_statistics and d.schedule.prior_std == expected
    assert torch.isfinite(d(images[:4])) and d.sample(2).shape == (2, 3, 8, 8)
    assert not tiny("vp").needs_data_statistics and not tiny("ve").needs_data_statistics


@pytest.mark.parametrize("process", ["vp", "ve"])
def test_a_few_trainer_steps(process: str, tmp_path: Path) -> None:
    dataset = get_builtin_dataset("shapes", 8, num_images=64)
    options = {} if process == "ve" else None
    trainer = make_trainer(tiny(process, process_options=options), dataset, tmp_path / "results")
    trainer.train()
    checkpoint = load_checkpoint(tmp_path / "results" / "model-2.pt")
    config = checkpoint["config"]
    assert checkpoint["step"] == 4 and config["process"] == process
    if process == "ve":  # fitted once from the (whole, here) dataset, stored in the checkpoint
        images = torch.stack([dataset[i] for i in range(len(dataset))])
        assert config["process_options"]["sigma_max"] == pytest.approx(sigma_max_from_data(images * 2 - 1), rel=1e-12)
        other = get_builtin_dataset("shapes", 8, num_images=64, seed=7)  # resuming takes σ_max from the checkpoint
        resumed = make_trainer(tiny("ve", process_options={}), other, tmp_path / "results", resume="auto")
        assert resumed.step == 4
        assert resumed.trainable.process_options["sigma_max"] == config["process_options"]["sigma_max"]
    model = load_pipeline(tmp_path / "results" / "model-2.pt")
    assert model.sample(2, steps=3).shape == (2, 3, 8, 8)


def test_cli_trains_and_samples_a_ve_model(tmp_path: Path, capsys) -> None:
    tiny_args = ["--dim", "8", "--dim-mults", "1,2", "--image-size", "8", "--timesteps", "20",
                 "--sampling-timesteps", "3", "--batch-size", "4", "--steps", "2", "--save-every", "2",
                 "--num-samples", "0", "--no-gif"]  # fmt: skip
    results = tmp_path / "results"
    assert main(["train", *tiny_args, "--process", "ve", "--results", str(results), "--threads", "1"]) == 0
    assert "ve process with sigma_max" in capsys.readouterr().out
    config = load_checkpoint(results / "model-1.pt")["config"]
    assert config["process"] == "ve" and config["process_options"]["sigma_max"] > 1
    out = tmp_path / "grid.png"
    assert main(["sample", str(results / "model-1.pt"), "--num", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert out.exists()
    args = ["train", *tiny_args, "--results", str(tmp_path / "r2")]
    assert main([*args, "--process", "vp", "--sigma-max", "3"]) == 2
    assert "--sigma-max is for --process ve or ncsn" in capsys.readouterr().err
    assert main([*args, "--loss-weighting", "likelihood"]) == 2  # ddpm
    folder = tmp_path / "heldout"  # nll: a score-based process has no VLB, so the ODE likelihood is reported alone
    folder.mkdir()
    for i in range(2):
        save_image_grid(torch.rand(1, 3, 8, 8), folder / f"{i}.png", nrow=1)
    capsys.readouterr()
    assert main(["nll", str(results / "model-1.pt"), str(folder), "--ode-steps", "3", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "VLB bits/dim:   not defined for process 've'" in printed and "ODE bits/dim:" in printed


def test_the_variational_bound_is_the_discrete_chains_only() -> None:
    with pytest.raises(ValueError, match="process is 'vp': use ode_bits_per_dim"):
        bits_per_dim(tiny("vp"), torch.rand(1, 3, 8, 8))
    assert torch.isfinite(ode_bits_per_dim(tiny("vp"), torch.rand(1, 3, 8, 8), steps=3)).all()


# ----- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(process="sde"), "unknown process 'sde'; registered: ddpm (options: none); edm (options: sigma_min"),
        (dict(process="ve", process_options={"sigma_min": 5.0, "sigma_max": 5.0}), "need 0 < sigma_min < sigma_max"),
        (dict(process="ncsn", process_options={"sigma_min": 9.0, "sigma_max": 2.0}), "need 0 < sigma_min < sigma_max"),
        (dict(process="ve", process_options={"sigma_min": 0.0}), "sigma_min must be positive"),
        (dict(process="vp", process_options={"sigma_max": 2.0}), "takes no option 'sigma_max'; its process_options"),
        (dict(process="vp", process_options={"t_min": 0.0}), "t_min must lie in"),
        (dict(process_options={"beta_min": 0.1}), "process='ddpm' takes its schedule from beta_schedule"),
        (dict(loss_weighting="likelihood"), "needs a continuous-time SDE"),
        (dict(process="ncsn", loss_weighting="likelihood"), "'ncsn' has discrete noise levels only"),
        (dict(process="vp", loss_weighting="likelihood", objective="pred_v"), "needs objective='pred_noise'"),
        (dict(process="vp", loss_weighting="elbo"), "unknown loss_weighting 'elbo'"),
        (dict(process="vp", beta_schedule="linear"), "beta_schedule is for process='ddpm'"),
        (dict(process="vp", timestep_spacing="trailing"), "picks discrete indices"),
        (dict(process="vp", variance_type="learned_range"), "learned variances"),
        (dict(process="vp", timesteps=0), "timesteps must be a positive integer"),
        (dict(process="ncsn", process_options={"sigma_max": 2.0}, timesteps=1), "num_levels must be an integer >= 2"),
    ],
)
def test_bad_process_arguments(kwargs: dict, message: str) -> None:
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GaussianDiffusion(unet, image_size=8, timesteps=kwargs.pop("timesteps", 10), **kwargs)


def test_learned_variance_needs_ddpm() -> None:
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, learned_variance=True)
    with pytest.raises(ValueError, match="learned variances and their VLB term are defined on the discrete ddpm"):
        GaussianDiffusion(unet, image_size=8, timesteps=10, process="vp")


def test_an_unfitted_ve_model_says_what_to_do() -> None:
    d = tiny("ve", process_options={})
    for use in (lambda: d.sample(2), lambda: d(torch.rand(2, 3, 8, 8))):
        with pytest.raises(ValueError, match=r"no sigma_max yet: give process_options=\{'sigma_max': ...\}.*"
                           "fit_data_statistics"):  # fmt: skip
            use()
    with pytest.raises(ValueError, match="only the 've' and 'ncsn' processes"):
        tiny("vp").fit_data_statistics(torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="need 0 < sigma_min < sigma_max"):  # identical images: distance 0
        tiny("ve", process_options={}).fit_data_statistics(torch.full((4, 3, 8, 8), 0.5))
