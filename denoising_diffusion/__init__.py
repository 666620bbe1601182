"""denoising_diffusion: denoising diffusion models in PyTorch.

Three objects compose: a network (:class:`Unet`), a :class:`GaussianDiffusion` that wraps it (forward process,
losses, samplers), and a :class:`Trainer` that fits it to a folder of images. Images are in [0, 1] at every
public boundary.
"""

from .checkpoint import CheckpointError, CorruptCheckpointError, load_checkpoint, load_pipeline, save_checkpoint
from .data import BuiltinShapes, ImageFolderDataset, get_builtin_dataset
from .denoiser import Prediction, StepRecord
from .diffusion import GaussianDiffusion
from .nn import Unet
from .likelihood import bits_per_dim, ode_bits_per_dim, ode_log_likelihood, vlb_terms
from .samplers import (SAMPLERS, invert_ddim, sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_dpmpp_2m_sde,
                       sample_euler, sample_euler_ancestral, sample_heun)
from .schedules import NoiseSchedule, spaced_timesteps
from .trainer import Trainer, TrainingDivergedError
from .viz import save_denoising_gif, save_image_grid

__version__ = "0.1.0"

__all__ = [
    "BuiltinShapes", "CheckpointError", "CorruptCheckpointError", "GaussianDiffusion", "ImageFolderDataset",
    "NoiseSchedule", "Prediction", "SAMPLERS", "StepRecord", "Trainer", "TrainingDivergedError", "Unet",
    "__version__", "bits_per_dim", "get_builtin_dataset", "invert_ddim", "load_checkpoint", "load_pipeline",
    "ode_bits_per_dim", "ode_log_likelihood", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde", "sample_euler", "sample_euler_ancestral", "sample_heun", "save_checkpoint",
    "save_denoising_gif", "save_image_grid", "spaced_timesteps", "vlb_terms",
]
