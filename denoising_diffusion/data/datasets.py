"""Datasets: image folders (unlabelled, and labelled by sub-folder), the built-in datasets by name (shapes.py draws
the shapes), and a resumable infinite batch sampler.

Every dataset here returns float32 tensors of shape (C, H, W) with values in [0, 1] (DESIGN.md, Data), or
(image, label) pairs when labelled; GaussianDiffusion maps images to [-1, 1] itself. Decoding one file (modes, bit
depths, EXIF, bad files, huge files) is image_files.py's job; what a batch of items may be (images, (image, label)
pairs, dicts) is batch.py's.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from .._utils import normalize_image_size
from ..choices import Choice
from .image_files import SkippedImage, UnreadableImageError, check_channels, load_image
from .shapes import BuiltinShapes, shape_batches

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "BuiltinShapes",
    "ImageFiles",
    "ImageFolderDataset",
    "InfiniteBatchSampler",
    "LabelledImageFolder",
    "OnBadImage",
    "SkippedImage",
    "UnreadableImageError",
    "builtin_image_batches",
    "get_builtin_dataset",
    "list_class_folders",
    "list_image_files",
    "random_hflip",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")
BUILTIN_DATASETS: tuple[str, ...] = ("shapes",)


class OnBadImage(Choice):
    """What ImageFolderDataset does with a file it cannot decode."""

    __option__ = "on_bad_image"

    ERROR = "error"  # stop with an UnreadableImageError naming the file
    SKIP = "skip"  # warn once naming the file, then serve the next readable image instead


def random_hflip(images: Tensor) -> Tensor:
    """Flip each image of a (B, C, H, W) batch left-right with probability 1/2 (global torch RNG)."""
    flip = torch.rand(images.shape[0]) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)


# ----------------------------------------------------------------------------------------------------------------------
# Image folders, unlabelled and labelled.


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise ValueError(f"image folder {os.fspath(root)!r} does not exist")
    if not root.is_dir():
        raise ValueError(f"image folder {os.fspath(root)!r} is not a directory")


def _image_files(root: Path, wanted: set[str]) -> list[Path]:
    """The files under ``root`` (recursively) with an extension in ``wanted``, sorted; possibly none."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower().lstrip(".") in wanted and p.is_file())


def _extensions(exts: Sequence[str]) -> set[str]:
    return {e.lower().lstrip(".") for e in exts}


