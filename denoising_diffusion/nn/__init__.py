"""Networks for denoising diffusion. They map (x_t, t[, conditioning]) to a tensor and know nothing about noise."""

from __future__ import annotations

from .attention import Attention, LinearAttention
from .autoencoder import Autoencoder, DiagonalGaussian
from .blocks import Downsample, ResnetBlock, Upsample
from .diffusers_autoencoder import DiffusersAutoencoder
from .embeddings import TimestepEmbedding, sinusoidal_embedding
from .encoder_classifier import EncoderClassifier
from .unet import Unet

__all__ = [
    "Attention",
    "Autoencoder",
    "DiagonalGaussian",
    "DiffusersAutoencoder",
    "Downsample",
    "EncoderClassifier",
    "LinearAttention",
    "ResnetBlock",
    "TimestepEmbedding",
    "Unet",
    "Upsample",
    "sinusoidal_embedding",
]
