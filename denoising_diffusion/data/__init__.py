"""Data: what a training batch may be (batch.py), decoding one image file whatever it holds (image_files.py), the
image folders, labelled folders and built-in data sets by name with a resumable batch sampler (datasets.py), and
the built-in shapes drawn from a seed (shapes.py); the tutorial's data sets by name (named.py, named_files.py);
streams of records split across processes and resumable (streams.py, records.py), from WebDataset shards
(shards.py) or Hugging Face datasets (hf.py). Every dataset yields float32 images (C, H, W) in [0, 1].
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
from .hf import HFImages, HFStream, hf_dataset
from .image_files import UnreadableImageError, load_image
from .named import NAMED_DATASETS, DatasetNotFoundError, default_data_root, get_dataset
from .records import RecordError
from .shapes import BuiltinShapes
from .shards import ShardStream
from .streams import RecordStream, StreamPosition

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "NAMED_DATASETS",
    "BuiltinShapes",
    "DatasetNotFoundError",
    "HFImages",
    "HFStream",
    "ImageFolderDataset",
    "InfiniteBatchSampler",
    "LabelledImageFolder",
    "OnBadImage",
    "RecordError",
    "RecordStream",
    "ShardStream",
    "SkippedImage",
    "StreamPosition",
    "UnreadableImageError",
    "collate_batch",
    "default_data_root",
    "get_builtin_dataset",
    "get_dataset",
    "hf_dataset",
    "list_class_folders",
    "list_image_files",
    "load_image",
    "split_batch",
]
