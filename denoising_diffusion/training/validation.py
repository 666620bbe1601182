"""A validation loss at each milestone (``Trainer(..., validation=...)``): the training objective on held-out data,
at noise fixed once, so that the numbers of different milestones are comparable.

**The set.** Up to ``num_items`` items of the validation data (a folder, any Dataset, a stream), chosen once: a
dataset's first items in a permutation seeded by ``seed``, a stream's first items (data/streams.first_items).
They are collated into batches of ``batch_size`` (default: the Trainer's ``train_batch_size``) once, and kept on
the CPU.

**Fixed t and ε.** Batch b's loss is computed under torch's generators seeded with ``mixed_seed(seed, b)``
(forked, so training's random state is untouched). Whatever the model draws for its loss, the times t, the noise
ε, the labels classifier-free guidance drops, the self-conditioning coin, is then drawn the same at every
milestone: for the same weights the loss is the same number, and it changes only when the weights do
(tests/training/test_validation.py). Without gradients, in eval mode, in float32 (no autocast), on the main
process; the online network gives ``val_loss``, the EMA network ``val_loss_ema`` (for models that can swap their
network, ``with_model``).

**Logged** to ``results/validation.csv`` (rows step, name, value, as metrics.csv), ``log_fn``, the trackers and the
log (INFO), at every milestone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from ema_pytorch import EMA, KarrasEMA
from torch import nn

from ..data.batch import Batch, collate_batch, split_batch
from ..data.datasets import OnBadImage
from ..data.streams import RecordStream, first_items, mixed_seed
from .loader import as_training_dataset, check_dataset_classes
from .log import report_values
from .trainable import Previewable, trainable_condition_spec

__all__ = ["Validation", "ValidationHook", "ValidationSet", "validation_loss"]


DEFAULT_ITEMS = 1000


@dataclass(frozen=True)
class Validation:
    """What ``Trainer(validation=...)`` takes beyond the data itself (a folder, a Dataset or a stream alone means
    these defaults).

    Args:
        data: held-out images: a folder path, a Dataset (items as the training set's), or a RecordStream.
        num_items: at most this many items are kept (the loss's cost at each milestone grows with it).
        seed: chooses the items and fixes t and ε.
        batch_size: items per forward pass (None: the Trainer's train_batch_size).
    """

    data: Any
    num_items: int = DEFAULT_ITEMS
    seed: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_items", "batch_size"):
            value = getattr(self, name)
            if (value is not None or name == "num_items") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"validation {name} must be an int >= 1, got {value!r}")


@torch.no_grad()
def validation_loss(model: nn.Module, batches: list[Batch], seed: int, device: torch.device) -> float:
    """The mean of ``model(batch)`` over ``batches`` (weighted by their sizes), batch b under generators seeded
    with mixed_seed(seed, b): the same draws of t and ε at every call. Eval mode inside, the mode restored."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for b, batch in enumerate(batches):
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(mixed_seed(seed, b))  # every device's generator
                loss = model(send_to_device(batch, device))
            size = split_batch(batch)[0].shape[0]
            total, count = total + float(loss) * size, count + size
    finally:
        model.train(was_training)
    return total / count


class ValidationSet:
    """The fixed validation batches and their seed (module docstring)."""

    def __init__(self, batches: list[Batch], seed: int) -> None:
        self.batches, self.seed = batches, seed

    @classmethod
    def build(cls, validation: Any, trainable: Any, on_bad_image: OnBadImage, batch_size: int) -> ValidationSet:
        """The set of ``validation`` (a :class:`Validation`, or its data alone) for ``trainable``, checked by one
        forward pass of one item (a model that cannot take the items fails here, before anything is written).
        ValueError for an empty set or items of another shape than the model's."""
        spec = validation if isinstance(validation, Validation) else Validation(validation)
        data = as_training_dataset(spec.data, trainable.channels, trainable.image_size, on_bad_image)
        check_dataset_classes(data, trainable_condition_spec(trainable).num_classes)
        if isinstance(data, RecordStream):
            items = first_items(data, spec.num_items, seed=spec.seed)
        else:
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(spec.seed))
            items = [data[i] for i in order[: spec.num_items].tolist()]
        if not items:
            raise ValueError("the validation data holds no readable item")
        size = spec.batch_size or batch_size
        batches = [collate_batch(items[i : i + size]) for i in range(0, len(items), size)]
        try:
            device = next(iter(trainable.parameters()), torch.empty(0)).device
            validation_loss(trainable, [collate_batch(items[:1])], spec.seed, device)
        except (ValueError, TypeError, RuntimeError) as err:
            raise ValueError(f"the model cannot compute a loss on the validation items: {err}") from None
        return cls(batches, spec.seed)


class ValidationHook:
    """The Trainer's validation at each milestone (a mixin of Trainer, which sets these attributes)."""

    accelerator: Accelerator
    trainable: Any
    ema: EMA | KarrasEMA | None
    results_folder: Path
    log_fn: Callable[[dict[str, float]], None] | None
    validation: ValidationSet | None
    step: int

    def validation_losses(self) -> dict[str, float]:
        """{'val_loss': online network, 'val_loss_ema': EMA network (when the model can swap it)} (main process)."""
        assert self.validation is not None
        device = self.accelerator.device
        values = {"val_loss": validation_loss(self.trainable, self.validation.batches, self.validation.seed, device)}
        if self.ema is not None and isinstance(self.trainable, Previewable):
            ema_model = self.trainable.with_model(self.ema.ema_model).to(device)
            values["val_loss_ema"] = validation_loss(ema_model, self.validation.batches, self.validation.seed, device)
        return values

    def validate(self) -> None:
        """At a milestone: the validation losses, logged beside the training loss (main process; the others wait)."""
        if self.validation is None:
            return
        if self.accelerator.is_main_process:
            path = self.results_folder / "validation.csv"
            report_values(self.accelerator, self.log_fn, path, self.step, self.validation_losses())
        self.accelerator.wait_for_everyone()
