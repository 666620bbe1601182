"""Reading the tutorial's data sets from the files torchvision downloads, and holding them as one uint8 tensor.

* MNIST and Fashion-MNIST: LeCun's IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ...): a
  4-byte magic number (two zero bytes, the element type 0x08 = unsigned byte, the number of dimensions), one
  big-endian uint32 per dimension, then the elements in C order. A ``.gz`` copy is read when the plain file is
  not there (the files as the mirrors serve them).
* CIFAR-10: the "python version" batches (``data_batch_1`` ... ``data_batch_5``, ``test_batch``), each a pickled
  dict with ``data`` (N, 3072) uint8, rows R then G then B planes of 32x32, and ``labels``. torchvision reads
  them with ``pickle.load``, which runs whatever code a file names; here they go through :class:`_ArrayUnpickler`,
  which builds dicts, lists, strings, numbers and numpy arrays of plain dtypes and refuses everything else (the
  rule checkpoints follow: no pickled code ever runs, DESIGN.md).

Errors name the file and say what is wrong with it (ValueError), never a bare struct or pickle traceback.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .._utils import normalize_image_size

__all__ = ["TensorImages", "read_cifar_batches", "read_idx"]

IDX_UBYTE = 0x08  # the IDX element type of unsigned bytes, the only one MNIST's image and label files use


def _idx_bytes(path: Path) -> bytes:
    """The bytes of an IDX file, or of its ``.gz`` copy when only that is there."""
    if path.exists():
        return path.read_bytes()
    zipped = path.with_name(path.name + ".gz")
    try:
        return gzip.decompress(zipped.read_bytes())
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read {os.fspath(zipped)!r}: {type(err).__name__}: {err}") from None


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """An IDX file of unsigned bytes (LeCun et al. 1998's MNIST format) as a uint8 tensor of its shape: images
    (N, H, W), labels (N,). Reads ``path``, else ``path.gz``. ValueError naming the file when it is malformed."""
    path = Path(path)
    data = _idx_bytes(path)
    name = os.fspath(path)
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(f"{name!r} is not an IDX file (it must start with two zero bytes)")
    if data[2] != IDX_UBYTE:
        raise ValueError(f"{name!r} holds IDX element type {data[2]:#04x}; MNIST files hold unsigned bytes (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise ValueError(f"{name!r} is truncated: its header names {ndim} dimension(s)")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) - header != math.prod(shape):
        raise ValueError(
            f"{name!r} is truncated or damaged: its header says {'x'.join(map(str, shape))} = {math.prod(shape)} "
            f"bytes of data, the file holds {len(data) - header}"
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).view(*shape)


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler for data files: numpy arrays and Python's plain containers only; any other class is refused
    (find_class is the one place a pickle can name code to run)."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a data file has no reason to hold")


def _load_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            entry = _ArrayUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{os.fspath(path)!r} is not a CIFAR batch file that can be read safely: {err}") from None
    if not isinstance(entry, dict) or "data" not in entry or not ({"labels", "fine_labels"} & entry.keys()):
        raise ValueError(f"{os.fspath(path)!r} is not a CIFAR batch: it must be a dict with 'data' and 'labels'")
    return entry


def read_cifar_batches(folder: str | os.PathLike[str], names: Sequence[str]) -> tuple[Tensor, Tensor]:
    """The images (N, 3, 32, 32) uint8 and labels (N,) int64 of CIFAR "python version" batch files ``names``
    in ``folder``, in file order (torchvision's order). ValueError naming a malformed file."""
    images, labels = [], []
    for name in names:
        path = Path(folder) / name
        entry = _load_batch(path)
        data = np.asarray(entry["data"], dtype=np.uint8)
        found = list(entry["labels"] if "labels" in entry else entry["fine_labels"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(found):
            raise ValueError(
                f"{os.fspath(path)!r}: 'data' must be (N, 3072) with one label per row, got {data.shape} and "
                f"{len(found)} labels"
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # (N, 3072) -> (N, C, H, W)
        labels.append(torch.tensor(found, dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


class TensorImages(Dataset):
    """Images held as one uint8 tensor (N, C, H, W), with labels: items are (image, label) pairs, image a float32
    (C, H, W) in [0, 1] and label an int, or images alone with ``labelled=False``.

    ``image_size`` other than the stored size resizes each image (bilinear, antialiased when it shrinks; both
    sides at once, so a square stays square).

    Attributes:
        classes: the class names; ``classes[label]`` names a label.
        targets: the labels (N,) int64.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        classes: Sequence[str],
        *,
        labelled: bool = True,
        image_size: int | Sequence[int] | None = None,
        name: str = "images",
    ) -> None:
        super().__init__()
        if images.ndim != 4 or images.dtype != torch.uint8 or labels.shape != images.shape[:1]:
            raise ValueError(f"{name}: expected uint8 images (N, C, H, W) and labels (N,), got "
                             f"{tuple(images.shape)} {images.dtype} and {tuple(labels.shape)}")  # fmt: skip
        bad = labels[(labels < 0) | (labels >= len(classes))]
        if len(bad):
            raise ValueError(f"{name}: label {int(bad[0])} is outside [0, {len(classes)}) ({len(classes)} classes)")
        self.images, self.targets = images, labels.long()
        self.classes = list(classes)
        self.labelled = labelled
        self.name = name
        self.channels = images.shape[1]
        self.image_size = normalize_image_size(tuple(images.shape[2:]) if image_size is None else image_size)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Any:
        image = self.images[index].float().div_(255.0)
        if tuple(image.shape[1:]) != self.image_size:
            image = F.interpolate(image[None], size=self.image_size, mode="bilinear", antialias=True)[0].clamp_(0, 1)
        return (image, int(self.targets[index])) if self.labelled else image
