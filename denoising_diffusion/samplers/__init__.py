"""Stateless samplers sharing one signature (DESIGN.md, Samplers), and their registry.

``sampler(denoiser, x_T, schedule, timesteps, *, generator=None, callback=None, **options) -> x_0``.
Samplers never import networks or GaussianDiffusion: they see a denoiser callable and a NoiseSchedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from ..choices import Choice
from ..schedules import Spacing
from .ddim import invert_ddim, sample_ddim, sample_euler, sample_euler_ancestral
from .ddpm import VarianceType, posterior_coefficients, sample_ddpm
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde
from .heun import sample_heun


class SamplerName(Choice):
    """Names accepted by GaussianDiffusion.sample(sampler=...) and the CLI's --sampler."""

    __option__ = "sampler"

    DDPM = "ddpm"
    DDIM = "ddim"
    DPMPP_2M = "dpmpp_2m"
    DPMPP_2M_SDE = "dpmpp_2m_sde"
    HEUN = "heun"
    EULER = "euler"
    EULER_ANCESTRAL = "euler_ancestral"


@dataclass(frozen=True)
class SamplerInfo:
    """A registry entry: the function, a one-line description, whether it accepts ``eta``, whether it draws noise,
    network evaluations for n timesteps (``nfe(n)``), and the step count and timestep spacing we recommend (the
    oracle tests check the sampler there)."""

    fn: Callable
    description: str
    takes_eta: bool
    stochastic: bool
    recommended_steps: int
    spacing: Spacing = Spacing.LINSPACE
    evals_per_step: int = 1

    def nfe(self, steps: int) -> int:
        """Network evaluations for ``steps`` timesteps (Heun's final step is a single Euler evaluation)."""
        return self.evals_per_step * steps - (self.evals_per_step - 1)


SAMPLERS: Mapping[SamplerName, SamplerInfo] = MappingProxyType({
    SamplerName.DDPM: SamplerInfo(
        sample_ddpm, "ancestral DDPM (Ho et al. 2020), stochastic; respaced betas on fewer steps",
        takes_eta=False, stochastic=True, recommended_steps=1000),
    SamplerName.DDIM: SamplerInfo(
        sample_ddim, "DDIM (Song et al. 2021); eta=0 deterministic ODE, eta=1 ancestral",
        takes_eta=True, stochastic=True, recommended_steps=50),
    SamplerName.DPMPP_2M: SamplerInfo(
        sample_dpmpp_2m, "DPM-Solver++(2M) (Lu et al. 2022), deterministic 2nd-order multistep: 10-25 steps",
        takes_eta=False, stochastic=False, recommended_steps=20, spacing=Spacing.LOGSNR),
    SamplerName.DPMPP_2M_SDE: SamplerInfo(
        sample_dpmpp_2m_sde, "SDE-DPM-Solver++(2M) (Lu et al. 2022), stochastic 2nd-order multistep",
        takes_eta=False, stochastic=True, recommended_steps=50, spacing=Spacing.LOGSNR),
    SamplerName.HEUN: SamplerInfo(
        sample_heun, "Heun on the probability-flow ODE (Karras et al. 2022), 2 evaluations per step",
        takes_eta=False, stochastic=False, recommended_steps=25, spacing=Spacing.KARRAS, evals_per_step=2),
    SamplerName.EULER: SamplerInfo(
        sample_euler, "Euler on the probability-flow ODE (k-diffusion's name; equals DDIM with eta=0)",
        takes_eta=False, stochastic=False, recommended_steps=50),
    SamplerName.EULER_ANCESTRAL: SamplerInfo(
        sample_euler_ancestral, "Euler-ancestral (k-diffusion's name; equals DDIM with eta=1)",
        takes_eta=False, stochastic=True, recommended_steps=250),
})

__all__ = ["SAMPLERS", "SamplerInfo", "SamplerName", "VarianceType", "invert_ddim", "posterior_coefficients",
           "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_euler",
           "sample_euler_ancestral", "sample_heun"]
