"""The ODE likelihood's default grid (likelihood.default_ode_steps): 100 Heun points, capped at T on a discrete
schedule, whose Karras grid holds at most T distinct indices. ode_bits_per_dim used to fail on any model of fewer
than 100 steps with the default."""

from __future__ import annotations

import pytest
import torch

from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.likelihood import DEFAULT_ODE_STEPS, default_ode_steps, ode_bits_per_dim
from denoising_diffusion.nn import Unet
from denoising_diffusion.processes import NoiseSchedule, VPSchedule


def tiny(timesteps: int) -> GaussianDiffusion:
    network = Unet(dim=8, dim_mults=(1, 2), channels=1, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    return GaussianDiffusion(network, image_size=4, timesteps=timesteps)


def test_the_default_is_100_capped_at_a_discrete_schedules_length() -> None:
    assert DEFAULT_ODE_STEPS == 100
    assert default_ode_steps(NoiseSchedule.from_name("cosine", 12)) == 12
    assert default_ode_steps(NoiseSchedule.from_name("cosine", 1000)) == 100
    assert default_ode_steps(VPSchedule()) == 100  # continuous time: any grid
    assert default_ode_steps(NoiseSchedule.from_name("cosine", 12), 7) == 7


def test_a_model_of_fewer_than_100_steps_gets_its_whole_chain() -> None:
    model, images = tiny(12), torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    probes = lambda: torch.Generator().manual_seed(1)  # noqa: E731 (the same Hutchinson probes in each run)
    by_default = ode_bits_per_dim(model, images, exact_trace=False, generator=probes())
    assert torch.isfinite(by_default).all()
    assert torch.equal(by_default, ode_bits_per_dim(model, images, steps=12, exact_trace=False, generator=probes()))
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 12\]"):
        ode_bits_per_dim(model, images, steps=13)  # an explicit count above T is still refused, naming T
