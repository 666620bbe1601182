"""Every random number generator a training process draws from, captured as checkpoint-safe plain values.

A training step draws from torch's CPU generator (timesteps, noise, flips), the CUDA generators (noise on a GPU),
and possibly Python's ``random`` and NumPy's global generator (a user's dataset augmenting in the main process).
:func:`capture_rng_state` returns all of them as tensors, ints, floats and strings, so a checkpoint holding them
still loads with ``weights_only=True``; :func:`restore_rng_state` puts them back. Generators the process never
initialised (CUDA on a CPU run) are left alone.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The state of torch (CPU and, if initialised, CUDA), Python's ``random`` and NumPy's global generator."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned (entries missing from older checkpoints are skipped)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    py = state.get("python")
    if py is not None:
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state.get("numpy")
    if npy is not None:
        keys = npy["keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
