"""Checking a whole image folder before training: every file's header, sizes for defaults, and every unreadable file.

Training used to meet unreadable files one at a time: with ``on_bad_image='error'`` it stopped at the first (after
writing a header-only loss.csv), and a second bad file was found only on the next try. :func:`scan_images` opens
every file's header first (image_files.check_image_file: no full decode), so that one error can name them all before
anything is written, and the command line can size its defaults to the images (:attr:`ImageScan.median_short_side`).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .datasets import ImageFiles, OnBadImage
from .image_files import SkippedImage, UnreadableImageError, check_image_file

MAX_NAMED = 10  # unreadable files named in one message; the rest are counted
PROGRESS_FROM = 2000  # folders with at least this many files show a progress bar while they are checked


@dataclass(frozen=True)
class ImageScan:
    """What checking a list of image files found: the (width, height) of each readable file, and the unreadable ones
    in order."""

    sizes: dict[str, tuple[int, int]]
    unreadable: tuple[SkippedImage, ...]

    @property
    def median_short_side(self) -> int | None:
        """The median over readable files of min(width, height) in pixels (None when none is readable)."""
        sides = [min(size) for size in self.sizes.values()]
        return int(statistics.median_low(sides)) if sides else None

    def covers(self, paths: Sequence[str | os.PathLike[str]]) -> bool:
        """Whether every one of ``paths`` was checked (readable or not)."""
        seen = self.sizes.keys() | {bad.path for bad in self.unreadable}
        return all(os.fspath(path) in seen for path in paths)


def scan_images(paths: Sequence[str | os.PathLike[str]]) -> ImageScan:
    """Check every file's header (:func:`~.image_files.check_image_file`); a bar on stderr for large folders."""
    sizes: dict[str, tuple[int, int]] = {}
    unreadable: list[SkippedImage] = []
    bar = tqdm(paths, desc="checking image files", unit="file", disable=len(paths) < PROGRESS_FROM, leave=False)
    for path in bar:
        try:
            sizes[os.fspath(path)] = check_image_file(path)
        except UnreadableImageError as err:
            unreadable.append(SkippedImage(os.fspath(path), err.reason))
    return ImageScan(sizes, tuple(unreadable))


def describe_unreadable(bad: Sequence[SkippedImage], total: int, folder: str | os.PathLike[str]) -> str:
    """The message '2 of 7 image files under 'x' cannot be read: a.png (reason); sub/b.jpg (reason)', paths relative to
    ``folder``, the first MAX_NAMED named, the rest counted."""

    def relative(path: str) -> str:
        return os.path.relpath(path, folder) if Path(path).is_relative_to(folder) else path

    named = "; ".join(f"{relative(b.path)} ({b.reason})" for b in bad[:MAX_NAMED])
    more = f"; and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
    return f"{len(bad)} of {total} image files under {os.fspath(folder)!r} cannot be read: {named}{more}"


def check_folder_dataset(dataset: ImageFiles) -> tuple[SkippedImage, ...]:
    """Check every file of an image-folder dataset before training: its ``header_scan`` when that covers its files
    (the command line's, made while sizing its defaults), else a new scan (kept in ``header_scan``).

    With ``on_bad_image='error'`` raises UnreadableImageError naming every unreadable file; with ``'skip'`` returns
    them (the dataset then never reads them: each item that would is replaced as usual). Raises it in both modes
    when no file can be read.
    """
    scan = dataset.header_scan
    if not isinstance(scan, ImageScan) or not scan.covers(dataset.paths):
        scan = dataset.header_scan = scan_images(dataset.paths)
    unreadable = tuple(bad for bad in scan.unreadable if bad.path in {os.fspath(p) for p in dataset.paths})
    if len(unreadable) == len(dataset.paths):
        first = unreadable[0]
        raise UnreadableImageError(
            f"none of the {len(unreadable)} image files under {os.fspath(dataset.folder)!r} can be read (the "
            f"first: {first.path}: {first.reason})"
        )
    if unreadable and dataset.on_bad_image is OnBadImage.ERROR:
        hint = "fix or remove them, or skip them: on_bad_image='skip' (--on-bad-image skip on the command line)"
        raise UnreadableImageError(f"{describe_unreadable(unreadable, len(dataset.paths), dataset.folder)}; {hint}")
    dataset.mark_unreadable(unreadable)
    return unreadable
