"""The built-in dataset: shapes drawn from a seed, shipped with the package (data.py names it).

Items are float32 tensors (C, H, W) with values in [0, 1], like every dataset of data.py, or (image, label) pairs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._utils import normalize_image_size
from .image_files import check_channels

__all__ = ["SHAPE_CLASSES", "BuiltinShapes", "shape_batches"]

# Saturated colours with distinct luminance, so the shapes stay distinguishable in grayscale too.
_SHAPE_COLORS = ((0.90, 0.15, 0.15), (0.15, 0.70, 0.20), (0.15, 0.30, 0.90), (0.95, 0.85, 0.10))
_COLOR_NAMES = ("red", "green", "blue", "yellow")
_SHAPE_NAMES = ("disc", "square")
_BACKGROUND = (0.95, 0.95, 0.95)
SHAPE_CLASSES: tuple[str, ...] = tuple(f"{color} {shape}" for shape in _SHAPE_NAMES for color in _COLOR_NAMES)
"""BuiltinShapes' 8 classes: label = 4 * shape + colour, shapes (disc, square), colours (red, green, blue, yellow)."""


class BuiltinShapes(Dataset):
    """One filled disc or square of one of four colours on a light-grey background, generated from a seed.

    Why it exists: the command line's default job (``denoising-diffusion train`` without a folder) needs data that
    ships with the package, needs no download, and is simple enough that a tiny Unet learns it in a few minutes on
    a 2-core CPU, so that its samples visibly resemble the data. Shape kind, colour, centre and size are drawn from
    ``torch.Generator().manual_seed(seed)``: the same arguments always give the same images. Edges are antialiased
    over one pixel.

    Every image has a class, one of 8: its shape and its colour (``classes``: "red disc", "green disc", "blue disc",
    "yellow disc", "red square", ..., "yellow square"; label = 4 * shape + colour). 8 rather than 2 (disc, square)
    so that the class fixes everything but position and size: the samples of a class-conditional model then show
    at a glance whether they follow their label, and classifier-free guidance has something to sharpen. The four
    colours differ in luminance, so the classes stay distinct with ``channels=1``. ``labelled`` only chooses the
    item's form: the images are the same either way.

    Args:
        num_images: dataset length.
        image_size: int or (H, W); at least 4 pixels each way.
        channels: 1 (luminance), 3 (RGB) or 4 (RGB plus an opaque alpha channel).
        seed: generator seed.
        labelled: items are (image, label) pairs instead of images.

    Items are float32 tensors (channels, H, W) in [0, 1], or (image, label int) with ``labelled=True``; all of them
    live in memory (``self.images``, and ``self.labels``, (N,) int64, labelled or not). ``classes`` and
    ``class_to_idx`` are named as in LabelledImageFolder (and torchvision).
    """

    def __init__(
        self,
        num_images: int = 2048,
        image_size: int | Sequence[int] = 16,
        channels: int = 3,
        seed: int = 0,
        labelled: bool = False,
    ) -> None:
        super().__init__()
        self.image_size = _check_arguments(num_images, image_size, channels)
        self.channels = channels
        self.seed = seed
        self.labelled = bool(labelled)
        self.classes = list(SHAPE_CLASSES)
        self.class_to_idx = {name: label for label, name in enumerate(SHAPE_CLASSES)}
        self.images, self.labels = _render_shapes(num_images, self.image_size, channels, seed)  # (N, C, H, W), (N,)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, int]:
        """Returns (C, H, W) float32 in [0, 1], or (that, label) with ``labelled=True``."""
        if self.labelled:
            return self.images[index], int(self.labels[index])
        return self.images[index]


