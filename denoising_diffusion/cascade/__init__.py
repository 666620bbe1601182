"""Cascaded diffusion (Ho et al. 2021; Saharia et al. 2022): super-resolution stages with conditioning augmentation
(stage.py, augmentation.py, resize.py) and the cascade that samples a base model and its stages end to end
(cascade.py). docs/cascade.md tells the whole story."""

from .augmentation import Augmentation, augment, gaussian_blur, level_coefficients
from .cascade import SAMPLING_KEYS, Cascade
from .resize import downsample, upsample
from .stage import SAMPLE_LEVEL, SuperResolution

__all__ = [
    "SAMPLE_LEVEL",
    "SAMPLING_KEYS",
    "Augmentation",
    "Cascade",
    "SuperResolution",
    "augment",
    "downsample",
    "gaussian_blur",
    "level_coefficients",
    "upsample",
]
