"""Conditions: what a network takes besides (x_t, t), declared by the network and checked in one place
(DESIGN.md, Conditioning).

A condition is a small set of named tensors, for a batch of B images (C, H, W):

* ``classes``: class labels (B,) int64 in [0, K) (a network built with ``num_classes=K``);
* ``context``: an embedding sequence (B, L, D), e.g. a text encoder's output (``context_dim=D``), with an optional
  ``context_mask`` (B, L) bool, True where a token is real (padding False);
* ``cond_image``: an image (B, C', H, W) concatenated to the network's input (``cond_image_channels=C'``): a
  low-resolution image upsampled to (H, W) for super-resolution, a mask for inpainting models;
* ``cond_level``: a per-sample scalar (B,), such as the noise level of conditioning augmentation.

The network declares which it takes (:class:`ConditionSpec`, ``network.condition_spec``). GaussianDiffusion checks
a condition against it (:func:`check_condition`: a missing, unexpected or malformed entry is a ValueError naming
it), passes it to the network in training and sampling, and binds it into the denoiser before a sampler runs, so
samplers never see it. Classes and contexts can be *dropped* (replaced by the network's learned null class and
null context), which is how a model learns the unconditional branch of classifier-free guidance
(guidance.py). The image and level conditions are dropped only by a network built with a null for them
(``image_null``: a super-resolution stage's low-resolution input, docs/cascade.md): the image is then zeroed and the
level's embedding replaced by a learned null, together with the classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .data.batch import describe_extras, split_batch

CONDITION_NAMES = ("classes", "context", "context_mask", "cond_image", "cond_level")
DROPPABLE = ("classes", "context")  # those with a learned null; dropping them trains the unconditional branch
DATASET_KEYS = {
    "label": "classes",
    "context": "context",
    "context_mask": "context_mask",
    "cond_image": "cond_image",
    "cond_level": "cond_level",
}
"""The entries of a dataset's dict items that are conditions, and the condition each one is (``label`` is
``classes``); the second element of an (image, label) pair is ``classes`` too."""

Condition = dict[str, Tensor]


@dataclass(frozen=True)
class ConditionSpec:
    """What a network takes. num_classes: K, labels in [0, K), or None; context_dim: D of (B, L, D) context
    sequences, or None; cond_image_channels: C' of a concatenated image, or None; cond_level: whether it takes a
    per-sample scalar (B,); image_null: whether the image (and the level) can be dropped for a learned null."""

    num_classes: int | None = None
    context_dim: int | None = None
    cond_image_channels: int | None = None
    cond_level: bool = False
    image_null: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        """The condition names a model with this spec must be given (context_mask is optional)."""
        taken = {
            "classes": self.num_classes is not None,
            "context": self.context_dim is not None,
            "cond_image": self.cond_image_channels is not None,
            "cond_level": self.cond_level,
        }
        return tuple(name for name, yes in taken.items() if yes)

    @property
    def droppable(self) -> tuple[str, ...]:
        """The conditions this network can replace by a learned null (for classifier-free guidance)."""
        nulls = DROPPABLE + (("cond_image", "cond_level") if self.image_null else ())
        return tuple(name for name in self.required if name in nulls)

    def describe(self) -> str:
        """'num_classes=10, context_dim=512' or 'no condition'."""
        parts = [
            f"num_classes={self.num_classes}" if self.num_classes is not None else "",
            f"context_dim={self.context_dim}" if self.context_dim is not None else "",
            f"cond_image_channels={self.cond_image_channels}" if self.cond_image_channels is not None else "",
            "cond_level=True" if self.cond_level else "",
            "image_null=True" if self.image_null else "",
        ]
        return ", ".join(p for p in parts if p) or "no condition"


UNCONDITIONAL = ConditionSpec()


def condition_spec_of(network: Any) -> ConditionSpec:
    """The network's declared ConditionSpec (``network.condition_spec``), or UNCONDITIONAL if it declares none."""
    spec = getattr(network, "condition_spec", None)
    return spec if isinstance(spec, ConditionSpec) else UNCONDITIONAL


