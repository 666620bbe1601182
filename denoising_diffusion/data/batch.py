"""What a training batch may be, and where its images are: one convention for the datasets, the Trainer and the
models it trains.

A dataset item is one of:

* an image, a (C, H, W) tensor in [0, 1];
* a tuple or list whose first element is the image: (image, label) pairs from torchvision datasets or
  ``TensorDataset(images, labels)``;
* a dict with an ``"image"`` entry and other named entries (the layout of Hugging Face datasets).

:func:`collate_batch` keeps that structure (torch's ``default_collate``): a batch is a (B, C, H, W) tensor, a list
``[images, labels, ...]``, or a dict of batched entries. :func:`split_batch` separates the images from the rest
(the *extras*), so a model decides what to do with them: an unconditional GaussianDiffusion warns that it drops
them; a conditional model (later) reads its labels from them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import default_collate

IMAGE_KEY = "image"
Batch = Any  # Tensor | list | tuple | dict: see the module docstring
ITEM_FORMS = (
    f"(C, H, W) tensors in [0, 1], tuples whose first element is one (e.g. (image, label)), or dicts "
    f"with an {IMAGE_KEY!r} entry"
)


def split_batch(batch: Batch) -> tuple[Tensor, dict[str, Any]]:
    """(images, extras) of a batch: images (B, C, H, W); extras named '[1]', '[2]', ... for a tuple's later
    elements, by key for a dict's other entries ({} for a plain tensor). ValueError for anything else."""
    if isinstance(batch, Tensor):
        return batch, {}
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0], {f"[{i}]": value for i, value in enumerate(batch[1:], start=1)}
    if isinstance(batch, Mapping) and IMAGE_KEY in batch:
        return batch[IMAGE_KEY], {key: value for key, value in batch.items() if key != IMAGE_KEY}
    raise ValueError(
        f"a batch must be an image tensor, a tuple/list starting with one, or a dict with an "
        f"{IMAGE_KEY!r} entry; got {_describe(batch)}"
    )


def map_images(batch: Batch, fn: Callable[[Tensor], Tensor]) -> Batch:
    """The batch with its images replaced by ``fn(images)``, everything else unchanged."""
    if isinstance(batch, Tensor):
        return fn(batch)
    if isinstance(batch, (tuple, list)):
        return type(batch)([fn(batch[0]), *batch[1:]])
    images, _ = split_batch(batch)
    return {**batch, IMAGE_KEY: fn(images)}


def collate_batch(items: list[Any]) -> Batch:
    """Dataset items -> one batch of the same structure, the images stacked as float32 (B, C, H, W).

    Raises ValueError naming the accepted item forms when the images are not (C, H, W) tensors.
    """
    batch = default_collate(items)
    try:
        images, _ = split_batch(batch)
    except ValueError:
        images = None
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"dataset items must be {ITEM_FORMS}; got {_describe_item(items[0])}")
    return map_images(batch, lambda x: x.float())


def describe_extras(extras: Mapping[str, Any]) -> str:
    """ "element [1] (a (16,) torch.int64 tensor), entry 'label' (...)": what a batch carries besides its images,
    for messages."""
    names = (f"element {name}" if name.startswith("[") else f"entry {name!r}" for name in extras)
    return ", ".join(f"{name} ({_describe(value)})" for name, value in zip(names, extras.values()))


def _describe_item(item: Any) -> str:
    """What a dataset item is, for the message that refuses it."""
    if isinstance(item, (tuple, list)) and item:
        return f"a {type(item).__name__} whose first element is {_describe(item[0])}"
    if isinstance(item, Mapping):
        return f"a dict with the keys {sorted(map(str, item))}"
    return _describe(item)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {tuple(value.shape)} {value.dtype} tensor"
    return f"a {type(value).__name__}"


def check_images(images: Any, shape: tuple[int, ...]) -> None:
    """ValueError unless ``images`` is a (B, C, H, W) tensor with (C, H, W) = ``shape`` (a model's channels and
    image size) and B >= 1."""
    if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape) or not len(images):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(
            f"images must have shape (B, {shape[0]}, {shape[1]}, {shape[2]}) (the model's channels and image size) "
            f"with B >= 1, got {got}"
        )


UNIT_RANGE_SLACK = 1e-3
"""How far outside [0, 1] training images may stray before :func:`check_training_images` warns: resampling and
float rounding move pixels by much less, images in [0, 255] or standard-normal tensors by far more."""


def check_training_images(images: Any, shape: tuple[int, ...], *, warn: bool) -> bool:
    """:func:`check_images`, and with ``warn`` a UserWarning when the images fall outside [0, 1], naming the
    range seen (images in [0, 255] or standard-normal tensors would otherwise train without a word: the model maps
    [0, 1] to [−1, 1] itself). Returns whether it warned, so that a model warns once."""
    check_images(images, shape)
    if not warn:
        return False
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low >= -UNIT_RANGE_SLACK and high <= 1 + UNIT_RANGE_SLACK:
        return False
    warnings.warn(
        f"training images should lie in [0, 1] (the model maps them to [−1, 1] itself), but this batch spans "
        f"[{low:.4g}, {high:.4g}]: divide 8-bit images by 255, map data in [−1, 1] by (x + 1) / 2, or set "
        "auto_normalize=False for data already in the model's range (warned once)",
        UserWarning,
        stacklevel=3,
    )
    return True
