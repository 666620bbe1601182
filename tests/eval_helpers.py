"""Stand-in feature extractors for the evaluation tests (no Inception, no download), importable by the command line
as ``--features tests.eval_helpers:pooled`` (the tests run with the repository root on sys.path)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def pooled(images: Tensor) -> Tensor:
    """Images (N, C, H, W) in [0, 1] -> 2x2 average-pooled pixels (N, 4C): cheap features that see colour and
    layout."""
    return F.adaptive_avg_pool2d(images, 2).flatten(1)


class Projection(nn.Module):
    """A fixed random linear map of the 2x2-pooled pixels to ``dim`` features (an nn.Module stand-in)."""

    def __init__(self, channels: int = 3, dim: int = 6, seed: int = 0) -> None:
        super().__init__()
        self.num_features = dim  # what torchmetrics reads instead of running a dummy batch
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(4 * channels, dim, generator=generator), requires_grad=False)

    def forward(self, images: Tensor) -> Tensor:
        return pooled(images) @ self.weight


projection = Projection()
