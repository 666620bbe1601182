"""denoising_diffusion: denoising diffusion models in PyTorch.

Three objects compose: a network (:class:`Unet`), a :class:`GaussianDiffusion` that wraps it (forward process,
losses, samplers), and a :class:`Trainer` that fits it to a folder of images. Images are in [0, 1] at every
public boundary.
"""

from ._version import __version__
from .cascade import Cascade, SuperResolution
from .checkpoint import CheckpointError, CorruptCheckpointError, load_checkpoint, save_checkpoint
from .conditioning import ConditionSpec
from .data import (
    BuiltinShapes,
    ImageFolderDataset,
    LabelledImageFolder,
    ShardStream,
    get_builtin_dataset,
    get_dataset,
    hf_dataset,
)
from .denoiser import Prediction, StepRecord
from .diffusion import GaussianDiffusion
from .editing import img2img, inpaint
from .guidance import classifier_free_guidance, classifier_guidance, guided_prediction
from .latent import AutoencoderTraining, CachedLatents, LatentDiffusion, cache_latents
from .likelihood import bits_per_dim, ode_bits_per_dim, ode_log_likelihood, vlb_terms
from .nn import Autoencoder, DiffusersAutoencoder, EncoderClassifier, Unet
from .noise_aware_classifier import NoiseAwareClassifier
from .parameterization import eps_from_score, score_from_eps
from .pipeline import build, load_pipeline, save_pipeline, spec_of
from .pretrained import from_pretrained, push_to_hub, save_pretrained
from .processes import (
    CLEAN,
    CosineFlowSchedule,
    EDMSchedule,
    FlowSchedule,
    NCSNSchedule,
    NoiseSchedule,
    Schedule,
    SubVPSchedule,
    VESchedule,
    VPSchedule,
    process_kind,
    registered_processes,
    sigma_max_from_data,
    spaced_timesteps,
)
from .reflow import (
    CouplingDataset,
    CouplingSet,
    RectifiedFlow,
    generate_couplings,
    load_couplings,
    model_straightness,
    save_couplings,
)
from .registry import model_kind
from .samplers import (
    SAMPLERS,
    invert_ddim,
    repaint_schedule,
    sample_annealed_langevin,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler,
    sample_euler_ancestral,
    sample_euler_maruyama,
    sample_heun,
    sample_ode,
    sample_pc,
    sample_repaint,
    sample_reverse_diffusion,
)
from .training import Trainable, Trainer, TrainingDivergedError, Validation
from .viz import save_denoising_gif, save_image_grid

__all__ = [
    "sample_reverse_diffusion",
    "sample_pc",
    "sample_euler_maruyama",
    "sample_annealed_langevin",
    "score_from_eps",
    "eps_from_score",
    "Schedule",
    "CLEAN",
    "sigma_max_from_data",
    "VPSchedule",
    "VESchedule",
    "SubVPSchedule",
    "EDMSchedule",
    "FlowSchedule",
    "CosineFlowSchedule",
    "RectifiedFlow",
    "CouplingSet",
    "CouplingDataset",
    "generate_couplings",
    "save_couplings",
    "load_couplings",
    "model_straightness",
    "process_kind",
    "registered_processes",
    "NCSNSchedule",
    "BuiltinShapes",
    "Cascade",
    "ConditionSpec",
    "CheckpointError",
    "CorruptCheckpointError",
    "EncoderClassifier",
    "GaussianDiffusion",
    "ImageFolderDataset",
    "NoiseAwareClassifier",
    "LabelledImageFolder",
    "NoiseSchedule",
    "Prediction",
    "SAMPLERS",
    "StepRecord",
    "SuperResolution",
    "Trainable",
    "Trainer",
    "TrainingDivergedError",
    "Unet",
    "__version__",
    "bits_per_dim",
    "build",
    "classifier_free_guidance",
    "classifier_guidance",
    "get_builtin_dataset",
    "get_dataset",
    "hf_dataset",
    "ShardStream",
    "Validation",
    "guided_prediction",
    "img2img",
    "inpaint",
    "invert_ddim",
    "load_checkpoint",
    "load_pipeline",
    "model_kind",
    "ode_bits_per_dim",
    "ode_log_likelihood",
    "repaint_schedule",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_ode",
    "sample_repaint",
    "save_checkpoint",
    "save_denoising_gif",
    "save_image_grid",
    "save_pipeline",
    "spaced_timesteps",
    "spec_of",
    "vlb_terms",
    "from_pretrained",
    "save_pretrained",
    "push_to_hub",
    "Autoencoder",
    "AutoencoderTraining",
    "CachedLatents",
    "DiffusersAutoencoder",
    "LatentDiffusion",
    "cache_latents",
]
