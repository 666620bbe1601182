"""Rectified flow's reflow (Liu et al. 2023, "Flow Straight and Fast", Alg. 1): couplings of a trained model's noise
and samples (couplings.py), the k-rectified flow trained on their straight interpolations (rectified.py), and the
straightness S(Z) of a flow (straightness.py). The command line is ``denoising-diffusion reflow`` (cli/reflow.py);
docs/flow.md describes the whole."""

from .couplings import (
    NOISE_KEY,
    CouplingDataset,
    CouplingSet,
    check_deterministic,
    describe_couplings,
    generate_couplings,
    load_couplings,
    save_couplings,
)
from .rectified import RectifiedFlow, student_of
from .straightness import Trajectory, euler_trajectory, flow_grid, model_straightness, velocity_field

__all__ = [
    "NOISE_KEY",
    "CouplingDataset",
    "CouplingSet",
    "RectifiedFlow",
    "Trajectory",
    "check_deterministic",
    "describe_couplings",
    "euler_trajectory",
    "flow_grid",
    "generate_couplings",
    "load_couplings",
    "model_straightness",
    "save_couplings",
    "student_of",
    "velocity_field",
]
