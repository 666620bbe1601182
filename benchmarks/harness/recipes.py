"""Ours' recipes in the quality benchmarks: overrides of ``Unet`` (``unet``), ``GaussianDiffusion`` (``diffusion``), the
sampler (``sampling``), the EMA (``ema``: the loop's constant decay, or ``{"kind": "power", "sigma_rel": σ}``) and the
loop (``lr``, ``warmup``); ``network`` swaps in a peer's network (diagnostics). "default" is the library's defaults.
A recipe's name is part of a run's results key: never change what a name means, add a name.
"""

from __future__ import annotations

from typing import Any

from .subjects import DIFFUSERS, LUCIDRAINS

RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "v": {"diffusion": {"objective": "pred_v"}},
    "v_minsnr": {"diffusion": {"objective": "pred_v", "min_snr_loss_weight": True}},
    "v_sigmoid": {"diffusion": {"objective": "pred_v", "beta_schedule": "sigmoid"}},
    "x0": {"diffusion": {"objective": "pred_x0"}},
    "eps_minsnr": {"diffusion": {"min_snr_loss_weight": True}},
    "eps_linear": {"diffusion": {"beta_schedule": "linear"}},  # diffusers' schedule (DDPM: β from 1e-4 to 0.02)
    # Both halves of diffusers' 16-minute lead (docs/benchmark-history.md, "The sampler swap"): its
    # schedule, and its DDIM keeping the network's ε̂ under the clamp — the candidate recipe for the next 5 seeds.
    "eps_linear_keep_eps": {"diffusion": {"beta_schedule": "linear", "rederive_eps": False}},
    "sigmoid": {"diffusion": {"beta_schedule": "sigmoid"}},
    # Diagnostic: denoising-diffusion-pytorch's Unet inside our GaussianDiffusion with its recipe (below).
    "peer_unet_v_epsw_sigmoid": {
        "network": LUCIDRAINS,
        "diffusion": {
            "objective": "pred_v",
            "beta_schedule": "sigmoid",
            "min_snr_loss_weight": True,
            "min_snr_gamma": 1e9,
        },
    },
    # Diagnostic: diffusers' UNet2DModel (its example's layout) inside our GaussianDiffusion with our defaults: is
    # its network why it leads at 16 minutes (docs/benchmark-history.md)?
    "peer_unet_diffusers": {"network": DIFFUSERS},
    # denoising-diffusion-pytorch's recipe: v-prediction, sigmoid schedule, the v-loss weighted by SNR/(SNR+1) (its
    # ε-loss), which is min-SNR-γ with γ = ∞ (1e9 here: the config is JSON).
    "v_epsw_sigmoid": {
        "diffusion": {
            "objective": "pred_v",
            "beta_schedule": "sigmoid",
            "min_snr_loss_weight": True,
            "min_snr_gamma": 1e9,
        }
    },
    "edm": {"diffusion": {"process": "edm"}},
    "power_ema": {"ema": {"kind": "power", "sigma_rel": 0.05}},
    "power_ema_10": {"ema": {"kind": "power", "sigma_rel": 0.10}},
    "lr1e-3": {"lr": 1e-3, "warmup": 100},
    "lr5e-4": {"lr": 5e-4, "warmup": 100},
    "lr1e-3_no_warmup": {"lr": 1e-3},  # the CLI's built-in preset trains at 1e-3 without a warm-up
    "blocks1": {"unet": {"resnet_blocks": 1}},
    "no_attn": {"unet": {"attention": "none", "mid_attn": False}},
    "mid_attn_only": {"unet": {"attention": "none"}},
    "blocks1_no_attn": {"unet": {"resnet_blocks": 1, "attention": "none", "mid_attn": False}},
    "blocks1_no_attn_sigmoid": {
        "unet": {"resnet_blocks": 1, "attention": "none", "mid_attn": False},
        "diffusion": {"beta_schedule": "sigmoid"},
    },
    "blocks1_no_attn_lr1e-3": {
        "unet": {"resnet_blocks": 1, "attention": "none", "mid_attn": False},
        "lr": 1e-3,
        "warmup": 100,
    },
}
