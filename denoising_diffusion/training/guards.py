"""Numerical guards: a step with a non-finite loss or gradient norm never reaches the weights.

The Trainer asks :class:`NonFiniteGuard` two things per optimizer step:

* before the update, :meth:`~NonFiniteGuard.should_step`: a non-finite gradient norm (or loss) skips the optimizer
  step, except under fp16 mixed precision, where a non-finite gradient is handed to accelerate's GradScaler, which
  skips the update itself and lowers its loss scale: the step is skipped once, by the scaler, never twice;
* after it, :meth:`~NonFiniteGuard.record`: whether the step is *bad* (counted towards ``max_bad_steps``) or was
  merely *skipped*. A bad step is a non-finite loss, or a non-finite gradient norm without a GradScaler. A step
  the GradScaler skipped because of an fp16 overflow, with a finite loss, is skipped but not bad: overflows are
  how the scaler finds its scale, and it recovers on its own. After ``max_bad_steps`` bad steps in a row,
  :meth:`~NonFiniteGuard.raise_if_diverged` raises :class:`TrainingDivergedError`.

The EMA is not updated on skipped steps, and the Trainer writes no checkpoint at a bad step (see trainer.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """Training produced too many non-finite steps in a row, or a state that must not be saved."""


@dataclass(frozen=True)
class StepReport:
    """What happened to one optimizer step."""

    skipped: bool  # no optimizer update was applied
    bad: bool  # counted towards max_bad_steps


class NonFiniteGuard:
    """Counts skipped and bad optimizer steps and stops training after ``max_bad_steps`` bad ones in a row.

    Args:
        max_bad_steps: consecutive bad steps tolerated before TrainingDivergedError; None: never stop.
    """

    def __init__(self, max_bad_steps: int | None = 10) -> None:
        if max_bad_steps is not None and (
            isinstance(max_bad_steps, bool) or not isinstance(max_bad_steps, int) or max_bad_steps < 1
        ):
            raise ValueError(f"max_bad_steps must be an int >= 1 or None, got {max_bad_steps!r}")
        self.max_bad_steps = max_bad_steps
        self.consecutive_bad = 0
        self.total_bad = 0
        self.total_skipped = 0

    @staticmethod
    def should_step(loss_finite: bool, grad_finite: bool, has_scaler: bool) -> bool:
        """Whether to call the optimizer step. A non-finite gradient norm goes to the GradScaler when there is one
        (it skips the update and lowers its scale), else is skipped here; a non-finite loss with finite gradients
        (rare: a NaN almost always reaches the gradients) is skipped here."""
        if not grad_finite:
            return has_scaler
        return loss_finite

    def record(self, step: int, *, loss: float, grad_norm: float, has_scaler: bool, scaler_skipped: bool) -> StepReport:
        """Account for optimizer step ``step`` (logging a warning for a bad one) and say what happened to it.

        ``scaler_skipped``: the GradScaler found an overflow and skipped the update (its scale backed off).
        """
        loss_finite, grad_finite = math.isfinite(loss), math.isfinite(grad_norm)
        bad = not loss_finite or (not grad_finite and not has_scaler)
        skipped = bad or scaler_skipped
        self.total_skipped += int(skipped)
        if not bad:
            if skipped:
                logger.debug("step %d: the fp16 GradScaler skipped the update (gradient overflow)", step)
            self.consecutive_bad = 0
            return StepReport(skipped=skipped, bad=False)
        self.consecutive_bad += 1
        self.total_bad += 1
        limit = "never stopping" if self.max_bad_steps is None else f"stopping at {self.max_bad_steps}"
        logger.warning(
            "step %d: non-finite %s (loss=%s, grad_norm=%s); optimizer step skipped, EMA not updated "
            "(%d bad step(s) in a row, %s)",
            step,
            "loss" if not loss_finite else "gradient norm",
            loss,
            grad_norm,
            self.consecutive_bad,
            limit,
        )
        return StepReport(skipped=True, bad=True)

    def raise_if_diverged(self, step: int, *, loss: float, grad_norm: float) -> None:
        """Raise TrainingDivergedError once max_bad_steps bad steps came in a row (call after logging the step)."""
        if self.max_bad_steps is None or self.consecutive_bad < self.max_bad_steps:
            return
        raise TrainingDivergedError(
            f"training stopped at step {step}: {self.consecutive_bad} optimizer steps in a row had a non-finite "
            f"loss or gradient norm (last: loss={loss}, grad_norm={grad_norm}). None of them changed the weights, "
            "the optimizer or the EMA, and no checkpoint was written from them. Likely causes: a learning rate "
            "too high for this model, NaN/inf in the data, or fp16 overflow (try bf16, or max_grad_norm). Resume "
            "from the last checkpoint after fixing the cause, or raise max_bad_steps"
        )


def non_finite_entries(state: dict[str, Tensor]) -> list[str]:
    """Names of the floating-point entries of a state dict that hold NaN or inf."""
    return [
        name
        for name, t in state.items()
        if isinstance(t, Tensor) and torch.is_floating_point(t) and not bool(torch.isfinite(t).all())
    ]
