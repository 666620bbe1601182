"""Heun with EDM's churn (Karras et al. 2022, Alg. 2) reports each step as the chain saw it: the callback's record
holds the step's own grid time and the state it started from, before the churn raised the noise, so that the
records chain (each x_t is the previous x_next) and a GIF or a preview shows the trajectory on the grid asked for.
sample_heun's docstring promises this; the sampler contract test only checks it without churn."""

from __future__ import annotations

import pytest
import torch
from oracle import GaussianMixture

from denoising_diffusion import NoiseSchedule, StepRecord, sample_heun, spaced_timesteps
from denoising_diffusion.processes import EDMSchedule

DATA = GaussianMixture(weights=[0.5, 0.5], means=[[-1.0, 0.0], [1.0, 0.5]], stds=[0.3, 0.4])


@pytest.mark.parametrize("schedule", [EDMSchedule(), NoiseSchedule.from_name("cosine", 100)], ids=["edm", "ddpm"])
def test_churned_steps_are_recorded_at_their_grid_time_and_starting_state(schedule) -> None:
    timesteps = schedule.timesteps(8) if isinstance(schedule, EDMSchedule) else spaced_timesteps(schedule, 8)
    g = torch.Generator().manual_seed(0)
    x_T = schedule.alpha_sigma(timesteps[0])[1] * torch.randn(64, 2, 1, 1, generator=g, dtype=torch.float64)
    records: list[StepRecord] = []
    out = sample_heun(DATA.denoiser(schedule), x_T, schedule, timesteps, s_churn=40.0, generator=g,
                      callback=records.append)  # fmt: skip
    assert [r.t for r in records] == list(timesteps)
    assert torch.equal(records[0].x_t, x_T)
    for before, after in zip(records, records[1:]):
        assert torch.equal(after.x_t, before.x_next)
    assert torch.equal(records[-1].x_next, out)
