"""The sample grids a Trainer writes at each milestone, for models that can sample (trainable.Previewable), and
its sampling from the EMA network (:class:`SampleGrids`).

An unconditional model's grid is ``num_samples`` images from the same noise every time. A class-conditional
model's grid has one class per row (the first 10 classes at most) and ``num_samples // rows`` images per row.
Conditions the Trainer cannot invent (a context, an image, a level) are taken from the first items of the
training set, the same items at every milestone.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from ema_pytorch import EMA, KarrasEMA
from torch import Tensor

from .._utils import chunk_sizes
from ..conditioning import batch_condition
from ..data.batch import collate_batch, split_batch
from ..viz import save_image_grid
from .loader import DataStream
from .trainable import DrawsPreviews, Previewable, trainable_condition_spec

logger = logging.getLogger(__name__)

MAX_CLASS_ROWS = 10


def preview_condition(model: Any, dataset: Any, num_samples: int) -> tuple[dict[str, Any], int, int]:
    """(condition, number of images, images per grid row) of a milestone's grid for ``model`` (a trainable), from
    what the trainable says it takes (trainable.trainable_condition_spec)."""
    spec = trainable_condition_spec(model)
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


class SampleGrids:
    """The Trainer's sampling from its EMA network and its milestone grids (a mixin of Trainer, which sets these
    attributes)."""

    accelerator: Accelerator
    trainable: Any
    ema: EMA | KarrasEMA | None
    dataset: Any
    num_samples: int
    sample_guidance_scale: float
    train_batch_size: int
    results_folder: Path
    data: DataStream

    @torch.no_grad()
    def sample(
        self, num_samples: int, *, seed: int | None = None, return_all_timesteps: bool = False, **condition: Any
    ) -> Tensor:
        """``num_samples`` images from the EMA network (main process only) -> (N, C, H, W) in [0, 1], or the
        trajectories (N, S + 1, C, H, W) with ``return_all_timesteps``; drawn train_batch_size at a time.
        ``condition``: what the model takes (``classes=``, ...) and ``guidance_scale=``, as for its ``sample``.

        Noise comes from its own generator (seed default: the data seed), so the training RNG is untouched.
        Raises RuntimeError off the main process and TypeError for a model that cannot sample.
        """
        if self.ema is None:
            raise RuntimeError("only the main process holds the EMA network")
        if not isinstance(self.trainable, Previewable):
            raise TypeError(f"{type(self.trainable).__name__} has no with_model()/sample(): nothing to sample from")
        device = self.accelerator.device
        ema_model = self.trainable.with_model(self.ema.ema_model).to(device)
        generator = torch.Generator(device=device).manual_seed(self.data.data_seed if seed is None else seed)
        return sample_in_chunks(
            ema_model,
            num_samples,
            self.train_batch_size,
            generator,
            condition,
            return_all_timesteps=return_all_timesteps,
        )

    def save_samples(self, milestone: int) -> Path | None:
        """Write results/sample-{milestone}.png, a grid of EMA samples (main process, models that can sample; None
        otherwise): num_samples images, or for a class-conditional model one class per row (preview.py), sampled
        with ``sample_guidance_scale``; a trainable that draws its own grid (DrawsPreviews) draws it, sampling or
        not."""
        if not self.accelerator.is_main_process or self.num_samples == 0:
            return None
        if isinstance(self.trainable, DrawsPreviews):  # the trainable draws its own grid (an autoencoder, too)
            return self._save_own_preview(milestone)
        if not isinstance(self.trainable, Previewable):
            return None
        condition, count, per_row = preview_condition(self.trainable, self.dataset, self.num_samples)
        if self.sample_guidance_scale != 1.0:
            condition["guidance_scale"] = self.sample_guidance_scale
        images = self.sample(count, **condition)
        path = save_image_grid(images, self.results_folder / f"sample-{milestone}.png", nrow=per_row)
        if "classes" in condition:
            logger.info("%s: one class per row, guidance scale %g", path.name, self.sample_guidance_scale)
        return path

    def _save_own_preview(self, milestone: int) -> Path:
        """results/sample-{milestone}.png from the EMA model's own ``preview`` (trainable.DrawsPreviews)."""
        device = self.accelerator.device
        ema_model = self.trainable.with_model(self.ema.ema_model).to(device)  # type: ignore[union-attr]
        generator = torch.Generator(device=device).manual_seed(self.data.data_seed)
        options = {"guidance_scale": self.sample_guidance_scale} if self.sample_guidance_scale != 1.0 else {}
        images, per_row = ema_model.preview(self.dataset, self.num_samples, generator=generator,
                                            chunk=self.train_batch_size, **options)  # fmt: skip
        return save_image_grid(images, self.results_folder / f"sample-{milestone}.png", nrow=per_row)
