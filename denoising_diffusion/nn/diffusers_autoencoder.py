"""Stable Diffusion's VAE as this package's autoencoder: a diffusers ``AutoencoderKL`` behind the interface that
latent/diffusion.py's LatentDiffusion uses (``encode(images in [0, 1]) -> DiagonalGaussian``, ``decode(latents) ->
images in [0, 1]``, ``channels``, ``latent_channels``, ``factor``), with its own ``scaling_factor`` (and
``shift_factor``).

Only local directories are read (``local_files_only``): a folder written by ``AutoencoderKL.save_pretrained``, or a
whole Stable Diffusion pipeline folder, whose ``vae/`` sub-folder is taken. diffusers is an optional dependency
(``pip install 'denoising-diffusion[latent]'``); it is imported when an adapter is built, never at import time.

The adapter is a registered model kind whose config is the VAE's own diffusers config (its public keys), so a latent
model's checkpoint rebuilds the VAE's architecture from the file alone and loads its weights from the same file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import PretrainedMixin, model_kind
from .autoencoder import DiagonalGaussian

INSTALL_HINT = "pip install 'denoising-diffusion[latent]' (or pip install diffusers)"
VAE_CLASS = "AutoencoderKL"


def autoencoder_kl_class() -> Any:
    """diffusers' AutoencoderKL; ImportError naming the extra to install when diffusers is missing."""
    try:
        from diffusers import AutoencoderKL
    except ImportError as err:
        raise ImportError(f"Stable Diffusion's VAE needs diffusers: {INSTALL_HINT} ({err})") from None
    return AutoencoderKL


def vae_directory(directory: str | os.PathLike[str]) -> Path:
    """The folder holding the AutoencoderKL's config.json: ``directory`` itself, or its ``vae/`` sub-folder (a Stable
    Diffusion pipeline folder). ValueError naming what the folder holds when it is not an AutoencoderKL."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"{os.fspath(root)!r} is not a directory (a diffusers AutoencoderKL folder is expected)")
    folder = root / "vae" if not (root / "config.json").exists() and (root / "vae" / "config.json").exists() else root
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ValueError(
            f"{os.fspath(root)!r} has no config.json (nor vae/config.json): not a diffusers model folder; pass the "
            f"folder an {VAE_CLASS} was saved to (save_pretrained), or a Stable Diffusion pipeline folder"
        )
    try:
        found = json.loads(config_file.read_text()).get("_class_name")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        found = None
    if found != VAE_CLASS:
        what = f"a {found}" if isinstance(found, str) else "no diffusers class name"
        raise ValueError(f"{os.fspath(config_file)!r} describes {what}, not an {VAE_CLASS} (a VAE)")
    return folder


def saved_by_this_package(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds this package's save_pretrained files (a config.json with a ``format`` and a
    ``spec``, pretrained.py) rather than a diffusers folder (whose config.json names a ``_class_name``)."""
    config_file = Path(directory) / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "format" in config and "spec" in config


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers config without its private keys (``_class_name``, ``_diffusers_version``, ...), as JSON values."""
    return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))


@model_kind()
class DiffusersAutoencoder(PretrainedMixin, nn.Module):
    """A diffusers AutoencoderKL (Stable Diffusion's VAE) with this package's autoencoder interface.

    Build it with :meth:`from_pretrained` (weights from a local folder); the constructor makes the architecture of
    ``vae_config`` with random weights (what a checkpoint's rebuild does before loading its weights).

    Args:
        vae_config: the AutoencoderKL's diffusers config (``vae.config``).

    Attributes:
        channels, latent_channels: the VAE's image and latent channels.
        factor: its downsampling factor 2^(len(block_out_channels) − 1) (8 for Stable Diffusion).
        scaling_factor, shift_factor: the VAE's s and b (latent/diffusion.py: z̃ = s (z − b)); b = 0 when it has none.
    """

    def __init__(self, vae_config: Mapping[str, Any]) -> None:
        super().__init__()
        self.vae = autoencoder_kl_class().from_config(dict(vae_config))
        config = self.vae.config
        self.config: dict[str, Any] = {"vae_config": public_config(config)}
        self.channels, self.latent_channels = int(config.in_channels), int(config.latent_channels)
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)  # SD3 and later VAEs have one

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], **options: Any) -> DiffusersAutoencoder:
        """The AutoencoderKL saved in the folder ``source`` (or its ``vae/``), read from disk only, in float32. A
        directory this package's ``save_pretrained`` wrote (an adapter shared as config.json + model.safetensors) is
        read as such (PretrainedMixin.from_pretrained, which takes ``options``).

        Raises ValueError for a folder that is not an AutoencoderKL's, ImportError when diffusers is missing.
        """
        if saved_by_this_package(source):
            return super().from_pretrained(source, **options)
        folder = vae_directory(source)
        vae = autoencoder_kl_class().from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)
        adapter = cls(vae.config)
        adapter.vae = vae
        return adapter

    def encode(self, images: Tensor) -> DiagonalGaussian:
        """q(z | x) for images (B, C, H, W) in [0, 1] (the VAE takes [−1, 1])."""
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(f"images must have shape (B, {self.channels}, H, W), got {tuple(images.shape)}")
        posterior = self.vae.encode(images * 2 - 1).latent_dist
        return DiagonalGaussian(posterior.mean, posterior.logvar)

    def decode(self, latents: Tensor) -> Tensor:
        """Images (B, C, fh, fw), in [0, 1] up to the decoder's error (not clamped), from latents (B, c, h, w)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape (B, {self.latent_channels}, h, w) (the VAE's latent channels), got "
                f"{tuple(latents.shape)}"
            )
        return (self.vae.decode(latents).sample + 1) * 0.5
