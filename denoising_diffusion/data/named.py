"""The tutorial's data sets by name: MNIST, Fashion-MNIST and CIFAR-10, with their labels.

``get_dataset("mnist", root=None, train=True)`` downloads the files once with torchvision into a cache folder and
reads them from there (named_files.py: no pickled code runs). The folder is, in this order:

1. ``root`` (``--data-root`` on the command line);
2. ``$DENOISING_DIFFUSION_DATA``;
3. ``$XDG_CACHE_HOME/denoising_diffusion/datasets``, by default ``~/.cache/denoising_diffusion/datasets``.

Under it the files lie as torchvision lays them out, so a folder torchvision already downloaded into works as it
is: ``MNIST/raw/``, ``FashionMNIST/raw/`` (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, or their ``.gz`` copies) and ``cifar-10-batches-py/``
(``data_batch_1`` ... ``data_batch_5``, ``test_batch``). Offline, or with ``download=False``, a missing file is
one :class:`DatasetNotFoundError` that lists the exact paths to put a copy at and where to get it.

Sizes. MNIST and Fashion-MNIST are 1x28x28, CIFAR-10 3x32x32; they are served at their own size unless
``image_size`` asks for another (bilinear, antialiased). 28 is divisible by 4 but not by 8, so a 28-px Unet has
three levels (28, 14, 7 px; ``dim_mults=(1, 2, 4)``) rather than being padded or resized to 32 (a third more
pixels, all border, or blurred strokes): the command line's presets (cli/presets.py) say so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .named_files import TensorImages, read_cifar_batches, read_idx

__all__ = [
    "DATA_ROOT_ENV",
    "NAMED_DATASETS",
    "SPLITS",
    "DatasetNotFoundError",
    "NamedDataset",
    "default_data_root",
    "get_dataset",
    "named_dataset",
]

DATA_ROOT_ENV = "DENOISING_DIFFUSION_DATA"
SPLITS = ("train", "test")  # the splits of every named data set


class DatasetNotFoundError(FileNotFoundError):
    """A named data set's files are not in the data root and could not be downloaded; the message lists the exact
    paths to put a copy at."""


@dataclass(frozen=True)
class NamedDataset:
    """What the package knows about one named data set: where torchvision puts its files, their format, its size,
    classes, and whether a left-right flip keeps an image in its class."""

    name: str
    torchvision_class: str  # the torchvision.datasets class that downloads it
    folder: str  # under the data root, as torchvision lays it out
    files: Mapping[str, tuple[str, ...]]  # split ('train', 'test') -> file names in ``folder``
    reader: str  # 'idx' (images file, labels file) or 'cifar' (pickled batches)
    image_size: int
    channels: int
    classes: tuple[str, ...]
    flip: bool  # a mirrored item is still an item of its class (not so for digits)
    source: str  # where torchvision downloads from, for the error message

    def paths(self, root: Path, split: str) -> list[Path]:
        return [root / self.folder / name for name in self.files[split]]

    def missing(self, root: Path, split: str) -> list[Path]:
        """The files of ``split`` not under ``root`` (an IDX file counts as there when its .gz copy is)."""
        gz_ok = self.reader == "idx"
        return [
            p for p in self.paths(root, split) if not (p.exists() or (gz_ok and p.with_name(p.name + ".gz").exists()))
        ]


def _idx_files(prefix: str) -> tuple[str, str]:
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


_MNIST_FILES = {"train": _idx_files("train"), "test": _idx_files("t10k")}
NAMED_DATASETS: dict[str, NamedDataset] = {
    "mnist": NamedDataset(
        "mnist", "MNIST", "MNIST/raw", _MNIST_FILES, "idx", 28, 1, tuple("0123456789"), flip=False,
        source="https://ossci-datasets.s3.amazonaws.com/mnist/ (the same names with .gz)",
    ),
    "fashion-mnist": NamedDataset(
        "fashion-mnist", "FashionMNIST", "FashionMNIST/raw", _MNIST_FILES, "idx", 28, 1,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        flip=True, source="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (the same names with .gz)",
    ),
    "cifar10": NamedDataset(
        "cifar10", "CIFAR10", "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}, "cifar", 32, 3,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"), flip=True,
        source="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpacked)",
    ),
}  # fmt: skip
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}


def named_dataset(name: str) -> NamedDataset:
    """The data set called ``name`` (case-insensitive; 'fashion_mnist' and 'cifar-10' are accepted too); ValueError
    listing the known names otherwise."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in NAMED_DATASETS:
        raise ValueError(f"unknown data set {name!r}; the named data sets are: {', '.join(NAMED_DATASETS)}")
    return NAMED_DATASETS[key]


