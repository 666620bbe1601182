"""Latents cached on disk: encode a data set once with a frozen autoencoder, then train a latent model on the cached
posteriors without paying the encoder at every step (diffusion.py, ``LatentDiffusion.use_cached_latents``).

:func:`cache_latents` stores, for every item of a dataset, the moments (μ, log σ²) of its posterior q(z | x), shape
(2c, h, w), and returns them as a :class:`CachedLatents` dataset whose items keep the source's structure (a tensor,
an (x, label, ...) tuple or a dict), the image replaced by the moments. The latent model draws z ~ q(z | x) from them
at every step, exactly as it does when it encodes the image itself, so caching changes the cost, not the objective.

The file is named by a key, a SHA-256 over everything the latents depend on, so a stale cache is never reused:

* the autoencoder: its class and config, and a digest of every weight (:func:`weights_digest`);
* the data: an image folder's listing (each file's path, size and modification time, with the image size and
  channels it is read at), a dataset's own ``fingerprint`` attribute when it has one, else a digest of every item
  (read once: exact for in-memory datasets such as BuiltinShapes or a TensorDataset);
* whether mirrored images were encoded too (``flips``).

``flips=True`` also encodes every image mirrored left-right, and an item is then the mirrored moments with
probability 1/2 (drawn from the torch RNG, which the Trainer seeds per item): the horizontal-flip augmentation done
exactly, since a convolutional encoder's latent of a mirrored image is not the mirrored latent. Train with the
Trainer's own ``augment_horizontal_flip=False`` then (it would mirror the moments themselves).

Files are written atomically (checkpoint.save_checkpoint) and read with ``weights_only`` and ``mmap``, so a large
cache is paged in rather than copied; a file that cannot be read is encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .._utils import eval_mode, module_device
from ..checkpoint import save_checkpoint
from ..data.batch import IMAGE_KEY, collate_batch, split_batch
from ..data.datasets import ImageFiles
from ..nn.autoencoder import codec

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # part of the key: a change of what the file holds invalidates every earlier cache


class CachedLatents(Dataset):
    """Cached posterior moments as a dataset (module docstring).

    Args:
        moments: (N, 2c, h, w), μ then log σ² of each item's posterior.
        flipped: the same of the mirrored images, or None.
        extras: the source items' other entries, batched: {'[1]': labels (N,), ...} for tuples, {key: (N, ...)} for
            dicts; {} for plain images.
        form: 'tensor', 'tuple' or 'dict': the structure of the source's items.
        classes: the source's class names, when it had them.
        key: the cache key.
    """

    def __init__(self, moments: Tensor, *, flipped: Tensor | None = None, extras: Mapping[str, Tensor] | None = None,
                 form: str = "tensor", classes: list[str] | None = None, key: str = "") -> None:  # fmt: skip
        super().__init__()
        self.moments, self.flipped, self.extras = moments, flipped, dict(extras or {})
        self.form, self.key = form, key
        if classes is not None:
            self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.moments.shape[0])

    def __getitem__(self, index: int) -> Any:
        """Item ``index``: the moments (2c, h, w) (mirrored with probability 1/2 with flips), in the source's form."""
        moments = self.moments
        if self.flipped is not None and bool(torch.rand(()) < 0.5):
            moments = self.flipped
        image = moments[index].clone()
        if self.form == "tuple":
            return (image, *(self.extras[f"[{i}]"][index] for i in range(1, len(self.extras) + 1)))
        if self.form == "dict":
            return {IMAGE_KEY: image, **{name: value[index] for name, value in self.extras.items()}}
        return image


def cache_latents(autoencoder: nn.Module, dataset: Any, folder: str | os.PathLike[str], *, flips: bool = False,
                  batch_size: int = 64) -> CachedLatents:  # fmt: skip
    """The posterior moments of every item of ``dataset`` under ``autoencoder``, read from ``folder`` when a cache
    with the same key is there, else encoded (on the autoencoder's device, ``batch_size`` items at a time, in eval
    mode without gradients) and written there as ``latents-<key>.pt``.

    Raises ValueError for a dataset whose items change from one reading to the next (an image folder with its own
    random flip) or carry entries that are not numbers or tensors.
    """
    key = cache_key(autoencoder, dataset, flips)
    path = Path(folder) / f"latents-{key[:32]}.pt"
    cached = _read(path, key)
    if cached is not None:
        logger.info("latents of %d items read from %s", len(cached), path)
        return cached
    moments, flipped, extras, form = _encode_all(autoencoder, dataset, flips, batch_size)
    found = getattr(dataset, "classes", None)
    classes = None if found is None else [str(c) for c in found]
    payload = {"key": key, "moments": moments, "flipped": flipped, "extras": extras, "form": form, "classes": classes}
    save_checkpoint(path, payload)
    logger.info("latents of %d items cached in %s", len(moments), path)
    return CachedLatents(moments, flipped=flipped, extras=extras, form=form, classes=classes, key=key)