def check_condition(
    spec: ConditionSpec, condition: Mapping[str, Any], batch_size: int, image_size: tuple[int, int]
) -> Condition:
    """The condition as tensors, checked against ``spec`` for a batch of ``batch_size`` images of ``image_size``.

    Entries that are None count as not given. Raises ValueError naming the problem: an unknown name, a condition
    this model does not take (an unconditional model takes none), a required one missing, a wrong shape or dtype,
    a label outside [0, K), a mask without a context or of another length.
    """
    given = {name: value for name, value in condition.items() if value is not None}
    unknown = sorted(set(given) - set(CONDITION_NAMES))
    if unknown:
        raise ValueError(
            f"unknown condition {', '.join(map(repr, unknown))}; conditions are {', '.join(CONDITION_NAMES)}"
        )
    allowed = set(spec.required) | ({"context_mask"} if spec.context_dim is not None else set())
    unexpected = sorted(set(given) - allowed)
    if unexpected:
        raise ValueError(
            f"this model takes {spec.describe()}, so it cannot be given {', '.join(map(repr, unexpected))}"
        )
    missing = [name for name in spec.required if name not in given]
    if missing:
        raise ValueError(
            f"this model was built with {spec.describe()}: pass {', '.join(f'{n}=' for n in missing)}"
            " when training and sampling"
        )
    checked: Condition = {}
    for name, value in given.items():
        checked[name] = _CHECKS[name](spec, torch.as_tensor(value), batch_size, image_size)
    if "context_mask" in checked and checked["context_mask"].shape[1] != checked["context"].shape[1]:
        raise ValueError(
            f"context_mask has {checked['context_mask'].shape[1]} tokens but context has {checked['context'].shape[1]}"
        )
    return checked


def _shape_error(name: str, expected: str, value: Tensor) -> ValueError:
    return ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")


def _check_classes(spec: ConditionSpec, value: Tensor, batch: int, size: tuple[int, int]) -> Tensor:
    if value.dtype.is_floating_point or value.dtype == torch.bool:
        raise ValueError(f"classes must be integer labels, got a {value.dtype} tensor")
    if value.shape != (batch,):
        raise _shape_error("classes", f"({batch},) (one label per image)", value)
    k = spec.num_classes or 0
    bad = value[(value < 0) | (value >= k)]
    if bad.numel():
        raise ValueError(f"class label {int(bad[0])} is outside [0, {k}) (this model has {k} classes)")
    return value.long()


def _check_context(spec: ConditionSpec, value: Tensor, batch: int, size: tuple[int, int]) -> Tensor:
    if value.ndim != 3 or value.shape[0] != batch or value.shape[2] != spec.context_dim:
        raise _shape_error("context", f"({batch}, L, {spec.context_dim}) (batch, tokens, context_dim)", value)
    if not value.dtype.is_floating_point:
        raise ValueError(f"context must be a float tensor, got {value.dtype}")
    return value


def _check_mask(spec: ConditionSpec, value: Tensor, batch: int, size: tuple[int, int]) -> Tensor:
    if value.ndim != 2 or value.shape[0] != batch:
        raise _shape_error("context_mask", f"({batch}, L) (True for real tokens)", value)
    if value.dtype != torch.bool:
        raise ValueError(f"context_mask must be a bool tensor (True for real tokens), got {value.dtype}")
    if not bool(value.any(dim=1).all()):
        raise ValueError("context_mask masks out every token of some sample; keep at least one per sample")
    return value


def _check_image(spec: ConditionSpec, value: Tensor, batch: int, size: tuple[int, int]) -> Tensor:
    expected = (batch, spec.cond_image_channels, *size)
    if tuple(value.shape) != expected:
        raise _shape_error("cond_image", f"{expected} (batch, cond_image_channels, height, width)", value)
    return value.float() if not value.dtype.is_floating_point else value


def _check_level(spec: ConditionSpec, value: Tensor, batch: int, size: tuple[int, int]) -> Tensor:
    if value.shape != (batch,):
        raise _shape_error("cond_level", f"({batch},) (one value per image)", value)
    return value.float() if not value.dtype.is_floating_point else value


_CHECKS = {
    "classes": _check_classes,
    "context": _check_context,
    "context_mask": _check_mask,
    "cond_image": _check_image,
    "cond_level": _check_level,
}