def default_data_root() -> Path:
    """$DENOISING_DIFFUSION_DATA, else $XDG_CACHE_HOME/denoising_diffusion/datasets (~/.cache/... by default)."""
    given = os.environ.get(DATA_ROOT_ENV, "").strip()
    if given:
        return Path(given).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(cache).expanduser() / "denoising_diffusion" / "datasets"


def _not_found(spec: NamedDataset, root: Path, split: str, why: str) -> DatasetNotFoundError:
    listed = " ".join(repr(os.fspath(p)) for p in spec.missing(root, split))
    also_gz = " (or their .gz copies)" if spec.reader == "idx" else ""
    return DatasetNotFoundError(
        f"{spec.name} ({split} split) is not in the data root {os.fspath(root)!r} and {why}. Put a copy of these "
        f"files there{also_gz}, as torchvision lays them out: {listed}; from {spec.source}. Or point --data-root "
        f"(get_dataset(root=...), ${DATA_ROOT_ENV}) at the folder that holds {spec.folder}/"
    )


def _download(spec: NamedDataset, root: Path, train: bool) -> None:
    """torchvision's download of ``spec`` into ``root`` (checksummed by torchvision); any failure, offline above
    all, becomes DatasetNotFoundError."""
    import torchvision.datasets

    split = "train" if train else "test"
    try:
        root.mkdir(parents=True, exist_ok=True)
        getattr(torchvision.datasets, spec.torchvision_class)(root=os.fspath(root), train=train, download=True)
    except Exception as err:  # noqa: BLE001 - urllib, http, tarfile and torchvision raise many types
        reason = " ".join(str(err).split())  # torchvision's message spans lines
        raise _not_found(spec, root, split, f"could not be downloaded ({type(err).__name__}: {reason})") from None


def get_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    train: bool = True,
    download: bool = True,
    labelled: bool = True,
    image_size: int | tuple[int, int] | None = None,
) -> TensorImages:
    """The training (``train=True``) or test split of a named data set, as (image, label) items.

    Args:
        name: 'mnist', 'fashion-mnist' or 'cifar10' (NAMED_DATASETS).
        root: the data root (module docstring): None for $DENOISING_DIFFUSION_DATA or the cache folder.
        train: the training split (60,000 / 60,000 / 50,000 images), else the test split (10,000 each).
        download: fetch missing files with torchvision; False never touches the network.
        labelled: items are (image (C, H, W) float32 in [0, 1], label int); False: images alone.
        image_size: serve the images at this size instead of their own (28 or 32 px).

    Returns a :class:`~.named_files.TensorImages` with ``classes`` (the class names) and ``targets``. Raises
    ValueError for an unknown name (the known ones listed) and DatasetNotFoundError for missing files that could
    not be downloaded (the exact paths to put a copy at listed).
    """
    spec = named_dataset(name)
    folder = Path(root).expanduser() if root is not None else default_data_root()
    split = "train" if train else "test"
    if spec.missing(folder, split):
        if not download:
            raise _not_found(spec, folder, split, "downloading is off (download=False, --no-download)")
        _download(spec, folder, train)
    paths = spec.paths(folder, split)
    if spec.reader == "idx":
        images, labels = read_idx(paths[0]), read_idx(paths[1]).long()
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{os.fspath(paths[0])!r} and {os.fspath(paths[1])!r} do not match: images "
                             f"{tuple(images.shape)}, labels {tuple(labels.shape)}")  # fmt: skip
        images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
    else:
        images, labels = read_cifar_batches(folder / spec.folder, spec.files[split])
    return TensorImages(images, labels, spec.classes, labelled=labelled, image_size=image_size,
                        name=f"{spec.name} ({split})")  # fmt: skip
