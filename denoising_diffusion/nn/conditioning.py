"""How the U-Net takes a condition (conditioning.py at the package root says what conditions are):

* class labels: a learned embedding per class, plus one learned *null* class, added to the time embedding (the
  class-conditional U-Nets of Dhariwal & Nichol 2021, §3; the null class is how classifier-free guidance's
  unconditional branch is trained, Ho & Salimans 2021, §3.1);
* a per-sample scalar level (conditioning augmentation): sinusoidal features of 1000·level and an MLP, added to the
  time embedding like a second time (Ho et al. 2022, "Cascaded Diffusion Models", §4.1);
* a context sequence: cross-attention (nn/attention.py); a dropped sample's context is a learned null token;
* an image: concatenated to the input channels; with ``image_null`` it can be dropped too: the image is zeroed and
  the level's embedding (or nothing, without a level) replaced by one learned null vector added to the time
  embedding, so that the network can tell "no image" from an image that happens to be zero (the unconditional
  branch of guidance on a super-resolution stage's low-resolution input, docs/cascade.md).

``drop`` (B,) bool selects, per sample, the null class, the null context and the null image instead of the given
ones.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import TimestepEmbedding


class ClassEmbedding(nn.Module):
    """Labels (B,) in [0, K) -> (B, time_dim); row K of the table is the learned null class, used where ``drop``."""

    def __init__(self, num_classes: int, time_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, time_dim)

    def forward(self, classes: Tensor, drop: Tensor | None) -> Tensor:
        if drop is not None:
            classes = torch.where(drop, torch.full_like(classes, self.num_classes), classes)
        return self.table(classes)


class LevelEmbedding(TimestepEmbedding):
    """A per-sample scalar level (B,), typically in [0, 1], embedded as the time 1000·level -> (B, time_dim)."""

    def forward(self, time: Tensor) -> Tensor:
        return super().forward(1000.0 * time.float())


class NullContext(nn.Module):
    """Replaces the context of dropped samples by one learned null token (the other tokens masked out).

    context (B, L, D), mask (B, L) bool or None, drop (B,) bool or None -> (context, mask), mask all True when
    none was given.
    """

    def __init__(self, context_dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(context_dim) * 0.02)

    def forward(self, context: Tensor, mask: Tensor | None, drop: Tensor | None) -> tuple[Tensor, Tensor]:
        batch, length, _ = context.shape
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool, device=context.device)
        if drop is None:
            return context, mask
        first = torch.zeros(length, dtype=torch.bool, device=context.device)
        first[0] = True
        null = torch.zeros_like(context)
        null[:, 0] = self.token.to(context.dtype)
        drop_ = drop[:, None]
        return torch.where(drop_[..., None], null, context), torch.where(drop_, first[None], mask)


class NullImage(nn.Module):
    """Drops the image condition (and its level) of the samples where ``drop``: their image (B, C', H, W) becomes
    zeros and their level embedding (B, time_dim), or zeros without a level, a learned null vector.

    forward(image, level_embedding or None, drop (B,) bool) -> (image, embedding to add to the time embedding).
    """

    def __init__(self, time_dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(time_dim) * 0.02)

    def forward(self, image: Tensor, level: Tensor | None, drop: Tensor) -> tuple[Tensor, Tensor]:
        kept = torch.zeros(image.shape[0], self.token.shape[0], device=image.device) if level is None else level
        null = self.token.to(kept.dtype).expand_as(kept)
        image = torch.where(drop[:, None, None, None], torch.zeros_like(image), image)
        return image, torch.where(drop[:, None], null, kept)
