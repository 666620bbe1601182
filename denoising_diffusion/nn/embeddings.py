"""Time embeddings: sinusoidal features of t, then an MLP.

The sinusoidal features are the positional encoding of Vaswani et al. 2017 (§3.5), used for diffusion time by
Ho et al. 2020 (App. B). They are computed from the input on every call (no buffers), so they follow the
device of ``time`` and work for integer step indices and continuous times alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(time: Tensor, dim: int, theta: float = 10000.0) -> Tensor:
    """Sinusoidal features [sin(t ω_i), cos(t ω_i)] with ω_i = θ^(−i / (dim/2)) (Vaswani et al. 2017, §3.5).

    Args:
        time: (B,) int or float tensor; integer diffusion steps in [0, T) or continuous times.
        dim: number of features (>= 2); an odd ``dim`` gets one trailing zero feature.
        theta: the longest wavelength, 2π·θ.

    Returns:
        (B, dim) tensor in float32 (float64 if ``time`` is float64), on ``time``'s device.
    """
    if dim < 2:
        raise ValueError(f"sinusoidal_embedding needs dim >= 2, got dim={dim}")
    if time.ndim != 1:
        raise ValueError(f"time must be a 1-D tensor of shape (B,), got shape {tuple(time.shape)}")
    dtype = torch.float64 if time.dtype == torch.float64 else torch.float32
    half = dim // 2
    exponents = torch.arange(half, device=time.device, dtype=dtype) / half
    freqs = torch.exp(-math.log(theta) * exponents)  # (dim/2,) from 1 down to ~1/θ
    args = time.to(dtype)[:, None] * freqs[None, :]  # (B, dim/2)
    emb = torch.cat((args.sin(), args.cos()), dim=-1)  # (B, 2·(dim/2))
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedding(nn.Module):
    """t ↦ MLP(sinusoidal(t)): Linear(dim → time_dim), GELU, Linear(time_dim → time_dim) (Ho et al. 2020, App. B).

    Args:
        dim: number of sinusoidal features.
        time_dim: width of the MLP and of the returned embedding (default 4·dim).
        theta: see :func:`sinusoidal_embedding`.
    """

    def __init__(self, dim: int, time_dim: int | None = None, theta: float = 10000.0) -> None:
        super().__init__()
        time_dim = 4 * dim if time_dim is None else time_dim
        self.dim = dim
        self.theta = theta
        self.linear_1 = nn.Linear(dim, time_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(time_dim, time_dim)

    def forward(self, time: Tensor) -> Tensor:
        """time: (B,) int or float tensor. Returns (B, time_dim) in the dtype of the MLP's weights."""
        emb = sinusoidal_embedding(time, self.dim, self.theta).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(emb)))
