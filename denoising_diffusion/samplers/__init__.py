"""Stateless samplers sharing one signature (DESIGN.md, Samplers), and their registry.

``sampler(denoiser, x_T, schedule, timesteps, *, generator=None, callback=None, **options) -> x_0``.
Samplers never import networks or GaussianDiffusion: they see a denoiser callable and a NoiseSchedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

from .ddim import sample_ddim
from .ddpm import VarianceType, posterior_coefficients, sample_ddpm


class SamplerName(str, Enum):
    """Names accepted by GaussianDiffusion.sample(sampler=...) and the CLI's --sampler."""

    DDPM = "ddpm"
    DDIM = "ddim"

    @classmethod
    def _missing_(cls, value: object) -> None:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"unknown sampler {value!r}; allowed values: {allowed}")


@dataclass(frozen=True)
class SamplerInfo:
    """A registry entry: the function, a one-line description, and whether it accepts ``eta``."""

    fn: Callable
    description: str
    takes_eta: bool


SAMPLERS: dict[SamplerName, SamplerInfo] = {
    SamplerName.DDPM: SamplerInfo(sample_ddpm, "ancestral DDPM (Ho et al. 2020), stochastic; any step subset "
                                  "with respaced betas", takes_eta=False),
    SamplerName.DDIM: SamplerInfo(sample_ddim, "DDIM (Song et al. 2021); eta=0 deterministic, eta=1 ancestral",
                                  takes_eta=True),
}

__all__ = ["SAMPLERS", "SamplerInfo", "SamplerName", "VarianceType", "posterior_coefficients", "sample_ddim",
           "sample_ddpm"]
