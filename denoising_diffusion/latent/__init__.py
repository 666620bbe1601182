"""Latent diffusion (Rombach et al. 2022; docs/latent.md): a GaussianDiffusion on the scaled latents of a frozen
autoencoder (diffusion.py: LatentDiffusion), the autoencoder's own training objective for the Trainer
(autoencoder_training.py: L1 + β KL), and latents cached on disk under a key of the autoencoder, the data and the
size (cache.py). The autoencoders themselves are networks: nn/autoencoder.py and nn/diffusers_autoencoder.py."""

from .autoencoder_training import KL_WEIGHT, AutoencoderTraining
from .cache import CachedLatents, cache_key, cache_latents
from .diffusion import LatentDiffusion, latent_mask

__all__ = ["KL_WEIGHT", "AutoencoderTraining", "CachedLatents", "LatentDiffusion", "cache_key", "cache_latents",
           "latent_mask"]  # fmt: skip
