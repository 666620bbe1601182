"""Conditioning augmentation (Ho et al. 2021, "Cascaded Diffusion Models", §3.2 and §4.1; Saharia et al. 2022,
Imagen, §2.5): the low-resolution input of a super-resolution stage is corrupted in training, the amount is given to
the network, and it is chosen again at sampling time, so that the stage learns to repair what the stage before
gets wrong instead of copying it.

**Noise** (Imagen's noise conditioning augmentation): the upsampled low-resolution image z_0 (B, C, H, W), in the
model's space ([−1, 1]), is noised by a forward diffusion process at a level s ∈ [0, 1] per sample,

    z_s = α_s z_0 + σ_s ε,   α_s = cos(π s / 2),   σ_s = sin(π s / 2),   ε ~ N(0, I)

the variance-preserving cosine path (Nichol & Dhariwal 2021's cosine schedule in continuous time, without its
offset): s = 0 is the clean input exactly (α = 1, σ = 0), s = 1 pure noise, and α_s² + σ_s² = 1 keeps z_s at the
data's scale. In training s ~ U[s_lo, s_hi] per sample (:class:`Augmentation`'s ``noise_levels``); at sampling
one s for the batch. The network is told s (``cond_level``; nn/conditioning.py embeds it as the time 1000·s).

**Blur** (CDM's Gaussian blur augmentation, an option): in training only, the upsampled image is blurred by a
Gaussian of standard deviation b ~ U[b_lo, b_hi] pixels (of the high-resolution grid) per sample, before the noise;
the low-resolution input at sampling time is left sharp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

NULL_LEVEL = 1.0
"""The level that stands for "no low-resolution image": the null of guidance on the image (nn/conditioning.py's
NullImage replaces its embedding), and the level at which z_s is pure noise."""


def level_coefficients(level: Tensor) -> tuple[Tensor, Tensor]:
    """(α_s, σ_s) = (cos(π s/2), sin(π s/2)) of levels s (B,), as (B, 1, 1, 1) float64 tensors; exactly (1, 0) at 0."""
    s = level.double().view(-1, 1, 1, 1)
    return torch.cos(0.5 * math.pi * s), torch.sin(0.5 * math.pi * s)


def augment(z_0: Tensor, level: Tensor, noise: Tensor) -> Tensor:
    """z_s = α_s z_0 + σ_s ε for images z_0 (B, C, H, W), levels (B,) and noise ε like z_0; z_0's dtype."""
    alpha, sigma = level_coefficients(level)
    return (alpha * z_0.double() + sigma * noise.double()).to(z_0.dtype)


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Each image (B, C, H, W) blurred by a normalized Gaussian of its own standard deviation ``sigma`` (B,) pixels,
    the kernel cut at 3σ (at least 3 taps), reflect padding; σ = 0 leaves an image unchanged."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=images.device)
    s = sigma.double().to(images.device).clamp_min(1e-12)[:, None]
    taps = torch.exp(-0.5 * (offsets[None] / s) ** 2)
    taps = taps / taps.sum(dim=1, keepdim=True)  # (B, K); σ → 0 gives the identity kernel
    batch, channels, height, width = images.shape
    x = F.pad(images.double(), (radius, radius, radius, radius), mode="reflect")
    x = x.reshape(1, batch * channels, height + 2 * radius, width + 2 * radius)
    kernel = taps.repeat_interleave(channels, dim=0)  # (B·C, K)
    x = F.conv2d(x, kernel[:, None, None, :], groups=batch * channels)  # along the width
    x = F.conv2d(x, kernel[:, None, :, None], groups=batch * channels)  # along the height
    return x.reshape(batch, channels, height, width).to(images.dtype)


def _range(name: str, value: Sequence[float], upper: float | None) -> tuple[float, float]:
    """``value`` as (lo, hi) with 0 <= lo <= hi (<= upper); ValueError naming ``name`` otherwise."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers (lo, hi), got {value!r}") from None
    top = math.inf if upper is None else upper
    if not (0.0 <= lo <= hi <= top and math.isfinite(hi)):
        bound = f"<= {upper:g}" if upper is not None else "finite"
        raise ValueError(f"{name} must satisfy 0 <= lo <= hi {bound}, got ({lo:g}, {hi:g})")
    return lo, hi


@dataclass(frozen=True)
class Augmentation:
    """What a super-resolution stage does to its low-resolution input (module docstring).

    Args:
        noise_levels: (s_lo, s_hi) ⊂ [0, 1], the range training draws levels from uniformly; sampling levels must
            lie in it (the network never saw others).
        blur_sigma: (b_lo, b_hi) pixels of training blur, or None for none.
    """

    noise_levels: Sequence[float] = (0.0, 0.5)
    blur_sigma: Sequence[float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_levels", _range("noise_levels", self.noise_levels, 1.0))
        if self.blur_sigma is not None:
            object.__setattr__(self, "blur_sigma", _range("blur_sigma", self.blur_sigma, None))

    def check_level(self, level: float) -> float:
        """``level`` as a float if it lies in ``noise_levels``; ValueError naming the range otherwise."""
        lo, hi = self.noise_levels
        if not isinstance(level, (int, float)) or isinstance(level, bool) or not lo <= float(level) <= hi:
            raise ValueError(
                f"augmentation level {level!r} is outside [{lo:g}, {hi:g}], the range this stage was trained on "
                "(noise_levels): the network has never seen other levels"
            )
        return float(level)

    def training_levels(self, batch: int, device: torch.device) -> Tensor:
        """s ~ U[s_lo, s_hi], (B,) float32, from the global RNG (the Trainer's, resumed exactly)."""
        lo, hi = self.noise_levels
        return lo + (hi - lo) * torch.rand(batch, device=device)

    def training_input(self, z_0: Tensor) -> tuple[Tensor, Tensor]:
        """(z_s, s) for a training batch of upsampled images z_0 (B, C, H, W) in the model's space: blurred when
        ``blur_sigma`` is set, then noised at levels drawn per sample."""
        batch = z_0.shape[0]
        if self.blur_sigma is not None:
            lo, hi = self.blur_sigma
            z_0 = gaussian_blur(z_0, lo + (hi - lo) * torch.rand(batch, device=z_0.device))
        level = self.training_levels(batch, z_0.device)
        return augment(z_0, level, torch.randn_like(z_0)), level

    def sampling_input(self, z_0: Tensor, level: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """(z_s, s) at one checked ``level`` for the batch z_0 (B, C, H, W); the noise from ``generator``."""
        s = torch.full((z_0.shape[0],), self.check_level(level), device=z_0.device)
        noise = torch.randn(z_0.shape, generator=generator, device=z_0.device, dtype=z_0.dtype)
        return augment(z_0, s, noise), s
