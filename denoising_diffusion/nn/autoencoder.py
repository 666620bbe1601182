"""A KL-regularized convolutional autoencoder: the first stage of latent diffusion (Rombach et al. 2022, §3.1).

The encoder maps an image x (B, C, H, W) to the parameters of a diagonal Gaussian posterior q(z | x) over latents z
(B, c, H/f, W/f), with f = 2^k the downsampling factor and c a few latent channels; the decoder maps z back to an
image. Trained with an L1 reconstruction and a small KL(q(z | x) ‖ N(0, I)) (latent/autoencoder_training.py), the latent
space stays smooth enough for a diffusion model while keeping almost all of the image (docs/latent.md).

Both halves are stacks of pre-activation ResNet blocks (GroupNorm, SiLU, 3×3 conv) without time conditioning, as
in the autoencoders of Esser et al. 2021 and Rombach et al. 2022: one level per resolution, a stride-2 convolution
between levels in the encoder and nearest-neighbour upsampling + conv in the decoder. Images enter and leave in
[0, 1] (the network itself works in [−1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import PretrainedMixin, model_kind
from .blocks import Downsample, Upsample, group_norm

LOGVAR_RANGE = (-30.0, 20.0)
"""log σ² of the posterior is clamped to this range (as in Rombach et al.'s code): σ stays finite and positive."""


@dataclass(frozen=True)
class DiagonalGaussian:
    """A diagonal Gaussian posterior q(z | x) = N(μ, diag σ²) over latents (B, c, h, w).

    ``mean`` μ and ``logvar`` log σ² (clamped to LOGVAR_RANGE) have the latents' shape.
    """

    mean: Tensor
    logvar: Tensor

    @classmethod
    def from_moments(cls, moments: Tensor) -> DiagonalGaussian:
        """The posterior of ``moments`` (B, 2c, h, w): μ in the first c channels, log σ² in the last c."""
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar.clamp(*LOGVAR_RANGE))

    @property
    def moments(self) -> Tensor:
        """(B, 2c, h, w): μ then log σ², what a latent cache stores."""
        return torch.cat([self.mean, self.logvar], dim=1)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = μ + σ ε, ε ~ N(0, I) drawn from ``generator`` (the reparameterization of Kingma & Welling 2014)."""
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> Tensor:
        """μ, the most likely latent."""
        return self.mean

    def kl(self) -> Tensor:
        """KL(q ‖ N(0, I)) per sample, (B,): ½ Σ (μ² + σ² − 1 − log σ²) over the latent's dimensions."""
        terms = self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(dim=1)


class LatentCodec(Protocol):
    """What latent diffusion needs of an autoencoder (Autoencoder here, DiffusersAutoencoder for Stable Diffusion's
    VAE): ``encode(images in [0, 1]) -> q(z | x)``, ``decode(z) -> images``, and its shapes."""

    channels: int
    latent_channels: int
    factor: int

    def encode(self, images: Tensor) -> DiagonalGaussian: ...

    def decode(self, latents: Tensor) -> Tensor: ...


def codec(module: Any) -> LatentCodec:
    """``module`` seen as a LatentCodec (it is checked where it enters: latent.check_parts)."""
    return cast(LatentCodec, module)


class ResBlock(nn.Module):
    """Pre-activation ResNet block without time: out = conv₂(SiLU(norm₂(conv₁(SiLU(norm₁(x)))))) + skip(x).
    (B, dim_in, H, W) -> (B, dim_out, H, W)."""

    def __init__(self, dim_in: int, dim_out: int, groups: int) -> None:
        super().__init__()
        self.norm_1 = group_norm(groups, dim_in)
        self.conv_1 = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.norm_2 = group_norm(groups, dim_out)
        self.conv_2 = nn.Conv2d(dim_out, dim_out, 3, padding=1)
        self.skip = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_1(F.silu(self.norm_1(x)))
        return self.conv_2(F.silu(self.norm_2(h))) + self.skip(x)


