"""Small helpers that more than one module needs (STYLE.md, R10: a helper needed twice lives here, once)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def normalize_image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``image_size`` (an int, or (height, width)) as a validated (H, W) tuple of positive ints; ValueError
    otherwise."""
    if isinstance(image_size, bool):
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    if isinstance(image_size, int):
        size = (image_size, image_size)
    elif (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    if min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size


def chunk_sizes(total: int, chunk: int) -> list[int]:
    """``total`` split into chunks of at most ``chunk``: [chunk, ..., chunk, remainder] ([] for total 0)."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk}")
    return [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])


@contextmanager
def eval_mode(*modules: Any) -> Iterator[None]:
    """The modules (None entries skipped) in eval mode inside the block, each back in its own mode after it."""
    present = [m for m in modules if m is not None]
    modes = [m.training for m in present]
    for module in present:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(present, modes):
            module.train(mode)


def module_device(module: Any) -> torch.device:
    """Where a module lives: its first parameter's or buffer's device, else the CPU."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def call_each(*functions: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
    """One function of one argument that calls each of ``functions`` (Nones left out) in turn with it; None when
    none is given, the function itself when one is (chaining sampler callbacks: a meter and a progress bar)."""
    chosen = [f for f in functions if f is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def call(value: Any) -> None:
        for function in chosen:
            function(value)

    return call
