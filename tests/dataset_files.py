"""Tiny data sets in their own file formats, written by the tests (nothing is ever downloaded):

* MNIST / Fashion-MNIST IDX files and CIFAR-10 "python version" pickled batches, laid out as torchvision lays
  them out under a data root;
* WebDataset tar shards (``000007.png`` + ``000007.cls`` per sample);
* Hugging Face datasets: a folder written by ``save_to_disk``, and a folder of parquet files.

Every image encodes its identity: pixel (0, 0) of item k holds k (so a test can tell which items it got), and the
rest of the image is uniform at 20 · label (so a test can read the label back from the image).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

NUM_CLASSES = 10


def coded_image(index: int, label: int, size: int, channels: int) -> np.ndarray:
    """(size, size, channels) uint8: uniform 20 · label, pixel (0, 0) = index (< 256)."""
    image = np.full((size, size, channels), 20 * label, dtype=np.uint8)
    image[0, 0, :] = index
    return image


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """An IDX file of unsigned bytes: magic 0x00 0x00 0x08 ndim, big-endian dims, the data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(root: Path, folder: str = "MNIST", train: int = 12, test: int = 6, gz: bool = False) -> Path:
    """MNIST-format files under root/folder/raw (torchvision's layout); item k has label k % 10."""
    for prefix, count, start in (("train", train, 0), ("t10k", test, 100)):
        labels = np.arange(count) % NUM_CLASSES
        images = np.stack([coded_image(start + k, int(labels[k]), 28, 1)[:, :, 0] for k in range(count)])
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


def write_cifar(root: Path, per_batch: int = 2, test: int = 4) -> Path:
    """CIFAR-10 batches under root/cifar-10-batches-py: data (N, 3072) uint8 as R, G, B planes, labels a list."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [(f"data_batch_{b}", per_batch, (b - 1) * per_batch) for b in range(1, 6)] + [("test_batch", test, 100)]
    for name, count, start in names:
        labels = [(start + k) % NUM_CLASSES for k in range(count)]
        rows = [coded_image(start + k, labels[k], 32, 3).transpose(2, 0, 1).reshape(-1) for k in range(count)]
        entry = {"batch_label": name, "labels": labels, "data": np.stack(rows), "filenames": [f"{k}.png" for k in
                 range(count)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    return root


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image if image.shape[2] > 1 else image[:, :, 0]).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(
    folder: Path, sizes: list[int], size: int = 8, label_suffix: str | None = "cls", image_suffix: str = "png"
) -> list[int]:
    """One tar file per entry of ``sizes`` (shard-000.tar, ...), ``sizes[i]`` samples each, numbered on across
    shards; returns the sample numbers (label = number % 10)."""
    folder.mkdir(parents=True, exist_ok=True)
    number = 0
    for shard, count in enumerate(sizes):
        with tarfile.open(folder / f"shard-{shard:03d}.tar", "w") as tar:
            for _ in range(count):
                members = {image_suffix: png_bytes(coded_image(number, number % NUM_CLASSES, size, 3))}
                if label_suffix is not None:
                    members[label_suffix] = str(number % NUM_CLASSES).encode()
                for suffix, data in members.items():
                    info = tarfile.TarInfo(f"{number:06d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                number += 1
    return list(range(number))


def hf_dataset_of(count: int, start: int = 0, size: int = 8):
    """A datasets.Dataset of ``count`` coded images ('image': Image, 'label': ClassLabel of 10 names)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{i}" for i in
                                  range(NUM_CLASSES)])})  # fmt: skip
    labels = [(start + k) % NUM_CLASSES for k in range(count)]
    images = [Image.fromarray(coded_image(start + k, labels[k], size, 3)) for k in range(count)]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def save_hf(folder: Path, count: int = 12) -> Path:
    hf_dataset_of(count).save_to_disk(str(folder))
    return folder


def write_parquet(folder: Path, sizes: list[int]) -> Path:
    """A folder of parquet files (train-00000.parquet, ...), ``sizes[i]`` rows each, numbered on across files."""
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, count in enumerate(sizes):
        hf_dataset_of(count, start).to_parquet(str(folder / f"train-{i:05d}.parquet"))
        start += count
    return folder


def index_of(image) -> int:
    """The item number coded into a (C, H, W) image in [0, 1]."""
    return round(float(image[0, 0, 0]) * 255)


def label_of(image) -> int:
    """The label coded into a (C, H, W) image in [0, 1]."""
    return round(float(image[0, -1, -1]) * 255 / 20)