def shape_batches(
    num_images: int, image_size: int | Sequence[int], channels: int = 3, seed: int = 0, batch_size: int = 256
) -> Iterator[Tensor]:
    """The images of ``BuiltinShapes(num_images, image_size, channels, seed)``, in order, ``batch_size`` at a time:
    the same pixels bit for bit (every shape is drawn first, then painted a batch at a time), without holding all
    of them (10 000 RGB images of 128x128 are 2 GB). Yields float32 (≤ batch_size, channels, H, W) in [0, 1]."""
    size = _check_arguments(num_images, image_size, channels)
    kind, color, radius, cy, cx = _draw_shapes(num_images, size, seed)
    for start in range(0, num_images, batch_size):
        part = slice(start, start + batch_size)
        yield _paint_shapes((kind[part], color[part], radius[part], cy[part], cx[part]), size, channels)


def _check_arguments(num_images: int, image_size: int | Sequence[int], channels: int) -> tuple[int, int]:
    """ValueError for a bad count, size or channel count; the size as (H, W)."""
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive int, got {num_images!r}")
    check_channels(channels)
    size = normalize_image_size(image_size)
    if min(size) < 4:
        raise ValueError(f"BuiltinShapes needs images of at least 4x4 pixels, got {image_size!r}")
    return size


def _render_shapes(n: int, size: tuple[int, int], channels: int, seed: int) -> tuple[Tensor, Tensor]:
    """Render n shape images -> ((n, channels, H, W) in [0, 1], (n,) int64 labels 4 * shape + colour)."""
    drawn = _draw_shapes(n, size, seed)
    kind, color = drawn[0], drawn[1]
    return _paint_shapes(drawn, size, channels), kind * len(_SHAPE_COLORS) + color


_Drawn = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # kind, colour, radius, centre y, centre x: (n,) each


def _draw_shapes(n: int, size: tuple[int, int], seed: int) -> _Drawn:
    """Each image's shape kind (0: disc, 1: square), colour index, radius (half side for squares) and centre."""
    height, width = size
    gen = torch.Generator().manual_seed(seed)
    short = min(height, width)
    kind = torch.randint(0, 2, (n,), generator=gen)  # 0: disc, 1: square
    color = torch.randint(0, len(_SHAPE_COLORS), (n,), generator=gen)
    radius = short * (0.18 + 0.14 * torch.rand(n, generator=gen))  # half side for squares
    cy = radius + (height - 2 * radius) * torch.rand(n, generator=gen)  # keep the shape inside the image
    cx = radius + (width - 2 * radius) * torch.rand(n, generator=gen)
    return kind, color, radius, cy, cx


def _paint_shapes(drawn: _Drawn, size: tuple[int, int], channels: int) -> Tensor:
    """The drawn shapes as (n, channels, H, W) images in [0, 1]."""
    kind, color, radius, cy, cx = drawn
    n, (height, width) = len(kind), size
    ys = torch.arange(height, dtype=torch.float32) + 0.5  # pixel centres
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    dy = ys.view(1, height, 1) - cy.view(n, 1, 1)  # (n, H, 1)
    dx = xs.view(1, 1, width) - cx.view(n, 1, 1)  # (n, 1, W)
    disc_dist = torch.sqrt(dy**2 + dx**2)  # (n, H, W)
    square_dist = torch.maximum(dy.abs(), dx.abs())  # Chebyshev distance: level sets are squares
    dist = torch.where(kind.view(n, 1, 1) == 0, disc_dist, square_dist)
    mask = (radius.view(n, 1, 1) - dist + 0.5).clamp(0.0, 1.0).unsqueeze(1)  # (n, 1, H, W), 1-pixel antialiasing
    rgb = torch.tensor(_SHAPE_COLORS)[color].view(n, 3, 1, 1)
    background = torch.tensor(_BACKGROUND).view(1, 3, 1, 1)
    images = background * (1 - mask) + rgb * mask  # (n, 3, H, W)
    if channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images * luma).sum(dim=1, keepdim=True)
    elif channels == 4:
        images = torch.cat([images, torch.ones(n, 1, height, width)], dim=1)
    return images.clamp_(0.0, 1.0).contiguous()