def broadcast_condition(condition: Mapping[str, Any], batch_size: int) -> dict[str, Any]:
    """A condition for ``batch_size`` images: an int label, or any entry with a batch of 1, is repeated."""
    out: dict[str, Any] = {}
    for name, value in condition.items():
        if value is None:
            continue
        if not isinstance(value, (Tensor, int, float, str)):  # NumPy arrays, lists of numbers
            value = torch.as_tensor(value)
        if name == "classes" and isinstance(value, int) and not isinstance(value, bool):
            value = torch.full((batch_size,), value, dtype=torch.long)
        elif isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == 1 and batch_size != 1:
            value = value.expand(batch_size, *value.shape[1:])
        elif isinstance(value, Tensor) and value.ndim == 0 and name in ("classes", "cond_level"):
            value = value.expand(batch_size)
        out[name] = value
    return out


def repeat_condition(condition: Condition, times: int) -> Condition:
    """Each entry repeated ``times`` along the batch: the condition of a batch stacked ``times`` over itself."""
    return {name: value.repeat(times, *([1] * (value.ndim - 1))) for name, value in condition.items()}


def batch_condition(extras: Mapping[str, Any], spec: ConditionSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split what a batch carries besides its images (batch.split_batch's extras) into (the condition the network
    takes, what it drops). An (image, label) pair's label (extra '[1]') and a dict's ``label`` are ``classes``;
    a dict's ``context``, ``context_mask``, ``cond_image`` and ``cond_level`` are those conditions."""
    taken = set(spec.required) | ({"context_mask"} if spec.context_dim is not None else set())
    condition: dict[str, Any] = {}
    dropped: dict[str, Any] = {}
    for key, value in extras.items():
        name = "classes" if key == "[1]" else DATASET_KEYS.get(key)
        if name is not None and name in taken:
            condition[name] = value
        else:
            dropped[key] = value
    return condition, dropped


class BatchSplitter:
    """A model's view of its training batches (data/batch.py): ``splitter(batch, spec)`` gives (images, the
    condition a network with ``spec`` takes); what it does not take is named in one UserWarning, the first time
    (``who``: how the warning names the model, e.g. 'this GaussianDiffusion')."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.warned = False

    def __call__(self, batch: Any, spec: ConditionSpec) -> tuple[Tensor, dict[str, Any]]:
        images, extras = split_batch(batch)
        condition, dropped = batch_condition(extras, spec)
        if dropped and not self.warned:
            self.warned = True
            what = f"{self.who} takes {spec.describe()}, so the batch's {describe_extras(dropped)} is dropped"
            warnings.warn(what, UserWarning, stacklevel=3)
        return images, condition


def check_class_names(names: Any, spec: ConditionSpec) -> list[str] | None:
    """``class_names`` as a list of distinct strings, one per class of a class-conditional network (or None)."""
    if names is None:
        return None
    if spec.num_classes is None:
        raise ValueError("class_names were given, but the network takes no classes (build it with num_classes=)")
    names = [str(name) for name in names]
    if len(names) != spec.num_classes or len(set(names)) != len(names):
        raise ValueError(
            f"class_names must be {spec.num_classes} distinct names (the network's num_classes), got "
            f"{len(names)}{' with repeats' if len(set(names)) != len(names) else ''}"
        )
    return names


def class_indices(classes: Any, class_names: list[str] | None) -> Any:
    """Labels as given, with class names (a str, or strs in a list or tuple) replaced by their indices; anything
    else is returned as it is (check_condition judges it). Raises ValueError listing the known names for a name
    that is not one of them."""
    if isinstance(classes, str):
        return _class_index(classes, class_names)
    if isinstance(classes, (list, tuple)):
        return torch.tensor([_class_index(c, class_names) if isinstance(c, str) else c for c in classes])
    return classes


def _class_index(name: str, class_names: list[str] | None) -> int:
    if class_names is None or name not in class_names:
        known = (
            ", ".join(map(repr, class_names)) if class_names else "none (the model has no class_names: ask by index)"
        )
        raise ValueError(f"unknown class {name!r}; known classes: {known}")
    return class_names.index(name)
