"""Editing passes sample()'s options on: guidance rescale reaches img2img and inpaint (it changes their output as it
changes sample's, and img2img at strength 1 is sample() with it, bit for bit), and inpaint's ``variance`` is the
reverse steps' variance (the same numbers as sample_repaint with it, on the oracle of a correlated Gaussian)."""

from __future__ import annotations

import pytest
import torch
from oracle import CorrelatedGaussian
from torch import Tensor, nn

from denoising_diffusion import (
    GaussianDiffusion,
    NoiseSchedule,
    Unet,
    img2img,
    inpaint,
    sample_repaint,
    spaced_timesteps,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def conditional() -> GaussianDiffusion:
    torch.manual_seed(0)
    unet = Unet(dim=8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8, num_classes=3)
    with torch.no_grad():  # away from the zero-initialised output layer, so that the classes matter
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return GaussianDiffusion(unet, image_size=8, timesteps=20, sampling_timesteps=5)


def images_and_mask() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.rand(3, 3, 8, 8, generator=g), (torch.rand(3, 1, 8, 8, generator=g) < 0.5).float()


def test_guidance_rescale_reaches_img2img(conditional: GaussianDiffusion) -> None:
    images, _ = images_and_mask()
    guided = dict(classes=[0, 2, 1], guidance_scale=4.0, sampler="ddim", steps=4)

    def run(fn, rescale: float, *args) -> Tensor:
        return fn(*args, guidance_rescale=rescale, generator=torch.Generator().manual_seed(7), **guided)

    full = run(img2img, 0.7, conditional, images, 1.0)
    assert torch.equal(full, run(conditional.sample, 0.7, 3))
    assert not torch.equal(full, run(conditional.sample, 0.0, 3))
    assert not torch.equal(run(img2img, 0.7, conditional, images, 0.6), run(img2img, 0.0, conditional, images, 0.6))


def test_guidance_rescale_reaches_inpaint(conditional: GaussianDiffusion) -> None:
    images, mask = images_and_mask()

    def run(rescale: float) -> Tensor:
        return inpaint(conditional, images, mask, classes=[0, 2, 1], guidance_scale=4.0, guidance_rescale=rescale,
                       jump_length=2, resample=2, generator=torch.Generator().manual_seed(3))  # fmt: skip

    plain, rescaled = run(0.0), run(0.7)
    keep = mask.bool().expand_as(images)
    assert torch.equal(plain[keep], rescaled[keep])
    assert float((plain[~keep] - rescaled[~keep]).abs().max()) > 1e-4


COV = [[0.25 * 0.9 ** abs(i - j) for j in range(4)] for i in range(4)]
DATA = CorrelatedGaussian(mean=[0.3, -0.2, 0.1, 0.4], cov=COV, shape=(1, 2, 2))


class OracleNet(nn.Module):
    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.schedule, self.channels = schedule, 1
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = self.schedule.alpha_sigma(t[0].item())
        return (x - alpha * DATA.posterior_mean(x, alpha, sigma).to(x.dtype)) / sigma


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_inpaint_runs_the_variance_it_is_given(variance: str) -> None:
    schedule = NoiseSchedule.from_name("cosine", 100)
    d = GaussianDiffusion(OracleNet(schedule), image_size=(2, 2), timesteps=100, beta_schedule="cosine",
                          sampling_timesteps=10, auto_normalize=False, clip_denoised=False)  # fmt: skip
    images = DATA.sample(6, torch.Generator().manual_seed(3))
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(6, 1, 2, 2)
    out = inpaint(d, images, mask, variance=variance, jump_length=3, resample=2,
                  generator=torch.Generator().manual_seed(4))  # fmt: skip
    g = torch.Generator().manual_seed(4)
    x_T = torch.randn(images.shape, generator=g, dtype=F64)
    expected = sample_repaint(d.denoiser(), x_T, schedule, spaced_timesteps(100, 10, "linspace"), known=images,
                              mask=mask, jump_length=3, resample=2, variance=variance, generator=g)  # fmt: skip
    assert torch.equal(out, expected)
