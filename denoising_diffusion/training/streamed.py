"""How the Trainer reads a stream (data/streams.py: WebDataset shards, a streamed Hugging Face dataset).

The main process of each training process walks its own shards in the stream's order (data/streams.py:
``stream_records``) and hands each batch of raw, still encoded records to DataLoader workers, which decode them
(records.py). Every record travels with the stream position after it, so the batch a training step consumes
carries the position to resume from: exact, however far the workers have read ahead.

A record whose image cannot be decoded stops training (``on_bad_image='error'``), or with ``'skip'`` is left out of
its batch (one item smaller) and named once, as an unreadable file of a folder is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.batch import Batch, collate_batch
from ..data.image_files import SkippedImage
from ..data.records import RecordDecoder
from ..data.streams import RecordStream, StreamPosition, stream_records

__all__ = ["StreamBatches", "stream_batches"]

StreamKey = tuple[dict[str, Any], StreamPosition]


class _RecordBatches(Sampler[list[StreamKey]]):
    """Batches of ``size`` (record, position after it) from one process's stream."""

    def __init__(self, stream: RecordStream, size: int, *, seed: int, rank: int, world: int, start: StreamPosition):
        self.stream, self.size, self.seed, self.rank, self.world, self.start = stream, size, seed, rank, world, start

    def __iter__(self) -> Iterator[list[StreamKey]]:
        records = stream_records(self.stream, seed=self.seed, rank=self.rank, world=self.world, start=self.start)
        while True:
            yield [next(records) for _ in range(self.size)]


class _DecodedRecords(Dataset):
    """A record (the DataLoader's "index") -> (item or None, skipped images, position); only the decoder is sent
    to worker processes, never the stream."""

    def __init__(self, decoder: RecordDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def __getitem__(self, key: StreamKey) -> tuple[Any, list[SkippedImage], StreamPosition]:
        record, position = key
        item, skipped = self.decoder(record["record"], record["where"])
        return item, skipped, position


def _collate(items: list[tuple[Any, list[SkippedImage], StreamPosition]]) -> tuple[Batch, list[SkippedImage], Any]:
    """(the decoded items collated, the skipped images, the position after the batch)."""
    kept = [item for item, _, _ in items if item is not None]
    skipped = [s for _, found, _ in items for s in found]
    if not kept:
        raise ValueError(f"every record of a batch of {len(items)} was unreadable: {skipped[0].path}: "
                         f"{skipped[0].reason}")  # fmt: skip
    return collate_batch(kept), skipped, items[-1][2]


StreamBatches = Iterator[tuple[Batch, list[SkippedImage], StreamPosition]]


def stream_batches(
    stream: RecordStream,
    batch_size: int,
    *,
    seed: int,
    rank: int,
    world: int,
    start: StreamPosition,
    num_workers: int,
    pin_memory: bool,
) -> StreamBatches:
    """Endless (micro-batch of ``batch_size`` items on the CPU, skipped images, position after it) of process
    ``rank`` of ``world``, from ``start``."""
    loader = DataLoader(
        _DecodedRecords(stream.decoder),
        batch_sampler=_RecordBatches(stream, batch_size, seed=seed, rank=rank, world=world, start=start),
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
    return iter(loader)
