"""``train --dataset SOURCE``, ``--validation SOURCE`` and ``--epochs N``: what a data option string means.

SOURCE is one of

* a named data set: ``mnist``, ``fashion-mnist``, ``cifar10`` (data/named.py: downloaded once to ``--data-root``,
  with labels; its own preset, presets.py);
* ``hf:NAME_OR_PATH``: a Hugging Face dataset, from the Hub or a local folder (data/hf.py);
* ``shards:PATTERN``: WebDataset tar shards (data/shards.py).

``--validation`` takes a split of ``--dataset`` (``test`` for the named sets; any split of an hf: dataset), a
folder (labelled by its sub-folders with ``--class-cond``), or another SOURCE.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.datasets import ImageFolderDataset, LabelledImageFolder
from ..data.hf import hf_dataset
from ..data.named import NAMED_DATASETS, get_dataset, named_dataset
from ..data.shards import ShardStream
from ..data.streams import RecordStream, first_items
from ..training.validation import Validation
from .presets import TrainPreset, with_epochs

PREFIXES = ("hf:", "shards:")


@dataclass(frozen=True)
class DataSpec:
    """A parsed SOURCE: kind 'named', 'hf' or 'shards', and its name, path or pattern."""

    kind: str
    target: str


def parse_data_spec(text: str) -> DataSpec:
    """SOURCE -> DataSpec; ValueError listing the forms (and the named data sets) otherwise."""
    source = text.strip()
    for prefix in PREFIXES:
        if source.startswith(prefix):
            if not source[len(prefix) :].strip():
                raise ValueError(f"--dataset {text!r}: {prefix} needs a name, path or pattern after it")
            return DataSpec(prefix[:-1], source[len(prefix) :].strip())
    try:
        return DataSpec("named", named_dataset(source).name)
    except ValueError:
        raise ValueError(
            f"unknown data set {text!r}; the named data sets are: {', '.join(NAMED_DATASETS)}; or hf:NAME_OR_PATH "
            "(a Hugging Face dataset), shards:PATTERN (WebDataset tar shards), or a FOLDER of images"
        ) from None


def open_data(
    spec: DataSpec, args: argparse.Namespace, size: int, channels: int, *, labelled: bool, split: str | None = None
) -> Any:
    """The data of ``spec`` at ``size`` px and ``channels``, labelled or not; ``split``: another split than the
    training one (named sets: 'train' or 'test'; hf: any)."""
    if spec.kind == "named":
        known = named_dataset(spec.target)
        if split not in (None, "train", "test"):
            raise ValueError(f"{spec.target} has the splits train and test, not {split!r}")
        return get_dataset(spec.target, args.data_root, train=split in (None, "train"), download=not args.no_download,
                           labelled=labelled, image_size=None if size == known.image_size else size)  # fmt: skip
    common: dict[str, Any] = dict(labelled=labelled, num_classes=args.num_classes, on_bad_image=args.on_bad_image,
                                  window=args.shuffle_window)  # fmt: skip
    if spec.kind == "hf":
        return hf_dataset(spec.target, size, channels, split=split or args.split, streaming=args.streaming,
                          image_column=args.image_column, label_column=args.label_column, **common)  # fmt: skip
    return ShardStream(spec.target, size, channels, image_key=args.image_column, label_key=args.label_column,
                       **common)  # fmt: skip


def first_image_side(args: argparse.Namespace) -> int | None:
    """The short side of the first image of an hf: or shards: --dataset (read from its header), which sizes the
    run as a folder's median does; None for a named data set (its preset knows)."""
    spec = parse_data_spec(args.dataset)
    if spec.kind == "named":
        return None
    data = open_data(spec, args, 8, 3, labelled=False)
    return min(data.decoder.native_size(data.first_record(), f"the first record of {args.dataset!r}"))


def source_training_data(args: argparse.Namespace, opts: TrainPreset) -> Any:
    """The training data of --dataset, labelled with --class-cond; says what it is."""
    spec = parse_data_spec(args.dataset)
    data = open_data(spec, args, opts.image_size, opts.channels, labelled=args.class_cond)
    if isinstance(data, RecordStream):
        print(f"training on {data!r} at {opts.image_size} px")
    else:
        print(f"training on the {len(data)} images of {args.dataset} at {opts.image_size} px")
    return data


def validation_data(args: argparse.Namespace, opts: TrainPreset) -> Validation | None:
    """--validation as the Trainer takes it (None without it)."""
    source = args.validation
    if source is None:
        return None
    size, channels, labelled = opts.image_size, opts.channels, args.class_cond
    if Path(source).is_dir() and not source.startswith(PREFIXES):
        kind = LabelledImageFolder if labelled else ImageFolderDataset
        data: Any = kind(source, size, channels=channels, on_bad_image=args.on_bad_image)
    elif args.dataset is not None and ":" not in source and source not in NAMED_DATASETS:
        data = open_data(parse_data_spec(args.dataset), args, size, channels, labelled=labelled, split=source)
    else:
        data = open_data(parse_data_spec(source), args, size, channels, labelled=labelled)
    return Validation(data, num_items=args.validation_num)


def data_length(data: Any) -> int | None:
    """The number of items of the training data, None for a stream that does not know it."""
    return data.num_items if isinstance(data, RecordStream) else len(data)


def check_data_options(args: argparse.Namespace) -> None:
    """ValueError, before anything is read, for data options that contradict each other."""
    if args.dataset is not None and args.folder is not None:
        raise ValueError(f"give FOLDER ({args.folder}) or --dataset ({args.dataset}), not both")
    if args.epochs is not None and args.steps is not None:
        raise ValueError("--epochs and --steps both set the length of the run: give one of them")
    if args.dataset is not None:
        parse_data_spec(args.dataset)


def indexable(data: Any, count: int) -> Any:
    """``data``, or for a stream its first ``count`` items (what measuring a step's cost reads)."""
    return first_items(data, count) if isinstance(data, RecordStream) else data


def epochs_applied(args: argparse.Namespace, opts: TrainPreset, data: Any) -> TrainPreset:
    """``opts`` with --epochs turned into steps."""
    trained = with_epochs(opts, args.epochs, data_length(data) if args.epochs else None, args.ema_decay is not None)
    if args.epochs is not None:
        print(f"{args.epochs} epoch(s) of {data_length(data)} items at batch {opts.batch_size} x {opts.grad_accum}: "
              f"{trained.steps} steps")  # fmt: skip
    return trained
