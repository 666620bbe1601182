"""Conditions against what they mean: class names are accepted wherever a condition is (sample, inpaint, img2img,
denoiser, invert)."""

from __future__ import annotations

import pytest
import torch

from denoising_diffusion import GaussianDiffusion, Unet

SMALL = {"dim": 8, "dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}


def unet(**kwargs) -> Unet:
    torch.manual_seed(0)
    net = Unet(**{**SMALL, **kwargs})
    with torch.no_grad():  # away from the zero-initialised output layer, so that the classes matter
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_denoiser_and_invert_take_class_names_as_sample_does() -> None:
    """``classes`` may be a class name or a list of them wherever a condition is taken (sample, inpaint, img2img,
    and also denoiser() and invert(), which once passed names straight to torch.as_tensor)."""
    names = ["zebra", "ant", "moth"]
    d = GaussianDiffusion(unet(num_classes=3), image_size=8, timesteps=10, class_names=names)
    g = torch.Generator().manual_seed(1)
    x, t, images = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([3, 7]), torch.rand(2, 3, 8, 8, generator=g)
    with torch.no_grad():
        for given, index in (("moth", [2, 2]), (["moth", "zebra"], [2, 0]), (("ant", "moth"), [1, 2])):
            expected = d.denoiser(classes=torch.tensor(index))(x, t).eps
            assert torch.equal(d.denoiser(classes=given)(x, t).eps, expected), given
            inverted = d.invert(images, steps=3, classes=given)
            assert torch.equal(inverted, d.invert(images, steps=3, classes=torch.tensor(index))), given
    with pytest.raises(ValueError, match="unknown class 'lion'; known classes: 'zebra', 'ant', 'moth'"):
        d.denoiser(classes="lion")
