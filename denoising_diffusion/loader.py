"""How the Trainer reads its data: checking the dataset, and an endless, sharded, resumable stream of batches.

Every process builds the same :class:`~denoising_diffusion.data.InfiniteBatchSampler` (same seed) and takes its
own contiguous part of each global batch, so the processes see disjoint shards whose union is exactly the batch a
single process would see. The stream starts at ``start_index`` (samples consumed so far), which is how a resumed
run continues the data order. Items travel with the list of files the dataset skipped while reading them
(on_bad_image='skip'), so the Trainer can name each bad file once, whichever worker process met it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from denoising_diffusion.data import (BuiltinShapes, ImageFolderDataset, InfiniteBatchSampler, OnBadImage,
                                      SkippedImage, collate_images)

Batches = Iterator[tuple[Tensor, list[SkippedImage]]]


def as_training_dataset(source: Any, channels: int, image_size: tuple[int, int], on_bad_image: OnBadImage) -> Any:
    """A folder path -> ImageFolderDataset; a Dataset or sequence -> itself, after checking its first item.

    Raises ValueError (before anything is written) for an empty dataset, a wrong type, or images whose shape is
    not (channels, H, W) of the model.
    """
    expected = (int(channels), *image_size)
    if isinstance(source, (str, os.PathLike)):
        return ImageFolderDataset(source, image_size, channels=expected[0], on_bad_image=on_bad_image)
    if not (isinstance(source, Dataset) or (hasattr(source, "__getitem__") and hasattr(source, "__len__"))):
        raise ValueError("folder_or_dataset must be a folder path or a torch Dataset (or a sequence of images), "
                         f"got {type(source).__name__}")
    if len(source) == 0:
        raise ValueError("the dataset is empty")
    first = collate_images([source[0]])[0]
    if tuple(first.shape) != expected:
        raise ValueError(f"the dataset's images have shape {tuple(first.shape)} (C, H, W) but the diffusion "
                         f"model expects {expected} (its channels and image_size)")
    return source


def default_num_workers(dataset: Any) -> int:
    """0 for datasets already in memory (worker processes would only add start-up and copying), else
    min(4, CPU count - 1)."""
    if isinstance(dataset, (BuiltinShapes, TensorDataset, list, tuple)):
        return 0
    return min(4, max(0, (os.cpu_count() or 1) - 1))


class TrainingItems(Dataset):
    """A dataset's items as (image (C, H, W), files skipped on the way): how the Trainer reads any dataset.

    For an ImageFolderDataset the skipped files come from :meth:`ImageFolderDataset.load` and are not logged by
    the dataset; every other dataset's items are taken as they are (see collate_images) with none skipped.
    """

    def __init__(self, dataset: Any) -> None:
        super().__init__()
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, list[SkippedImage]]:
        if isinstance(self.dataset, ImageFolderDataset):
            return self.dataset.load(index)
        return self.dataset[index], []


def collate_training_items(items: list[tuple[Any, list[SkippedImage]]]) -> tuple[Tensor, list[SkippedImage]]:
    """Collate TrainingItems -> (batch (B, C, H, W), every file skipped while reading it)."""
    return collate_images([image for image, _ in items]), [s for _, skipped in items for s in skipped]


def training_batches(dataset: Any, global_batch_size: int, *, seed: int, start_index: int, shard: int,
                     num_shards: int, num_workers: int, pin_memory: bool) -> Batches:
    """Endless (micro-batch (global_batch_size / num_shards, C, H, W) on the CPU, skipped files) for one process.

    DataLoader workers get their base seed from a generator seeded with ``seed``, so the global RNG is untouched.
    """
    sampler = InfiniteBatchSampler(len(dataset), global_batch_size, seed=seed, start_index=start_index,
                                   shard=shard, num_shards=num_shards)
    loader = DataLoader(TrainingItems(dataset), batch_sampler=sampler, num_workers=num_workers,
                        collate_fn=collate_training_items, pin_memory=pin_memory,
                        generator=torch.Generator().manual_seed(seed))
    return iter(loader)
