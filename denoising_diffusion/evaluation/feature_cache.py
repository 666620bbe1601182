"""Real images' features from a folder or a built-in data set, computed once and cached.

:func:`real_features` reads every image under a folder (recursively, sorted; data.list_image_files), or draws the
images of a :class:`~.real_sets.BuiltinReference`, passes them through an extractor in batches
and returns :class:`~.metrics.RealFeatures`. The result is cached in one file per key under
``cache_dir``. A folder's key is (folder, extractor identity, image size, channels, resize), and the file also
records the folder's listing (each file's relative path, size in bytes and modification time in ns). A built-in
data set's key is (name, seed, number of images, extractor identity, image size, channels): the images are a
function of these, so there is no listing, and nothing to resize (they are drawn at the size). The cache is reused
only when everything matches, and recomputed (and overwritten) when anything changes — a file added, removed or
rewritten, another extractor (or the same network retrained), another image size, another count.

Default ``cache_dir``: ``$XDG_CACHE_HOME/denoising_diffusion/real-features`` (``~/.cache/...`` without it); the
command line's ``--cache-dir`` changes it, ``--no-cache`` skips it. Files are written atomically (a temporary file
renamed into place, checkpoint.save_checkpoint) and read with ``weights_only=True``; a damaged cache file is
recomputed with a warning.

Sizes: without ``resize``, every image must already be ``image_size`` x ``image_size`` (what the model generates);
otherwise a ValueError lists the sizes found. With ``resize`` each image is resized so that it covers the size
(bicubic, antialiased when shrinking) and centre-cropped, exactly as training reads a folder (image_files.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..data.datasets import list_image_files
from ..data.image_files import load_image
from .features import NamedExtractor
from .frechet import extract_features
from .metrics import RealFeatures
from .real_sets import BuiltinReference

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/denoising_diffusion/real-features``, else ``~/.cache/denoising_diffusion/real-features``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "denoising_diffusion" / "real-features"


def check_sizes(paths: list[Path], image_size: int, resize: bool) -> None:
    """ValueError listing the sizes found when some image is not image_size x image_size and not ``resize``."""
    if resize:
        return
    sizes: Counter[tuple[int, int]] = Counter()
    example: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                size = image.size
        except Exception:  # noqa: BLE001 - unreadable: load_image names the file with its reason later
            continue
        sizes[size] += 1
        example.setdefault(size, path)
    wrong = {size: n for size, n in sizes.items() if size != (image_size, image_size)}
    if wrong:
        found = ", ".join(f"{w}x{h} ({n} files, e.g. {os.fspath(example[(w, h)])!r})" for (w, h), n in sizes.items())
        kind = "mixed sizes" if len(sizes) > 1 else "another size"
        raise ValueError(
            f"the real images have {kind}: {found}; the model generates {image_size}x{image_size}. Pass --resize "
            "(resize=True) to resize and centre-crop them as training does, or resize them yourself"
        )


RealSource = str | os.PathLike[str] | BuiltinReference
"""A folder of real images, or a built-in data set drawn afresh (real_sets.resolve_real reads the command line's)."""


def _file_batches(paths: list[Path], image_size: int, channels: int, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(paths), batch_size):
        yield torch.stack([load_image(p, image_size, channels) for p in paths[start : start + batch_size]])


def _image_batches(
    source: RealSource, image_size: int, channels: int, resize: bool, batch_size: int
) -> Iterator[Tensor]:
    """The real images (B, C, image_size, image_size) in [0, 1], a batch at a time; a folder's sizes checked first."""
    if isinstance(source, BuiltinReference):
        return source.batches(image_size, channels, batch_size)
    paths = list_image_files(source)
    check_sizes(paths, image_size, resize)
    return _file_batches(paths, image_size, channels, batch_size)


def folder_features(
    folder: RealSource,
    extractor: NamedExtractor,
    *,
    image_size: int,
    channels: int,
    resize: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Features (M, F), float64 on the CPU, of every image under ``folder``, or of a built-in data set's images
    (no cache)."""
    parts = [
        extract_features(extractor.extractor, images.to(device), batch_size=batch_size)
        for images in _image_batches(folder, image_size, channels, resize, batch_size)
    ]
    return torch.cat(parts)


def _listing(folder: Path) -> list[list[object]]:
    """[relative path, size, mtime_ns] of each image file under ``folder``, sorted."""
    listing: list[list[object]] = []
    for path in list_image_files(folder):
        stat = path.stat()
        listing.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    return listing


def cache_key(source: RealSource, identity: str, image_size: int, channels: int, resize: bool) -> dict[str, object]:
    """What a cached file must match to be reused: a folder's listing included; a built-in data set's name, seed and
    count instead (``resize`` means nothing to it: its images are drawn at the size)."""
    key: dict[str, object] = {
        "format": CACHE_FORMAT,
        "extractor": identity,
        "image_size": image_size,
        "channels": channels,
    }
    if isinstance(source, BuiltinReference):
        return {**key, **source.key()}
    folder = Path(source)
    return {**key, "folder": os.fspath(folder.resolve()), "resize": resize, "files": _listing(folder)}


def cache_path(cache_dir: Path, key: dict[str, object]) -> Path:
    """One file per key less the listing (folder or data set, extractor, size, channels, ...): a folder's listing
    is checked inside, not in the name."""
    named = {k: v for k, v in key.items() if k != "files"}
    digest = hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"real-{digest}.pt"


def _read_cache(path: Path, key_text: str) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        payload = load_checkpoint(path)
    except (CheckpointError, OSError) as err:
        logger.warning("ignoring the damaged real-feature cache %s (%s); recomputing", path, err)
        return None
    if payload.get("key") != key_text or not isinstance(payload.get("features"), Tensor):
        return None
    return payload["features"].to(torch.float64)


def real_features(
    folder: RealSource,
    extractor: NamedExtractor,
    *,
    image_size: int,
    channels: int,
    resize: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> RealFeatures:
    """The real side of the metrics for the images under ``folder`` (or of a built-in data set: a
    :class:`~.real_sets.BuiltinReference`), from the cache when it is valid (see the module
    docstring), else computed and cached. ``cache_dir`` None: :func:`default_cache_dir`."""
    root = folder if isinstance(folder, BuiltinReference) else Path(folder)
    key = cache_key(root, extractor.identity, image_size, channels, resize)
    key_text = json.dumps(key, sort_keys=True)
    path = cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), key)
    features = _read_cache(path, key_text) if use_cache else None
    if features is not None:
        logger.info("real features of %s: reused %s", root, path)
    else:
        features = folder_features(
            root, extractor, image_size=image_size, channels=channels, resize=resize, batch_size=batch_size,
            device=device,
        )  # fmt: skip
        if use_cache:
            stored = features.float() if torch.equal(features.float().double(), features) else features  # lossless
            save_checkpoint(path, {"key": key_text, "features": stored})
            logger.info("real features of %s: cached in %s", root, path)
    return RealFeatures.from_features(features, extractor.identity, str(root))
