"""The Trainer's checks of its own arguments: each bad value is a ValueError naming the argument and what it allows,
raised before anything is written or any device is touched."""

from __future__ import annotations

import os
from typing import Any


def check_int(name: str, value: Any, minimum: int = 1, allow_none: bool = False) -> Any:
    """``value`` if it is an int >= ``minimum`` (or None with ``allow_none``); ValueError naming ``name`` otherwise."""
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_trainer_options(train_lr: float, ema_decay: float, max_grad_norm: float | None, resume: Any) -> None:
    """ValueError naming the first of the Trainer's numeric options (and ``resume``) whose value is not allowed."""
    if not train_lr > 0:
        raise ValueError(f"train_lr must be > 0, got {train_lr!r}")
    if not 0.0 <= ema_decay <= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
    if resume is not None and (isinstance(resume, bool) or not isinstance(resume, (str, int, os.PathLike))):
        raise ValueError(f"resume must be None, 'auto', a milestone number or a checkpoint path, got {resume!r}")
