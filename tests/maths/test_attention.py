"""Attention layers against the formulas they implement, written out with einsum on explicit (B, heads, N, d) tensors.

The layers compute in a (B, heads, d, N) layout to avoid transposing copies; these references do not, so a
mix-up of heads, features or positions (or a softmax over the wrong axis) shows up as a mismatch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from denoising_diffusion.nn import Attention, LinearAttention


def _reference_qkv(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v as (B, heads, N, d): channel c of to_qkv's output is (which, head, feature) in that order."""
    b, _, h, w = x.shape
    qkv = layer.to_qkv(layer.norm(x)).reshape(b, 3, layer.heads, -1, h * w)  # (B, 3, heads, d, N)
    return tuple(qkv[:, i].transpose(-1, -2) for i in range(3))


def _reference_out(layer: torch.nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """x + to_out(out), out (B, heads, N, d) -> channels (head, feature)."""
    b, _, h, w = x.shape
    return x + layer.to_out(out.permute(0, 1, 3, 2).reshape(b, -1, h, w))


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 16, 4, 6, dtype=torch.float64)  # non-square, so a mixed-up H and W shows


def test_linear_attention_is_efficient_attention(x: torch.Tensor) -> None:
    """E(Q, K, V) = ρ_q(Q) (ρ_k(K)ᵀ V), ρ_q softmax over features, ρ_k softmax over positions (Shen et al. 2021)."""
    layer = LinearAttention(16, heads=3, dim_head=5, groups=4).double()
    q, k, v = _reference_qkv(layer, x)  # (B, heads, N, d)
    rho_q, rho_k = q.softmax(dim=-1), k.softmax(dim=-2)
    out = torch.einsum("bhnd,bhme,bhmd->bhne", rho_q, v, rho_k)  # Σ_m ρ_q[n]·ρ_k[m] v[m]
    torch.testing.assert_close(layer(x), _reference_out(layer, x, out), rtol=1e-10, atol=1e-10)


def test_full_attention_is_softmax_attention(x: torch.Tensor) -> None:
    """softmax(Q Kᵀ / √d) V over all H·W positions (Vaswani et al. 2017, eq. 1)."""
    layer = Attention(16, heads=3, dim_head=5, groups=4).double()
    q, k, v = _reference_qkv(layer, x)
    weights = (torch.einsum("bhnd,bhmd->bhnm", q, k) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    out = weights @ v
    torch.testing.assert_close(layer(x), _reference_out(layer, x, out), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", [Attention, LinearAttention])
def test_attention_gradients_match_reference(kind: type, x: torch.Tensor) -> None:
    """The backward pass agrees with autograd through the reference (guards against in-place view tricks)."""
    layer = kind(16, heads=2, dim_head=4, groups=4).double()
    x = x.requires_grad_()
    (layer(x) ** 2).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    q, k, v = _reference_qkv(layer, x)
    if kind is Attention:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        out = torch.einsum("bhnd,bhme,bhmd->bhne", q.softmax(-1), v, k.softmax(-2))
    (_reference_out(layer, x, out) ** 2).sum().backward()
    torch.testing.assert_close(grad, x.grad, rtol=1e-9, atol=1e-9)
