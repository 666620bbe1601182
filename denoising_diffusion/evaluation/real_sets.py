"""What REAL names in ``eval`` and ``sweep``: a folder of images, or a built-in data set drawn afresh.

:func:`resolve_real` reads the command line's REAL: an existing path is a folder, as it always was (so a folder
literally named ``shapes`` wins over the data set of that name); otherwise a name in ``data.BUILTIN_DATASETS`` is a
:class:`BuiltinReference`; otherwise a ValueError names both possibilities.

A built-in reference is ``num_images`` fresh draws of the data set at the model's image size and channels, from
:data:`REFERENCE_SEED` = 1. Not seed 0: the default job (``denoising-diffusion train`` without a folder) trains on
``BuiltinShapes(2048, seed=0)`` (cli/train.py ``BUILTIN_IMAGES``, and BuiltinShapes' default seed), and a reference
drawn from the training seed would hold the training images themselves, flattering a model that memorizes them
(docs/evaluation.md, "Real set"). :data:`REFERENCE_IMAGES` = 10 000 by default: the usual test-split size of FID
papers, above Inception's 2048 features (the real covariance has full rank), and 10 subsets' worth for KID.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from ..data.datasets import BUILTIN_DATASETS, builtin_image_batches

__all__ = ["REFERENCE_IMAGES", "REFERENCE_SEED", "BuiltinReference", "resolve_real"]

REFERENCE_SEED = 1  # not 0, the seed of the default job's training images
REFERENCE_IMAGES = 10_000


@dataclass(frozen=True)
class BuiltinReference:
    """``num_images`` images of the built-in data set ``name`` drawn from ``seed``, at whatever size and channels
    the model has (the caller says, per :meth:`batches`)."""

    name: str
    num_images: int = REFERENCE_IMAGES
    seed: int = REFERENCE_SEED

    def __post_init__(self) -> None:
        if self.name not in BUILTIN_DATASETS:
            raise ValueError(f"unknown built-in data set {self.name!r}; known data sets: {', '.join(BUILTIN_DATASETS)}")
        if not isinstance(self.num_images, int) or self.num_images < 1:
            raise ValueError(f"num_images must be a positive int, got {self.num_images!r}")

    def key(self) -> dict[str, object]:
        """What identifies the images, for the real-feature cache (with the size, channels and extractor)."""
        return {"dataset": self.name, "seed": self.seed, "num_images": self.num_images}

    def batches(self, image_size: int, channels: int, batch_size: int = 256) -> Iterator[Tensor]:
        """The images, float32 (≤ batch_size, channels, image_size, image_size) in [0, 1], in order."""
        return builtin_image_batches(
            self.name, image_size, channels, num_images=self.num_images, seed=self.seed, batch_size=batch_size
        )

    def __str__(self) -> str:
        return f"built-in data set {self.name!r} (seed {self.seed})"


def resolve_real(text: str | os.PathLike[str], num_images: int | None = None) -> Path | BuiltinReference:
    """REAL as given on the command line -> a folder, or a built-in data set of ``num_images`` (default
    :data:`REFERENCE_IMAGES`) images drawn from :data:`REFERENCE_SEED`.

    An existing path is always a folder (a folder named like a data set wins). ValueError when ``text`` is neither
    an existing path nor a known data set (naming both), or when ``num_images`` is given for a folder (a folder's
    images are all used).
    """
    path = Path(text)
    if path.exists():
        if num_images is not None:
            raise ValueError(
                f"--real-num (num_images={num_images}) counts the images of a named data set; REAL "
                f"{os.fspath(path)!r} is a folder, whose images are all used"
            )
        return path
    name = os.fspath(text)
    if name in BUILTIN_DATASETS:
        return BuiltinReference(name, REFERENCE_IMAGES if num_images is None else num_images)
    raise ValueError(
        f"REAL {name!r} is neither an existing folder (no such file or directory) nor a built-in data set; "
        f"known data sets: {', '.join(BUILTIN_DATASETS)}"
    )