def list_image_files(folder: str | os.PathLike[str], exts: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All files under ``folder`` (recursively) whose extension is in ``exts`` (case-insensitive), sorted.

    Raises ValueError naming the folder and the extensions when the folder is missing or holds no such file.
    """
    root = Path(folder)
    wanted = _extensions(exts)
    _check_folder(root)
    files = _image_files(root, wanted)
    if not files:
        listed = ", ".join(sorted(wanted))
        raise ValueError(f"no images found in {os.fspath(root)!r} (searched recursively for extensions: {listed})")
    return files


def list_class_folders(
    folder: str | os.PathLike[str], exts: Sequence[str] = IMAGE_EXTENSIONS
) -> tuple[list[str], list[list[Path]]]:
    """A labelled folder's classes, the names of its immediate sub-folders sorted as strings (torchvision's
    ImageFolder order), and each class's image files (recursively under its sub-folder, sorted).

    Raises ValueError naming the folder when it is missing, has no sub-folders, holds image files directly (they
    belong to no class), or has a sub-folder without images (named).
    """
    root = Path(folder)
    wanted = _extensions(exts)
    _check_folder(root)
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    loose = sorted(p for p in root.iterdir() if p.suffix.lower().lstrip(".") in wanted and p.is_file())
    if not classes:
        found = f"; it holds {len(loose)} image file(s) directly, for which use ImageFolderDataset" if loose else ""
        raise ValueError(
            f"labelled image folder {os.fspath(root)!r} has no sub-folders: it must hold one sub-folder of images "
            f"per class ({os.fspath(root / '<class>')}/...){found}"
        )
    if loose:
        raise ValueError(
            f"labelled image folder {os.fspath(root)!r} holds {len(loose)} image file(s) directly (e.g. "
            f"{loose[0].name!r}) that belong to no class: move them into a class sub-folder, or remove them"
        )
    files = [_image_files(root / name, wanted) for name in classes]
    empty = [name for name, paths in zip(classes, files) if not paths]
    if empty:
        listed = ", ".join(sorted(wanted))
        others = f" (and {len(empty) - 1} other class folder(s))" if len(empty) > 1 else ""
        raise ValueError(
            f"class folder {empty[0]!r} of labelled image folder {os.fspath(root)!r}{others} holds no images "
            f"(searched recursively for extensions: {listed}); remove it or add images"
        )
    return classes, files


ItemT = TypeVar("ItemT")


class ImageFiles(Dataset, Generic[ItemT]):
    """What the image-folder datasets share: their options, reading each file (image_files.py) and skipping
    unreadable ones. Subclasses say which files there are, in *groups*, and what an item is.

    An unreadable file is replaced, with on_bad_image='skip', by the next readable file **of its group** in order
    (wrapping around within the group): the whole folder for ImageFolderDataset, one class for LabelledImageFolder,
    so a replacement never changes what an item means (a label never points at another class's image).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        image_size: int | Sequence[int],
        channels: int = 3,
        augment_horizontal_flip: bool = False,
        on_bad_image: str | OnBadImage = "error",
        exts: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        super().__init__()
        check_channels(channels)
        self.image_size = normalize_image_size(image_size)
        self.channels = channels
        self.augment_horizontal_flip = bool(augment_horizontal_flip)
        self.on_bad_image = OnBadImage(on_bad_image)
        self.folder = Path(folder)
        groups = self._list_groups(exts)
        self.paths: list[Path] = [path for _, paths in groups for path in paths]
        self._group_names = [name for name, _ in groups]  # "under '<folder>'", "of class 'cat' ('<folder>/cat')"
        self._group_starts = list(itertools.accumulate((len(paths) for _, paths in groups), initial=0))
        self._bad: set[int] = set()  # indices already found unreadable (per process)
        self.header_scan: Any = None  # data/scan.py's ImageScan of the files, once checked (or given by a caller)

    def _list_groups(self, exts: Sequence[str]) -> list[tuple[str, list[Path]]]:
        """The files, as (where they are, for messages; the group's files in order) per group."""
        raise NotImplementedError

    def _item(self, index: int, image: Tensor) -> ItemT:
        """Item ``index`` given its image (which may be a replacement from the same group)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.paths)

    def mark_unreadable(self, unreadable: Sequence[SkippedImage]) -> None:
        """Files an up-front check found unreadable (data/scan.py): they are never read, as if already skipped."""
        index = {os.fspath(path): i for i, path in enumerate(self.paths)}
        self._bad.update(index[bad.path] for bad in unreadable)

    def __getitem__(self, index: int) -> ItemT:
        """Item ``index``; a file skipped on the way is named in one warning."""
        item, skipped = self.load(index)
        for s in skipped:
            logger.warning("skipping unreadable image %s: %s", s.path, s.reason)
        return item

    def load(self, index: int) -> tuple[ItemT, list[SkippedImage]]:
        """Item ``index`` and the files newly found unreadable while looking for it (not logged here).

        Raises UnreadableImageError naming the file with on_bad_image='error', or when no file of the item's group
        can be read; IndexError outside [-len, len).
        """
        n = len(self.paths)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} images")
        index %= n
        image, skipped = self._load_first_readable(index)
        if self.augment_horizontal_flip:
            image = random_hflip(image[None])[0]
        return self._item(index, image), skipped

    def _load_first_readable(self, index: int) -> tuple[Tensor, list[SkippedImage]]:
        group = bisect.bisect_right(self._group_starts, index) - 1
        start, size = self._group_starts[group], self._group_starts[group + 1] - self._group_starts[group]
        skipped: list[SkippedImage] = []
        for offset in range(size):
            candidate = start + (index - start + offset) % size
            if candidate in self._bad:
                continue
            try:
                return load_image(self.paths[candidate], self.image_size, self.channels), skipped
            except UnreadableImageError as err:
                if self.on_bad_image is OnBadImage.ERROR:
                    hint = "to skip unreadable files: on_bad_image='skip', or --on-bad-image skip on the command line"
                    raise UnreadableImageError(f"{err} ({hint})") from err
                self._bad.add(candidate)
                skipped.append(SkippedImage(os.fspath(self.paths[candidate]), err.reason))
        raise UnreadableImageError(f"none of the {size} image files {self._group_names[group]} could be read")


class ImageFolderDataset(ImageFiles[Tensor]):
    """Every image under a folder (recursively, sorted by path), as (C, H, W) float tensors in [0, 1].

    Each file is EXIF-rotated, converted to ``channels`` (see :func:`convert_to_channels`), resized so that it
    covers ``image_size`` and centre-cropped to it.

    Unreadable files (zero-byte, truncated, corrupt, not an image, or over Pillow's decompression-bomb limit; see
    images.py): with ``on_bad_image='error'`` indexing raises UnreadableImageError naming the file. With ``'skip'``
    the item is replaced by the next readable file in sorted order (wrapping around), so the dataset length, and
    the order of everything else, does not change; indexing logs one warning naming the file the first time this
    process meets it, and :meth:`load` returns it instead (the Trainer uses that to log each file once over all
    DataLoader workers and processes, and to count them).

    Args:
        folder: the root folder.
        image_size: int or (H, W).
        channels: 1, 3 or 4.
        augment_horizontal_flip: flip each item left-right with probability 1/2 (global torch RNG).
        on_bad_image: 'error' or 'skip'.
        exts: file extensions to include, without dots.

    For class labels from sub-folders, see :class:`LabelledImageFolder`.
    """

    def _list_groups(self, exts: Sequence[str]) -> list[tuple[str, list[Path]]]:
        return [(f"under {os.fspath(self.folder)!r}", list_image_files(self.folder, exts))]

    def _item(self, index: int, image: Tensor) -> Tensor:
        return image


class LabelledImageFolder(ImageFiles[tuple[Tensor, int]]):
    """A folder with one sub-folder of images per class, as (image, label) items: torchvision's ImageFolder layout.

    ``folder/<class>/**/<image>``: the classes are the names of the immediate sub-folders, sorted as strings, and an
    image's label is the index of its class in that order (torchvision's convention, so labels agree with an
    ImageFolder of the same folder). Files nested deeper inside a class sub-folder belong to that class. Items
    are ``(image, label)``: image (C, H, W) float32 in [0, 1], read exactly as :class:`ImageFolderDataset` reads it;
    label a Python int (batched by the Trainer into a (B,) int64 tensor).

    The order is deterministic: class by class in sorted order, each class's files sorted by path. With
    ``on_bad_image='skip'`` an unreadable file is replaced by the next readable file **of the same class**
    (wrapping around within the class), so a label always describes its image; a class none of whose files can be
    read is an UnreadableImageError naming it. The same keyword options as ImageFolderDataset, the same
    :meth:`load` protocol (the Trainer's), the same flip and decoding.

    A single class is allowed (a class-conditional model with one class is legal, if not useful). Raises ValueError
    naming the folder when it has no sub-folders, holds image files directly (they belong to no class; one is
    named, and the count given), or has a sub-folder without images (named). Other files (notes, CSVs) are ignored.

    Attributes:
        classes: the class names, sorted; ``classes[label]`` is the name of a label.
        class_to_idx: {class name: label}.
        targets: the label of each file, in dataset order (``paths[i]`` has label ``targets[i]``).
    """

    classes: list[str]
    class_to_idx: dict[str, int]
    targets: list[int]

    def _list_groups(self, exts: Sequence[str]) -> list[tuple[str, list[Path]]]:
        self.classes, files = list_class_folders(self.folder, exts)
        self.class_to_idx = {name: label for label, name in enumerate(self.classes)}
        self.targets = [label for label, paths in enumerate(files) for _ in paths]
        return [
            (f"of class {name!r} ({os.fspath(self.folder / name)!r})", paths)
            for name, paths in zip(self.classes, files)
        ]

    def _item(self, index: int, image: Tensor) -> tuple[Tensor, int]:
        return image, self.targets[index]


# ----------------------------------------------------------------------------------------------------------------------
# The built-in dataset.


def get_builtin_dataset(
    name: str, image_size: int | Sequence[int], channels: int = 3, *, labelled: bool = False, **kwargs: int
) -> Dataset:
    """A built-in dataset by name (see BUILTIN_DATASETS): items are images, or (image, label) pairs with
    ``labelled=True`` (the dataset's ``classes`` name the labels). Extra keyword arguments go to its constructor
    (for "shapes": num_images, seed)."""
    if name == "shapes":
        return BuiltinShapes(image_size=image_size, channels=channels, labelled=labelled, **kwargs)
    raise ValueError(f"unknown built-in dataset {name!r}; available: {', '.join(BUILTIN_DATASETS)}")


def builtin_image_batches(
    name: str, image_size: int | Sequence[int], channels: int = 3, *, num_images: int, seed: int, batch_size: int = 256
) -> Iterator[Tensor]:
    """The images of ``get_builtin_dataset(name, image_size, channels, num_images=num_images, seed=seed)`` in order,
    as float32 batches (≤ batch_size, C, H, W) in [0, 1], without holding them all (evaluation's reference sets)."""
    if name == "shapes":
        return shape_batches(num_images, image_size, channels, seed=seed, batch_size=batch_size)
    raise ValueError(f"unknown built-in dataset {name!r}; available: {', '.join(BUILTIN_DATASETS)}")


# ----------------------------------------------------------------------------------------------------------------------
# Sampling order for training.


class InfiniteBatchSampler(Sampler[list[int]]):
    """Endless batches of dataset indices in a reproducible order, resumable from any batch.

    Epoch e visits the dataset in the order ``torch.randperm(n, generator=Generator().manual_seed(seed + e))``;
    batches run across epoch boundaries. Each global batch of ``batch_size`` indices is split into
    ``num_shards`` equal contiguous parts and this sampler yields part ``shard``, so several processes that build
    it with the same seed see disjoint parts of the same global batch. ``start_index`` skips that many indices of
    the sequence: a resumed run continues exactly where the saved run stopped.

    Args:
        dataset_size: n, the dataset length.
        batch_size: the global batch size (a multiple of num_shards).
        seed: the order's seed.
        start_index: the number of indices (samples, over all processes) already consumed.
        shard, num_shards: this process's index and the number of processes.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        *,
        seed: int,
        start_index: int = 0,
        shard: int = 0,
        num_shards: int = 1,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("cannot sample from an empty dataset")
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise ValueError(f"shard must be in [0, num_shards), got shard={shard}, num_shards={num_shards}")
        if batch_size < 1 or batch_size % num_shards:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of num_shards ({num_shards})")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.start_index = start_index
        self.shard = shard
        self.num_shards = num_shards

    def _indices(self) -> Iterator[int]:
        n = self.dataset_size
        epoch, offset = divmod(self.start_index, n)
        while True:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
            yield from order[offset:].tolist()
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[list[int]]:
        indices = self._indices()
        part = self.batch_size // self.num_shards
        while True:
            batch = [next(indices) for _ in range(self.batch_size)]
            yield batch[self.shard * part : (self.shard + 1) * part]
