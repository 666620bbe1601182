"""One folder with everything real image folders hold: each file is converted, or skipped with one warning naming it."""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401

from denoising_diffusion.data.datasets import ImageFolderDataset, UnreadableImageError


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG file written by hand (Pillow cannot write 48-bit RGB, nor lie about its size): signature, IHDR, one
    IDAT holding zlib(raw scanlines), IEND."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def sixteen_bit_rgb_png(width: int = 5, height: int = 4) -> bytes:
    """48-bit RGB, every pixel (0xFFFF, 0x8080, 0x0000)."""
    row = b"\x00" + bytes.fromhex("ffff80800000") * width  # filter byte 0, then R G B as big-endian 16-bit
    return png_bytes(width, height, 16, 2, row * height)


def bomb_png(side: int) -> bytes:
    """A PNG that claims side x side pixels (a few bytes of data): what a decompression bomb looks like to Pillow."""
    return png_bytes(side, side, 8, 0, b"\x00" * 16)


GOOD = {  # name -> expected mean colour (R, G, B) of the 8x8 item, or None (just any valid item)
    "plain.png": (0.2, 0.4, 0.6),
    "tiny_3x2.png": (1.0, 0.0, 0.0),  # smaller than image_size: upscaled
    "sixteen_gray.png": (30000 / 65535,) * 3,
    "sixteen_rgb.png": (1.0, 128 / 255, 0.0),
    "palette.png": (10 / 255, 20 / 255, 250 / 255),
    "palette_transparent.png": (1.0, 1.0, 1.0),  # the transparent palette entry becomes white
    "gray_alpha.png": None,
    "cmyk.jpg": None,
    "exif_rotated.jpg": None,
}
BAD = [
    "zero_bytes.png",
    "truncated.jpg",
    "truncated.png",
    "text_named.jpg",
    "corrupt_data.png",
    "bomb_warning_range.png",
    "bomb_error_range.png",
]


def write_bad_folder(root: Path) -> Path:
    """Every kind of good and bad file, under root (one of them in a subfolder)."""
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (12, 10), (51, 102, 153)).save(root / "plain.png")
    Image.new("RGB", (3, 2), (255, 0, 0)).save(root / "tiny_3x2.png")
    Image.fromarray(np.full((9, 11), 30000, dtype=np.uint16)).save(root / "sixteen_gray.png")
    (root / "sixteen_rgb.png").write_bytes(sixteen_bit_rgb_png())
    palette = Image.new("P", (9, 9), 1)
    palette.putpalette([0, 0, 0, 10, 20, 250] + [0] * 762)
    palette.save(root / "palette.png")
    palette.save(root / "sub" / "palette_transparent.png", transparency=1)
    Image.new("LA", (8, 8), (90, 200)).save(root / "gray_alpha.png")
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    photo = Image.new("RGB", (16, 8), (255, 0, 0))
    photo.paste((0, 0, 255), (8, 0, 16, 8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    photo.save(root / "exif_rotated.jpg", exif=exif, quality=95)

    (root / "zero_bytes.png").write_bytes(b"")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(root / "full.jpg")
    data = (root / "full.jpg").read_bytes()
    (root / "full.jpg").unlink()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "t.png")
    data = (root / "t.png").read_bytes()
    (root / "t.png").unlink()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "sub" / "text_named.jpg").write_text("<html>this is a web page saved with an image name</html>")
    corrupt = bytearray(sixteen_bit_rgb_png())
    corrupt[30] ^= 0xFF  # the IHDR checksum (bytes 29-32) no longer matches its header
    (root / "corrupt_data.png").write_bytes(bytes(corrupt))
    (root / "bomb_warning_range.png").write_bytes(bomb_png(10_000))  # 1e8 pixels: Pillow would only warn
    (root / "bomb_error_range.png").write_bytes(bomb_png(20_000))  # 4e8 pixels: Pillow raises
    return root


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    return write_bad_folder(tmp_path / "images")


def index_of(dataset: ImageFolderDataset, name: str) -> int:
    return [p.name for p in dataset.paths].index(name)