def check_factor(factor: Any) -> int:
    """``factor`` as an int, a power of two >= 2; ValueError otherwise."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2 or factor & (factor - 1):
        raise ValueError(f"factor must be a power of two >= 2 (4 and 8 are the usual ones), got {factor!r}")
    return factor


def check_divides(factor: int, height: int, width: int, what: str = "image size") -> None:
    """ValueError, with sizes that would work, unless ``factor`` divides height and width."""
    if height > 0 and width > 0 and height % factor == 0 and width % factor == 0:
        return
    below, above = max(factor, height // factor * factor), -(-max(height, 1) // factor) * factor
    raise ValueError(
        f"{what} ({height}, {width}) is not divisible by the autoencoder's downsampling factor {factor}; use "
        f"multiples of {factor}, such as {below} or {above}"
    )


def default_dim_mults(factor: int) -> tuple[int, ...]:
    """Width multipliers of the log2(f) + 1 levels: 1, 2, 4, 4, ... (Rombach et al.'s kl-f4 and kl-f8 layouts)."""
    return tuple(min(2**level, 4) for level in range(int(math.log2(factor)) + 1))


@model_kind()
class Autoencoder(PretrainedMixin, nn.Module):
    """KL-regularized autoencoder with downsampling factor f: images (B, C, H, W) <-> latents (B, c, H/f, W/f).

    Args:
        channels: image channels C.
        factor: f, a power of two (4 or 8 as in Rombach et al. 2022, Table 8); H and W must be multiples of it.
        latent_channels: c, the latent's channels (Rombach et al. use 3 for f = 4 and 4 for f = 8).
        dim: the width of the first level.
        dim_mults: the width multiplier of each of the log2(f) + 1 levels (None: 1, 2, 4, 4, ...).
        resnet_blocks: ResNet blocks per level, in the encoder and in the decoder.
        groups: GroupNorm groups (must divide every width).
    """

    def __init__(
        self,
        channels: int = 3,
        *,
        factor: int = 4,
        latent_channels: int = 4,
        dim: int = 32,
        dim_mults: Sequence[int] | None = None,
        resnet_blocks: int = 1,
        groups: int = 8,
    ) -> None:
        super().__init__()
        self.factor = check_factor(factor)
        mults = tuple(default_dim_mults(self.factor) if dim_mults is None else (int(m) for m in dim_mults))
        if len(mults) != int(math.log2(self.factor)) + 1:
            raise ValueError(
                f"dim_mults needs log2(factor) + 1 = {int(math.log2(self.factor)) + 1} entries (one per "
                f"resolution level) for factor {self.factor}, got {len(mults)}: {mults}"
            )
        for name, value in (("channels", channels), ("latent_channels", latent_channels), ("dim", dim),
                            ("resnet_blocks", resnet_blocks)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.channels, self.latent_channels = channels, latent_channels
        self.config: dict[str, Any] = {
            "channels": channels, "factor": self.factor, "latent_channels": latent_channels, "dim": dim,
            "dim_mults": list(mults), "resnet_blocks": resnet_blocks, "groups": groups,
        }  # fmt: skip
        widths = [dim * m for m in mults]
        self.encoder = _encoder(channels, widths, resnet_blocks, groups, 2 * latent_channels)
        self.decoder = _decoder(latent_channels, widths, resnet_blocks, groups, channels)

    def check_image_size(self, height: int, width: int) -> None:
        """ValueError unless the factor divides height and width."""
        check_divides(self.factor, height, width)

    def encode(self, images: Tensor) -> DiagonalGaussian:
        """q(z | x) for images (B, C, H, W) in [0, 1]: a DiagonalGaussian over latents (B, c, H/f, W/f)."""
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(f"images must have shape (B, {self.channels}, H, W), got {tuple(images.shape)}")
        self.check_image_size(images.shape[-2], images.shape[-1])
        return DiagonalGaussian.from_moments(self.encoder(images * 2 - 1))

    def decode(self, latents: Tensor) -> Tensor:
        """Images (B, C, fh, fw), in [0, 1] up to the decoder's error (not clamped), from latents (B, c, h, w)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"latents must have shape (B, {self.latent_channels}, h, w) (this autoencoder's latent channels), "
                f"got {tuple(latents.shape)}"
            )
        return (self.decoder(latents) + 1) * 0.5

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """(reconstruction D(z) with z ~ q(z | x), the posterior q(z | x)) for images (B, C, H, W) in [0, 1]."""
        posterior = self.encode(images)
        return self.decode(posterior.sample(generator)), posterior


def _encoder(channels: int, widths: list[int], blocks: int, groups: int, out: int) -> nn.Sequential:
    """conv_in, per level ``blocks`` ResBlocks then a stride-2 downsampling (none after the last), two middle
    ResBlocks, norm, SiLU, conv_out to the posterior's moments. (B, C, H, W) -> (B, out, H/f, W/f)."""
    layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1)]
    for level, width in enumerate(widths):
        previous = widths[max(level - 1, 0)]
        layers += [ResBlock(previous if i == 0 else width, width, groups) for i in range(blocks)]
        if level < len(widths) - 1:
            layers.append(Downsample(width, width))
    layers += [ResBlock(widths[-1], widths[-1], groups), ResBlock(widths[-1], widths[-1], groups)]
    layers += [group_norm(groups, widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], out, 3, padding=1)]
    return nn.Sequential(*layers)


def _decoder(latent: int, widths: list[int], blocks: int, groups: int, channels: int) -> nn.Sequential:
    """The encoder's mirror: conv_in, two middle ResBlocks, per level (deepest first) ``blocks`` ResBlocks then
    nearest ×2 + conv (none after the shallowest), norm, SiLU, conv_out. (B, c, h, w) -> (B, C, fh, fw)."""
    layers: list[nn.Module] = [nn.Conv2d(latent, widths[-1], 3, padding=1)]
    layers += [ResBlock(widths[-1], widths[-1], groups), ResBlock(widths[-1], widths[-1], groups)]
    for level in reversed(range(len(widths))):
        width, nxt = widths[level], widths[max(level - 1, 0)]
        layers += [ResBlock(width, width, groups) for _ in range(blocks)]
        if level > 0:
            layers.append(Upsample(width, nxt))
    layers += [group_norm(groups, widths[0]), nn.SiLU(), nn.Conv2d(widths[0], channels, 3, padding=1)]
    return nn.Sequential(*layers)
