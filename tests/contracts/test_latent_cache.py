"""Cached latents (latent/cache.py): equal to freshly encoded ones, reused while nothing changed, and never reused
when the autoencoder, the data or their size changed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from latent_helpers import SIZE, tiny_autoencoder
from PIL import Image
from torch.utils.data import TensorDataset

from denoising_diffusion import BuiltinShapes, ImageFolderDataset
from denoising_diffusion.latent import cache_key, cache_latents


def test_cached_latents_equal_freshly_encoded_ones_and_keep_the_labels(tmp_path: Path) -> None:
    data = BuiltinShapes(10, SIZE, labelled=True)
    autoencoder = tiny_autoencoder().eval()
    cache = cache_latents(autoencoder, data, tmp_path, batch_size=4)
    assert len(cache) == 10 and cache.classes == data.classes
    for index in (0, 9):
        moments, label = cache[index]
        with torch.no_grad():
            fresh = autoencoder.encode(data[index][0][None]).moments[0]
        torch.testing.assert_close(moments, fresh, rtol=1e-5, atol=1e-6)
        assert int(label) == data[index][1]


def test_the_cache_is_reused_until_the_autoencoder_changes(tmp_path: Path, monkeypatch) -> None:
    data = TensorDataset(BuiltinShapes(6, SIZE).images)
    autoencoder = tiny_autoencoder()
    first = cache_latents(autoencoder, data, tmp_path)
    calls = []
    encode = autoencoder.encode
    monkeypatch.setattr(autoencoder, "encode", lambda x: calls.append(1) or encode(x))
    again = cache_latents(autoencoder, data, tmp_path)
    assert calls == [] and again.key == first.key  # read from disk: nothing encoded
    torch.testing.assert_close(again.moments, first.moments, rtol=0, atol=0)
    with torch.no_grad():
        autoencoder.decoder[0].bias.add_(1.0)  # the decoder alone: the latents would not change, the key does
    changed = cache_latents(autoencoder, data, tmp_path)
    assert calls and changed.key != first.key and len(list(tmp_path.glob("latents-*.pt"))) == 2
    with torch.no_grad():
        autoencoder.encoder[0].weight.mul_(2.0)
    retrained = cache_latents(autoencoder, data, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(retrained[0][0], autoencoder.encode(data[0][0][None]).moments[0])
    assert not torch.allclose(retrained.moments, first.moments)


def _write_images(folder: Path, count: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_an_image_folder_is_keyed_by_its_listing_and_size(tmp_path: Path) -> None:
    """A file added, rewritten, or the folder read at another size gives another key; reading again does not."""
    _write_images(tmp_path / "images", 3)
    autoencoder = tiny_autoencoder()

    def key(size: int = SIZE) -> str:
        return cache_key(autoencoder, ImageFolderDataset(tmp_path / "images", size), flips=False)

    original = key()
    assert key() == original
    assert key(32) != original
    assert cache_key(autoencoder, ImageFolderDataset(tmp_path / "images", SIZE), flips=True) != original
    path = tmp_path / "images" / "1.png"
    stat = path.stat()
    _write_images(tmp_path / "other", 2, seed=1)
    os.replace(tmp_path / "other" / "1.png", path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rewritten = key()
    assert rewritten != original
    _write_images(tmp_path / "images" / "more", 1)
    assert key() not in (original, rewritten)


def test_flips_encode_the_mirrored_image(tmp_path: Path) -> None:
    """With flips, an item is the moments of the image or of its mirror image (a conv encoder's latent of a mirrored
    image is not the mirrored latent), each about half of the time."""
    data = BuiltinShapes(4, SIZE)
    autoencoder = tiny_autoencoder().eval()
    cache = cache_latents(autoencoder, data, tmp_path, flips=True)
    with torch.no_grad():
        plain = autoencoder.encode(data[2][None]).moments[0]
        mirrored = autoencoder.encode(data[2][None].flip(-1)).moments[0]
    assert not torch.allclose(mirrored, plain.flip(-1), atol=1e-3)
    torch.manual_seed(0)
    drawn = [cache[2] for _ in range(40)]
    is_mirrored = [torch.allclose(item, mirrored, atol=1e-6) for item in drawn]
    assert all(m or torch.allclose(item, plain, atol=1e-6) for m, item in zip(is_mirrored, drawn))
    assert 8 <= sum(is_mirrored) <= 32


def test_a_folder_that_flips_its_own_items_cannot_be_cached(tmp_path: Path) -> None:
    _write_images(tmp_path / "images", 2)
    data = ImageFolderDataset(tmp_path / "images", SIZE, augment_horizontal_flip=True)
    with pytest.raises(ValueError, match="flips its items at random"):
        cache_latents(tiny_autoencoder(), data, tmp_path / "cache")


def test_an_image_folder_is_keyed_by_the_channels_it_is_read_at(tmp_path: Path) -> None:
    """The folder read in grey is other data than the same files in RGB: its key differs, so a cached RGB entry never
    hides the autoencoder's refusal of 1-channel images."""
    _write_images(tmp_path / "images", 2)
    autoencoder = tiny_autoencoder()
    rgb = cache_latents(autoencoder, ImageFolderDataset(tmp_path / "images", SIZE), tmp_path / "cache")
    grey = ImageFolderDataset(tmp_path / "images", SIZE, channels=1)
    assert cache_key(autoencoder, grey, flips=False) != rgb.key
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), got \(2, 1, 16, 16\)"):
        cache_latents(autoencoder, grey, tmp_path / "cache")
