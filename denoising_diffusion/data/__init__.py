"""Data: what a training batch may be (batch.py), decoding one image file whatever it holds (image_files.py), the
image folders, labelled folders and built-in data sets by name with a resumable batch sampler (datasets.py), and
the built-in shapes drawn from a seed (shapes.py). Every dataset yields float32 images (C, H, W) in [0, 1].
"""

from .batch import collate_batch, split_batch
from .datasets import (
    BUILTIN_DATASETS,
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    InfiniteBatchSampler,
    LabelledImageFolder,
    OnBadImage,
    SkippedImage,
    get_builtin_dataset,
    list_class_folders,
    list_image_files,
)
from .image_files import UnreadableImageError, load_image
from .shapes import BuiltinShapes

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "BuiltinShapes",
    "ImageFolderDataset",
    "InfiniteBatchSampler",
    "LabelledImageFolder",
    "OnBadImage",
    "SkippedImage",
    "UnreadableImageError",
    "collate_batch",
    "get_builtin_dataset",
    "list_class_folders",
    "list_image_files",
    "load_image",
    "split_batch",
]
