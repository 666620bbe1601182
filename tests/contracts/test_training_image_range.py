"""Training images outside [0, 1] (8-bit values, standard-normal tensors) are named in one warning, once per model
(data/batch.check_training_images, from GaussianDiffusion.forward); images in range, or a model without
auto_normalize (latents, data in its own range), train without one."""

from __future__ import annotations

import warnings

import pytest
import torch

from denoising_diffusion.data.batch import UNIT_RANGE_SLACK
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn import Unet


def tiny(**kwargs) -> GaussianDiffusion:
    network = Unet(dim=8, dim_mults=(1, 2), channels=1, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    return GaussianDiffusion(network, image_size=8, timesteps=10, **kwargs)


def range_warnings(model: GaussianDiffusion, *batches: torch.Tensor) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in batches:
            model(batch)
    return [str(w.message) for w in caught if "training images should lie in [0, 1]" in str(w.message)]


@pytest.mark.parametrize(
    "images,seen",
    [
        (torch.linspace(0, 255, 2 * 64).reshape(2, 1, 8, 8), "[0, 255]"),
        (torch.linspace(-1, 1, 2 * 64).reshape(2, 1, 8, 8), "[-1, 1]"),  # already normalized
        (torch.linspace(-2.5, 3.0, 2 * 64).reshape(2, 1, 8, 8), "[-2.5, 3]"),
    ],
)
def test_images_outside_the_unit_range_warn_once_naming_the_range(images: torch.Tensor, seen: str) -> None:
    model = tiny()
    messages = range_warnings(model, images, images, images.clamp(0, 1))
    assert len(messages) == 1 and f"this batch spans {seen}" in messages[0]
    assert "divide 8-bit images by 255" in messages[0] and "auto_normalize=False" in messages[0]


def test_images_in_range_and_models_in_their_own_range_train_without_a_word() -> None:
    inside = torch.linspace(-UNIT_RANGE_SLACK / 2, 1 + UNIT_RANGE_SLACK / 2, 2 * 64).reshape(2, 1, 8, 8)
    assert range_warnings(tiny(), inside, torch.rand(3, 1, 8, 8)) == []
    assert range_warnings(tiny(auto_normalize=False), torch.randn(2, 1, 8, 8) * 3) == []
