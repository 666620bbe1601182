"""The checkpoint file format: plain tensors plus a JSON-able config, written atomically, loaded with
``weights_only=True``. This module knows no model: rebuilding objects from a config is pipeline.py's job.

A checkpoint is a dict. Every one carries ``format_version`` and ``package_version`` (:func:`make_checkpoint`
adds them) and a ``config``: the pipeline spec of what it holds (pipeline.py). Two layouts use it:

* a training checkpoint (the Trainer's ``model-{milestone}.pt``, format_version 3)::

      {"format_version": 3, "package_version": "0.1.0",
       "config": spec,                   # e.g. {"kind": "GaussianDiffusion", ..., "model": {"kind": "Unet", ...}}
       "step": int,                      # optimizer steps taken
       "model": network state dict,      # the trained network's online weights (trainable.model)
       "network_path": "model",          # where that network sits in the trainable (e.g. "diffusion.model")
       "parts": state dict,              # the rest of the trainable's state: frozen parts (an autoencoder), buffers
       "ema": EMA state dict or None,    # ema_pytorch.EMA(include_online_model=False).state_dict()
       "opt": optimizer state dict or None,
       "scaler": gradient scaler state dict or None,
       "trainer": {...}}                 # the Trainer's own state (training/trainer.py)

* a pipeline file (``pipeline.save_pipeline``): ``{"format_version", "package_version", "config": spec,
  "weights": state dict of the whole object}``. A composition of several networks (a cascade, a latent model)
  is one file: its state dict holds every network under its module path.

Format 1 (before the model-kind registry) stored ``config = {"model_class", "model", "diffusion"}``;
pipeline.py reads it. Format 2 had no ``parts`` (only the trained network was stored): it still loads and resumes,
for trainables whose state is their network (every kind of that time). Schedule tables are derived from the config,
so they are not stored; no pickled Python object is ever loaded.

Damage is detected before anything is unpickled: a file is a zip archive (torch.save's format) whose records all
carry a CRC-32, so a truncated file (no central directory) and a flipped bit inside the tensor data both raise
:class:`CorruptCheckpointError` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._version import __version__

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
_EMA_PREFIX = "ema_model."
_PLAIN_SCALARS = (bool, int, float, str, type(None))


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, refused by ``weights_only`` loading, or does not fit the model."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is truncated, damaged, not a checkpoint, or holds non-finite weights.

    ``Trainer(resume="auto")`` falls back to the previous checkpoint on this error (and only on this one: a file
    carrying pickled code, a newer format, or a checkpoint of another model stop the resume instead).
    """


# ----------------------------------------------------------------------------------------------------------------------
# Writing and reading files.


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is built only from tensors, dicts, lists, tuples and JSON scalars."""
    if isinstance(value, (Tensor, *_PLAIN_SCALARS)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key {where}[{key!r}] must be a str or int, got {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold only "
        "tensors, dicts, lists, tuples, str, int, float, bool and None"
    )


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a reader sees the old file or the complete new one, never a part.

    The payload is written to a temporary file in the same folder, flushed and fsynced, then renamed over ``path``
    with os.replace. The folder is created if needed. Raises TypeError (naming the entry) if the payload holds
    anything but tensors and plain JSON-like values, since ``weights_only`` loading would refuse it later.
    """
    _check_plain(dict(payload), "payload")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(dict(payload), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the OS allows opening a folder (POSIX); a no-op elsewhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint onto the CPU with ``torch.load(..., weights_only=True)``: no pickled code ever runs.

    Before unpickling, every record of the file's zip archive is checked against its CRC-32, so a truncated file
    and a flipped bit inside the tensor data are both caught. Raises FileNotFoundError if the file is missing,
    CorruptCheckpointError naming the file if it is truncated, damaged or not a dict, and CheckpointError if it
    holds pickled Python objects (the message names the refused class).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {os.fspath(path)!r}")
    if path.stat().st_size == 0:
        raise CorruptCheckpointError(f"checkpoint {os.fspath(path)!r} is empty (0 bytes)")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:
            raise CheckpointError(
                f"checkpoint {os.fspath(path)!r} contains a pickled Python object ({refused.group(1)}); it is refused "
                "because loading it could run arbitrary code (weights_only=True)"
            ) from None
        raise CorruptCheckpointError(
            f"checkpoint {os.fspath(path)!r} is corrupt or not a checkpoint: {_unpickler_detail(err)}"
        ) from err
    except Exception as err:  # noqa: BLE001 - unpickling damaged bytes raises anything (IndexError, KeyError...)
        raise CorruptCheckpointError(
            f"checkpoint {os.fspath(path)!r} is truncated or corrupt: {_error_text(err)}"
        ) from err
    if not isinstance(payload, dict):
        raise CorruptCheckpointError(
            f"checkpoint {os.fspath(path)!r} holds a {type(payload).__name__}, expected a dict"
        )
    return payload


def _check_archive(path: Path) -> None:
    """Raise CorruptCheckpointError if ``path`` is a zip archive (torch.save's format) with a damaged record.

    Files that are not zip archives at all are left to torch.load, which names what it finds.
    """
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()  # reads every record and compares its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise CorruptCheckpointError(
            f"checkpoint {os.fspath(path)!r} is truncated or corrupt: {_first_line(err)}"
        ) from err
    if bad_record is not None:
        raise CorruptCheckpointError(
            f"checkpoint {os.fspath(path)!r} is corrupt: its record {bad_record!r} fails the CRC-32 check"
        )


