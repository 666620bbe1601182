"""The resolution changes of a cascade: the antialiased downsample that makes a stage's low-resolution training input
from each high-resolution image, and the upsample that brings a low-resolution image to the stage's grid before it
enters the network's image-conditioning path (concatenated to x_t).

Both are bicubic (Keys' a = −0.75, torch's ``interpolate``): the downsample with antialiasing (the kernel widened by
the factor, as PIL's resize), so a small image is a filtered one, not an aliased subsample; the upsample is plain
bicubic, the usual "bicubic baseline" of super-resolution. Both are linear maps of the pixels, computed in float32
(a bfloat16 batch is resized at full precision), and do not clamp: a bicubic overshoot is a fact of the input the
network learns from.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torch.nn import functional as F

from .._utils import normalize_image_size


def _resized(images: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    """images (B, C, h, w) -> (B, C, *size), bicubic, computed in float32 and returned in the input's dtype."""
    out = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False, antialias=antialias)
    return out.to(images.dtype)


def downsample(images: Tensor, size: tuple[int, int]) -> Tensor:
    """The low-resolution version (B, C, *size) of images (B, C, H, W): antialiased bicubic."""
    return _resized(images, size, antialias=True)


def upsample(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Low-resolution images (B, C, h, w) brought to (B, C, *size): bicubic."""
    return _resized(images, size, antialias=False)


def super_resolution_sizes(low_res_size: int | Sequence[int], image_size: tuple[int, int]) -> tuple[int, int]:
    """``low_res_size`` as (h, w), checked against the stage's ``image_size`` (H, W): smaller, and dividing it (an
    integer factor per side, so that every low-resolution pixel covers the same high-resolution block). ValueError
    naming both otherwise."""
    try:
        low = normalize_image_size(low_res_size)
    except ValueError:
        raise ValueError(f"low_res_size must be a positive int or (height, width), got {low_res_size!r}") from None
    factors = [high / side for high, side in zip(image_size, low)]
    if any(f <= 1 or f != int(f) for f in factors):
        raise ValueError(
            f"low_res_size {_size(low)} must be smaller than the stage's image_size {_size(image_size)} and divide "
            f"it (a factor of 2, 4, ... per side): {_size(image_size)} / {_size(low)} is not a whole factor > 1"
        )
    return low


def _size(size: tuple[int, int]) -> str:
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"
