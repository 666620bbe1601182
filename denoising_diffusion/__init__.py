"""denoising_diffusion: denoising diffusion models in PyTorch.

Three objects compose: a network (:class:`Unet`), a :class:`GaussianDiffusion` that wraps it (forward process,
losses, samplers), and a :class:`Trainer` that fits it to a folder of images. Images are in [0, 1] at every
public boundary.
"""

from .checkpoint import load_checkpoint, load_pipeline, save_checkpoint
from .data import BuiltinShapes, ImageFolderDataset, get_builtin_dataset
from .denoiser import Prediction, StepRecord
from .diffusion import GaussianDiffusion
from .nn import Unet
from .samplers import SAMPLERS, sample_ddim, sample_ddpm
from .schedules import NoiseSchedule, spaced_timesteps
from .trainer import Trainer
from .viz import save_denoising_gif, save_image_grid

__version__ = "0.1.0"

__all__ = [
    "BuiltinShapes", "GaussianDiffusion", "ImageFolderDataset", "NoiseSchedule", "Prediction", "SAMPLERS",
    "StepRecord", "Trainer", "Unet", "__version__", "get_builtin_dataset", "load_checkpoint", "load_pipeline",
    "sample_ddim", "sample_ddpm", "save_checkpoint", "save_denoising_gif", "save_image_grid", "spaced_timesteps",
]
