"""The sample grids a Trainer writes at each milestone, for models that can sample (trainable.Previewable).

An unconditional model's grid is ``num_samples`` images from the same noise every time. A class-conditional
model's grid has one class per row (the first 10 classes at most) and ``num_samples // rows`` images per row.
Conditions the Trainer cannot invent (a context, an image, a level) are taken from the first items of the
training set, the same items at every milestone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._utils import chunk_sizes
from ..conditioning import batch_condition, condition_spec_of
from ..data.batch import collate_batch, split_batch

MAX_CLASS_ROWS = 10


def preview_condition(model: Any, dataset: Any, num_samples: int) -> tuple[dict[str, Any], int, int]:
    """(condition, number of images, images per grid row) of a milestone's grid for ``model`` (a trainable)."""
    spec = condition_spec_of(model.model)
    condition: dict[str, Any] = {}
    count, per_row = num_samples, max(1, math.ceil(math.sqrt(num_samples)))
    if spec.num_classes is not None:
        rows = min(MAX_CLASS_ROWS, spec.num_classes)
        per_row = max(1, num_samples // rows)
        count = rows * per_row
        condition["classes"] = torch.arange(rows).repeat_interleave(per_row)
    others = [name for name in spec.required if name != "classes"]
    if others and not len(dataset):
        raise ValueError(f"the model takes {', '.join(others)}, which only a dataset can provide here")
    if others:
        extras = split_batch(collate_batch([dataset[i % len(dataset)] for i in range(count)]))[1]
        from_data = batch_condition(extras, spec)[0]
        missing = [name for name in others if name not in from_data]
        if missing:
            raise ValueError(
                f"the model takes {', '.join(missing)}, which the dataset's items do not carry; "
                "sample grids need them (or set num_samples=0)"
            )
        condition.update({name: from_data[name] for name in [*others, "context_mask"] if name in from_data})
    return condition, count, per_row


def sample_in_chunks(
    model: Any, num_samples: int, chunk: int, generator: torch.Generator, condition: dict[str, Any], **options: Any
) -> Tensor:
    """``model.sample`` ``chunk`` images at a time, each chunk with its slice of the condition; concatenated on
    the CPU."""
    images, start = [], 0
    for n in chunk_sizes(num_samples, chunk):
        part = {
            name: value[start : start + n] if isinstance(value, Tensor) and value.ndim else value
            for name, value in condition.items()
        }
        images.append(model.sample(batch_size=n, generator=generator, **part, **options).cpu())
        start += n
    return torch.cat(images)
