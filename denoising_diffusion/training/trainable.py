"""What the Trainer trains: the contract between it and a model (DESIGN.md, Trainer).

A *trainable* is an ``nn.Module`` that

* turns a batch into a scalar loss when called: ``loss = trainable(batch)``, where the batch is what data/batch.py
  describes (images, (image, label) pairs or dicts). Calling the module (not a method) keeps accelerate's
  DistributedDataParallel wrapper in the loop;
* names the network to average: ``trainable.model`` (an ``nn.Module``). The EMA averages it, its weights are a
  checkpoint's ``model`` entry, and everything else in the trainable is derived from the config (GaussianDiffusion
  keeps only non-persistent schedule tables);
* says which images it trains on: ``channels`` and ``image_size`` (H, W), so a folder is read at that size.

GaussianDiffusion meets it today; a noise-aware classifier, an autoencoder or a super-resolution stage meets it
by having these three things. A trainable that can also draw samples (:class:`Previewable`: ``with_model`` and
``sample``) gets sample grids at every milestone.

A trainable whose config holds a statistic of its training data (:class:`FitsData`: GaussianDiffusion's σ_max of
a VE or NCSN process, Song & Ermon 2020, technique 1) says so with ``needs_data_statistics``; the Trainer then, once
before the first step, either takes the statistic from the checkpoint it resumes (``restore_data_statistics``) or
computes it with ``fit_data_statistics`` from up to :data:`FIT_IMAGES` images of its dataset, drawn in an order
seeded by the data seed, so that every process computes the same value.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..conditioning import ConditionSpec, condition_spec_of
from ..data.batch import Batch


@runtime_checkable
class Trainable(Protocol):
    """An nn.Module with ``model``, ``channels`` and ``image_size`` whose call maps a batch to a scalar loss."""

    model: nn.Module
    channels: int
    image_size: tuple[int, int]

    def __call__(self, batch: Batch) -> Tensor: ...


@runtime_checkable
class Previewable(Protocol):
    """A trainable that can sample: ``with_model(network)`` is the same model around another network (the EMA
    copy), and ``sample(n, generator=..., return_all_timesteps=...)`` returns images (n, C, H, W) in [0, 1]."""

    def with_model(self, model: nn.Module) -> Any: ...

    def sample(
        self, batch_size: int = 16, *, generator: torch.Generator | None = None, return_all_timesteps: bool = False
    ) -> Tensor: ...


@runtime_checkable
class DrawsPreviews(Protocol):
    """A trainable that draws its own milestone grids (a super-resolution stage shows its low-resolution input
    beside its output): ``preview(dataset, num_samples, generator=, chunk=, **options)`` returns (images (N, C, H, W)
    in [0, 1], images per grid row), called on the EMA copy (``with_model``). Without it the Trainer samples
    ``num_samples`` images with the conditions :func:`trainable_condition_spec` says the model takes."""

    def preview(
        self, dataset: Any, num_samples: int, *, generator: torch.Generator, chunk: int, **options: Any
    ) -> tuple[Tensor, int]: ...


def trainable_condition_spec(trainable: Any) -> ConditionSpec:
    """What the trainable (not its network) says it takes: its ``condition_spec`` when it has one (a composed model
    provides some of its network's conditions itself), else its network's."""
    spec = getattr(trainable, "condition_spec", None)
    return spec if isinstance(spec, ConditionSpec) else condition_spec_of(trainable.model)


FIT_IMAGES = 2000
"""How many training images (at most) the Trainer gives ``fit_data_statistics``."""


@runtime_checkable
class FitsData(Protocol):
    """A trainable with statistics of its training data in its config, computed once before training.

    * ``needs_data_statistics``: True while they are missing (a model given them by its user never needs fitting);
    * ``fit_data_statistics(images)``: compute them from images (N, C, H, W) in [0, 1] and store them in the config;
    * ``restore_data_statistics(config)``: take them from a stored config (a checkpoint's spec) instead, returning
      whether it had them.
    """

    @property
    def needs_data_statistics(self) -> bool: ...

    def fit_data_statistics(self, images: Tensor) -> Any: ...

    def restore_data_statistics(self, config: Any) -> bool: ...


def check_trainable(obj: Any) -> None:
    """Raise ValueError naming what ``obj`` lacks to be trained (see the module docstring)."""
    problems = []
    if not isinstance(obj, nn.Module):
        problems.append(f"it is a {type(obj).__name__}, not a torch.nn.Module")
    if not isinstance(getattr(obj, "model", None), nn.Module):
        problems.append("it has no .model network (the nn.Module the EMA averages)")
    if not isinstance(getattr(obj, "channels", None), int):
        problems.append("it has no int .channels")
    size = getattr(obj, "image_size", None)
    if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(s, int) for s in size)):
        problems.append("it has no .image_size (height, width)")
    if problems:
        raise ValueError(
            "the Trainer trains an nn.Module whose call maps a batch to a loss and that names its "
            f"network, channels and image_size (a GaussianDiffusion, for example); {type(obj).__name__} "
            f"cannot be trained: {'; '.join(problems)}"
        )
