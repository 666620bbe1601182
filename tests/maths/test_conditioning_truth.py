"""Conditions against what they mean, not against the code that forms them: a class name is its index in
class_names (whatever their order), wherever a condition is taken (sample, inpaint, img2img, denoiser, invert); a
sample whose context tokens are all masked out is refused; and the conditioning level is embedded as the time
1000·level (Ho et al. 2022, "Cascaded Diffusion Models", §4.1), with the sinusoidal features written out here."""

from __future__ import annotations

import math

import pytest
import torch

from denoising_diffusion import GaussianDiffusion, Unet
from denoising_diffusion.nn.conditioning import LevelEmbedding

SMALL = {"dim": 8, "dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}


def unet(**kwargs) -> Unet:
    torch.manual_seed(0)
    net = Unet(**{**SMALL, **kwargs})
    with torch.no_grad():  # away from the zero-initialised output layer, so that the classes matter
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_a_class_name_is_its_index_in_class_names_not_its_sorted_rank() -> None:
    names = ["zebra", "ant", "moth"]  # sorted: ant, moth, zebra
    d = GaussianDiffusion(unet(num_classes=3), image_size=8, timesteps=10, class_names=names)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([3, 7])
    with torch.no_grad():
        for index, name in enumerate(names):
            for given in (name, [name, name]):  # one name for the batch, or one per image
                by_name = d.runner.sampling_denoiser(2, classes=given)(x, t).eps
                assert torch.equal(by_name, d.denoiser(classes=torch.tensor([index, index]))(x, t).eps), name
                for k in (k for k in range(3) if k != index):
                    assert not torch.equal(by_name, d.denoiser(classes=torch.tensor([k, k]))(x, t).eps), (name, k)


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


def test_a_sample_with_every_context_token_masked_out_is_refused() -> None:
    """Attention over no token is undefined (a softmax over nothing); the other sample's real tokens do not make it
    one."""
    d = GaussianDiffusion(unet(context_dim=4), image_size=8, timesteps=10)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    with pytest.raises(ValueError, match="masks out every token of some sample"):
        d.sample(2, context=torch.randn(2, 3, 4), context_mask=mask, steps=2)


def test_the_conditioning_level_is_embedded_as_the_time_1000_level() -> None:
    """LevelEmbedding(level) = MLP([sin(1000·level·ω_i), cos(1000·level·ω_i)]), ω_i = 10000^(−i/(dim/2)): the
    features written out here, the MLP's own layers applied to them."""
    torch.manual_seed(0)
    embedding = LevelEmbedding(8, 32)
    level = torch.tensor([0.0, 0.013, 0.25, 0.9])
    half = 4
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / half) for i in range(half)])
    args = 1000.0 * level[:, None] * freqs[None, :]
    features = torch.cat([args.sin(), args.cos()], dim=1)
    layers = [m for m in embedding.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 2
    expected = layers[1](torch.nn.functional.gelu(layers[0](features)))
    torch.testing.assert_close(embedding(level), expected, rtol=1e-5, atol=1e-6)
