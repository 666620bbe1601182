"""The U-Net's encoder half, shared by the Unet and the noise-aware classifier (nn/encoder_classifier.py): the blocks a
level is built from, the down levels (``resnet_blocks`` time-conditioned ResNet blocks, attention, a 2x downsample;
the last level keeps its resolution), the per-level options (:func:`level_layout`) and the argument checks both
networks make.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .attention import Attention, LinearAttention
from .blocks import Downsample, ResnetBlock

ResnetFactory = Callable[[int, int], ResnetBlock]
AttentionFactory = Callable[[int, str], nn.Module]

ATTENTION_KINDS = ("full", "linear", "none")  # a level's self-attention: softmax, linear, or none at all
DEFAULT_RESNET_BLOCKS = 2  # ResNet blocks per level (Ho et al. 2020, App. B), the value of every old checkpoint


def block_factories(
    time_dim: int, *, groups: int, dropout: float, heads: int, dim_head: int
) -> tuple[ResnetFactory, AttentionFactory]:
    """(resnet(d_in, d_out), attention(d, kind)): a level's ResNet block and its self-attention of ``kind`` (one of
    ATTENTION_KINDS; 'none' gives an Identity, which has no parameters, so the other layers keep their names)."""

    def resnet(d_in: int, d_out: int) -> ResnetBlock:
        return ResnetBlock(d_in, d_out, time_dim, groups=groups, dropout=dropout)

    def attention(d: int, kind: str) -> nn.Module:
        if kind == "none":
            return nn.Identity()
        layer = Attention if kind == "full" else LinearAttention
        return layer(d, heads=heads, dim_head=dim_head, groups=groups)

    return resnet, attention


def down_levels(
    dims: Sequence[int],
    attention_kinds: Sequence[str],
    resnet_blocks: Sequence[int],
    resnet: ResnetFactory,
    attention: AttentionFactory,
) -> nn.ModuleList:
    """Level i (channels dims[i]): [resnet_blocks[i] ResNet blocks, attention of attention_kinds[i], 2x downsample to
    dims[i+1]]; the last level only changes channels with a 3x3 conv. One ModuleList per level, so with two blocks
    the names are those of every checkpoint written before the count became an option (``downs.i.0``, ``.1``,
    attention ``.2``, downsample ``.3``)."""
    levels = nn.ModuleList()
    pairs = list(zip(dims[:-1], dims[1:]))
    for level, ((d_in, d_out), kind, n) in enumerate(zip(pairs, attention_kinds, resnet_blocks)):
        is_last = level == len(pairs) - 1
        down: nn.Module = nn.Conv2d(d_in, d_out, 3, padding=1) if is_last else Downsample(d_in, d_out)
        levels.append(nn.ModuleList([*(resnet(d_in, d_in) for _ in range(n)), attention(d_in, kind), down]))
    return levels


def level_layout(
    levels: int, resnet_blocks: int | Sequence[int], attention: str | Sequence[str] | None,
    full_attn: Sequence[bool] | None,
) -> tuple[tuple[int, ...], tuple[str, ...]]:  # fmt: skip
    """(ResNet blocks per level, attention kind per level) from the constructor's arguments, checked.

    ``resnet_blocks``: one positive int for every level, or one per level. ``attention``: one of ATTENTION_KINDS for
    every level, or one per level; None: from ``full_attn`` ('full' where it is true, else 'linear'; by default
    'full' at the deepest level only). ``full_attn`` and ``attention`` may both be given (a config records both)
    only when they agree. Raises ValueError naming the argument, the value and what is allowed.
    """
    blocks = _per_level("resnet_blocks", resnet_blocks, levels, int)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in blocks):
        raise ValueError(
            f"resnet_blocks must be a positive integer, or one per level of dim_mults ({levels}), got {resnet_blocks!r}"
        )
    flags = None if full_attn is None else tuple(map(bool, full_attn))
    if flags is not None and len(flags) != levels:
        raise ValueError(f"full_attn needs one flag per level ({levels}), got {len(flags)}")
    if attention is None:
        flags = (False,) * (levels - 1) + (True,) if flags is None else flags
        return blocks, tuple("full" if full else "linear" for full in flags)
    kinds = _per_level("attention", attention, levels, str)
    if any(kind not in ATTENTION_KINDS for kind in kinds):
        raise ValueError(
            f"attention must be one of {', '.join(map(repr, ATTENTION_KINDS))}, or one of them per level of "
            f"dim_mults ({levels}), got {attention!r}"
        )
    if flags is not None and flags != tuple(kind == "full" for kind in kinds):
        raise ValueError(
            f"full_attn={list(flags)} disagrees with attention={list(kinds)}; give attention alone "
            "(full_attn is the older spelling of attention='full' per level)"
        )
    return blocks, kinds


def _per_level(name: str, value: Any, levels: int, scalar: type) -> tuple[Any, ...]:
    """``value`` repeated for every level when it is a single ``scalar``, else the sequence, of length ``levels``."""
    if isinstance(value, scalar):
        return (value,) * levels
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != levels:
        allowed = "a positive integer" if scalar is int else f"one of {', '.join(map(repr, ATTENTION_KINDS))}"
        raise ValueError(f"{name} must be {allowed}, or one per level of dim_mults ({levels}), got {value!r}")
    return tuple(value)


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
    groups: int, dropout: float,
) -> None:  # fmt: skip
    """Raise ValueError for constructor arguments that cannot build a network."""
    for name, value in (("dim", dim), ("init_dim", init_dim), ("out_dim", out_dim), ("channels", channels)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if not dim_mults or min(dim_mults) < 1:
        raise ValueError(f"dim_mults must be a non-empty sequence of positive integers, got {dim_mults}")
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
