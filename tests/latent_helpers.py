"""Shared pieces of the latent-diffusion tests: a tiny autoencoder (16x16 images <-> 4x4 latents, f = 4), a tiny
latent model around it, and a tiny diffusers AutoencoderKL saved to a folder."""

from __future__ import annotations

from pathlib import Path

import torch

from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.latent import LatentDiffusion
from denoising_diffusion.nn.autoencoder import Autoencoder
from denoising_diffusion.nn.unet import Unet

SIZE, FACTOR, LATENT_CHANNELS = 16, 4, 4


def tiny_autoencoder(seed: int = 0, channels: int = 3) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(channels, factor=FACTOR, latent_channels=LATENT_CHANNELS, dim=8, dim_mults=(1, 2, 2), groups=4)


def tiny_latent_diffusion(autoencoder=None, scale_factor: float | None = 1.5, num_classes: int | None = None,
                          **diffusion_options) -> LatentDiffusion:  # fmt: skip
    """A latent model with an untrained autoencoder and Unet; ``diffusion_options`` go to GaussianDiffusion."""
    autoencoder = tiny_autoencoder() if autoencoder is None else autoencoder
    unet = Unet(8, dim_mults=(1, 2), channels=autoencoder.latent_channels, resnet_block_groups=4, attn_heads=2,
                attn_dim_head=8, num_classes=num_classes, cond_drop_prob=0.1 if num_classes else 0.0)  # fmt: skip
    options = {"timesteps": 10, "auto_normalize": False, "clip_denoised": False, **diffusion_options}
    diffusion = GaussianDiffusion(unet, image_size=SIZE // autoencoder.factor, **options)
    return LatentDiffusion(autoencoder, diffusion, scale_factor=scale_factor)


def save_tiny_vae(folder: Path, class_name: str = "AutoencoderKL") -> Path:
    """A randomly initialised diffusers AutoencoderKL (f = 2, 4 latent channels) saved to ``folder``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                        norm_num_groups=4, sample_size=SIZE, scaling_factor=0.5)  # fmt: skip
    vae.save_pretrained(folder)
    return folder
