"""``train FOLDER --latent AUTOENCODER``: latent diffusion from the command line, as a hook of train.py.

``--latent`` names the autoencoder: a checkpoint of ``train-autoencoder`` (its EMA weights), a pipeline file of an
Autoencoder, or a diffusers AutoencoderKL folder (Stable Diffusion's VAE, or a whole Stable Diffusion folder). The
images are read at the size the options give (the preset of the data), the Unet and GaussianDiffusion are built
from the same options at the latent size (image size / f, the autoencoder's latent channels, no normalization or
clipping) and wrapped in a LatentDiffusion (latent.py), which the Trainer trains and checkpoints whole.

``--latent-cache DIR`` encodes the data set once into DIR (latent_cache.py; both orientations, so the horizontal
flip stays exact and the Trainer's own flip is turned off) and trains on the cached posteriors.

A resumed latent run rebuilds everything from its checkpoint: :func:`pixel_view` shows the command line's
resume checks the diffusion's options at the images' size and channels.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._utils import normalize_image_size
from ..latent import AutoencoderTraining, LatentDiffusion, cache_latents
from ..nn.autoencoder import Autoencoder, check_divides
from ..nn.diffusers_autoencoder import DiffusersAutoencoder
from ..pipeline import Spec, build, load_pipeline, load_weights
from .presets import TrainPreset


def add_latent_arguments(p: argparse.ArgumentParser) -> None:
    """``--latent`` and ``--latent-cache``, in their own group of ``train --help``."""
    group = p.add_argument_group("latent diffusion (the autoencoder is saved in the checkpoint)")
    group.add_argument("--latent", type=Path, default=None, metavar="AUTOENCODER",
                       help="train the diffusion on this autoencoder's latents: a train-autoencoder checkpoint, an "
                       "Autoencoder pipeline file, or a diffusers AutoencoderKL folder (Stable Diffusion's VAE); "
                       "sample decodes to images (default: pixel space)")  # fmt: skip
    group.add_argument("--latent-cache", type=Path, default=None, metavar="DIR",
                       help="with --latent: encode the images once into DIR (both orientations) and train on the "
                       "cached latents; reused while the autoencoder, images and size are unchanged (default: encode "
                       "every batch)")  # fmt: skip


def check_latent_args(args: argparse.Namespace) -> None:
    """ValueError for --latent with --super-resolution (a stage works on the pixels it upsamples)."""
    if getattr(args, "latent", None) is not None and getattr(args, "super_resolution", None) is not None:
        raise ValueError("--latent and --super-resolution cannot be combined: a super-resolution stage works on the "
                         "pixels it upsamples; train the stage without --latent")  # fmt: skip


def load_autoencoder(source: Path) -> Any:
    """The autoencoder ``--latent`` names (module docstring), in eval mode. ValueError for anything else."""
    if source.is_dir():
        return DiffusersAutoencoder.from_pretrained(source).eval()
    if not source.exists():
        raise ValueError(f"--latent {source}: no such file or directory")
    found = load_pipeline(source)
    if isinstance(found, AutoencoderTraining):
        found = found.model
    if not isinstance(found, (Autoencoder, DiffusersAutoencoder)):
        raise ValueError(f"--latent {source} holds a {type(found).__name__}, not an autoencoder (train one with "
                         "train-autoencoder, or pass a diffusers AutoencoderKL folder)")  # fmt: skip
    return found


def build_model(args: argparse.Namespace, opts: TrainPreset, build_diffusion: Callable[..., Any]) -> Any:
    """``build_diffusion(opts)`` without --latent; with it, a LatentDiffusion around ``build_diffusion`` called with
    the options at the latent size (and ``auto_normalize=False``). ValueError when the autoencoder's factor does not
    divide the image size or its channels are not the images'."""
    if getattr(args, "latent", None) is None:
        return build_diffusion(opts)
    autoencoder = load_autoencoder(args.latent)
    height, width = normalize_image_size(opts.image_size)
    check_divides(autoencoder.factor, height, width)
    if autoencoder.channels != opts.channels:
        raise ValueError(f"--latent {args.latent} encodes {autoencoder.channels}-channel images, but the images are "
                         f"read with {opts.channels} channels (--channels)")  # fmt: skip
    h, w = height // autoencoder.factor, width // autoencoder.factor
    side: Any = h if h == w else (h, w)  # TrainPreset's image_size: an int, or (H, W) as a resumed run has it
    inner = replace(opts, image_size=side, channels=autoencoder.latent_channels, clip_denoised=False)
    print(f"latent diffusion: {height}x{width} images <-> {autoencoder.latent_channels}x{h}x{w} latents (factor "
          f"{autoencoder.factor})")  # fmt: skip
    return LatentDiffusion(autoencoder, build_diffusion(inner, auto_normalize=False))


def latent_data(args: argparse.Namespace, data: Any, model: Any, checkpoint: Any = None) -> tuple[Any, Any]:
    """(data, model) for the Trainer: a latent model resumed from ``checkpoint`` gets its weights now (its frozen
    autoencoder encodes the cache); with --latent-cache the data become the cached latents."""
    cache = getattr(args, "latent_cache", None)
    if not isinstance(model, LatentDiffusion):
        if cache is not None:
            raise ValueError("--latent-cache is for latent diffusion (--latent AUTOENCODER)")
        return data, model
    if checkpoint is not None:
        load_weights(model, checkpoint)
    if cache is None:
        return data, model
    return cache_latents(model.autoencoder, data, cache, flips=True), model.use_cached_latents()


def pixel_view(spec: Spec) -> Spec:
    """A LatentDiffusion checkpoint's diffusion spec at the images' size and channels (what the command line's
    options describe); any other spec as it is."""
    if spec.get("kind") != LatentDiffusion.__name__:
        return spec
    autoencoder = build(spec["autoencoder"])
    inner = dict(spec["diffusion"])
    height, width = normalize_image_size(inner["image_size"])
    inner["image_size"] = [height * autoencoder.factor, width * autoencoder.factor]
    inner["model"] = {**inner["model"], "channels": autoencoder.channels}
    return inner
