"""Gradient (activation) checkpointing of one block (Chen et al. 2016, "Training Deep Nets with Sublinear Memory
Cost"): the block's forward runs without keeping its intermediate activations, and backward runs it again to
recompute them. Only the block's inputs stay in memory, at the price of a second forward pass of the block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_block(block: nn.Module, *args: Any, checkpointed: bool) -> Any:
    """``block(*args)``, recomputed in backward when ``checkpointed`` and the block trains with gradients enabled.

    Uses torch's non-reentrant checkpoint, which restores the RNG state for the recomputation (so dropout draws the
    same mask twice and the gradients equal those without checkpointing) and works when the inputs need no grad.
    A parameter-free block (nn.Identity, a level without attention) is never checkpointed: there is nothing to save.
    """
    if checkpointed and block.training and torch.is_grad_enabled() and not isinstance(block, nn.Identity):
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)
