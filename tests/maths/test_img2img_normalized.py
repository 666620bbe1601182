"""SDEdit (img2img) on a model that normalises its input (auto_normalize=True, the default): images
come in and go out in [0, 1], the model works in [−1, 1]. test_editing.py checks the closed forms in data space
(auto_normalize=False); here the same closed forms must hold once the test maps [0, 1] to [−1, 1] itself.

Data in the model's space: x_0 ~ N(μ, Σ), 2x2 single-channel images, std 0.3 around means within ±0.3, so that the
[0, 1] images (x_0 + 1)/2 are clamped on the way out in under 1 % of pixels (0.4 % of the data). An exact
deterministic sampler started at index t from x_t = √ᾱ x_0 + √(1 − ᾱ) ε returns the data distribution, and
Cov(x_in, x_out) = V diag(√ᾱ λ^{3/2} / (ᾱ λ + 1 − ᾱ)^{1/2}) Vᵀ in Σ's eigenbasis (test_editing.py's module docstring).
"""

from __future__ import annotations

import math

import torch
from oracle import CorrelatedGaussian
from torch import Tensor, nn

from denoising_diffusion import GaussianDiffusion, NoiseSchedule, img2img
from denoising_diffusion.editing import strength_timesteps

F64 = torch.float64
DATA = CorrelatedGaussian(
    mean=[0.2, -0.1, 0.0, 0.3], cov=[[0.09 * 0.8 ** abs(i - j) for j in range(4)] for i in range(4)], shape=(1, 2, 2)
)
N = 4000


class OracleNet(nn.Module):
    """The ideal ε̂(x_t, t) of DATA in the model's space."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.schedule = schedule
        self.channels = 1
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self.schedule.alpha_sigma(t[0].item())
        return (x - alpha * DATA.posterior_mean(x, alpha, sigma).to(x.dtype)) / sigma


def normalizing_diffusion() -> GaussianDiffusion:
    schedule = NoiseSchedule.from_name("cosine", 1000)
    return GaussianDiffusion(OracleNet(schedule), image_size=(2, 2), timesteps=1000, beta_schedule="cosine",
                             sampling_timesteps=100, clip_denoised=False)  # fmt: skip


def to_model(images: Tensor) -> Tensor:
    return (images * 2 - 1).reshape(len(images), 4)


def test_img2img_maps_the_images_into_the_models_range_before_noising_them() -> None:
    """DDIM at strength 0.3 from N samples of the data given as [0, 1] images: mapped back to [−1, 1] by the test,
    the output has the data's mean (within 0.03, 5 standard errors) and its cross-covariance with the input is the
    closed form at the start index (within 0.012, about 8 standard errors of an entry near 0.07)."""
    d = normalizing_diffusion()
    g = torch.Generator().manual_seed(0)
    x_model = DATA.sample(N, g)
    out = img2img(d, (x_model + 1) / 2, 0.3, sampler="ddim", steps=100, generator=g)
    assert out.dtype == F64 and float(out.min()) >= 0 and float(out.max()) <= 1
    x, y = x_model.reshape(N, 4), to_model(out)
    assert float((y.mean(0) - DATA.mean).abs().max()) < 0.03
    t = strength_timesteps(d.runner.times(100, None, d.sampler_info("ddim")), 0.3)[0]
    alphabar = float(torch.cumprod(1 - d.schedule.betas.double(), 0)[t])
    lam, vectors = torch.linalg.eigh(DATA.cov)
    expected = vectors @ torch.diag(math.sqrt(alphabar) * lam**1.5 / (alphabar * lam + 1 - alphabar).sqrt()) @ vectors.T
    cross = (x - x.mean(0)).T @ (y - y.mean(0)) / (N - 1)
    assert float((cross - expected).abs().max()) < 0.012, (cross, expected)


def test_img2img_at_a_small_strength_returns_nearly_the_input() -> None:
    """At strength 0.03 (3 of 100 DDIM steps, from index 29: σ ≈ 0.06) the exact denoiser barely moves an image:
    its pixels move by 0.017 on average in [0, 1] (measured), against about 0.25 for [0, 1] images noised as if
    they were in [−1, 1]."""
    d = normalizing_diffusion()
    g = torch.Generator().manual_seed(1)
    images = (DATA.sample(256, g) + 1) / 2
    out = img2img(d, images, 0.03, sampler="ddim", steps=100, generator=g)
    assert float((out - images.clamp(0, 1)).abs().mean()) < 0.03
