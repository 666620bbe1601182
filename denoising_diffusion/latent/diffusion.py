"""Latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"): a
diffusion model trained on the latents of a frozen autoencoder, and the autoencoder's decoder mapping its samples
back to images.

An autoencoder E, D (nn/autoencoder.py, or Stable Diffusion's VAE through nn/diffusers_autoencoder.py) compresses an
image x (B, C, H, W) to latents z ~ q(z | x) = E(x) of shape (B, c, H/f, W/f). The diffusion model is trained on the
scaled latents z̃ = s (z − b) with the objective of Rombach et al., eq. 2::

    L_LDM = E_{z ~ E(x), ε ~ N(0, I), t} ‖ε − ε_θ(z̃_t, t)‖²

(or whatever objective, process and weighting the wrapped GaussianDiffusion has). s is the *scale factor*: 1/std of
the training latents, estimated once from the data (their §4.3.2: latent spaces of any autoencoder rescaled to unit
variance meet the same noise schedules) and stored in the config, so that z̃ has unit variance as the diffusion's
prior N(0, I) expects; a diffusers VAE brings its own s (``scaling_factor``, 0.18215 for Stable Diffusion 1.x) and
shift b (``shift_factor``; 0 otherwise). The diffusion works on z̃ as it is: no [0, 1] normalization and no x̂_0
clipping (its data are not images), so the GaussianDiffusion must be built with ``auto_normalize=False,
clip_denoised=False``. Samples are decoded, x = D(z̃/s + b), and clamped to [0, 1] only then.

Editing takes images and masks in pixel space: an image is encoded to the mean of q(z | x); a mask (1 = keep) is
reduced to the latent grid by keeping a latent cell only when every pixel of its f×f block is kept, so that the
region RePaint regenerates covers the hole (the kept pixels come back as the autoencoder's reconstruction).

The autoencoder is frozen (no gradients, eval mode) and is a part of the model: the Trainer's checkpoint stores it
beside the diffusion's network, and ``load_pipeline`` rebuilds the whole from that one file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import editing
from .._utils import module_device
from ..conditioning import ConditionSpec
from ..data.batch import Batch, check_images, map_images, split_batch
from ..diffusion import GaussianDiffusion
from ..nn.autoencoder import DiagonalGaussian, LatentCodec, codec
from ..registry import PretrainedMixin, model_kind
from ..samplers import SamplerInfo
from ..sampling import SamplingRunner

ENCODE_CHUNK = 64
"""Images encoded (and latents decoded) at a time when the latent model fits its scale or decodes a trajectory."""


@model_kind(parts=("autoencoder", "diffusion"))
class LatentDiffusion(PretrainedMixin, nn.Module):
    """A GaussianDiffusion on the scaled latents of a frozen autoencoder (module docstring).

    Args:
        autoencoder: Autoencoder, DiffusersAutoencoder, or any module with ``encode(images in [0, 1]) ->
            DiagonalGaussian``, ``decode(latents) -> images``, ``channels``, ``latent_channels`` and ``factor``.
            It is frozen here.
        diffusion: a GaussianDiffusion on the latents: ``channels`` = the autoencoder's latent channels, image size
            = the training images' size / f, built with ``auto_normalize=False, clip_denoised=False``.
        scale_factor: s; None: the autoencoder's own ``scaling_factor`` when it has one, else estimated from the
            training data by the Trainer (:meth:`fit_data_statistics`) and recorded in the config.

    Attributes:
        cached: whether training batches hold cached posterior moments (cache.py) instead of images;
            :meth:`use_cached_latents` sets it.
    """

    def __init__(self, autoencoder: nn.Module, diffusion: GaussianDiffusion, *, scale_factor: float | None = None):
        super().__init__()
        check_parts(autoencoder, diffusion)
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        self.diffusion = diffusion
        own = getattr(autoencoder, "scaling_factor", None)
        self.scale_factor = check_scale(own if scale_factor is None else scale_factor)
        self.shift_factor = float(getattr(autoencoder, "shift_factor", 0.0) or 0.0)
        self.config: dict[str, Any] = {"scale_factor": self.scale_factor}
        self.cached = False

    # ----- what the parts say --------------------------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The trained network: the diffusion's (what the Trainer's EMA averages and its checkpoint's ``model``)."""
        return self.diffusion.model

    @property
    def codec(self) -> LatentCodec:
        """The autoencoder, as the LatentCodec it was checked to be."""
        return codec(self.autoencoder)

    @property
    def factor(self) -> int:
        return int(self.codec.factor)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(c, h, w) of one latent: the diffusion's channels and image size."""
        return (self.diffusion.channels, *self.diffusion.image_size)

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image: the autoencoder's channels, the latent size times f."""
        _, height, width = self.latent_shape
        return (int(self.codec.channels), height * self.factor, width * self.factor)

    @property
    def channels(self) -> int:
        """What a training item holds (training/trainable.py): image channels C, or 2c moments when cached."""
        return 2 * self.latent_shape[0] if self.cached else self.pixel_shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of a training item: the images', or the latents' when cached."""
        shape = self.latent_shape if self.cached else self.pixel_shape
        return shape[1], shape[2]

    @property
    def condition_spec(self) -> ConditionSpec:
        return self.diffusion.condition_spec

    @property
    def class_names(self) -> list[str] | None:
        return self.diffusion.class_names

    @property
    def sampling_timesteps(self) -> int:
        return self.diffusion.sampling_timesteps

    @property
    def num_timesteps(self) -> int:
        return self.diffusion.num_timesteps

    @property
    def runner(self) -> SamplingRunner:
        """The diffusion's sampling runner, in latent space (``sampling.runner_of``)."""
        return self.diffusion.runner

    @property
    def device(self) -> torch.device:
        return module_device(self.diffusion.model)

    def sampler_info(self, name: str | None) -> SamplerInfo:
        return self.diffusion.sampler_info(name)

    def use_cached_latents(self, enabled: bool = True) -> LatentDiffusion:
        """Train on cached posterior moments (cache.cache_latents' items, (2c, h, w)) instead of images;
        returns self. The function and the checkpoint do not change, only what a training batch holds."""
        self.cached = bool(enabled)
        return self

    def with_model(self, model: nn.Module) -> LatentDiffusion:
        """The same latent model around another diffusion network (the Trainer's EMA copy); the autoencoder is
        shared."""
        other = LatentDiffusion(self.autoencoder, self.diffusion.with_model(model), scale_factor=self.scale_factor)
        return other.use_cached_latents(self.cached)

    def train(self, mode: bool = True) -> LatentDiffusion:
        """Training mode for the diffusion; the frozen autoencoder stays in eval mode."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    # ----- latents ---------------------------------------------------------------------------------------------------

    def _scale(self) -> float:
        if self.scale_factor is None:
            raise ValueError(
                "the latents' scale factor is not known yet: the Trainer estimates it from the training data before "
                "the first step (fit_data_statistics(images)), or pass scale_factor= (1 / std of the latents)"
            )
        return self.scale_factor

    def scaled(self, latents: Tensor) -> Tensor:
        """z̃ = s (z − b): the autoencoder's latents as the diffusion sees them."""
        return (latents - self.shift_factor) * self._scale()

    def posterior(self, images: Tensor) -> DiagonalGaussian:
        """q(z | x) of images (B, C, H, W) in [0, 1], without gradients."""
        check_images(images, self.pixel_shape)
        with torch.no_grad():
            return self.codec.encode(images)

    def training_posterior(self, items: Tensor) -> DiagonalGaussian:
        """q(z | x) of a training batch's images, or of its cached moments (B, 2c, h, w) when ``cached``."""
        if not self.cached:
            return self.posterior(items)
        check_images(items, (2 * self.latent_shape[0], *self.latent_shape[1:]))
        return DiagonalGaussian.from_moments(items)

    def encode(self, images: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Scaled latents z̃ (B, c, h, w) of images (B, C, H, W) in [0, 1]: of the posterior's mean, or a draw from
        it with ``sample``."""
        posterior = self.posterior(images)
        return self.scaled(posterior.sample(generator) if sample else posterior.mode())

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] from scaled latents z̃ (B, c, h, w): D(z̃/s + b), clamped after decoding.
        ValueError for latents of another shape than the diffusion's."""
        check_latents(latents, self.latent_shape)
        z = latents / self._scale() + self.shift_factor
        parts = [self.codec.decode(part) for part in z.split(ENCODE_CHUNK)]
        return torch.cat(parts).clamp(0.0, 1.0)

    def _decode_output(self, latents: Tensor, trajectory: bool) -> Tensor:
        """Decode a sampler's result: (B, c, h, w), or a trajectory (B, S + 1, c, h, w) frame by frame."""
        if not trajectory:
            return self.decode(latents)
        frames = self.decode(latents.flatten(0, 1))
        return frames.unflatten(0, latents.shape[:2])

    # ----- training ---------------------------------------------------------------------------------------------------

    def forward(self, batch: Batch, **condition: Any) -> Tensor:
        """The diffusion's loss (a scalar, L_LDM for ε-prediction) on z̃ = s (z − b), z ~ q(z | x), for a batch of
        images (B, C, H, W) in [0, 1] (of cached moments when ``cached``); the batch's other entries (labels, ...)
        and ``condition`` go to the diffusion as they are."""
        images, _ = split_batch(batch)
        latents = self.scaled(self.training_posterior(images).sample())
        return cast(Tensor, self.diffusion(map_images(batch, lambda _: latents), **condition))

    # ----- data statistics (training/trainable.py, FitsData) ------------------------------------------------------

    @property
    def needs_data_statistics(self) -> bool:
        """Whether the scale factor (or the diffusion's own statistic, σ_max of ve/ncsn) is still to be fitted."""
        return self.scale_factor is None or self.diffusion.needs_data_statistics

    def fit_data_statistics(self, images: Tensor) -> dict[str, float]:
        """s = 1 / std(z − b) over every value of latents z ~ q(z | x) of ``images`` (N, C, H, W) in [0, 1]
        (moments when cached), recorded in the config; then the diffusion's own statistics from the scaled
        latents. Returns what was fitted."""
        draws = [self.training_posterior(part.to(self.device)).sample() for part in images.split(ENCODE_CHUNK)]
        latents = torch.cat(draws).float() - self.shift_factor
        fitted: dict[str, float] = {}
        if self.scale_factor is None:
            std = float(latents.std())
            if not (math.isfinite(std) and std > 0):
                raise ValueError(f"the training latents have standard deviation {std}: no scale factor fits them")
            self.scale_factor = self.config["scale_factor"] = fitted["scale_factor"] = 1.0 / std
        if self.diffusion.needs_data_statistics:
            fitted.update(self.diffusion.fit_data_statistics(latents * self._scale()))
        return fitted

    def restore_data_statistics(self, config: Mapping[str, Any]) -> bool:
        """Take the scale factor (and the diffusion's statistics) from a stored config (a checkpoint's spec)."""
        if self.scale_factor is None and config.get("scale_factor") is not None:
            self.scale_factor = self.config["scale_factor"] = check_scale(config["scale_factor"])
        if self.diffusion.needs_data_statistics:
            self.diffusion.restore_data_statistics(config.get("diffusion") or {})
        return not self.needs_data_statistics

    # ----- sampling and editing ---------------------------------------------------------------------------------------

    def sample(self, batch_size: int = 16, *, return_all_timesteps: bool = False, **options: Any) -> Tensor:
        """Images (B, C, H, W) in [0, 1] decoded from the diffusion's samples in latent space, which are not clamped
        (or the decoded trajectory (B, S + 1, C, H, W)). Every argument of GaussianDiffusion.sample: the sampler
        and its options, steps, spacing, generator, callback (records in latent space), the condition, guidance."""
        latents = self.diffusion.sample(batch_size, return_all_timesteps=return_all_timesteps, **options)
        return self._decode_output(latents, return_all_timesteps)

    def inpaint(self, images: Tensor, mask: Tensor, *, return_all_timesteps: bool = False, **options: Any) -> Tensor:
        """RePaint in latent space (editing.inpaint): images (B, C, H, W) in [0, 1] and a pixel mask (B, 1 or C, H,
        W), 1 = keep, reduced to the latent grid by :func:`latent_mask`; returns decoded images in [0, 1]."""
        check_images(images, self.pixel_shape)
        keep = latent_mask(editing.check_mask(mask, images), self.factor)
        out = editing.inpaint(self.diffusion, self.encode(images), keep, return_all_timesteps=return_all_timesteps,
                              **options)  # fmt: skip
        return self._decode_output(out, return_all_timesteps)

    def img2img(self, images: Tensor, strength: float, *, return_all_timesteps: bool = False, **options: Any) -> Tensor:
        """SDEdit in latent space (editing.img2img) from the encoded images (B, C, H, W) in [0, 1]; returns decoded
        images (at strength 0: the autoencoder's reconstruction)."""
        check_images(images, self.pixel_shape)
        out = editing.img2img(self.diffusion, self.encode(images), strength,
                              return_all_timesteps=return_all_timesteps, **options)  # fmt: skip
        return self._decode_output(out, return_all_timesteps)

    def invert(self, images: Tensor, **options: Any) -> Tensor:
        """DDIM inversion (editing.invert) of the encoded images: the latent x_T (B, c, h, w)."""
        return editing.invert(self.diffusion, self.encode(images), **options)


def latent_mask(keep: Tensor, factor: int) -> Tensor:
    """A pixel mask (B, 1 or C, H, W), True = keep, reduced to the latent grid (B, 1, H/f, W/f): a latent cell is
    kept only when every pixel (and channel) of its f×f block is, so everything touching the hole is regenerated."""
    every_channel = keep.all(dim=1, keepdim=True).float()
    return -F.max_pool2d(-every_channel, factor) > 0.5


def check_latents(latents: Any, shape: tuple[int, int, int]) -> None:
    """ValueError unless ``latents`` is (B, c, h, w) with (c, h, w) = ``shape`` (the diffusion model's)."""
    if not isinstance(latents, Tensor) or latents.ndim != 4 or tuple(latents.shape[1:]) != shape or not len(latents):
        got = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
        raise ValueError(
            f"latents must have shape (B, {shape[0]}, {shape[1]}, {shape[2]}) (the diffusion model's channels and "
            f"latent size), got {got}"
        )


def check_scale(value: Any) -> float | None:
    """``value`` as a positive finite float (None stays None); ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"scale_factor must be a positive number (1 / std of the latents) or None, got {value!r}")
    return float(value)


def check_parts(autoencoder: Any, diffusion: Any) -> None:
    """ValueError naming what does not fit: an object that is not an autoencoder, a diffusion that normalizes or
    clips, or latent channels that differ from the diffusion's."""
    missing = [name for name in ("encode", "decode", "channels", "latent_channels", "factor")
               if not hasattr(autoencoder, name)]  # fmt: skip
    if not isinstance(autoencoder, nn.Module) or missing:
        raise ValueError(
            f"a LatentDiffusion needs its autoencoder to encode images and decode samples: an Autoencoder, a "
            f"DiffusersAutoencoder, or a module with encode, decode, channels, latent_channels and factor; got a "
            f"{type(autoencoder).__name__}{' lacking ' + ', '.join(missing) if missing else ''}"
        )
    if not isinstance(diffusion, GaussianDiffusion):
        raise ValueError(f"diffusion must be a GaussianDiffusion on the latents, got a {type(diffusion).__name__}")
    if diffusion.auto_normalize or diffusion.clip_denoised:
        raise ValueError(
            "the diffusion works on the scaled latents as they are: build its GaussianDiffusion with "
            "auto_normalize=False, clip_denoised=False (latents are not images in [0, 1], and x_0 must not be "
            "clamped to [-1, 1])"
        )
    if diffusion.channels != autoencoder.latent_channels:
        raise ValueError(
            f"the diffusion's network takes {diffusion.channels} channels but the autoencoder's latents have "
            f"{autoencoder.latent_channels}: build the Unet with channels={autoencoder.latent_channels}"
        )
