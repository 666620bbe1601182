"""Self-attention over the pixels of a feature map, each as a residual block: x + to_out(attn(norm(x))).

Full softmax attention (Vaswani et al. 2017) costs O(N²) in the N = H·W positions, so the U-Net uses it only at
the lowest resolution. The higher resolutions use linear "efficient attention" (Shen et al. 2021;
Katharopoulos et al. 2020), which costs O(N·d²).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import group_norm


class _SelfAttention2d(nn.Module):
    """Shared layers: GroupNorm, a 1×1 conv to q, k, v for all heads, and a 1×1 conv back to ``dim`` channels."""

    def __init__(self, dim: int, *, heads: int = 4, dim_head: int = 32, groups: int = 8) -> None:
        super().__init__()
        if heads < 1 or dim_head < 1:
            raise ValueError(f"attention needs heads >= 1 and dim_head >= 1, got heads={heads}, dim_head={dim_head}")
        self.heads = heads
        hidden = heads * dim_head
        self.norm = group_norm(groups, dim)
        self.to_qkv = nn.Conv2d(dim, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, dim, H, W) -> q, k, v, each (B, heads, dim_head, H·W).

        Views of the 1×1 conv's output, features before positions: no copy. (Moving the features last, as
        (B, heads, H·W, dim_head), copies the whole tensor; its cost is in benchmarks/README.md, "Making it
        faster".)
        """
        qkv = self.to_qkv(self.norm(x)).flatten(2)  # (B, 3·heads·dim_head, H·W)
        return qkv.unflatten(1, (3, self.heads, -1)).unbind(1)

    def merge_heads(self, x: Tensor, out: Tensor) -> Tensor:
        """Residual output: x (B, dim, H, W) plus to_out of ``out`` (B, heads, dim_head, H·W)."""
        return x + self.to_out(out.flatten(1, 2).unflatten(-1, x.shape[-2:]))


class Attention(_SelfAttention2d):
    """Residual multi-head softmax self-attention over all H·W positions (Vaswani et al. 2017, eq. 1).

    Uses :func:`torch.nn.functional.scaled_dot_product_attention` (scale 1/√dim_head).
    (B, dim, H, W) -> (B, dim, H, W).
    """

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (t.transpose(-1, -2) for t in self.qkv(x))  # (B, heads, H·W, dim_head) views
        return self.merge_heads(x, F.scaled_dot_product_attention(q, k, v).transpose(-1, -2))


class LinearAttention(_SelfAttention2d):
    """Residual multi-head linear attention, "efficient attention" of Shen et al. 2021 (eq. 5).

    E(Q, K, V) = ρ_q(Q) (ρ_k(K)ᵀ V) with ρ_q a softmax over each query's features and ρ_k a softmax over the
    positions of each key feature; the (dim_head × dim_head) context replaces the (N × N) attention matrix.
    (B, dim, H, W) -> (B, dim, H, W).
    """

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x)  # (B, heads, d, N)
        q = q.softmax(dim=-2)  # ρ_q: over each query's features
        k = k.softmax(dim=-1)  # ρ_k: over the positions of each key feature
        context = k @ v.transpose(-1, -2)  # (B, heads, d, d): context[i, j] = Σ_n k[i, n] v[j, n]
        return self.merge_heads(x, context.transpose(-1, -2) @ q)  # (B, heads, d, N)


class CrossAttention(nn.Module):
    """Residual multi-head softmax attention from the pixels of a feature map to a sequence of context tokens
    (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", §3.3, eq. 3):
    Q from GroupNorm(x), K and V from LayerNorm(context); masked-out tokens get no weight.

    (B, dim, H, W) with context (B, L, context_dim) and mask (B, L) bool (True: a real token) -> (B, dim, H, W).
    """

    def __init__(self, dim: int, context_dim: int, *, heads: int = 4, dim_head: int = 32, groups: int = 8) -> None:
        super().__init__()
        self.heads = heads
        hidden = heads * dim_head
        self.norm = group_norm(groups, dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.to_q = nn.Conv2d(dim, hidden, 1, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * hidden, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        q = self.to_q(self.norm(x)).flatten(2).unflatten(1, (self.heads, -1)).transpose(-1, -2)  # (B, h, N, d)
        kv = self.to_kv(self.norm_context(context)).unflatten(-1, (2, self.heads, -1))  # (B, L, 2, h, d)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, L, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, h, N, d)
        return x + self.to_out(out.transpose(-1, -2).flatten(1, 2).unflatten(-1, x.shape[-2:]))
