"""Diffusion processes: THE time convention and the Gaussian path (path.py), the spacings of sampling grids
(spacing.py), and one registered class per process, each in its own file: ddpm (with the β schedules of
beta_schedules.py), vp, subvp, ve, ncsn, edm, flow and flow_cosine (base.py says what a process declares).

Every module of this package is imported here (:func:`_register_all`), so a process file added to the folder
registers itself without editing a list; a process defined elsewhere (a user's, a test's) registers where it is
defined, with ``@process_kind("name")``.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import FittedProcess, ProcessDeclarations, process_class, process_kind, registered_processes
from .beta_schedules import BetaSchedule, make_betas
from .continuous import ContinuousSchedule
from .ddpm import NoiseSchedule
from .edm import EDMSchedule
from .flow import CosineFlowSchedule, FlowSchedule
from .ncsn import NCSNSchedule
from .path import (
    CLEAN,
    PosteriorStep,
    Schedule,
    Time,
    forward_step,
    gaussian_posterior_step,
    path_coefficients,
    path_derivatives,
    posterior_coefficients,
    posterior_terms,
    q_sample,
)
from .spacing import Spacing, index_of_sigma_tilde, spaced_timesteps
from .subvp import SubVPSchedule
from .ve import VESchedule, sigma_max_from_data
from .vp import VPSchedule


def _register_all() -> None:
    """Import every module of this package (each process file registers its class)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register_all()

__all__ = [
    "CLEAN",
    "BetaSchedule",
    "ContinuousSchedule",
    "CosineFlowSchedule",
    "EDMSchedule",
    "FlowSchedule",
    "FittedProcess",
    "NCSNSchedule",
    "NoiseSchedule",
    "PosteriorStep",
    "ProcessDeclarations",
    "Schedule",
    "Spacing",
    "SubVPSchedule",
    "Time",
    "VESchedule",
    "VPSchedule",
    "forward_step",
    "gaussian_posterior_step",
    "index_of_sigma_tilde",
    "make_betas",
    "path_coefficients",
    "path_derivatives",
    "q_sample",
    "posterior_coefficients",
    "posterior_terms",
    "process_class",
    "process_kind",
    "registered_processes",
    "sigma_max_from_data",
    "spaced_timesteps",
]
