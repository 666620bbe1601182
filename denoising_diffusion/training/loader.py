"""How the Trainer reads its data: checking the dataset, and an endless, sharded, resumable stream of batches.

Every process builds the same :class:`~denoising_diffusion.data.datasets.InfiniteBatchSampler` (same seed) and takes its
own contiguous part of each global batch, so the processes see disjoint shards whose union is exactly the batch a
single process would see. The stream starts at ``start_index`` (samples consumed so far), which is how a resumed
run continues the data order.

Each item is read under RNGs seeded by its *position* in that order (rng.item_seed): random augmentation inside a
dataset is then the same whether the item is read in the main process or in a DataLoader worker, and the same in
a resumed run as in the uninterrupted one. Items travel with the list of files the dataset skipped while reading
them (on_bad_image='skip'), so the Trainer can name each bad file once, whichever worker process met it.

A stream (data/streams.py: WebDataset shards, a streamed Hugging Face dataset) has no length and no index: each
process reads its own shards (streamed.py), and its position in them is saved per process (``stream_positions``,
gathered into the checkpoint) instead of being derived from ``samples_seen``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from ..data.batch import ITEM_FORMS, Batch, collate_batch, split_batch
from ..data.datasets import (
    BuiltinShapes,
    ImageFiles,
    ImageFolderDataset,
    InfiniteBatchSampler,
    OnBadImage,
    SkippedImage,
)
from ..data.named_files import TensorImages
from ..data.streams import RecordStream, StreamPosition, first_items
from .distributed import gather_values
from .rng import item_seed, seeded_rngs
from .streamed import stream_batches

logger = logging.getLogger(__name__)

Batches = Iterator[tuple[Batch, list[SkippedImage]]]


def as_training_dataset(source: Any, channels: int, image_size: tuple[int, int], on_bad_image: OnBadImage) -> Any:
    """A folder path -> ImageFolderDataset; a Dataset or sequence -> itself, after checking its first item.

    Raises ValueError (before anything is written) for an empty dataset, a wrong type, items of another form than
    data/batch.py accepts, or images whose shape is not (channels, H, W) of the model.
    """
    expected = (int(channels), *image_size)
    if isinstance(source, RecordStream):
        return check_stream(source, expected)
    if isinstance(source, (str, os.PathLike)):
        return ImageFolderDataset(source, image_size, channels=expected[0], on_bad_image=on_bad_image)
    if isinstance(source, ImageFiles):  # its form is known: no file is read before the folder check (data/scan.py)
        found = (source.channels, *source.image_size)
        if found != expected:
            raise ValueError(f"the image folder dataset reads images as {found} (C, H, W) but the model expects "
                             f"{expected} (its channels and image_size)")  # fmt: skip
        return source
    if not (isinstance(source, Dataset) or (hasattr(source, "__getitem__") and hasattr(source, "__len__"))):
        raise ValueError(
            "folder_or_dataset must be a folder path or a torch Dataset (or a sequence of images), "
            f"got {type(source).__name__}"
        )
    if len(source) == 0:
        raise ValueError("the dataset is empty")
    try:
        first = split_batch(collate_batch([source[0]]))[0][0]  # ValueErrors name the accepted forms themselves
    except (TypeError, RuntimeError) as err:  # default_collate's own complaints
        raise ValueError(f"the dataset's items must be {ITEM_FORMS}: {err}") from None
    if tuple(first.shape) != expected:
        raise ValueError(
            f"the dataset's images have shape {tuple(first.shape)} (C, H, W) but the model expects "
            f"{expected} (its channels and image_size)"
        )
    return source


def check_stream(stream: RecordStream, expected: tuple[int, ...]) -> RecordStream:
    """``stream``, after checking that it reads images of shape ``expected`` and that its first record decodes
    (a missing column or image entry is an error before anything is written)."""
    found = (stream.channels, *stream.image_size)
    if found != expected:
        raise ValueError(f"the stream reads images as {found} (C, H, W) but the model expects {expected} (its "
                         "channels and image_size)")  # fmt: skip
    if not first_items(stream, 1):
        raise ValueError(f"{stream!r}: its first records hold no readable image")
    return stream


def data_size(dataset: Any) -> str:
    """How many items ``dataset`` holds, for the log: its length, or what is known of a stream."""
    if isinstance(dataset, RecordStream):
        known = f"{dataset.num_items} items" if dataset.num_items is not None else "a stream"
        return f"{known} in {len(dataset.shards)} shard(s)"
    return f"{len(dataset)} images"


def check_dataset_classes(dataset: Any, num_classes: int | None) -> None:
    """Raise ValueError when a labelled dataset (one with ``classes``) has another number of classes than a
    class-conditional model's ``num_classes``."""
    classes = getattr(dataset, "classes", None)
    if classes is not None and num_classes is not None and len(classes) != num_classes:
        raise ValueError(
            f"the dataset has {len(classes)} classes ({', '.join(map(str, list(classes)[:5]))}"
            f"{', ...' if len(classes) > 5 else ''}) but the model was built with num_classes="
            f"{num_classes}"
        )


