"""Tests for denoising_diffusion.data: the image folder (modes, sizes, EXIF, bad files), built-in data, sampler."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from denoising_diffusion.data.datasets import (
    BuiltinShapes,
    ImageFolderDataset,
    InfiniteBatchSampler,
    UnreadableImageError,
    get_builtin_dataset,
)


def write_mixed_folder(root: Path) -> Path:
    """A nested folder of images in many modes and odd sizes, plus a non-image file that must be ignored."""
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.new("RGB", (13, 20), (200, 10, 10)).save(root / "rgb.png")
    Image.new("RGBA", (30, 9), (0, 200, 0, 128)).save(root / "sub" / "rgba.png")
    Image.new("L", (17, 11), 90).save(root / "sub" / "gray.jpg")
    palette = Image.new("P", (15, 15), 1)
    palette.putpalette([0, 0, 0, 10, 20, 250] + [0] * 762)
    palette.save(root / "sub" / "deeper" / "palette.PNG", transparency=0)  # upper-case extension on purpose
    high = np.full((12, 21), 30000, dtype=np.uint16)
    Image.fromarray(high).save(root / "sub" / "deeper" / "sixteen.png")  # decodes as mode I;16
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    return write_mixed_folder(tmp_path / "images")


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("image_size", [8, (8, 12)])
def test_items_have_requested_size_channels_and_range(mixed_folder: Path, channels: int, image_size) -> None:
    dataset = ImageFolderDataset(mixed_folder, image_size, channels=channels)
    assert len(dataset) == 6  # notes.txt is not listed
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    for i in range(len(dataset)):
        item = dataset[i]
        assert item.shape == (channels, height, width) and item.dtype == torch.float32
        assert item.min() >= 0.0 and item.max() <= 1.0


def test_files_are_found_recursively_and_sorted(mixed_folder: Path) -> None:
    dataset = ImageFolderDataset(mixed_folder, 8)
    assert dataset.paths == sorted(dataset.paths)
    assert {p.name for p in dataset.paths} == {
        "rgb.png",
        "rgba.png",
        "gray.jpg",
        "palette.PNG",
        "sixteen.png",
        "cmyk.jpg",
    }


def test_sixteen_bit_grayscale_is_scaled_not_clipped(mixed_folder: Path) -> None:
    dataset = ImageFolderDataset(mixed_folder, 8, channels=1)
    index = [p.name for p in dataset.paths].index("sixteen.png")
    assert dataset[index].mean().item() == pytest.approx(30000 / 65535, abs=2 / 255)


def test_transparency_is_composited_onto_white(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent red
    assert torch.allclose(ImageFolderDataset(tmp_path, 8, channels=3)[0], torch.ones(3, 8, 8))
    rgba = ImageFolderDataset(tmp_path, 8, channels=4)[0]
    assert torch.allclose(rgba[3], torch.zeros(8, 8))  # 4 channels keep the alpha


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (16, 8), (255, 0, 0))
    image.paste((0, 0, 255), (8, 0, 16, 8))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the left half ends up on top
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    item = ImageFolderDataset(tmp_path, 8)[0]  # (3, 8, 8)
    assert item[0, 0].mean() > 0.8 and item[2, 0].mean() < 0.2  # top row red
    assert item[2, -1].mean() > 0.8 and item[0, -1].mean() < 0.2  # bottom row blue


def test_resize_covers_then_center_crops(tmp_path: Path) -> None:
    image = Image.new("L", (30, 10), 0)
    image.paste(255, (10, 0, 20, 10))  # a white middle third
    image.save(tmp_path / "wide.png")
    item = ImageFolderDataset(tmp_path, 10, channels=1)[0]
    assert item.shape == (1, 10, 10) and item.min() > 0.95  # the crop is exactly the middle third


@pytest.mark.parametrize("make", ["missing", "empty", "wrong_ext"])
def test_folder_without_images_is_a_clear_error(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "data"
    if make != "missing":
        folder.mkdir()
    if make == "wrong_ext":
        (folder / "a.txt").write_text("x")
        (folder / "b.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError) as info:
        ImageFolderDataset(folder, 8)
    assert str(folder) in str(info.value)
    if make != "missing":
        assert "png" in str(info.value) and "jpeg" in str(info.value)


def test_unreadable_file_with_error_names_the_file(mixed_folder: Path) -> None:
    bad = mixed_folder / "sub" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    dataset = ImageFolderDataset(mixed_folder, 8, on_bad_image="error")
    index = dataset.paths.index(bad)
    with pytest.raises(UnreadableImageError, match="broken.png"):
        dataset[index]


def test_unreadable_file_with_skip_warns_once_and_serves_the_next_image(mixed_folder: Path, caplog) -> None:
    bad = mixed_folder / "sub" / "broken.png"
    bad.write_bytes(b"garbage")
    dataset = ImageFolderDataset(mixed_folder, 8, on_bad_image="skip")
    index = dataset.paths.index(bad)
    with caplog.at_level(logging.WARNING, logger="denoising_diffusion.data.datasets"):
        first, second = dataset[index], dataset[index]
    warnings = [r for r in caplog.records if "broken.png" in r.getMessage()]
    assert len(warnings) == 1
    expected = dataset[(index + 1) % len(dataset)]
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_truncated_file_counts_as_unreadable(tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "full.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(UnreadableImageError, match="full.jpg"):
        ImageFolderDataset(tmp_path, 8)[0]


def test_only_unreadable_files_is_an_error_even_with_skip(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"nope")
    with pytest.raises(UnreadableImageError, match="none of the 1 image files"):
        ImageFolderDataset(tmp_path, 8, on_bad_image="skip")[0]


def test_invalid_options_are_value_errors(mixed_folder: Path) -> None:
    with pytest.raises(ValueError, match="unknown on_bad_image 'ignore'; allowed values: 'error', 'skip'"):
        ImageFolderDataset(mixed_folder, 8, on_bad_image="ignore")
    with pytest.raises(ValueError, match="channels"):
        ImageFolderDataset(mixed_folder, 8, channels=2)
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(mixed_folder, (8, 8, 8))


def test_horizontal_flip_augmentation_flips(tmp_path: Path) -> None:
    image = Image.new("L", (8, 8), 0)
    image.paste(255, (0, 0, 4, 8))
    image.save(tmp_path / "half.png")
    dataset = ImageFolderDataset(tmp_path, 8, channels=1, augment_horizontal_flip=True)
    torch.manual_seed(0)
    lefts = {dataset[0][0, 0, 0].item() for _ in range(20)}
    assert lefts == {0.0, 1.0}


def test_builtin_shapes_are_deterministic_and_in_range() -> None:
    a, b = BuiltinShapes(32, 16, seed=3), BuiltinShapes(32, 16, seed=3)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, BuiltinShapes(32, 16, seed=4).images)
    assert len(a) == 32 and a[0].shape == (3, 16, 16) and a[0].dtype == torch.float32
    assert a.images.min() >= 0.0 and a.images.max() <= 1.0
    # Each image is a plain background plus one shape: the corner pixel is background for most images.
    assert (a.images[:, :, 0, 0] > 0.9).all(dim=1).float().mean() > 0.5


@pytest.mark.parametrize("channels", [1, 4])
def test_builtin_shapes_channels_and_rectangles(channels: int) -> None:
    dataset = get_builtin_dataset("shapes", (8, 16), channels, num_images=4)
    assert dataset[0].shape == (channels, 8, 16)
    if channels == 4:
        assert torch.equal(dataset[1][3], torch.ones(8, 16))


def test_unknown_builtin_dataset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown built-in dataset 'mnist'; available: shapes"):
        get_builtin_dataset("mnist", 16, 3)


def take(sampler: InfiniteBatchSampler, n: int) -> list[list[int]]:
    batches = iter(sampler)
    return [next(batches) for _ in range(n)]


def test_infinite_sampler_visits_every_item_once_per_epoch_and_resumes() -> None:
    batches = take(InfiniteBatchSampler(10, 5, seed=1), 6)  # 3 epochs
    flat = [i for batch in batches for i in batch]
    for epoch in range(3):
        assert sorted(flat[10 * epoch : 10 * (epoch + 1)]) == list(range(10))
    resumed = take(InfiniteBatchSampler(10, 5, seed=1, start_index=15), 3)
    assert resumed == batches[3:]


def test_infinite_sampler_shards_split_the_global_batch() -> None:
    whole = take(InfiniteBatchSampler(7, 4, seed=0), 3)
    shards = [take(InfiniteBatchSampler(7, 4, seed=0, shard=s, num_shards=2), 3) for s in range(2)]
    assert [a + b for a, b in zip(*shards)] == whole
    with pytest.raises(ValueError, match="multiple of num_shards"):
        InfiniteBatchSampler(7, 3, seed=0, num_shards=2)