def _read(path: Path, key: str) -> CachedLatents | None:
    """The cache at ``path`` if it holds ``key``; None when there is none or it cannot be read (a warning)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is encoded again
        logger.warning("latent cache %s is unreadable (%s); encoding again", path, err)
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    return CachedLatents(payload["moments"], flipped=payload["flipped"], extras=payload["extras"],
                         form=payload["form"], classes=payload["classes"], key=key)  # fmt: skip


def _encode_all(autoencoder: nn.Module, dataset: Any, flips: bool,
                batch_size: int) -> tuple[Tensor, Tensor | None, dict[str, Tensor], str]:  # fmt: skip
    """(moments, mirrored moments or None, batched extras, form) of every item, encoded in order."""
    device = module_device(autoencoder)
    parts: list[Tensor] = []
    mirrored: list[Tensor] = []
    extras: dict[str, list[Tensor]] = {}
    first = dataset[0]
    form = "tuple" if isinstance(first, (tuple, list)) else "dict" if isinstance(first, Mapping) else "tensor"
    with eval_mode(autoencoder), torch.no_grad():
        for start in tqdm(range(0, len(dataset), batch_size), desc="encoding latents", disable=None):
            batch = collate_batch([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
            images, more = split_batch(batch)
            images = images.to(device)
            parts.append(codec(autoencoder).encode(images).moments.float().cpu())
            if flips:
                mirrored.append(codec(autoencoder).encode(images.flip(-1)).moments.float().cpu())
            for name, value in more.items():
                extras.setdefault(name, []).append(_tensor_entry(name, value))
    flipped = torch.cat(mirrored) if flips else None
    return torch.cat(parts), flipped, {name: torch.cat(values) for name, values in extras.items()}, form


def _tensor_entry(name: str, value: Any) -> Tensor:
    """A batched extra entry as a tensor; ValueError for one that is not (strings, say)."""
    if not isinstance(value, Tensor):
        raise ValueError(
            f"the dataset's items carry {name} of type {type(value).__name__}; a latent cache keeps numbers and "
            "tensors only (encode captions to embeddings first)"
        )
    return value.cpu()


# ----- the key -------------------------------------------------------------------------------------------------------


def cache_key(autoencoder: nn.Module, dataset: Any, flips: bool) -> str:
    """SHA-256 (hex) of everything the cached latents depend on (module docstring)."""
    described = {
        "version": CACHE_VERSION,
        "autoencoder": {"class": type(autoencoder).__name__, "config": getattr(autoencoder, "config", None)},
        "weights": weights_digest(autoencoder),
        "data": dataset_fingerprint(dataset),
        "flips": bool(flips),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict: every entry's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def dataset_fingerprint(dataset: Any) -> Any:
    """What identifies the data: an image folder's listing, the dataset's ``fingerprint``, else a digest of every
    item (module docstring). ValueError for an image folder that flips its items at random."""
    if isinstance(dataset, ImageFiles):
        if dataset.augment_horizontal_flip:
            raise ValueError(
                "the image folder flips its items at random (augment_horizontal_flip=True): their latents cannot be "
                "cached; cache with flips=True instead, which encodes both orientations"
            )
        files = [[os.fspath(path), *_stat(path)] for path in dataset.paths]
        return {"class": type(dataset).__name__, "image_size": list(dataset.image_size),
                "channels": dataset.channels, "files": files}  # fmt: skip
    own = getattr(dataset, "fingerprint", None)
    if own is not None:
        return own() if callable(own) else own
    digest = hashlib.sha256(f"{type(dataset).__name__}:{len(dataset)};".encode())
    for index in range(len(dataset)):
        images, extras = split_batch(collate_batch([dataset[index]]))
        for name, value in [(IMAGE_KEY, images), *sorted(extras.items())]:
            tensor = torch.as_tensor(value)
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _stat(path: Path) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file; (−1, −1) when it is gone (it will fail when read)."""
    try:
        found = path.stat()
    except OSError:
        return -1, -1
    return found.st_size, found.st_mtime_ns


def _tensor_bytes(tensor: Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, bfloat16 included), on the CPU."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
