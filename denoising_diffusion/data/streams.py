"""Data sets read as streams: shards read front to back, split across processes, shuffled in windows, and
resumable at any record.

A :class:`RecordStream` is a list of *shards* (WebDataset tar files, shards.py; the files of a Hugging Face
dataset, hf.py), each an iterator of records, and a :class:`~.records.RecordDecoder` that turns a record into an
item. The Trainer reads it through :func:`stream_records`, in this order:

1. **Epoch e** permutes the shards with a generator seeded by (seed, e), the same on every process.
2. **Process r of n** takes every n-th shard of that permutation, starting at the r-th: the processes' shards are
   disjoint and together are all of them, so no record is read twice in an epoch. With fewer shards than
   processes every process reads every shard and keeps every n-th record, starting at the r-th (the same
   guarantee, n times the reading: write at least as many shards as processes).
3. The process reads its shards one after another, ``window`` records at a time, and yields each window in an
   order permuted with a generator seeded by (seed, e, r, window index): records further apart than a window
   are never swapped, which is what a shuffle buffer of that size does too, but here the order is a function of
   the position alone.

An epoch is per process: with shards of unequal length, or a shard count not divisible by the process count, one
process may begin epoch e + 1 while another is still in epoch e.

**Position and resume.** After each record the reader is at a :class:`StreamPosition`: (epoch, shard index in the
process's list, records of that shard read before the window began, windows finished, records of this window
already yielded). Reading from a position re-reads that window from its start and yields the rest, so the records
that follow are exactly those an uninterrupted reader yields next; a resume costs re-reading at most the records
of one shard before the window and the window itself. A resume with another number of processes cannot continue
each process's shards; it restarts the earliest epoch a process was in (training/loader.py), so it repeats at most
one epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch

from .image_files import SkippedImage
from .records import RecordDecoder

__all__ = [
    "DEFAULT_WINDOW",
    "RecordStream",
    "StreamPosition",
    "epoch_shards",
    "first_items",
    "mixed_seed",
    "stream_records",
]

DEFAULT_WINDOW = 1000  # records shuffled together (raw, still encoded: about 1000 x the size of one record)


@dataclass(frozen=True)
class StreamPosition:
    """Where one process is in its stream (module docstring): the next record is yielded from here."""

    epoch: int = 0
    shard: int = 0  # index into this process's shards of the epoch
    offset: int = 0  # records of that shard (this process's view of it) read before the current window
    window: int = 0  # windows finished in this epoch
    taken: int = 0  # records of the current window already yielded

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> StreamPosition:
        return cls(**{name: int(state[name]) for name in ("epoch", "shard", "offset", "window", "taken")})


class RecordStream:
    """A data set read as a stream of records (module docstring). Subclasses say what the shards are and how one
    is read; everything else (split, order, resume, decoding) is shared.

    Attributes:
        shards: one descriptor per shard (a URL or path, an index), in a fixed order.
        decoder: record -> item (records.py).
        window: records shuffled together.
        classes: the class names when the stream is labelled and they are known, else None.
        num_items: the number of records when known (needed for epochs), else None.
    """

    shards: Sequence[Any]
    decoder: RecordDecoder
    window: int = DEFAULT_WINDOW
    classes: list[str] | None = None
    num_items: int | None = None

    def _set_decoding(
        self,
        image_size: int | Sequence[int],
        channels: int,
        *,
        image_key: str | None,
        label_key: str | None,
        labelled: bool,
        classes: Sequence[str] | None,
        num_classes: int | None,
        window: int,
        on_bad_image: str,
    ) -> None:
        """The decoder, the window and the classes, checked (ValueError naming the argument)."""
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1 (records shuffled together), got {window!r}")
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if classes is not None and num_classes is not None and len(classes) != num_classes:
            raise ValueError(f"classes names {len(classes)} classes but num_classes is {num_classes}")
        if classes is None and num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
            classes = [str(i) for i in range(num_classes)]
        if labelled and classes is None:
            raise ValueError(
                "a labelled stream needs its classes: pass classes= (names) or num_classes= (--num-classes N on "
                "the command line); a stream's class count cannot be known without reading all of it"
            )
        self.classes = None if classes is None or not labelled else [str(c) for c in classes]
        self.window = window
        self.decoder = RecordDecoder(
            image_key, label_key, image_size, channels, labelled=labelled,  # type: ignore[arg-type]
            num_classes=None if self.classes is None else len(self.classes), skip_bad=on_bad_image == "skip",
        )  # fmt: skip

    def read_shard(self, shard: Any) -> Iterator[Mapping[str, Any]]:
        """The records of one shard, front to back."""
        raise NotImplementedError

    def describe(self, record: Mapping[str, Any], shard: Any) -> str:
        """How messages name a record of ``shard``."""
        return f"a record of shard {shard!r}"

    def first_record(self) -> Mapping[str, Any]:
        """The first record of the first shard (ValueError when it is empty)."""
        for record in self.read_shard(self.shards[0]):
            return record
        raise ValueError(f"the first shard of {self!r}, {self.shards[0]!r}, holds no record")

    @property
    def channels(self) -> int:
        return self.decoder.channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.decoder.image_size

    def decode(self, record: Mapping[str, Any]) -> tuple[Any, list[SkippedImage]]:
        """(item, skipped images) of a record that :func:`stream_records` yielded."""
        return self.decoder(record["record"], record["where"])


def mixed_seed(*values: int) -> int:
    """A 63-bit seed mixed from ``values`` (numpy's SeedSequence: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_shards(num_shards: int, seed: int, epoch: int, rank: int, world: int) -> tuple[list[int], bool]:
    """(indices of the shards process ``rank`` of ``world`` reads in ``epoch``, in order; whether it keeps only
    every world-th record of each, because there are fewer shards than processes)."""
    order = torch.randperm(num_shards, generator=torch.Generator().manual_seed(mixed_seed(seed, epoch))).tolist()
    if num_shards >= world:
        return order[rank::world], False
    return order, True


class _Cursor:
    """Reads a process's shards of one epoch one after another, from (shard index, offset)."""

    def __init__(self, stream: RecordStream, shards: list[int], strided: bool, rank: int, world: int) -> None:
        self.stream, self.shards, self.strided, self.rank, self.world = stream, shards, strided, rank, world
        self.index, self.offset = 0, 0
        self._records: Iterator[dict[str, Any]] | None = None

    def seek(self, index: int, offset: int) -> None:
        self.index, self.offset, self._records = index, offset, None

    def _open(self) -> Iterator[dict[str, Any]]:
        shard = self.stream.shards[self.shards[self.index]]
        records: Iterator[Mapping[str, Any]] = iter(self.stream.read_shard(shard))
        if self.strided:
            records = islice(records, self.rank, None, self.world)
        wrapped = ({"record": r, "where": self.stream.describe(r, shard)} for r in records)
        return islice(wrapped, self.offset, None)

    def take(self, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` next records (fewer only at the end of the epoch)."""
        taken: list[dict[str, Any]] = []
        while len(taken) < count and self.index < len(self.shards):
            if self._records is None:
                self._records = self._open()
            got = list(islice(self._records, count - len(taken)))
            taken += got
            self.offset += len(got)
            if len(taken) < count:  # this shard is done
                self.seek(self.index + 1, 0)
        return taken


def stream_records(
    stream: RecordStream, *, seed: int, rank: int = 0, world: int = 1, start: StreamPosition | None = None
) -> Iterator[tuple[dict[str, Any], StreamPosition]]:
    """Endless (record, position after it) of process ``rank`` of ``world``, from ``start`` (module docstring).
    The record is ``{"record": <the shard's record>, "where": <how messages name it>}`` (RecordStream.decode).

    Raises ValueError when a process's shards of an epoch hold no record at all."""
    if not stream.shards:
        raise ValueError("the stream has no shards")
    pos = start or StreamPosition()
    epoch, window, taken = pos.epoch, pos.window, pos.taken
    cursor_at = (pos.shard, pos.offset)
    while True:
        shards, strided = epoch_shards(len(stream.shards), seed, epoch, rank, world)
        cursor = _Cursor(stream, shards, strided, rank, world)
        cursor.seek(*cursor_at)
        fresh = cursor_at == (0, 0) and window == 0
        while True:
            begin = (cursor.index, cursor.offset)
            records = cursor.take(stream.window)
            if not records:
                break
            fresh = False
            order = torch.randperm(len(records), generator=torch.Generator().manual_seed(
                mixed_seed(seed, epoch, rank, window))).tolist()  # fmt: skip
            for j in range(taken, len(records)):
                if j + 1 < len(records):
                    after = StreamPosition(epoch, begin[0], begin[1], window, j + 1)
                else:
                    after = StreamPosition(epoch, cursor.index, cursor.offset, window + 1, 0)
                yield records[order[j]], after
            window, taken = window + 1, 0
        if fresh:
            raise ValueError(
                f"process {rank} of {world} found no records in its {len(shards)} shard(s) of epoch {epoch} "
                f"(e.g. {stream.shards[shards[0]]!r}): are the shards empty?"
            )
        epoch, window, taken, cursor_at = epoch + 1, 0, 0, (0, 0)


def first_items(stream: RecordStream, count: int, *, seed: int = 0) -> list[Any]:
    """The first ``count`` items (skipped images left out) one process reading the whole stream from the start
    of epoch 0 sees: the same list on every process. Used for the data statistics a model fits and for a
    validation set read from a stream. Fewer only when the stream holds fewer records."""
    items: list[Any] = []
    for record, position in stream_records(stream, seed=seed):
        if len(items) >= count or position.epoch > 0:  # (the position after the first record of epoch 1)
            break
        item, _ = stream.decode(record)
        if item is not None:
            items.append(item)
    return items