def default_num_workers(dataset: Any) -> int:
    """0 for datasets already in memory (worker processes would only add start-up and copying; the named data sets
    are), else min(4, CPU count - 1): a stream's workers decode its records."""
    if isinstance(dataset, (BuiltinShapes, TensorDataset, TensorImages, list, tuple)):
        return 0
    return min(4, max(0, (os.cpu_count() or 1) - 1))


class PositionedBatches(Sampler[list[tuple[int, int]]]):
    """An InfiniteBatchSampler's batches as (position in the data order, dataset index) pairs.

    Position ``start_index + b·batch_size + shard·part + j`` is the j-th index of this shard's part of global batch
    b: the same number for the same item in every process layout and after any resume.
    """

    def __init__(self, sampler: InfiniteBatchSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        s = self.sampler
        part = s.batch_size // s.num_shards
        for b, indices in enumerate(s):
            first = s.start_index + b * s.batch_size + s.shard * part
            yield [(first + j, index) for j, index in enumerate(indices)]


class TrainingItems(Dataset):
    """A dataset's items as (item, files skipped on the way), each read under RNGs seeded by its position.

    Indexed by (position, dataset index) pairs (see :class:`PositionedBatches`). For an image folder
    (ImageFolderDataset, LabelledImageFolder: any :class:`~..data.datasets.ImageFiles`) the skipped files
    come from its :meth:`load` and are not logged by the dataset; every other dataset's items are taken as they are,
    with none skipped.
    """

    def __init__(self, dataset: Any, data_seed: int) -> None:
        super().__init__()
        self.dataset = dataset
        self.data_seed = data_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, list[SkippedImage]]:
        position, index = key
        with seeded_rngs(item_seed(self.data_seed, position)):
            if isinstance(self.dataset, ImageFiles):
                return self.dataset.load(index)
            return self.dataset[index], []


def fitting_images(dataset: Any, data_seed: int, max_images: int, chunk: int = 256) -> Tensor:
    """Up to ``max_images`` images (N, C, H, W) of ``dataset`` for a statistic of the data (trainable.FitsData):
    the first ones of a permutation seeded by ``data_seed`` (the same on every process), each read as the training
    stream reads it (:class:`TrainingItems`, under RNGs seeded by its place in that permutation); labels dropped.
    A stream gives its first ``max_images`` items in epoch 0's order, read by one process (streams.first_items)."""
    if isinstance(dataset, RecordStream):
        return split_batch(collate_batch(first_items(dataset, max_images, seed=data_seed)))[0]
    count = min(max_images, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(data_seed))[:count].tolist()
    items = TrainingItems(dataset, data_seed)
    parts = []
    for start in range(0, count, chunk):
        batch = collate_batch([items[(start + i, index)][0] for i, index in enumerate(order[start : start + chunk])])
        parts.append(split_batch(batch)[0])
    return torch.cat(parts)


def collate_training_items(items: list[tuple[Any, list[SkippedImage]]]) -> tuple[Batch, list[SkippedImage]]:
    """Collate TrainingItems -> (batch, every file skipped while reading it); see batch.collate_batch."""
    return collate_batch([item for item, _ in items]), [s for _, skipped in items for s in skipped]


