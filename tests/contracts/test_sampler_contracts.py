"""Contracts every registered sampler keeps (DESIGN.md, Tests), parametrized over the registry: on the discrete
schedule, or on the continuous VP process for the samplers that need an SDE (SamplerInfo.serves)."""

from __future__ import annotations

import pytest
import torch

from denoising_diffusion.denoiser import Prediction
from denoising_diffusion.processes import NoiseSchedule, Time, VPSchedule, spaced_timesteps
from denoising_diffusion.samplers import SAMPLERS, SamplerName

SCHEDULE = NoiseSchedule.from_name("cosine", 100)
CONTINUOUS = VPSchedule()


def schedule_for(name: str):
    """The discrete schedule, unless the sampler cannot serve it (Euler-Maruyama needs an SDE): then VP."""
    return SCHEDULE if SAMPLERS[SamplerName(name)].serves(SCHEDULE) else CONTINUOUS


def grid(name: str, steps: int) -> list[Time]:
    schedule = schedule_for(name)
    return list(spaced_timesteps(100, steps)) if schedule is SCHEDULE else schedule.timesteps(steps)


NAMES = [n.value for n, info in SAMPLERS.items() if not info.adaptive]  # adaptive 'ode': test_ode_flow.py


def options(name: str) -> dict:
    """Each sampler's declared options at a value that makes a stochastic sampler draw noise (DDIM at eta = 1)."""
    return SAMPLERS[SamplerName(name)].bind({}, defaults={"eta": 1.0, "variance": "fixed_small"})


def toy_denoiser(x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
    """A smooth, deterministic stand-in for a network: shrinks x_t toward zero, depending on t (int64 indices of
    the discrete schedule, float64 times of the continuous one)."""
    assert t.shape == (x_t.shape[0],) and t.dtype in (torch.long, torch.float64)
    schedule = SCHEDULE if t.dtype == torch.long else CONTINUOUS
    alpha, sigma = schedule.alpha_sigma(t[0].item())
    x0 = torch.tanh(x_t) * 0.5
    return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_kept(name: str, dtype: torch.dtype) -> None:
    x_T = torch.randn(3, 2, 4, 6, dtype=dtype)
    out = SAMPLERS[SamplerName(name)].fn(toy_denoiser, x_T, schedule_for(name), grid(name, 10), **options(name))
    assert out.shape == x_T.shape and out.dtype == dtype and out.device == x_T.device


@pytest.mark.parametrize("name", NAMES)
def test_seeded_reproducibility(name: str) -> None:
    fn = SAMPLERS[SamplerName(name)].fn
    x_T = torch.randn(4, 1, 4, 4)

    def once(seed: int) -> torch.Tensor:
        return fn(
            toy_denoiser,
            x_T,
            schedule_for(name),
            grid(name, 8),
            generator=torch.Generator().manual_seed(seed),
            **options(name),
        )

    torch.testing.assert_close(once(0), once(0), rtol=0, atol=0)
    if SAMPLERS[SamplerName(name)].stochastic:
        assert not torch.equal(once(0), once(1)), "a stochastic sampler must use the generator it is given"
    else:
        assert torch.equal(once(0), once(1)), "a deterministic sampler must not draw noise"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 7])
def test_callback_once_per_step(name: str, steps: int) -> None:
    records = []
    timesteps = grid(name, steps)
    out = SAMPLERS[SamplerName(name)].fn(
        toy_denoiser, torch.randn(2, 1, 4, 4), schedule_for(name), timesteps, callback=records.append, **options(name)
    )
    assert [r.index for r in records] == list(range(steps)) and [r.t for r in records] == timesteps
    assert torch.equal(records[-1].x_next, out)
    assert all(torch.equal(a.x_next, b.x_t) for a, b in zip(records, records[1:]))


@pytest.mark.parametrize("name", NAMES)
def test_rejects_bad_timesteps(name: str) -> None:
    fn = SAMPLERS[SamplerName(name)].fn
    for bad in ([], [5, 5, 0], [0, 5], [100, 0]):
        with pytest.raises(ValueError, match="timesteps"):
            fn(toy_denoiser, torch.randn(1, 1, 2, 2), schedule_for(name), bad, **options(name))
