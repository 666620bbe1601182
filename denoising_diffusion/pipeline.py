"""Config -> objects, for every model kind: the spec of a model, rebuilding one from it, and the files that carry
both (:func:`load_pipeline`, :func:`save_pipeline`).

A *spec* is a JSON dict: ``{"kind": <registered name>, **the object's config}``, where each part of the kind (a
constructor argument that is itself a model, see registry.py) is a nested spec, or a list of them::

    {"kind": "GaussianDiffusion", "image_size": [32, 32], "timesteps": 1000, ...,
     "model": {"kind": "Unet", "dim": 64, "dim_mults": [1, 2, 4, 8], ...}}

:func:`build` turns a spec back into objects, parts first. Only registered kinds are built, and only their
declared parts are treated as specs, so a config never chooses code. A new kind (a conditional network, a
classifier, a cascade, a latent model) joins with ``@model_kind(parts=...)`` where it is defined; nothing here
changes. An object of an unregistered class still has a spec (its class name, and its config if it has one), so a
Trainer can check and resume its checkpoints; only rebuilding it from the file alone is refused.

Files (the format is checkpoint.py's): a training checkpoint holds the trained network's online and EMA weights
(``model``, ``ema``); a pipeline file written by :func:`save_pipeline` holds the state dict of the whole object
(``weights``), so a composition of several networks is one file. :func:`load_pipeline` reads both, and the
format-1 checkpoints written before kinds were registered.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import (
    CheckpointError,
    check_format,
    config_differences,
    load_checkpoint,
    make_checkpoint,
    network_weights,
    save_checkpoint,
)
from .registry import ModelKind, kind_named, kind_of, registered_kinds

Spec = dict[str, Any]

ABOVE_THE_PIPELINE = ("cli", "training", "__main__")
"""Top-level modules of the package that sit above the pipeline (they never define a model kind)."""


def discover_kinds() -> None:
    """Import every module of the package below the pipeline, so that each model kind registers itself wherever it is
    defined: nothing keeps a list of the modules that define kinds (a kind outside the package registers when its
    own module is imported)."""
    for module in pkgutil.walk_packages(importlib.import_module(__package__).__path__, prefix=f"{__package__}."):
        if module.name.split(".")[1] not in ABOVE_THE_PIPELINE:
            importlib.import_module(module.name)


def find_kind(name: str) -> ModelKind | None:
    """The kind registered as ``name``, looking through the package's modules (:func:`discover_kinds`) when it is
    not registered yet; None when no module defines it."""
    kind = kind_named(name)
    if kind is None:
        discover_kinds()
        kind = kind_named(name)
    return kind


def spec_of(obj: Any) -> Spec:
    """The spec of ``obj``: ``{"kind": ..., **obj.config}`` with its parts' specs nested (see the module docstring).

    An unregistered object gets ``{"kind": <class name>, **config}`` (its config if it records one): enough to
    compare two models, not to rebuild one.
    """
    kind = kind_of(type(obj))
    config = getattr(obj, "config", None)
    spec: Spec = {"kind": kind.name if kind is not None else type(obj).__name__}
    if isinstance(config, Mapping):
        spec.update(config)
    for part in kind.parts if kind is not None else ():
        value = getattr(obj, part)
        spec[part] = [spec_of(v) for v in value] if isinstance(value, (list, tuple, nn.ModuleList)) else spec_of(value)
    return spec


def unbuildable_parts(spec: Spec, where: str = "") -> list[str]:
    """Where ``spec`` names a class that :func:`build` cannot make ('model: PlainNet'); [] when all are registered."""
    kind = find_kind(spec.get("kind", ""))
    here = f"{where}: " if where else ""
    if kind is None:
        return [f"{here}{spec.get('kind')!r}"]
    found = []
    for part in kind.parts:
        value = spec.get(part)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            name = f"{where}.{part}".lstrip(".") + (f"[{i}]" if isinstance(value, list) else "")
            found += unbuildable_parts(item, name) if isinstance(item, dict) else [f"{name}: missing"]
    return found


def build(spec: Mapping[str, Any]) -> Any:
    """Rebuild the objects a spec describes, parts first. Raises ValueError naming every kind that is not
    registered (and listing those that are)."""
    missing = unbuildable_parts(dict(spec))
    if missing:
        raise ValueError(
            f"cannot rebuild {', '.join(missing)}: not a registered model kind (registered: "
            f"{', '.join(registered_kinds())}). Import the module that defines it (its class must be "
            "decorated with @model_kind), or build the model yourself and load its weights"
        )
    kind = find_kind(spec["kind"])
    assert kind is not None  # checked above
    args = {key: value for key, value in spec.items() if key != "kind"}
    for part in kind.parts:
        value = args[part]
        args[part] = [build(v) for v in value] if isinstance(value, list) else build(value)
    return kind.cls(**args)


def checkpoint_spec(checkpoint: Mapping[str, Any]) -> Spec:
    """The spec stored in a checkpoint; a format-1 config ``{"model_class", "model", "diffusion"}`` is converted."""
    config = dict(checkpoint["config"])
    if checkpoint.get("format_version") == 1 and "diffusion" in config:
        network = {"kind": config.get("model_class"), **(config.get("model") or {})}
        return {"kind": "GaussianDiffusion", **config["diffusion"], "model": network}
    return config


def load_weights(model: nn.Module, checkpoint: Mapping[str, Any], use_ema: bool = False) -> None:
    """Load a training checkpoint into ``model`` after checking that the specs agree: the trained network's weights
    (``model.model``; the EMA's with ``use_ema``) and, from format 3 on, the rest of the trainable (``parts``:
    frozen parts such as an autoencoder, and buffers).

    Raises CheckpointError naming every config field that differs (for example ``model.dim: checkpoint has 8, this
    model has 16``), instead of torch's wall of missing and unexpected keys.
    """
    check_format(checkpoint)
    differences = config_differences(checkpoint_spec(checkpoint), spec_of(model))
    if differences:
        raise CheckpointError("the checkpoint was written for a different model:\n  " + "\n  ".join(differences))
    load_trained(model, checkpoint, use_ema)


def trainable_parts(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """(the module path of the trained network ``model.model``, the state dict of everything else in ``model``):
    what a training checkpoint stores beside the network, so that a composed model (frozen parts included) rebuilds
    from the file alone."""
    network = trained_network(model)
    path = next(name for name, module in model.named_modules() if module is network)
    prefix = f"{path}."
    return path, {key: value for key, value in model.state_dict().items() if not key.startswith(prefix)}


def load_trained(model: nn.Module, checkpoint: Mapping[str, Any], use_ema: bool) -> None:
    """Load a training checkpoint's network (EMA or online) and, from format 3 on, its other parts into ``model``.
    A file without ``parts`` (format 2) fits only a model whose state is its network: CheckpointError naming the
    weights it lacks otherwise (a latent model's frozen autoencoder), rather than keeping their random values."""
    trained_network(model).load_state_dict(network_weights(checkpoint, use_ema))
    if "parts" in checkpoint:
        load_parts(model, checkpoint["parts"])
        return
    lacking = sorted(trainable_parts(model)[1])
    if lacking:
        raise CheckpointError(
            f"the checkpoint holds only the trained network (format 2), but a {type(model).__name__} also has "
            f"weights outside it ({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}): without them it "
            "cannot work (a latent model cannot decode without its autoencoder's weights)"
        )


def load_parts(model: nn.Module, parts: Mapping[str, Any]) -> None:
    """Load a checkpoint's ``parts`` (:func:`trainable_parts`) into ``model``; CheckpointError when they are not
    exactly the model's parts outside its network."""
    expected = trainable_parts(model)[1]
    missing, unexpected = sorted(set(expected) - set(parts)), sorted(set(parts) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"the checkpoint's parts do not fit the model: missing {missing[:5] or 'none'}, "
            f"unexpected {unexpected[:5] or 'none'}"
        )
    model.load_state_dict(dict(parts), strict=False)


def trained_network(model: nn.Module) -> nn.Module:
    """``model.model``: the network a training checkpoint's weights belong to (training/trainable.py)."""
    network = getattr(model, "model", None)
    if not isinstance(network, nn.Module):
        raise CheckpointError(f"a {type(model).__name__} has no .model network to load a training checkpoint into")
    return network


def load_pipeline(path: str | os.PathLike[str], use_ema: bool = True, device: str | torch.device = "cpu") -> Any:
    """Rebuild a model from a checkpoint or pipeline file alone, in eval mode, on ``device``.

    A training checkpoint gives its EMA weights when it has them and ``use_ema`` is true, else the online weights;
    a pipeline file (:func:`save_pipeline`) gives the weights it holds. Raises CheckpointError naming the file when
    the spec names a class that is not registered.
    """
    checkpoint = load_checkpoint(path)
    source = f"checkpoint {os.fspath(path)!r}"
    check_format(checkpoint, source)
    try:
        model = build(checkpoint_spec(checkpoint))
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None
    if "weights" in checkpoint:
        model.load_state_dict(checkpoint["weights"])
    else:
        load_trained(model, checkpoint, use_ema)
    return model.to(device).eval()


def save_pipeline(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (any registered kind, a composition of several networks included) to one file that
    :func:`load_pipeline` rebuilds it from: its spec and the state dict of the whole object, written atomically.

    Raises ValueError, before writing, when a part is not a registered kind (the file could not be rebuilt).
    """
    spec = spec_of(model)
    missing = unbuildable_parts(spec)
    if missing:
        raise ValueError(
            f"cannot save {', '.join(missing)} as a pipeline: not a registered model kind (decorate its "
            "class with @model_kind and record its constructor arguments in .config)"
        )
    return save_checkpoint(path, make_checkpoint(config=spec, weights=model.state_dict()))
