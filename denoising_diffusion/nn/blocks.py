"""Convolutional building blocks of the U-Net: a time-conditioned ResNet block and the resampling layers.

The ResNet block follows Ho et al. 2020 (App. B) with the adaptive group normalization of Nichol & Dhariwal 2021
(§3, "improved DDPM") and Dhariwal & Nichol 2021 (§3): the time embedding predicts a per-channel scale and shift.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def group_norm(groups: int, channels: int) -> nn.GroupNorm:
    """GroupNorm (Wu & He 2018) with a clear error when ``channels`` is not a multiple of ``groups``."""
    if groups < 1 or channels % groups != 0:
        raise ValueError(
            f"GroupNorm needs the channel count to be a multiple of the number of groups, "
            f"but {channels} channels cannot be split into {groups} groups"
        )
    return nn.GroupNorm(groups, channels)


class ResnetBlock(nn.Module):
    """Pre-activation ResNet block conditioned on time by scale and shift (Nichol & Dhariwal 2021, §3).

    h = conv₁(SiLU(norm₁(x)));  (s, b) = Linear(SiLU(t_emb));  h = norm₂(h)·(1 + s) + b;
    out = conv₂(dropout(SiLU(h))) + skip(x), with skip a 1×1 conv when the channel count changes.

    Args:
        dim_in, dim_out: input and output channels.
        time_dim: width of the time embedding.
        groups: GroupNorm groups (must divide dim_in and dim_out).
        dropout: dropout probability before the second convolution (Ho et al. 2020 use 0.1 on CIFAR-10).
    """

    def __init__(self, dim_in: int, dim_out: int, time_dim: int, *, groups: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_1 = group_norm(groups, dim_in)
        self.conv_1 = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * dim_out))
        self.norm_2 = group_norm(groups, dim_out)
        self.dropout = nn.Dropout(dropout)
        self.conv_2 = nn.Conv2d(dim_out, dim_out, 3, padding=1)
        self.skip = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: Tensor, time_emb: Tensor) -> Tensor:
        """x: (B, dim_in, H, W); time_emb: (B, time_dim). Returns (B, dim_out, H, W)."""
        h = self.conv_1(F.silu(self.norm_1(x)))
        scale_shift = rearrange(self.time_mlp(time_emb), "b c -> b c 1 1")
        scale, shift = scale_shift.chunk(2, dim=1)  # each (B, dim_out, 1, 1)
        h = self.norm_2(h) * (1 + scale) + shift
        h = self.conv_2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class Downsample(nn.Module):
    """Halve the resolution: pixel-unshuffle (space-to-depth) followed by a 1×1 conv.

    The pair is computed as a single 2×2 convolution with stride 2, which is the same linear map with the same
    4·dim_in·dim_out weights, but needs no reshape and keeps the channels_last memory format.
    (B, dim_in, H, W) -> (B, dim_out, H/2, W/2).
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour ×2, then a 3×3 conv (Ho et al. 2020, App. B).

    (B, dim_in, H, W) -> (B, dim_out, 2H, 2W).
    """

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