def verify_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """Check, without unpickling, that a file written by :func:`save_checkpoint` is a complete zip archive whose
    records all pass their CRC-32 check; raises CorruptCheckpointError naming it otherwise."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CorruptCheckpointError(f"checkpoint {os.fspath(path)!r} is truncated or not a checkpoint archive")
    _check_archive(path)


def _unpickler_detail(err: BaseException) -> str:
    """What torch's weights-only unpickler actually objected to, without its advice to load unsafely."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", str(err), flags=re.S)
    return match.group(1).strip() if match else _first_line(err)


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {_first_line(err)}" if str(err).strip() else type(err).__name__


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


# ----------------------------------------------------------------------------------------------------------------------
# The checkpoint layout.


def _jsonable(value: Any) -> Any:
    """Normalise a config to what it would be after a JSON round trip (tuples -> lists)."""
    return json.loads(json.dumps(value, default=str))


def make_checkpoint(*, config: Mapping[str, Any], **entries: Any) -> dict[str, Any]:
    """A checkpoint dict: ``format_version``, ``package_version``, the JSON-normalised ``config`` and ``entries``
    as they are (see this module's docstring for the two layouts)."""
    reserved = {"format_version", "package_version", "config"} & entries.keys()
    if reserved:
        raise ValueError(f"checkpoint entries may not use the reserved names {sorted(reserved)}")
    return {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": _jsonable(dict(config)),
        **entries,
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable lines 'field: checkpoint has X, this model has Y' for every config field that differs."""
    old, new = _flatten(_jsonable(dict(saved))), _flatten(_jsonable(dict(current)))
    lines = []
    for key in sorted(old.keys() | new.keys()):
        a = json.dumps(old[key]) if key in old else "(absent)"
        b = json.dumps(new[key]) if key in new else "(absent)"
        if a != b:
            lines.append(f"{key}: checkpoint has {a}, this model has {b}")
    return lines


def check_format(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Raise CheckpointError if ``checkpoint`` is not a format this package can read."""
    version = checkpoint.get("format_version")
    if not isinstance(version, int) or "config" not in checkpoint or not ({"model", "weights"} & checkpoint.keys()):
        raise CheckpointError(f"{source} is not a denoising_diffusion checkpoint (no format_version/config/weights)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format_version {version}, newer than this package reads ({FORMAT_VERSION}); upgrade "
            "denoising_diffusion"
        )


def network_weights(checkpoint: Mapping[str, Any], use_ema: bool = True) -> dict[str, Tensor]:
    """A training checkpoint's network state dict: the EMA weights if ``use_ema`` and the checkpoint has
    initialised ones, otherwise the online weights."""
    ema = checkpoint.get("ema")
    if use_ema and ema is not None:
        if bool(ema.get("initted", True)):
            return {k[len(_EMA_PREFIX) :]: v for k, v in ema.items() if k.startswith(_EMA_PREFIX)}
        logger.info("the checkpoint's EMA was never updated; using the online weights")
    return dict(checkpoint["model"])