def test_every_good_file_is_converted(bad_folder: Path) -> None:
    dataset = ImageFolderDataset(bad_folder, 8, on_bad_image="skip")
    assert len(dataset) == len(GOOD) + len(BAD)
    for name, colour in GOOD.items():
        item, skipped = dataset.load(index_of(dataset, name))
        assert skipped == [] and item.shape == (3, 8, 8) and 0 <= item.min() and item.max() <= 1, name
        if colour is not None:
            assert torch.allclose(item.mean(dim=(1, 2)), torch.tensor(colour), atol=2 / 255), name
    rotated = dataset[index_of(dataset, "exif_rotated.jpg")]
    assert rotated[0, 0].mean() > 0.8 and rotated[2, -1].mean() > 0.8  # red on top, blue at the bottom


def test_every_bad_file_is_skipped_once_with_its_reason(bad_folder: Path) -> None:
    dataset = ImageFolderDataset(bad_folder, 8, on_bad_image="skip")
    found: dict[str, str] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # a second pass meets no file again
            for i in range(len(dataset)):
                item, skipped = dataset.load(i)
                assert item.shape == (3, 8, 8)
                for s in skipped:
                    assert Path(s.path).name not in found
                    found[Path(s.path).name] = s.reason
    assert sorted(found) == sorted(BAD)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    for name in ("bomb_warning_range.png", "bomb_error_range.png"):
        assert "too large to decode safely" in found[name] and "MAX_IMAGE_PIXELS" in found[name]
    assert "truncated" in found["truncated.jpg"].lower()


@pytest.mark.parametrize("name", BAD)
def test_with_error_each_bad_file_stops_with_its_name(bad_folder: Path, name: str) -> None:
    dataset = ImageFolderDataset(bad_folder, 8, on_bad_image="error")
    with pytest.raises(UnreadableImageError, match=rf"{name}.*on_bad_image='skip'"):
        dataset[index_of(dataset, name)]


def test_training_names_each_bad_file_once_and_counts_them(bad_folder: Path, tmp_path: Path, caplog) -> None:
    trainer = make_trainer(
        tiny_diffusion(),
        bad_folder,
        tmp_path / "r",
        on_bad_image="skip",
        num_workers=2,
        train_batch_size=8,
        train_num_steps=4,
        save_and_sample_every=4,
        num_samples=0,
    )
    with caplog.at_level(logging.WARNING):
        trainer.train()  # 32 items: every file is read at least once, by two DataLoader workers
    per_file = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping unreadable image")]
    assert sorted(Path(m.split(": ")[0].split(" ")[-1]).name for m in per_file) == sorted(BAD)
    assert sorted(Path(p).name for p in trainer.skipped_images) == sorted(BAD)
    summary = [r.getMessage() for r in caplog.records if "were skipped" in r.getMessage()]
    assert len(summary) == 1 and f"{len(BAD)} unreadable image file(s) were skipped" in summary[0]
    assert (tmp_path / "r" / "model-1.pt").exists()


def test_training_with_error_names_every_bad_file_before_writing_anything(bad_folder: Path, tmp_path: Path) -> None:
    """The folder's headers are checked up front: one error names all seven bad files (the one in a sub-folder by
    its relative path) and the results folder is never created (no header-only loss.csv, no lock file)."""
    with pytest.raises(UnreadableImageError) as caught:
        make_trainer(tiny_diffusion(), bad_folder, tmp_path / "r", on_bad_image="error", num_workers=0)
    message = str(caught.value)
    assert f"{len(BAD)} of {len(GOOD) + len(BAD)} image files under" in message and "on_bad_image='skip'" in message
    named = [part.split(" (")[0] for part in message.split("cannot be read: ")[1].split("; ")[: len(BAD)]]
    assert sorted(Path(name).name for name in named) == sorted(BAD) and "sub/text_named.jpg" in named
    assert not (tmp_path / "r").exists()


def test_checking_a_large_folder_shows_a_bar(bad_folder: Path, monkeypatch, capsys) -> None:
    from denoising_diffusion.data import scan

    monkeypatch.setattr(scan, "PROGRESS_FROM", 4)  # 16 files: "large"
    found = scan.scan_images(sorted(p for p in bad_folder.rglob("*") if p.is_file()))
    assert len(found.unreadable) == len(BAD) and "checking image files" in capsys.readouterr().err
