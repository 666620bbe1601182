"""Decoding one image file into a (C, H, W) float tensor in [0, 1], whatever the file holds.

What arrives in real folders, and what happens to it (docs/training.md, "Bad data"):

* palette, grayscale-with-alpha, CMYK, YCbCr, LAB, HSV images: converted (through RGB or RGBA);
* 16- and 32-bit grayscale (PNG, TIFF): rescaled to 8 bits, not clipped at 255;
* transparency: composited onto white when the model has no alpha channel;
* EXIF orientation (phone photos): applied; an EXIF block that cannot be parsed is ignored;
* images smaller than ``image_size``: upscaled (bicubic) until they cover it, then centre-cropped;
* zero-byte, truncated, corrupt files and non-images with an image extension: UnreadableImageError naming the file;
* images with more pixels than Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89.5
  megapixels by default): refused as UnreadableImageError before anything is decoded, instead of Pillow's
  DecompressionBombWarning (and DecompressionBombError above twice the limit). Raise that limit (or set it to None)
  to read larger files on purpose.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .._utils import normalize_image_size

MODE_FOR_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}


class UnreadableImageError(OSError):
    """An image file could not be decoded (or is too large to decode safely); the message names the file.

    ``reason`` is the same message without the file name (what a skip warning shows after the name).
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


@dataclass(frozen=True)
class SkippedImage:
    """An image file that cannot be read (found by a folder check, or skipped with on_bad_image='skip'), and why:
    ``reason`` is the message without the file name."""

    path: str
    reason: str


def check_channels(channels: int) -> None:
    """Raise ValueError unless ``channels`` is 1, 3 or 4."""
    if channels not in MODE_FOR_CHANNELS:
        raise ValueError(f"channels must be 1 (grayscale), 3 (RGB) or 4 (RGBA), got {channels!r}")


# ----------------------------------------------------------------------------------------------------------------------
# Pillow image in, Pillow image out.


def _high_bit_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer ('I', 'I;16*') or float ('F') grayscale image to 8-bit 'L'.

    Pillow's own convert('L') clips such images at 255 instead of scaling them. Integer images are taken to be
    16-bit (0..65535, what 16-bit PNG and TIFF files decode to); float images are taken to lie in [0, 1].
    """
    array = np.asarray(image, dtype=np.float64)
    scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
    return Image.fromarray(np.clip(np.rint(array * scale), 0, 255).astype(np.uint8))  # uint8 (H, W) -> mode "L"


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Flatten an image with alpha onto an opaque white background; returns 'RGB'."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def convert_to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow image to the mode of ``channels`` (1 -> 'L', 3 -> 'RGB', 4 -> 'RGBA').

    Palette images keep their transparency; high-bit-depth grayscale is rescaled rather than clipped; CMYK, YCbCr,
    LAB and HSV go through RGB. When alpha must be dropped (3 or 1 channels), the image is composited onto white,
    so transparent regions become white rather than whatever colour the invisible pixels happened to store.
    """
    check_channels(channels)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_bit_depth_to_l(image)
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    elif image.mode == "L" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode not in ("1", "L", "RGB", "RGBA"):
        image = image.convert("RGB")
    has_alpha = image.mode == "RGBA"
    if channels == 4:
        return image.convert("RGBA")
    if has_alpha:
        image = _composite_on_white(image)
    return image.convert(MODE_FOR_CHANNELS[channels])


def resize_and_center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``image`` so that it just covers ``size`` = (H, W) (for a square target: its short side becomes the
    target side), then crop the centre. Bicubic resampling, which Pillow antialiases when it downsamples; images
    smaller than ``size`` are upscaled."""
    height, width = size
    scale = max(height / image.height, width / image.width)
    new_w = max(width, round(image.width * scale))
    new_h = max(height, round(image.height * scale))
    if (new_w, new_h) != image.size:
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def pil_to_unit_tensor(image: Image.Image) -> Tensor:
    """8-bit Pillow image ('L', 'RGB' or 'RGBA') -> float32 tensor (C, H, W) in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)  # (H, W, C) -> (C, H, W)


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says; a malformed EXIF block leaves the image as it is."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - Pillow raises many types for broken EXIF; the pixels may still be fine
        return image


