"""The Trainer's distributed set-up: CPU or GPU, mixed precision, the Accelerator, and a few collectives.

One script runs unchanged as one process, under ``accelerate launch`` and under ``torchrun`` (docs/training.md):

* the CPU is used when asked for (``ACCELERATE_USE_CPU=1``, which ``accelerate launch --cpu`` sets) or when the
  machine has no GPU; on the CPU, processes started by a launcher talk over gloo (accelerate only does that when it
  is told ``cpu=True``, which is why this module decides it rather than leaving it to accelerate's default);
* fp16 autocast does not run on the CPU, so ``amp`` with fp16 becomes bf16 there.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

logger = logging.getLogger(__name__)


def gpu_available() -> bool:
    """Whether torch sees an accelerator accelerate can train on (CUDA, Apple MPS, Intel XPU)."""
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return bool(
        torch.cuda.is_available()
        or (mps is not None and mps.is_available())
        or (xpu is not None and xpu.is_available())
    )


def use_cpu() -> bool:
    """True when training runs on the CPU: ACCELERATE_USE_CPU is set to a true value, or there is no GPU."""
    asked = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes", "on")
    return asked or not gpu_available()


def resolve_mixed_precision(amp: bool, mixed_precision_type: str, cpu: bool) -> str:
    """accelerate's mixed_precision for (amp, type): fp16 autocast does not run on CPU, so there it becomes bf16."""
    if not amp:
        return "no"
    if mixed_precision_type not in ("fp16", "bf16"):
        raise ValueError(f"mixed_precision_type must be 'fp16' or 'bf16', got {mixed_precision_type!r}")
    if mixed_precision_type == "fp16" and cpu:
        logger.info("amp on CPU: using bf16 autocast (fp16 autocast is not supported on CPU)")
        return "bf16"
    return mixed_precision_type


def make_accelerator(
    mixed_precision: str,
    gradient_accumulate_every: int,
    *,
    cpu: bool,
    log_with: list[Any] | None,
    project_dir: str | os.PathLike[str],
) -> Accelerator:
    """The Accelerator, with a clear error when this process already chose another mixed-precision setting."""
    try:
        return Accelerator(
            mixed_precision=mixed_precision,
            gradient_accumulation_steps=gradient_accumulate_every,
            cpu=cpu,
            log_with=log_with or None,
            project_dir=os.fspath(project_dir),
        )
    except ValueError as err:
        if "already been initialized" not in str(err):
            raise
        raise ValueError(
            f"accelerate allows one mixed-precision setting per process, and this process already uses another one "
            f"than {mixed_precision!r} (an earlier Trainer or Accelerator). Use the same amp setting, or a new "
            "process"
        ) from err


def broadcast_value(accelerator: Accelerator, value: Any) -> Any:
    """The main process's ``value`` (any picklable object), on every process."""
    if accelerator.num_processes == 1:
        return value
    return broadcast_object_list([value])[0]


def gather_values(accelerator: Accelerator, value: Any) -> list[Any]:
    """Every process's ``value``, in process order, on every process (one object per process)."""
    if accelerator.num_processes == 1:
        return [value]
    return list(gather_object([value]))
