"""torch.compile of the trained network, an opt-in of the Trainer (``compile=True``).

Compiling keeps the network's parameters and state_dict keys, so checkpoints are those of the plain network. On
the CPU, inductor's layout optimization (channels_last convolutions) made the default Unet's training step slower
than eager, so it is turned off there unless the caller passes its own arguments; the measurements are in
benchmarks/README.md ("Making it faster").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

CPU_COMPILE_ARGUMENTS: dict[str, Any] = {"options": {"layout_optimization": False}}
"""torch.compile's arguments for a network on the CPU when none are given (see the module docstring)."""


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
