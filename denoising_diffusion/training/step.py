"""One optimizer step of the Trainer: the next batch of the data stream, gradient accumulation over micro-batches,
the loss averaged over processes, clipping, and the step itself unless the non-finite guard says no (guards.py);
and naming each unreadable image file the processes skipped on the way, once."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from torch import Tensor

from ..data.batch import Batch, map_images
from ..data.datasets import SkippedImage, random_hflip
from .distributed import gather_values
from .guards import NonFiniteGuard
from .loader import DataStream

logger = logging.getLogger(__name__)


class TrainingSteps:
    """The Trainer's data stream and optimizer step (a mixin of Trainer, which sets these attributes)."""

    accelerator: Accelerator
    data: DataStream
    model: Any  # the trainable, possibly wrapped by accelerate (DDP)
    opt: Any
    gradient_accumulate_every: int
    augment_horizontal_flip: bool
    max_grad_norm: float | None
    skipped_images: dict[str, str]
    _new_skipped: list[SkippedImage]

    @property
    def data_seed(self) -> int:
        """The seed of the data order (and of each item's reading), the same on every process."""
        return self.data.data_seed

    @property
    def samples_seen(self) -> int:
        """Items consumed over all processes: the position in the data order."""
        return self.data.samples_seen

    def reset_data_stream(self) -> None:
        """Drop the batch iterator (stopping DataLoader workers); the next step restarts it at samples_seen."""
        self.data.reset()

    def _next_batch(self) -> Batch:
        batch, skipped = self.data.next()
        self._new_skipped.extend(skipped)
        if self.augment_horizontal_flip:
            batch = map_images(batch, random_hflip)
        return send_to_device(batch, self.accelerator.device, non_blocking=True)

    def _train_step(self) -> tuple[float, float, bool, bool]:
        """One optimizer step over gradient_accumulate_every micro-batches.

        Returns (loss averaged over micro-batches and processes, gradient norm, whether the optimizer was called,
        whether the GradScaler found an overflow and so left the weights alone).
        """
        acc = self.accelerator
        acc.step = 0  # accelerate's micro-batch counter: the last of these micro-batches syncs, even after an error
        local_loss = torch.zeros((), device=acc.device)
        result = (math.nan, math.nan, False, False)
        for _ in range(self.gradient_accumulate_every):
            batch = self._next_batch()
            with acc.accumulate(self.model):
                loss = self.model(batch)
                acc.backward(loss)  # divides by gradient_accumulate_every
                local_loss += loss.detach().float() / self.gradient_accumulate_every
                if acc.sync_gradients:
                    result = self._optimizer_step(local_loss)
        return result

    def _optimizer_step(self, local_loss: Tensor) -> tuple[float, float, bool, bool]:
        """Average the loss over processes, clip, and step unless the guard says no (guards.py)."""
        acc = self.accelerator
        stats = torch.stack([local_loss, torch.tensor(float(len(self._new_skipped)), device=acc.device)])
        stats = acc.reduce(stats, reduction="sum") if acc.num_processes > 1 else stats
        loss, new_skipped = stats[0].item() / acc.num_processes, int(stats[1].item())
        if new_skipped:
            self._report_skipped_images()
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else math.inf
        norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)  # after DDP's all-reduce: same everywhere
        grad_norm = float(norm) if norm is not None else math.nan
        grad_finite = norm is None or math.isfinite(grad_norm)
        stepped = NonFiniteGuard.should_step(math.isfinite(loss), grad_finite, acc.scaler is not None)
        overflowed = False
        if stepped:
            scale = acc.scaler.get_scale() if acc.scaler is not None else None
            self.opt.step()  # accelerate runs the scaler's step and update
            # An overflow makes the scaler back off. (accelerate's optimizer_step_was_skipped misses it with the
            # fused Adam, which the scaler calls anyway, passing found_inf, so that the kernel skips the update.)
            overflowed = scale is not None and acc.scaler.get_scale() < scale
        elif acc.scaler is not None:
            acc.scaler.update()  # closes the scaler iteration clip_grad_norm_'s unscale_ opened
        self.opt.zero_grad()
        return loss, grad_norm, stepped, overflowed

    def _report_skipped_images(self) -> None:
        """Gather the files the processes skipped since the last step; the main process names each new one once."""
        found = gather_values(self.accelerator, [(s.path, s.reason) for s in self._new_skipped])
        self._new_skipped.clear()
        if not self.accelerator.is_main_process:
            return
        for path, reason in (item for per_process in found for item in per_process):
            if path not in self.skipped_images:
                self.skipped_images[path] = reason
                logger.warning(
                    "skipping unreadable image %s: %s (%d skipped so far)", path, reason, len(self.skipped_images)
                )

    def _record_checked_files(self, unreadable: Sequence[SkippedImage]) -> None:
        """Main process: name the files the up-front folder check found unreadable (on_bad_image='skip'), once."""
        for bad in unreadable:
            self.skipped_images[bad.path] = bad.reason
            logger.warning(
                "skipping unreadable image %s: %s (%d skipped so far)", bad.path, bad.reason, len(self.skipped_images)
            )

    def _summarize_skipped_images(self) -> None:
        """Main process, at the end of train(): one line counting the skipped files and naming the first ten."""
        if not self.skipped_images:
            return
        names = sorted(self.skipped_images)
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        logger.warning(
            "on_bad_image='skip': %d unreadable image file(s) were skipped (each replaced by the next readable one): "
            "%s%s",
            len(names),
            ", ".join(names[:10]),
            more,
        )
