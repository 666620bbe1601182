"""The Trainer's optimizer: Adam with the fused kernel where the device has one, and loading a saved optimizer
state without switching kernels.

The fused update is the same Adam (Kingma & Ba 2015, Alg. 1) in one kernel over all parameters instead of ~4
elementwise ops per parameter tensor; its measured share of a training step is in benchmarks/README.md ("Making
it faster").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def make_adam(parameters: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with the fused kernel (``fused=True``) where the parameters' device has one, else the default kernel."""
    params = list(parameters)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except RuntimeError:  # a device (or dtype) without a fused Adam kernel
        return torch.optim.Adam(params, lr=lr, betas=betas)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's kernel choice (``fused``, ``foreach``).

    A state dict carries the kernel flags of the run that saved it; a checkpoint written without the fused kernel
    (or on a device that has one, read on a device that has not) must not switch the kernel of this run.
    """
    kernels = [{key: group.get(key) for key in ("fused", "foreach")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, kernels):
        group.update(flags)
