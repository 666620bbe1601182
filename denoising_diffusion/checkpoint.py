"""Checkpoints: plain tensors plus a JSON-able config, written atomically, loaded with ``weights_only=True``.

Layout of a checkpoint (format_version 1), as :func:`make_checkpoint` builds it::

    {
        "format_version": 1,
        "package_version": "0.1.0",
        "config": {"model_class": "Unet", "model": unet.config, "diffusion": diffusion.config},
        "step": int,                      # optimizer steps taken
        "model": network state dict,      # diffusion.model.state_dict(): the online weights
        "ema": EMA state dict or None,    # ema_pytorch.EMA(include_online_model=False).state_dict()
        "opt": optimizer state dict or None,
        "scaler": gradient scaler state dict or None,
        ...                               # optional extra entries (the Trainer adds "trainer": trainer_state.py)
    }

Schedule tables are derived from the diffusion config, so they are not stored. The config alone is enough to
rebuild the network and the diffusion (:func:`load_pipeline`); no pickled Python object is ever loaded.

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
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from denoising_diffusion.diffusion import GaussianDiffusion

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
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


def _package_version() -> str:
    import denoising_diffusion  # the package is fully imported by the time a checkpoint is written

    version = getattr(denoising_diffusion, "__version__", None)
    if version is not None:
        return str(version)
    try:
        return metadata.version("denoising-diffusion")
    except metadata.PackageNotFoundError:
        return "unknown"


def _jsonable(value: Any) -> Any:
    """Normalise a config to what it would be after a JSON round trip (tuples -> lists)."""
    return json.loads(json.dumps(value, default=str))


def pipeline_config(diffusion: nn.Module) -> dict[str, Any]:
    """The rebuild recipe of a diffusion: {"model_class", "model": network.config, "diffusion": diffusion.config}.

    ``model`` is None when the network records no ``config`` (a user's own network): such a checkpoint can be
    resumed by a Trainer but not rebuilt by :func:`load_pipeline`.
    """
    network = diffusion.model
    model_config = getattr(network, "config", None)
    return {
        "model_class": type(network).__name__,
        "model": dict(model_config) if model_config is not None else None,
        "diffusion": dict(diffusion.config),
    }


def make_checkpoint(
    diffusion: nn.Module,
    *,
    step: int,
    ema: Mapping[str, Any] | None = None,
    opt: Mapping[str, Any] | None = None,
    scaler: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble the checkpoint dict described in this module's docstring. ``diffusion`` must be unwrapped (not DDP).

    The weights are the online network's (``diffusion.model.state_dict()``); ``ema``, ``opt`` and ``scaler`` are
    state dicts or None; ``extra`` entries are stored as they are.
    """
    reserved = {"format_version", "package_version", "config", "step", "model", "ema", "opt", "scaler"}
    clash = reserved & extra.keys()
    if clash:
        raise ValueError(f"extra checkpoint entries may not use the reserved names {sorted(clash)}")
    return {
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "config": pipeline_config(diffusion),
        "step": int(step),
        "model": diffusion.model.state_dict(),
        "ema": dict(ema) if ema is not None else None,
        "opt": dict(opt) if opt is not None else None,
        "scaler": dict(scaler) if scaler is not None else None,
        **extra,
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
    if not isinstance(version, int) or "config" not in checkpoint or "model" not in checkpoint:
        raise CheckpointError(f"{source} is not a denoising_diffusion checkpoint (no format_version/config/model)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} has format_version {version}, newer than this package reads ({FORMAT_VERSION}); upgrade "
            "denoising_diffusion"
        )


def network_weights(checkpoint: Mapping[str, Any], use_ema: bool = True) -> dict[str, Tensor]:
    """The network state dict to load: the EMA weights if ``use_ema`` and the checkpoint has initialised ones,
    otherwise the online weights."""
    ema = checkpoint.get("ema")
    if use_ema and ema is not None:
        if bool(ema.get("initted", True)):
            return {k[len(_EMA_PREFIX) :]: v for k, v in ema.items() if k.startswith(_EMA_PREFIX)}
        logger.info("the checkpoint's EMA was never updated; using the online weights")
    return dict(checkpoint["model"])


def load_weights(diffusion: nn.Module, checkpoint: Mapping[str, Any], use_ema: bool = False) -> None:
    """Load a checkpoint's network weights into ``diffusion.model`` after checking that the configs agree.

    Raises CheckpointError naming every config field that differs (for example ``model.dim``), instead of
    torch's wall of missing and unexpected keys.
    """
    check_format(checkpoint)
    differences = config_differences(checkpoint["config"], pipeline_config(diffusion))
    if differences:
        raise CheckpointError("the checkpoint was written for a different model:\n  " + "\n  ".join(differences))
    diffusion.model.load_state_dict(network_weights(checkpoint, use_ema))


def load_pipeline(path: str | os.PathLike[str], use_ema: bool = True,
                  device: str | torch.device = "cpu") -> GaussianDiffusion:
    """Rebuild the network and the GaussianDiffusion from a checkpoint file alone, in eval mode.

    Loads the EMA weights when the checkpoint has them and ``use_ema`` is true, else the online weights.
    """
    # Imported here so that reading and writing checkpoints never imports the networks (and no import cycle forms).
    from denoising_diffusion.diffusion import GaussianDiffusion
    from denoising_diffusion.nn.unet import Unet

    model_classes: dict[str, type[nn.Module]] = {"Unet": Unet}
    checkpoint = load_checkpoint(path)
    source = f"checkpoint {os.fspath(path)!r}"
    check_format(checkpoint, source)
    config = checkpoint["config"]
    model_class = model_classes.get(config.get("model_class"))
    if model_class is None or config.get("model") is None:
        raise CheckpointError(
            f"{source} holds a {config.get('model_class')!r} network without a recorded config; load_pipeline can "
            f"rebuild only {sorted(model_classes)}. Build the network yourself and use load_weights"
        )
    diffusion = GaussianDiffusion(model_class(**config["model"]), **config["diffusion"])
    diffusion.model.load_state_dict(network_weights(checkpoint, use_ema))
    return diffusion.to(device).eval()
