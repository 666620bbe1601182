"""WebDataset tar shards as a stream (``--dataset shards:PATTERN``; the ``webdataset`` package, extra ``streams``).

A shard is a tar file whose members are grouped into samples by their name up to the first dot after the last
slash: ``000123.jpg`` and ``000123.cls`` are the image and label of sample ``000123`` (WebDataset's convention,
Breuel et al.). The image is the first member with an image suffix (jpg, jpeg, png, webp, bmp, tif, tiff; or the
one ``image_key`` names), the label the ``cls`` member holding an integer as text (or ``label_key``).

PATTERN is brace-expanded as WebDataset does (``data/train-{000000..000099}.tar``; several patterns joined by
``::``), then every local entry with ``*``, ``?`` or ``[`` is globbed (``data/*.tar``). URLs (``https://...``,
``pipe:aws s3 cp ... -``) are read with WebDataset's ``gopen``. A pattern that matches nothing, or a local shard
that does not exist, is a ValueError naming it before anything is read.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .streams import DEFAULT_WINDOW, RecordStream

__all__ = ["ShardStream", "expand_shards"]

_GLOB = ("*", "?", "[")


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError:
        raise ImportError(
            "reading WebDataset shards needs the webdataset package: pip install 'denoising-diffusion[streams]'"
        ) from None
    return webdataset


def _is_url(entry: str) -> bool:
    return "://" in entry or entry.startswith("pipe:")


def expand_shards(pattern: str) -> list[str]:
    """The shards of ``pattern`` (module docstring), in pattern order, each glob's matches sorted. ValueError when
    it matches nothing or names local files that do not exist."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"a shard pattern must be a non-empty string, got {pattern!r}")
    shards: list[str] = []
    for entry in _webdataset().shardlists.expand_urls(pattern.strip()):
        if not _is_url(entry) and any(c in entry for c in _GLOB):
            matched = sorted(glob.glob(os.path.expanduser(entry)))
            if not matched:
                raise ValueError(f"shard pattern {entry!r} matches no file")
            shards += matched
        else:
            shards.append(entry if _is_url(entry) else os.path.expanduser(entry))
    missing = [s for s in shards if not _is_url(s) and not os.path.isfile(s)]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ValueError(
            f"shard pattern {pattern!r} names {len(missing)} file(s) that do not exist: "
            f"{', '.join(map(repr, missing[:3]))}{more}"
        )
    return shards


class ShardStream(RecordStream):
    """WebDataset tar shards read as a stream of (image, label) items or images (streams.py: split across
    processes, shuffled in windows, resumable at any record).

    Args:
        pattern: the shards (module docstring) or a list of shard paths and URLs.
        image_size: int or (H, W): every image is resized and centre-cropped to it.
        channels: 1, 3 or 4.
        image_key: the member suffix of the image (default: the first image suffix a sample has).
        label_key: the member suffix of the label (default: ``cls``).
        labelled: items are (image, label); needs ``classes`` or ``num_classes``.
        classes, num_classes: the class names, or their number (names '0', '1', ...).
        window: records shuffled together (streams.py).
        num_items: the number of samples, when known (epochs need it).
        on_bad_image: 'error' stops at an undecodable image naming its shard and sample; 'skip' leaves it out of
            its batch (which is then one smaller) and names it once.
    """

    def __init__(
        self,
        pattern: str | Sequence[str],
        image_size: int | Sequence[int],
        channels: int = 3,
        *,
        image_key: str | None = None,
        label_key: str | None = None,
        labelled: bool = False,
        classes: Sequence[str] | None = None,
        num_classes: int | None = None,
        window: int = DEFAULT_WINDOW,
        num_items: int | None = None,
        on_bad_image: str = "error",
    ) -> None:
        self.pattern = pattern if isinstance(pattern, str) else "::".join(pattern)
        self.shards = expand_shards(self.pattern)
        self.num_items = num_items
        self._set_decoding(
            image_size, channels, image_key=image_key, label_key=label_key, labelled=labelled, classes=classes,
            num_classes=num_classes, window=window, on_bad_image=on_bad_image,
        )  # fmt: skip

    def read_shard(self, shard: Any) -> Iterator[Mapping[str, Any]]:
        """The samples of one tar file, in the order its members are stored."""
        yield from _webdataset().tarfile_samples([{"url": shard}])

    def describe(self, record: Mapping[str, Any], shard: Any) -> str:
        return f"sample {record.get('__key__')!r} of shard {shard!r}"

    def __repr__(self) -> str:
        return f"ShardStream({self.pattern!r}: {len(self.shards)} shard(s))"