class DataStream:
    """One process's endless stream of training batches: the data order's seed, the position in it
    (``samples_seen``: items consumed over all processes; for a RecordStream also this process's
    ``position`` in its shards) and the iterator, rebuilt at the position whenever it was dropped (after a
    resume, or at the end of ``train()`` to stop DataLoader workers).

    Args:
        dataset: the training dataset.
        global_batch_size: items per micro-batch over all processes (this process reads its shard of it).
        data_seed: the order's seed, the same on every process.
        shard, num_shards: this process's index and the number of processes.
        num_workers, pin_memory: DataLoader options.
    """

    def __init__(
        self,
        dataset: Any,
        global_batch_size: int,
        *,
        data_seed: int,
        shard: int,
        num_shards: int,
        num_workers: int,
        pin_memory: bool,
    ) -> None:
        self.dataset = dataset
        self.global_batch_size = global_batch_size
        self.data_seed = data_seed
        self.samples_seen = 0
        self.shard, self.num_shards, self.num_workers, self.pin_memory = shard, num_shards, num_workers, pin_memory
        self.position = StreamPosition()  # a RecordStream's: where this process is in its shards
        self._batches: Iterator[Any] | None = None

    @property
    def is_stream(self) -> bool:
        return isinstance(self.dataset, RecordStream)

    def _open(self) -> Iterator[Any]:
        seed, workers, pin = self.data_seed, self.num_workers, self.pin_memory
        if self.is_stream:
            part = self.global_batch_size // self.num_shards
            return stream_batches(self.dataset, part, seed=seed, rank=self.shard, world=self.num_shards,
                                  start=self.position, num_workers=workers, pin_memory=pin)  # fmt: skip
        return training_batches(self.dataset, self.global_batch_size, seed=seed, start_index=self.samples_seen,
                                shard=self.shard, num_shards=self.num_shards, num_workers=workers,
                                pin_memory=pin)  # fmt: skip

    def next(self) -> tuple[Batch, list[SkippedImage]]:
        """This process's next micro-batch (on the CPU) and the files skipped while reading it."""
        if self._batches is None:
            self._batches = self._open()
        if self.is_stream:
            batch, skipped, self.position = next(self._batches)
        else:
            batch, skipped = next(self._batches)
        self.samples_seen += self.global_batch_size
        return batch, skipped

    def reset(self) -> None:
        """Drop the iterator (stopping DataLoader workers); the next batch restarts it at ``samples_seen``."""
        self._batches = None

    def state_dict(self) -> dict[str, Any]:
        """The seed and position; for a stream also every process's position (a collective: call it on every
        process)."""
        state: dict[str, Any] = {"data_seed": self.data_seed, "samples_seen": self.samples_seen}
        if self.is_stream:
            state["stream_positions"] = _gather(self.position.as_dict(), self.num_shards)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data_seed, self.samples_seen = int(state["data_seed"]), int(state["samples_seen"])
        if self.is_stream:
            self.position = self._restored_position(state.get("stream_positions"))
        self.reset()

    def _restored_position(self, saved: Sequence[dict[str, int]] | None) -> StreamPosition:
        """This process's saved position; with another number of processes, the start of the earliest epoch one
        of them was in (at most one epoch repeated), with a warning."""
        if saved and len(saved) == self.num_shards:
            return StreamPosition.from_dict(saved[self.shard])
        epoch = min(int(p["epoch"]) for p in saved) if saved else 0
        if self.shard == 0 and self.samples_seen:
            why = f"written by {len(saved)} process(es), this run has {self.num_shards}" if saved else "no position"
            logger.warning("the checkpoint's stream position cannot be continued (%s): the stream restarts at "
                           "the beginning of epoch %d", why, epoch)  # fmt: skip
        return StreamPosition(epoch=epoch)


def _gather(value: Any, num_processes: int) -> list[Any]:
    """Every process's ``value``, in process order (distributed.gather_values, the RNG states' collective)."""
    if num_processes == 1:
        return [value]
    from accelerate import PartialState

    return gather_values(PartialState(), value)


def training_batches(
    dataset: Any,
    global_batch_size: int,
    *,
    seed: int,
    start_index: int,
    shard: int,
    num_shards: int,
    num_workers: int,
    pin_memory: bool,
) -> Batches:
    """Endless (micro-batch of global_batch_size / num_shards items on the CPU, skipped files) for one process.

    ``seed`` orders the data and seeds each item's reading; the global RNGs are untouched.
    """
    sampler = InfiniteBatchSampler(
        len(dataset), global_batch_size, seed=seed, start_index=start_index, shard=shard, num_shards=num_shards
    )
    loader = DataLoader(
        TrainingItems(dataset, seed),
        batch_sampler=PositionedBatches(sampler),
        num_workers=num_workers,
        collate_fn=collate_training_items,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
    return iter(loader)
