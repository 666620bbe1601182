"""A time-conditioned image classifier for noisy images: the U-Net's encoder half, its middle block, attention
pooling and a linear head (the noise-aware classifier of Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on
Image Synthesis", §4 and App. C: the "downsampling trunk of the UNet model with an attention pool at the 8x8 layer
to produce the final output").

(x_t (B, channels, H, W), t (B,)) -> logits (B, num_classes). Like every network here it knows nothing about
noise: noise_aware_classifier.py's NoiseAwareClassifier trains it on a diffusion's x_t and uses it for guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import PretrainedMixin, model_kind
from .blocks import group_norm
from .embeddings import TimestepEmbedding
from .encoder import (
    DEFAULT_RESNET_BLOCKS,
    block_factories,
    check_arguments,
    check_image_size,
    down_levels,
    level_layout,
)


class AttentionPool(nn.Module):
    """Multi-head attention pooling (Radford et al. 2021, CLIP's AttentionPool2d; no positional embedding, so any
    image size works): the query is the mean of the H·W feature vectors, keys and values are the mean and every
    position. (B, dim, H, W) -> (B, out_dim)."""

    def __init__(self, dim: int, out_dim: int, *, heads: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention pooling needs dim divisible by heads, got dim={dim}, heads={heads}")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, H·W, dim)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (B, 1 + H·W, dim)
        q = self.to_q(tokens[:, :1]).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, h, 1, d)
        k, v = self.to_kv(tokens).unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, d)
        return self.to_out(out.transpose(1, 2).flatten(2)[:, 0])


@model_kind()
class EncoderClassifier(PretrainedMixin, nn.Module):
    """Time-conditioned classifier: the Unet's encoder half + middle block + attention pooling + a linear head.

    Args:
        dim: base channel width (time embedding width 4·dim), as Unet's.
        num_classes: K, the number of classes.
        channels: image channels.
        init_dim, dim_mults, resnet_block_groups, attn_heads, attn_dim_head, full_attn, dropout: as Unet's (the same
            levels; ``len(dim_mults) - 1`` downsamplings; full attention at the deepest level by default).
    """

    def __init__(
        self,
        dim: int,
        *,
        num_classes: int,
        channels: int = 3,
        init_dim: int | None = None,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        resnet_block_groups: int = 8,
        attn_heads: int = 4,
        attn_dim_head: int = 32,
        full_attn: Sequence[bool] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        dim_mults = tuple(int(m) for m in dim_mults)
        init_dim = dim if init_dim is None else init_dim
        check_arguments(dim, init_dim, num_classes, dim_mults, channels, resnet_block_groups, dropout)
        blocks, kinds = level_layout(len(dim_mults), DEFAULT_RESNET_BLOCKS, None, full_attn)
        full_attn = tuple(kind == "full" for kind in kinds)
        self.config: dict[str, Any] = {
            "dim": dim, "num_classes": num_classes, "channels": channels, "init_dim": init_dim,
            "dim_mults": list(dim_mults), "resnet_block_groups": resnet_block_groups, "attn_heads": attn_heads,
            "attn_dim_head": attn_dim_head, "full_attn": list(full_attn), "dropout": dropout,
        }  # fmt: skip
        self.channels = channels
        self.num_classes = num_classes
        self.downsample_factor = 2 ** (len(dim_mults) - 1)
        time_dim = 4 * dim
        dims = [init_dim, *(dim * m for m in dim_mults)]
        resnet, attention = block_factories(
            time_dim, groups=resnet_block_groups, dropout=dropout, heads=attn_heads, dim_head=attn_dim_head
        )
        self.init_conv = nn.Conv2d(channels, init_dim, 7, padding=3)
        self.time_embedding = TimestepEmbedding(dim, time_dim)
        self.downs = down_levels(dims, kinds, blocks, resnet, attention)
        self.mid_block_1 = resnet(dims[-1], dims[-1])
        self.mid_attn = attention(dims[-1], "full")
        self.mid_block_2 = resnet(dims[-1], dims[-1])
        self.out_norm = group_norm(resnet_block_groups, dims[-1])
        self.pool = AttentionPool(dims[-1], num_classes, heads=_pool_heads(dims[-1], attn_heads))

    def check_image_size(self, height: int, width: int) -> None:
        """Raise ValueError unless height and width are positive multiples of ``downsample_factor``."""
        check_image_size(height, width, self.downsample_factor, len(self.config["dim_mults"]))

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        """x: (B, channels, H, W); time: (B,) or a scalar, int64 steps or float times. Returns logits (B, K)."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        self.check_image_size(x.shape[-2], x.shape[-1])
        time = torch.as_tensor(time, device=x.device)
        t_emb = self.time_embedding(time.expand(x.shape[0]) if time.ndim == 0 else time)
        x = self.init_conv(x)
        for level in self.downs:
            *blocks, attn, downsample = cast(nn.ModuleList, level)
            for block in blocks:
                x = block(x, t_emb)
            x = downsample(attn(x))
        x = self.mid_block_2(self.mid_attn(self.mid_block_1(x, t_emb)), t_emb)
        return self.pool(F.silu(self.out_norm(x)))


def _pool_heads(dim: int, wanted: int) -> int:
    """The largest head count up to ``wanted`` that divides ``dim``."""
    return next(h for h in range(min(wanted, dim), 0, -1) if dim % h == 0)
