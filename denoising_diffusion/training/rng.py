"""Every random number generator a training process draws from: captured as checkpoint-safe plain values, and
seeded per dataset item.

A training step draws from torch's CPU generator (timesteps, noise, flips), the CUDA generators (noise on a GPU),
and possibly Python's ``random`` and NumPy's global generator (a model or a callback that uses them).
:func:`capture_rng_state` returns all of them as tensors, ints, floats and strings, so a checkpoint holding them
still loads with ``weights_only=True``; :func:`restore_rng_state` puts them back. Generators the process never
initialised (CUDA on a CPU run) are left alone.

Dataset items are read under :func:`seeded_rngs` with a seed derived from the run's data seed and the item's
position in the data order (:func:`item_seed`): whatever random augmentation a dataset draws (torch, ``random`` or
NumPy) is a function of that position alone, the same in the main process and in any DataLoader worker, so a
resumed run reads exactly the items the uninterrupted run read, with any number of workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
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
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
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


def item_seed(data_seed: int, position: int) -> int:
    """A 63-bit seed for the item at ``position`` of the data order of a run seeded with ``data_seed`` (NumPy's
    SeedSequence mixes the two, so neighbouring positions get unrelated streams)."""
    return int(np.random.SeedSequence([int(data_seed), int(position)]).generate_state(1, np.uint64)[0] >> 1)


@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, Python's ``random`` and NumPy's global generator with ``seed`` inside the block,
    and give back their previous states after it (so the caller's random streams are untouched)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's stay as they are
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
