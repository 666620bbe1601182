"""Weight averages for sampling: the constant-decay EMA and the power-function EMA of EDM2.

Constant decay β (the tutorial's ``ema_decay``): θ̂_k = β θ̂_{k−1} + (1 − β) θ_k, ema-pytorch's ``EMA``.

Power function (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", Sec. 3.1,
eq. 2 and Alg. 2): β_t = (1 − 1/t)^(γ+1), so that θ̂_t averages θ_1..θ_t with weights ∝ τ^γ — a fixed *fraction*
of training rather than a fixed number of steps. Its length is σ_rel, the standard deviation of the weight profile
relative to t; γ solves σ_rel² = (γ+1) / ((γ+2)² (γ+3)) (ema_pytorch.post_hoc_ema.sigma_rel_to_gamma). ema-pytorch's
``KarrasEMA`` implements it; this module only fixes how it is used:

* ``update_every`` must be 1: KarrasEMA computes β from the number of *calls* but averages only every
  ``update_every``-th, so with its default of 100 each average gets weight ≈ (γ+1)/t instead of 100 (γ+1)/t and
  the profile is far longer than σ_rel says (tests/training/test_ema.py measures both).
* Its first update copies θ_1 and its k-th uses β = (1 − 1/(k+1))^(γ+1): the weight of θ_k after n updates is
  ((k+1)^(γ+1) − k^(γ+1)) / (n+1)^(γ+1) for k ≥ 2 and 2^(γ+1) / (n+1)^(γ+1) for k = 1 (:func:`power_ema_weights`),
  EDM2's profile with t = k + 1.
"""

from __future__ import annotations

import torch
from ema_pytorch import EMA, KarrasEMA
from ema_pytorch.post_hoc_ema import sigma_rel_to_gamma
from torch import Tensor, nn

__all__ = ["make_ema", "power_ema", "power_ema_weights", "sigma_rel_to_gamma"]


def make_ema(model: nn.Module, *, decay: float, update_every: int, sigma_rel: float | None) -> EMA | KarrasEMA:
    """The Trainer's EMA of ``model``: constant ``decay`` every ``update_every`` steps (ema-pytorch's EMA, with its
    warm-up: no averaging for the first 100 steps), or, when ``sigma_rel`` is given, :func:`power_ema` (every
    step; ``decay`` and ``update_every`` unused)."""
    if sigma_rel is not None:
        return power_ema(model, sigma_rel=sigma_rel)
    return EMA(model, beta=decay, update_every=update_every, include_online_model=False)


def power_ema(model: nn.Module, *, sigma_rel: float) -> KarrasEMA:
    """A power-function EMA of ``model`` with relative length ``sigma_rel`` (EDM2 uses 0.05-0.15), updated every
    call. ``.update()`` after each optimizer step; ``.ema_model`` is the averaged copy."""
    if not 0.0 < sigma_rel < 12**-0.5:  # γ = 0 (a uniform average) is σ_rel = 1/√12; longer needs γ < 0
        raise ValueError(f"sigma_rel must be in (0, 1/√12 ≈ 0.289) (EDM2 uses 0.05-0.15), got {sigma_rel!r}")
    return KarrasEMA(model, sigma_rel=sigma_rel, update_every=1)


def power_ema_weights(num_updates: int, gamma: float) -> Tensor:
    """Weights (num_updates,) float64 of θ_1..θ_n in a power EMA after n = num_updates updates (module docstring);
    they sum to 1."""
    k = torch.arange(1, num_updates + 1, dtype=torch.float64)
    w = ((k + 1) ** (gamma + 1) - k ** (gamma + 1)) / (num_updates + 1) ** (gamma + 1)
    w[0] = 2 ** (gamma + 1) / (num_updates + 1) ** (gamma + 1)
    return w