# ----------------------------------------------------------------------------------------------------------------------
# A file in, a tensor out.


ImageSource = Union[str, "os.PathLike[str]", IO[bytes]]  # a file path, or an open binary file (bytes in memory)


def _shown(path: ImageSource, name: str | None) -> str:
    """How messages name an image: ``name`` when given, else the path, quoted."""
    return name if name is not None else repr(os.fspath(path))  # type: ignore[arg-type]


def _open_checked(path: ImageSource, name: str | None = None) -> Image.Image:
    """Image.open, reading the header only, with images above Pillow's decompression-bomb limit refused.

    Pillow warns (DecompressionBombWarning) between MAX_IMAGE_PIXELS and twice that, and raises above; the warning
    is turned into an error here, so both cases stop before any pixel is decoded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
            reason = (
                f"too large to decode safely: {err} Raise PIL.Image.MAX_IMAGE_PIXELS (now "
                f"{Image.MAX_IMAGE_PIXELS}) to read it on purpose"
            )
            raise UnreadableImageError(f"image file {_shown(path, name)} is {reason}", reason) from err


def _unreadable(path: ImageSource, err: Exception, name: str | None = None) -> UnreadableImageError:
    """The UnreadableImageError for a decoder's exception ``err`` while reading ``path`` (called ``name``)."""
    if isinstance(err, UnidentifiedImageError):  # its message repeats the path
        reason = "not an image file Pillow can identify (empty, damaged, or another format)"
    else:
        reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return UnreadableImageError(f"cannot read image file {_shown(path, name)}: {reason}", reason)


def check_image_file(path: str | os.PathLike[str]) -> tuple[int, int]:
    """The (width, height) of an image file, read cheaply enough to check a whole folder before training.

    Reads the header (Pillow's ``open``), refuses decompression bombs, then checks what can be checked without
    decoding the pixels: a PNG's chunks and checksums to its end (``verify``), and a JPEG's scans decoded at 1/8 scale
    (``draft``: the DC coefficients only), which finds truncated files. Other formats are checked by their header
    only, so a file damaged after its header is still found when training reads it. Raises UnreadableImageError naming
    the file.
    """
    try:
        with _open_checked(path) as image:
            size = image.size
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                image.load()
            else:
                image.verify()
    except UnreadableImageError:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, zlib.error, ...
        raise _unreadable(path, err) from err
    return size


def load_image(path: str | os.PathLike[str], image_size: int | Sequence[int], channels: int = 3) -> Tensor:
    """Read one image file: EXIF orientation applied, converted to ``channels``, resized and centre-cropped.

    Returns a float32 tensor (channels, H, W) in [0, 1]. Raises UnreadableImageError naming the file for anything
    that cannot be decoded: missing, zero-byte, truncated or corrupt files, non-images, and images over Pillow's
    decompression-bomb limit (see this module's docstring).
    """
    return decode_image(path, image_size, channels)


def decode_image(
    source: ImageSource, image_size: int | Sequence[int], channels: int = 3, name: str | None = None
) -> Tensor:
    """:func:`load_image` for a path or an open binary file (``io.BytesIO(record_bytes)``: an image inside a
    shard or a Hugging Face dataset), named ``name`` in errors (a path names itself)."""
    size = normalize_image_size(image_size)
    check_channels(channels)
    try:
        with _open_checked(source, name) as image:
            return pil_image_to_tensor(image, size, channels)
    except UnreadableImageError:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, zlib.error, ...
        raise _unreadable(source, err, name) from err


def pil_image_to_tensor(image: Image.Image, image_size: int | Sequence[int], channels: int = 3) -> Tensor:
    """An opened Pillow image (decoded on the way) as a float32 tensor (channels, H, W) in [0, 1]: EXIF orientation
    applied, converted to ``channels``, resized and centre-cropped to ``image_size``, as every file is read."""
    size = normalize_image_size(image_size)
    check_channels(channels)
    image = _apply_exif_orientation(image)
    image = convert_to_channels(image, channels)  # forces the full decode
    return pil_to_unit_tensor(resize_and_center_crop(image, size))
