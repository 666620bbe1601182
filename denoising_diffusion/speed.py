"""Speed options of training: Adam's fused update, and torch.compile of the network as an opt-in.

Both leave what is computed unchanged (the fused update is the same Adam, Kingma & Ba 2015, Alg. 1, in one
kernel over all parameters; compilation keeps the network's parameters and state_dict keys). The measured
effect of each, on the CPU, is in benchmarks/README.md ("Making it faster").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


def make_adam(parameters: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with the fused kernel (``fused=True``) where the parameters' device has one, else the default kernel.

    The fused update runs one kernel for all parameters instead of ~4 elementwise ops per parameter tensor
    (on the CPU, 1 call instead of ~1100 per step of the default Unet; ~4% of a training step at 3x32, batch 16).
    """
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


CPU_COMPILE_ARGUMENTS: dict[str, Any] = {"options": {"layout_optimization": False}}
"""torch.compile's arguments for a network on the CPU when none are given. Inductor's layout optimization turns
the convolutions to channels_last, which on the CPU made the default Unet's training step 23-29% slower than eager
(channels_last 4x4 convolutions with 512 channels run at 2/3 the speed); without it the compiled step was 0-4%
faster and the forward pass 10% (benchmarks/README.md, "Making it faster")."""


def compile_network(network: nn.Module, options: Mapping[str, Any] | None = None) -> nn.Module:
    """Compile ``network``'s forward in place with :func:`torch.compile`; returns it.

    ``options`` are torch.compile's keyword arguments (``mode``, ``backend``, ``dynamic``, ...). None: torch's
    defaults (the inductor backend), except on the CPU, where :data:`CPU_COMPILE_ARGUMENTS` keep the layout.

    In place (``nn.Module.compile``), so parameters, state_dict keys and checkpoints are those of the plain
    network, and copies made before the call (the EMA) stay uncompiled. The first call compiles (minutes on a
    CPU; another shape compiles again). Needs a C++ compiler on the CPU; see docs/training.md for when it pays.
    """
    if options is None:
        on_cpu = all(p.device.type == "cpu" for p in network.parameters())
        options = CPU_COMPILE_ARGUMENTS if on_cpu else {}
    network.compile(**dict(options))
    return network
