"""Hugging Face datasets (``--dataset hf:NAME_OR_PATH``; the ``datasets`` package, extra ``streams``).

``hf_dataset(name_or_path, split="train", ...)`` loads, in this order:

* a folder written by ``Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``: then ``split`` picks one) with
  ``datasets.load_from_disk``;
* anything else with ``datasets.load_dataset(name_or_path, split=split, streaming=...)``: a Hub id
  (``"user/name"``), or a local folder of parquet, arrow or image files.

``streaming`` (default: None) chooses how it is read. None streams Hub ids and reads local data as a map-style
dataset; True and False force either. Map-style data (:class:`HFImages`) is shuffled, split across processes
and resumed exactly as any Dataset (data/datasets.py's InfiniteBatchSampler); a stream (:class:`HFStream`) is read
shard by shard (the dataset's files; a saved folder read as a stream is cut into ``min(rows, 64)`` contiguous
shards) as streams.py says, without downloading the data set first.

Columns. The image column is ``image_column``, else the first column whose feature is a ``datasets.Image``; the
label column (``labelled=True``) is ``label_column``, else the first ``ClassLabel`` column, whose names become the
classes. An integer label column needs ``num_classes`` for a stream; a map-style dataset counts its labels. Only
these columns are read (``select_columns``), images undecoded (``Image(decode=False)``) until a worker decodes them
as files are decoded (records.py). A column that is not there is a ValueError listing the columns that are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .records import RecordDecoder
from .streams import DEFAULT_WINDOW, RecordStream

__all__ = ["HFImages", "HFStream", "hf_dataset", "load_hf"]

SAVED_STREAM_SHARDS = 64  # a saved (map-style) folder read as a stream is cut into this many shards at most


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "reading Hugging Face datasets needs the datasets package: pip install 'denoising-diffusion[streams]'"
        ) from None
    return datasets


def _is_saved(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json"))


def load_hf(
    name_or_path: str, split: str = "train", streaming: bool | None = None, **load_kwargs: Any
) -> tuple[Any, int | None]:
    """(the ``datasets`` Dataset or IterableDataset of ``split`` (module docstring), its number of rows when
    known). ValueError, with datasets' own reason, when it cannot be loaded (a missing split, a Hub id offline
    and not cached, a wrong path)."""
    ds = _datasets()
    path = Path(name_or_path).expanduser()
    local = path.exists()
    try:
        if _is_saved(path):
            found = ds.load_from_disk(os.fspath(path))
            if isinstance(found, ds.DatasetDict):
                if split not in found:
                    raise ValueError(f"it has no split {split!r}; its splits: {', '.join(found)}")
                found = found[split]
            shards = min(len(found), SAVED_STREAM_SHARDS) or 1
            return (found.to_iterable_dataset(shards) if streaming else found), len(found)
        source = os.fspath(path) if local else name_or_path
        data = ds.load_dataset(source, split=split, streaming=(not local) if streaming is None else streaming,
                               **load_kwargs)  # fmt: skip
        splits = getattr(data.info, "splits", None) or {}
        return data, (splits[split].num_examples if split in splits else None)
    except Exception as err:  # noqa: BLE001 - datasets raises many types (network, hub, builders, splits)
        raise ValueError(f"cannot load the Hugging Face dataset {name_or_path!r} (split {split!r}): "
                         f"{type(err).__name__}: {err}") from None  # fmt: skip


def _column(features: Mapping[str, Any], wanted: str | None, kind: str, what: str, name: str) -> str | None:
    """``wanted`` (ValueError listing the columns when absent), else the first column whose feature is ``kind``."""
    if wanted is not None:
        if wanted not in features:
            raise ValueError(f"the dataset {name!r} has no {what} column {wanted!r}; its columns: "
                             f"{', '.join(features)}")  # fmt: skip
        return wanted
    return next((col for col, feature in features.items() if type(feature).__name__ == kind), None)


def _columns(data: Any, image_column: str | None, label_column: str | None, labelled: bool, name: str) -> Any:
    """(image column, label column or None, the ClassLabel names or None) of ``data``."""
    features = data.features
    if features is None:  # some streams only know their columns from a record
        features = {key: None for key in next(iter(data))}
    image = _column(features, image_column, "Image", "image", name)
    if image is None:
        raise ValueError(f"the dataset {name!r} has no column of type Image; its columns: {', '.join(features)}; "
                         "name the image column with --image-column / image_column=")  # fmt: skip
    label = _column(features, label_column, "ClassLabel", "label", name) if labelled else None
    if labelled and label is None:
        raise ValueError(f"the dataset {name!r} has no ClassLabel column; its columns: {', '.join(features)}; "
                         "name the label column with --label-column / label_column=")  # fmt: skip
    names = getattr(features.get(label), "names", None) if label is not None else None
    return image, label, names


def _prepared(data: Any, image: str, label: str | None) -> Any:
    """Only the image and label columns, the image left undecoded."""
    data = data.select_columns([image] + ([label] if label is not None else []))
    if data.features is not None and type(data.features[image]).__name__ == "Image":
        data = data.cast_column(image, _datasets().Image(decode=False))
    return data


class HFImages(Dataset):
    """A map-style Hugging Face dataset as items: images, or (image, label) pairs (``classes`` names labels)."""

    def __init__(self, data: Any, decoder: RecordDecoder, classes: list[str] | None, name: str) -> None:
        super().__init__()
        self.data, self.decoder, self.classes, self.name = data, decoder, classes, name

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Any:
        return self.decoder(self.data[int(index)], f"row {int(index)} of {self.name!r}")[0]

    def first_record(self) -> Mapping[str, Any]:
        if not len(self.data):
            raise ValueError(f"the dataset {self.name!r} is empty")
        return self.data[0]


class HFStream(RecordStream):
    """A streamed Hugging Face dataset (an IterableDataset), read shard by shard (streams.py)."""

    def __init__(self, data: Any, name: str, num_items: int | None = None) -> None:
        self.data, self.name, self.num_items = data, name, num_items
        self.shards = list(range(data.num_shards))

    def read_shard(self, shard: Any) -> Iterator[Mapping[str, Any]]:
        return iter(self.data.shard(num_shards=len(self.shards), index=int(shard), contiguous=True))

    def describe(self, record: Mapping[str, Any], shard: Any) -> str:
        return f"a row of shard {shard} of {self.name!r}"

    def __repr__(self) -> str:
        return f"HFStream({self.name!r}: {len(self.shards)} shard(s))"


def hf_dataset(
    name_or_path: str,
    image_size: int | Sequence[int],
    channels: int = 3,
    *,
    split: str = "train",
    streaming: bool | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    labelled: bool = False,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    window: int = DEFAULT_WINDOW,
    on_bad_image: str = "error",
    **load_kwargs: Any,
) -> HFImages | HFStream:
    """A Hugging Face dataset as training items (module docstring): :class:`HFImages` (map-style) or
    :class:`HFStream`. ``classes``/``num_classes`` name or count the classes when the label column is not a
    ClassLabel; ``window`` and ``on_bad_image`` as for ShardStream (streams only: a map-style dataset stops at
    an undecodable image). ``load_kwargs`` go to ``datasets.load_dataset`` (``name=``, ``revision=``, ...)."""
    data, rows = load_hf(name_or_path, split, streaming, **load_kwargs)
    image, label, names = _columns(data, image_column, label_column, labelled, name_or_path)
    data = _prepared(data, image, label)
    classes = names if classes is None and num_classes is None else classes
    if isinstance(data, _datasets().IterableDataset):
        stream = HFStream(data, name_or_path, rows)
        stream._set_decoding(
            image_size, channels, image_key=image, label_key=label, labelled=labelled, classes=classes,
            num_classes=num_classes, window=window, on_bad_image=on_bad_image,
        )  # fmt: skip
        return stream
    if labelled and classes is None and num_classes is None:
        num_classes = int(max(data.with_format("numpy")[label])) + 1 if len(data) else 1
    named = list(classes) if classes is not None else [str(i) for i in range(num_classes or 0)] if labelled else None
    decoder = RecordDecoder(image, label, image_size, channels, labelled=labelled,  # type: ignore[arg-type]
                            num_classes=None if named is None else len(named))  # fmt: skip
    return HFImages(data, decoder, named, name_or_path)
