"""The U-Net's encoder half, shared by the Unet and the noise-aware classifier (nn/classifier.py): the blocks a
level is built from, the down levels (two time-conditioned ResNet blocks, attention, a 2x downsample; the last level
keeps its resolution), and the argument checks both networks make.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from .attention import Attention, LinearAttention
from .blocks import Downsample, ResnetBlock

ResnetFactory = Callable[[int, int], ResnetBlock]
AttentionFactory = Callable[[int, bool], nn.Module]


def block_factories(
    time_dim: int, *, groups: int, dropout: float, heads: int, dim_head: int
) -> tuple[ResnetFactory, AttentionFactory]:
    """(resnet(d_in, d_out), attention(d, full)): a level's ResNet block and its (full or linear) attention."""

    def resnet(d_in: int, d_out: int) -> ResnetBlock:
        return ResnetBlock(d_in, d_out, time_dim, groups=groups, dropout=dropout)

    def attention(d: int, full: bool) -> nn.Module:
        kind = Attention if full else LinearAttention
        return kind(d, heads=heads, dim_head=dim_head, groups=groups)

    return resnet, attention


def down_levels(
    dims: Sequence[int], full_attn: Sequence[bool], resnet: ResnetFactory, attention: AttentionFactory
) -> nn.ModuleList:
    """Level i (channels dims[i]): [ResNet block, ResNet block, attention, 2x downsample to dims[i+1]]; the last level
    only changes channels with a 3x3 conv. One ModuleList of four per level."""
    levels = nn.ModuleList()
    pairs = list(zip(dims[:-1], dims[1:]))
    for level, ((d_in, d_out), full) in enumerate(zip(pairs, full_attn)):
        is_last = level == len(pairs) - 1
        down: nn.Module = nn.Conv2d(d_in, d_out, 3, padding=1) if is_last else Downsample(d_in, d_out)
        levels.append(nn.ModuleList([resnet(d_in, d_in), resnet(d_in, d_in), attention(d_in, full), down]))
    return levels


def check_image_size(height: int, width: int, factor: int, levels: int) -> None:
    """Raise a ValueError, with sizes that would work, unless height and width are positive multiples of factor."""
    if height > 0 and width > 0 and height % factor == 0 and width % factor == 0:
        return

    def fits(n: int) -> tuple[int, int]:  # nearest multiples of factor below and above n (at least factor)
        return max(factor, n // factor * factor), max(factor, -(-n // factor) * factor)

    (h_lo, h_hi), (w_lo, w_hi) = fits(height), fits(width)
    if height == width:
        examples = [str(h_lo), str(h_hi)]
    else:
        examples = [f"({h_lo}, {w_lo})", f"({h_hi}, {w_hi})"]
    shown = " or ".join(dict.fromkeys(examples))
    raise ValueError(
        f"image size ({height}, {width}) is not divisible by {factor} = 2**({levels} levels - 1); "
        f"use a height and width that are multiples of {factor}, such as {shown}"
    )


def check_arguments(
    dim: int, init_dim: int, out_dim: int, dim_mults: tuple[int, ...], channels: int,
    groups: int, full_attn: tuple[bool, ...], dropout: float,
) -> None:  # fmt: skip
    """Raise ValueError for constructor arguments that cannot build a network."""
    for name, value in (("dim", dim), ("init_dim", init_dim), ("out_dim", out_dim), ("channels", channels)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if not dim_mults or min(dim_mults) < 1:
        raise ValueError(f"dim_mults must be a non-empty sequence of positive integers, got {dim_mults}")
    if len(full_attn) != len(dim_mults):
        raise ValueError(f"full_attn needs one flag per level ({len(dim_mults)}), got {len(full_attn)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if groups < 1:
        raise ValueError(f"resnet_block_groups must be a positive integer, got {groups}")
    bad = sorted({c for c in (init_dim, *(dim * m for m in dim_mults)) if c % groups != 0})
    if bad:
        raise ValueError(
            f"resnet_block_groups={groups} must divide every channel count of the network (init_dim={init_dim} and "
            f"dim * m for m in dim_mults={list(dim_mults)}, with dim={dim}), "
            f"but channel counts {bad} are not multiples of {groups}; "
            f"choose dim and init_dim as multiples of resnet_block_groups, "
            f"e.g. dim={max(groups, dim // groups * groups)}"
        )
