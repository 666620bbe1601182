"""A new process and a new loss weighting, registered in this file: they train, sample, save and rebuild through
GaussianDiffusion, the Trainer and the pipeline without any package file knowing them (issue 29: "a new process
touches about six files" was the fault; now it touches none).

The process is a variance-preserving path with σ_t = t: α_t = √(1 − t²) on t ∈ [t_min, 0.999]. Its SDE has the
drift f(t) = d log α/dt = −t/(1 − t²) and g(t)² = dσ²/dt − 2 f σ² = 2t/(1 − t²) (Kingma et al. 2021, eq. 30).
The weighting is the sigmoid weighting of Kingma & Gao 2023 ("Understanding Diffusion Objectives", eq. 13): w(λ) =
sigmoid(b − λ) on ‖ε̂ − ε‖², λ = log SNR.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from oracle import GaussianMixture
from torch import Tensor
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion import GaussianDiffusion, Unet, load_pipeline, registered_processes
from denoising_diffusion.losses import Weighting, weighting_kind
from denoising_diffusion.processes import ContinuousSchedule, process_kind
from denoising_diffusion.samplers import SAMPLERS


@process_kind("test_linear_sigma")
class LinearSigmaVP(ContinuousSchedule):
    """σ_t = t, α_t = √(1 − t²): a variance-preserving path, defined only here."""

    recommended_sampler: ClassVar[str] = "dpmpp_2m"
    t_max = 0.999

    def __init__(self, t_min: float = 1e-3) -> None:
        self.t_min = float(t_min)

    def _alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return (1 - t**2).sqrt(), t

    def drift_coef(self, t: float) -> float:
        return -t / (1 - t**2)

    def diffusion_sq_at(self, t: Tensor) -> Tensor:
        return 2 * t / (1 - t**2)

    @property
    def prior_std(self) -> float:
        return 1.0

    def network_time(self, t: Tensor) -> Tensor:
        return 999.0 * t

    @property
    def config(self) -> dict[str, Any]:
        return {"t_min": self.t_min}


@weighting_kind("test_sigmoid")
class SigmoidWeighting(Weighting):
    """w = sigmoid(b − log SNR) (Kingma & Gao 2023, eq. 13)."""

    summary = "sigmoid(b - log SNR)"

    def __init__(self, bias: float = 0.0) -> None:
        self.bias = float(bias)

    def weight(self, schedule: Any, t: Tensor, objective: Any) -> Tensor:
        alpha, sigma = schedule.alpha_sigma_at(t)
        return torch.sigmoid(self.bias - torch.log(alpha**2 / sigma**2))


@pytest.fixture
def images() -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 8, 8, generator=g) for _ in range(8)]


def unet(**kwargs: Any) -> Unet:
    return Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, **kwargs)


def test_the_registered_process_is_known_by_name_with_its_options() -> None:
    assert "test_linear_sigma" in registered_processes()
    d = GaussianDiffusion(
        unet(), image_size=8, timesteps=6, process="test_linear_sigma", process_options={"t_min": 0.01}
    )
    assert d.process == "test_linear_sigma" and d.config["process_options"] == {"t_min": 0.01}
    assert d.sampler_info(None).name == "dpmpp_2m"  # its declared default
    with pytest.raises(
        ValueError, match="process 'test_linear_sigma' takes no option 'sigma_max'; its process_options: t_min"
    ):
        GaussianDiffusion(unet(), image_size=8, process="test_linear_sigma", process_options={"sigma_max": 2.0})
    with pytest.raises(
        ValueError, match=r"unknown process 'nope'; registered: .*test_linear_sigma \(options: t_min=0.001\)"
    ):
        GaussianDiffusion(unet(), image_size=8, process="nope")


@pytest.mark.parametrize("sampler", ["ddim", "heun", "euler_maruyama"])
def test_every_kind_of_sampler_reproduces_gaussian_data_on_the_new_path(sampler: str) -> None:
    """The ideal denoiser of N(m, s²) on this path, through three samplers (a first-order ODE step, a second-order
    ODE step, the reverse SDE that needs the new process's f and g): the samples' mean and std within 5 %."""
    data = GaussianMixture([1.0], [[0.5, -0.3]], [0.4])
    schedule = LinearSigmaVP()
    info_steps = {"ddim": 50, "heun": 25, "euler_maruyama": 400}[sampler]

    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(4000, 2, 1, 1, generator=g, dtype=torch.float64)
    grid = schedule.timesteps(info_steps, "linspace" if sampler == "euler_maruyama" else "logsnr")
    x = SAMPLERS[sampler].fn(data.denoiser(schedule), x_T, schedule, grid, generator=g)[:, :, 0, 0]
    torch.testing.assert_close(x.mean(0), torch.tensor([0.5, -0.3], dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((2,), 0.4, dtype=torch.float64), rtol=0.05, atol=0)


def test_the_new_process_trains_saves_rebuilds_and_samples_with_three_samplers(
    images: list[Tensor], tmp_path: Path
) -> None:
    d = GaussianDiffusion(unet(), image_size=8, timesteps=6, process="test_linear_sigma")
    trainer = make_trainer(d, images, tmp_path / "r", train_num_steps=2, save_and_sample_every=2)
    trainer.train()
    loaded = load_pipeline(tmp_path / "r" / "model-1.pt")
    assert type(loaded.schedule) is LinearSigmaVP and loaded.config == d.config
    for sampler in ("ddim", "heun", "euler_maruyama"):
        x = loaded.sample(2, sampler=sampler, steps=3, generator=torch.Generator().manual_seed(1))
        assert x.shape == (2, 3, 8, 8) and bool(torch.isfinite(x).all()), sampler


def test_the_registered_weighting_multiplies_the_loss_by_its_closed_form() -> None:
    """p_losses with the weighting = the unweighted p_losses × sigmoid(b − log SNR) at each t, with SNR = α_t²/σ_t² =
    (1 − t²)/t² written out here; and the weighting's options round-trip through the config."""
    torch.manual_seed(0)
    net = unet()
    kwargs = dict(image_size=8, timesteps=6, process="test_linear_sigma")
    weighted = GaussianDiffusion(net, loss_weighting={"kind": "test_sigmoid", "bias": 1.5}, **kwargs)
    plain = GaussianDiffusion(net, **kwargs)
    x0, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
    t = torch.tensor([0.05, 0.3, 0.6, 0.9], dtype=torch.float64)
    expected = torch.tensor([1 / (1 + math.exp(-(1.5 - math.log((1 - s**2) / s**2)))) for s in t.tolist()])
    torch.testing.assert_close(weighted.p_losses(x0, t, noise), plain.p_losses(x0, t, noise) * expected.float())
    assert weighted.config["loss_weighting"] == {"kind": "test_sigmoid", "bias": 1.5}
    again = GaussianDiffusion(net, **weighted.config)
    assert isinstance(again.loss_weighting, SigmoidWeighting) and again.loss_weighting.bias == 1.5


def test_the_new_weighting_trains_with_the_trainer_on_ddpm(images: list[Tensor], tmp_path: Path) -> None:
    d = GaussianDiffusion(unet(), image_size=8, timesteps=10, loss_weighting="test_sigmoid")
    make_trainer(d, images, tmp_path / "r", train_num_steps=2, num_samples=0).train()
    loaded = load_pipeline(tmp_path / "r" / "model-1.pt")
    assert isinstance(loaded.loss_weighting, SigmoidWeighting) and loaded.config["loss_weighting"] == {
        "kind": "test_sigmoid",
        "bias": 0.0,
    }
