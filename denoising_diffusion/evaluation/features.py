"""Choosing a feature extractor by name, and naming it for the real-feature cache.

``--features`` (and :func:`resolve_extractor`) takes:

* ``inception`` (the default): the standard FID Inception-v3 features (inception.py);
* ``module:attribute``: any importable :data:`~denoising_diffusion.evaluation.FeatureExtractor`, a callable
  images (N, C, H, W) in [0, 1] -> (N, F): a function, an ``nn.Module`` instance (put in eval mode), a torchvision
  model wrapped by you, the benchmarks' trained SmallImageClassifier saved as a module-level object ...
  ``attribute`` may be dotted (``pkg.mod:Holder.extractor``).

An extractor's *identity* names what its features mean: for Inception the weights, quantization and resize; for an
importable one its spec plus a SHA-256 of its content (a module's class, parameter and buffer values; a function's
source), so retraining a network or editing a function invalidates the cached real features.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from dataclasses import dataclass

import torch
from torch import nn

from .frechet import FeatureExtractor
from .inception import INCEPTION_IDENTITY, load_inception

INCEPTION = "inception"


@dataclass(frozen=True)
class NamedExtractor:
    """An extractor and its identity (what the cache keys on)."""

    extractor: FeatureExtractor
    identity: str


def _module_digest(module: nn.Module) -> str:
    digest = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _code_digest(obj: object) -> str:
    target = obj if inspect.isfunction(obj) or inspect.ismethod(obj) else type(obj)
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):  # built-ins, objects defined interactively
        text = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', repr(target))}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def extractor_identity(extractor: FeatureExtractor, name: str) -> str:
    """``name`` plus a digest of what the extractor computes (module weights or function source)."""
    digest = _module_digest(extractor) if isinstance(extractor, nn.Module) else _code_digest(extractor)
    return f"{name}#{digest}"


def import_extractor(spec: str) -> FeatureExtractor:
    """The object at ``module:attribute`` (dotted attribute allowed); an nn.Module is switched to eval mode."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"features {spec!r}: expected 'inception' or 'module:attribute'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"features {spec!r}: cannot import {module_name!r} ({err})") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"features {spec!r}: {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"features {spec!r} is a {type(obj).__name__}, not a callable images -> features")
    if isinstance(obj, nn.Module):
        obj.eval()
    return obj


def resolve_extractor(
    spec: str = INCEPTION,
    *,
    inception_weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> NamedExtractor:
    """The extractor ``spec`` names ('inception' or 'module:attribute'), with its identity; an nn.Module is moved
    to ``device`` (feed it images there)."""
    if spec == INCEPTION:
        return NamedExtractor(load_inception(inception_weights, device=device), INCEPTION_IDENTITY)
    if ":" not in spec:
        raise ValueError(f"unknown features {spec!r}; allowed values: 'inception' or an importable 'module:attribute'")
    extractor = import_extractor(spec)
    if isinstance(extractor, nn.Module):
        extractor.to(device)
    return NamedExtractor(extractor, extractor_identity(extractor, spec))
