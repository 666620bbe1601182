"""One record of a streamed data set (a WebDataset sample, a row of a Hugging Face dataset) into a training item.

A record is a dict. Its image is an entry holding encoded bytes (a WebDataset ``jpg``/``png``/... member), a
Hugging Face ``Image`` value read without decoding (``{"bytes": ..., "path": ...}``), or an already decoded Pillow
image; it is decoded exactly as an image file is (image_files.py: EXIF, channels, resize and centre crop, the
decompression-bomb limit). Its label is an int, or the text of one (WebDataset's ``cls`` member: ``b"3"``).

:class:`RecordDecoder` is small and picklable: DataLoader workers get it, never the stream it came from.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from torch import Tensor

from .._utils import normalize_image_size
from .image_files import SkippedImage, UnreadableImageError, check_channels, decode_image, pil_image_to_tensor

__all__ = ["IMAGE_SUFFIXES", "LABEL_SUFFIXES", "RecordDecoder", "RecordError", "find_key"]

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "image", "img")  # tried in this order
LABEL_SUFFIXES = ("cls", "label", "labels", "class", "target")


class RecordError(ValueError):
    """A record lacks the image or label entry asked for, or holds something else there; the message names the
    record, the entry and the entries it has."""


def listed(keys: Sequence[str]) -> str:
    """A record's entries for a message (WebDataset's bookkeeping entries, __key__ and __url__, left out)."""
    return ", ".join(repr(str(key)) for key in keys if not str(key).startswith("__")) or "nothing"


def find_key(keys: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, where: str) -> str | None:
    """``wanted`` when it is one of ``keys`` (RecordError naming the keys otherwise); without ``wanted``, the first
    of ``candidates`` among ``keys`` (None when there is none)."""
    if wanted is not None:
        if wanted not in keys:
            raise RecordError(f"{where} has no {what} {wanted!r}; it has: {listed(keys)}")
        return wanted
    return next((key for key in candidates if key in keys), None)


def _image_bytes(value: Any) -> tuple[Any, str | None]:
    """(something Image.open reads, a path to name) for the image entry forms (module docstring)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(value)), None
    if isinstance(value, Mapping) and (value.get("bytes") is not None or value.get("path")):
        if value.get("bytes") is not None:
            return io.BytesIO(value["bytes"]), value.get("path")
        return value["path"], value["path"]
    raise TypeError(type(value).__name__)


def _label(value: Any) -> int:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        value = value.strip()
    if isinstance(value, bool):
        raise ValueError(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(value) from None


@dataclass(frozen=True)
class RecordDecoder:
    """Record -> item: ``image`` (C, H, W) float32 in [0, 1], or ``(image, label)`` when ``labelled``.

    Args:
        image_key: the record's image entry; None: the first of IMAGE_SUFFIXES it has.
        label_key: its label entry; None: the first of LABEL_SUFFIXES (only when labelled).
        image_size, channels: what every image becomes.
        labelled: items carry labels.
        num_classes: labels must lie in [0, num_classes) (None: unchecked).
        skip_bad: an undecodable image is skipped (the item is None, the record named) instead of an error.
    """

    image_key: str | None
    label_key: str | None
    image_size: tuple[int, int]
    channels: int
    labelled: bool = False
    num_classes: int | None = None
    skip_bad: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", normalize_image_size(self.image_size))
        check_channels(self.channels)

    def __call__(self, record: Mapping[str, Any], where: str) -> tuple[Any, list[SkippedImage]]:
        """(item, []) or, with ``skip_bad`` and an undecodable image, (None, [the record]). ``where`` names the
        record in messages (e.g. "sample 'x' of shard 'a.tar'"). RecordError for a missing or malformed entry;
        UnreadableImageError for an undecodable image without ``skip_bad``."""
        keys = list(record)
        image_key = find_key(keys, self.image_key, IMAGE_SUFFIXES, "image entry", where)
        if image_key is None:
            raise RecordError(f"{where} has no image entry (looked for {', '.join(IMAGE_SUFFIXES)}); it has: "
                              f"{listed(keys)}; name it with --image-column / image_column=")  # fmt: skip
        try:
            image = self._image(record[image_key], f"{image_key!r} of {where}")
        except UnreadableImageError as err:
            if not self.skip_bad:
                raise
            return None, [SkippedImage(f"{image_key!r} of {where}", err.reason)]
        if not self.labelled:
            return image, []
        return (image, self._label(record, keys, where)), []

    def native_size(self, record: Mapping[str, Any], where: str) -> tuple[int, int]:
        """(width, height) of a record's image as stored, read from its header (sizing a run before training)."""
        key = find_key(list(record), self.image_key, IMAGE_SUFFIXES, "image entry", where)
        value = record[key] if key is not None else None
        if isinstance(value, Image.Image):
            return value.size
        try:
            source, _ = _image_bytes(value)
            with Image.open(source) as image:
                return image.size
        except (TypeError, OSError) as err:
            raise RecordError(f"{where}: cannot read the size of its image entry {key!r}: {err}") from None

    def _image(self, value: Any, name: str) -> Tensor:
        if isinstance(value, Image.Image):
            return pil_image_to_tensor(value, self.image_size, self.channels)
        try:
            source, path = _image_bytes(value)
        except TypeError as err:
            raise RecordError(f"{name} holds {err}, not an image (encoded bytes, a datasets Image, or a Pillow "
                              "image)") from None  # fmt: skip
        return decode_image(source, self.image_size, self.channels, repr(path) if path else name)

    def _label(self, record: Mapping[str, Any], keys: list[str], where: str) -> int:
        key = find_key(keys, self.label_key, LABEL_SUFFIXES, "label entry", where)
        if key is None:
            raise RecordError(f"{where} has no label entry (looked for {', '.join(LABEL_SUFFIXES)}); it has: "
                              f"{listed(keys)}; name it with --label-column / label_column=")  # fmt: skip
        try:
            label = _label(record[key])
        except ValueError:
            raise RecordError(f"{where}: label {key!r} = {record[key]!r} is not an integer") from None
        if label < 0 or (self.num_classes is not None and label >= self.num_classes):
            raise RecordError(f"{where}: label {key!r} = {label} is outside [0, {self.num_classes})")
        return label
