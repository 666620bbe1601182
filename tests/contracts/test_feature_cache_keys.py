"""The real-feature cache's keys and stored precision (feature_cache.py): a cache hit must give exactly what a fresh
computation gives, so an entry is reused only for the same folder, channel count, image size and resize setting,
and comes back in float64 bit for bit (features that float32 cannot hold are stored as they are).
test_evaluation_cli.py checks reuse and invalidation by files and extractors; these check the other key fields, one
at a time, with everything else held fixed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor

from denoising_diffusion.evaluation.feature_cache import real_features
from denoising_diffusion.evaluation.features import NamedExtractor


class Counting:
    """Float64 features that float32 cannot hold (2x2-pooled pixels divided by 3, plus the channel count), and a
    count of the images seen, to tell a cache hit from a recomputation."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, images: Tensor) -> Tensor:
        self.seen += len(images)
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.double(), 2).flatten(1)
        return torch.cat([pooled / 3, torch.full((len(images), 1), images.shape[1] / 3, dtype=torch.float64)], 1)


def write_images(folder: Path, count: int, size: int, seed: int) -> Path:
    """BMP files (their size in bytes depends only on the pixel count) with fixed modification times."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        pixels = (torch.rand(size, size, 3, generator=generator) * 255).to(torch.uint8).numpy()
        path = folder / f"{i:02d}.bmp"
        Image.fromarray(pixels).save(path)
        os.utime(path, ns=(1_700_000_000_000_000_000 + i, 1_700_000_000_000_000_000 + i))
    return folder


@pytest.fixture
def counting() -> tuple[Counting, NamedExtractor]:
    extractor = Counting()
    return extractor, NamedExtractor(extractor, "counting")


def test_cached_features_come_back_in_float64_bit_for_bit(tmp_path: Path, counting) -> None:
    extractor, named = counting
    folder = write_images(tmp_path / "real", 5, size=8, seed=0)
    first = real_features(folder, named, image_size=8, channels=3, cache_dir=tmp_path / "cache")
    assert not torch.equal(first.features.float().double(), first.features)  # float32 would lose digits
    again = real_features(folder, named, image_size=8, channels=3, cache_dir=tmp_path / "cache")
    assert extractor.seen == 5  # a cache hit
    assert again.features.dtype == torch.float64 and torch.equal(again.features, first.features)
    assert torch.equal(again.fit.mean, first.fit.mean) and torch.equal(again.fit.cov, first.fit.cov)


def test_an_entry_is_keyed_on_the_folder(tmp_path: Path, counting) -> None:
    """Two folders whose listings agree (names, sizes in bytes, modification times) but whose pixels differ."""
    extractor, named = counting
    a = write_images(tmp_path / "a", 4, size=8, seed=1)
    b = write_images(tmp_path / "b", 4, size=8, seed=2)
    first = real_features(a, named, image_size=8, channels=3, cache_dir=tmp_path / "cache")
    second = real_features(b, named, image_size=8, channels=3, cache_dir=tmp_path / "cache")
    assert extractor.seen == 8 and not torch.equal(first.features, second.features)


def test_an_entry_is_keyed_on_the_channel_count(tmp_path: Path, counting) -> None:
    extractor, named = counting
    folder = write_images(tmp_path / "real", 4, size=8, seed=3)
    rgb = real_features(folder, named, image_size=8, channels=3, cache_dir=tmp_path / "cache")
    grey = real_features(folder, named, image_size=8, channels=1, cache_dir=tmp_path / "cache")
    assert extractor.seen == 8 and grey.features.shape[1] == 4 + 1 and rgb.features.shape[1] == 12 + 1


def test_an_entry_is_keyed_on_the_image_size(tmp_path: Path, counting) -> None:
    extractor, named = counting
    folder = write_images(tmp_path / "real", 4, size=8, seed=4)
    full = real_features(folder, named, image_size=8, channels=3, resize=True, cache_dir=tmp_path / "cache")
    small = real_features(folder, named, image_size=2, channels=3, resize=True, cache_dir=tmp_path / "cache")
    assert extractor.seen == 8 and not torch.equal(full.features, small.features)


def test_an_entry_made_with_resize_does_not_hide_the_size_error(tmp_path: Path, counting) -> None:
    """16x16 images for a model of 8x8: with resize they are resized and cached; without it they must still be a
    ValueError, not the resized features from the cache."""
    _, named = counting
    folder = write_images(tmp_path / "real", 3, size=16, seed=5)
    real_features(folder, named, image_size=8, channels=3, resize=True, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="another size: 16x16"):
        real_features(folder, named, image_size=8, channels=3, resize=False, cache_dir=tmp_path / "cache")
