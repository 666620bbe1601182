"""The three libraries of the sample-quality benchmarks (peer_quality.py, and the diagnostics that read its kept
networks: denoising_error.py, sampler_variants.py), each behind one small interface.

A :class:`Contender` holds the trainable module, the module whose weights the EMA averages, a training loss on a
batch of images in [0, 1], and a sampler that turns an averaged copy into images in [0, 1]. Everything that is not
the loop (network, noise schedule, objective, loss, sampler) is each library's own default, except the network's
width and depth, which are matched:

* ``ours``: ``Unet(dim, dim_mults, channels)`` + ``GaussianDiffusion(image_size, timesteps=1000)`` with a recipe's
  overrides (recipes.py); sampled with the recipe's sampler (DDIM by default) at the benchmark's step count.
* ``denoising-diffusion-pytorch`` 2.3.4: its ``Unet(dim, dim_mults, channels)`` +
  ``GaussianDiffusion(image_size, timesteps=1000, sampling_timesteps=steps)`` (v-prediction, sigmoid schedule, its
  v-loss weighting; DDIM with η = 0 when sampling_timesteps < timesteps). Its EMA averages the whole
  GaussianDiffusion, as its Trainer does (the buffers are constants).
* ``diffusers``: ``UNet2DModel`` laid out as its unconditional training example lays it out (two ResNet layers per
  block, attention in the second-to-last down block and its mirror, GroupNorm 32), narrowed to this benchmark's
  ``dim x dim_mults``; ``DDPMScheduler(1000, 'linear', 'epsilon')`` and the example's MSE on ε; sampled with
  ``DDIMScheduler.from_config`` (η = 0) at the benchmark's step count.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampler draws a progress bar; tqdm reads this at import

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .subjects import DIFFUSERS, LUCIDRAINS, OURS

LIBRARIES = (OURS, LUCIDRAINS, DIFFUSERS)


@dataclass
class Contender:
    """One library's model in the benchmark loop.

    Attributes:
        trainable: the module whose parameters the optimizer updates and whose call returns nothing useful.
        ema_target: the module the EMA copies and averages (the network, or the whole diffusion wrapper).
        loss: images (B, C, H, W) in [0, 1] -> scalar training loss (draws its noise from the global RNG).
        sample: (averaged copy of ema_target, n, torch.Generator seeded for sampling, on the model's device)
            -> (n, C, H, W) in [0, 1].
        num_parameters: parameters of the network alone.
        alphas_cumprod: ᾱ_t (T,) of the training schedule, index t = 0 … T−1 (x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with
            x_0 in [−1, 1]); None for a continuous-time recipe of ours.
        predict_eps: (averaged copy of ema_target, x_t (B, C, H, W) in [−1, 1], t (B,) int64) -> ε̂ (B, C, H, W), the
            network's noise prediction under its objective, unclipped (denoising_error.py).
    """

    trainable: nn.Module
    ema_target: nn.Module
    loss: Callable[[Tensor], Tensor]
    sample: Callable[[nn.Module, int, torch.Generator], Tensor]
    num_parameters: int
    alphas_cumprod: Tensor | None
    predict_eps: Callable[[nn.Module, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class NetworkSize:
    """The matched network: base width, per-level multipliers, image channels and size."""

    dim: int
    dim_mults: tuple[int, ...]
    channels: int
    image_size: int


def build(library: str, size: NetworkSize, recipe: dict[str, Any], steps: int) -> Contender:
    """Build ``library``'s model at ``size`` (recipe: our overrides, ignored by peers); ``steps``: sampling steps."""
    if library == OURS:
        return _ours(size, recipe, steps)
    if recipe:
        raise ValueError(f"recipes apply to {OURS!r} only; {library!r} runs its own defaults")
    if library == LUCIDRAINS:
        return _lucidrains(size, steps)
    if library == DIFFUSERS:
        return _diffusers(size, steps)
    raise ValueError(f"unknown library {library!r}; known: {', '.join(LIBRARIES)}")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _ours(size: NetworkSize, recipe: dict[str, Any], steps: int) -> Contender:
    from denoising_diffusion import GaussianDiffusion, NoiseSchedule, Unet

    network = recipe.get("network", OURS)  # a diagnostic: a peer's network inside our diffusion and sampler
    if network == LUCIDRAINS:
        from denoising_diffusion_pytorch import Unet as PeerUnet

        unet: nn.Module = PeerUnet(size.dim, dim_mults=size.dim_mults, channels=size.channels)
    elif network == DIFFUSERS:
        unet = DiffusersNetwork(diffusers_unet(size), size.channels)
    elif network == OURS:
        unet = Unet(size.dim, dim_mults=size.dim_mults, channels=size.channels, **recipe.get("unet", {}))
    else:
        raise ValueError(f"unknown network {network!r}; known: {', '.join(LIBRARIES)}")
    diffusion = GaussianDiffusion(unet, image_size=size.image_size, timesteps=1000, **recipe.get("diffusion", {}))
    sampling = dict(recipe.get("sampling", {"sampler": "ddim"}))

    def sample(ema_unet: nn.Module, n: int, generator: torch.Generator) -> Tensor:
        model = diffusion.with_model(ema_unet).eval()
        return model.sample(n, steps=steps, generator=generator, **sampling)

    def predict_eps(ema_unet: nn.Module, x_t: Tensor, t: Tensor) -> Tensor:
        with torch.inference_mode():
            return diffusion.with_model(ema_unet).eval().denoiser(clip_denoised=False)(x_t, t).eps

    table = diffusion.schedule.alphas_cumprod.float() if isinstance(diffusion.schedule, NoiseSchedule) else None
    return Contender(diffusion, unet, diffusion, sample, _count(unet), table, predict_eps)


def _lucidrains(size: NetworkSize, steps: int) -> Contender:
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    unet = Unet(size.dim, dim_mults=size.dim_mults, channels=size.channels)
    diffusion = GaussianDiffusion(unet, image_size=size.image_size, timesteps=1000, sampling_timesteps=steps)

    def sample(ema_diffusion: nn.Module, n: int, generator: torch.Generator) -> Tensor:
        # It draws from the global RNG only: seed that with the benchmark generator's seed (restored afterwards), so
        # that its x_T is the one ours and diffusers draw first from the generator: the same noise for every library.
        device = generator.device
        cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(generator.initial_seed())
            with torch.inference_mode():
                return ema_diffusion.eval().sample(batch_size=n)

    def predict_eps(ema_diffusion: nn.Module, x_t: Tensor, t: Tensor) -> Tensor:
        with torch.inference_mode():
            return ema_diffusion.eval().model_predictions(x_t, t).pred_noise  # unclipped (clip_x_start=False)

    return Contender(diffusion, diffusion, diffusion, sample, _count(unet), diffusion.alphas_cumprod, predict_eps)


def diffusers_unet(size: NetworkSize) -> nn.Module:
    """UNet2DModel as diffusers' examples/unconditional_image_generation configures it, at ``size``'s widths:
    plain down blocks except an attention block second from the bottom (the last block when there are two levels),
    the mirror on the way up, layers_per_block = 2."""
    from diffusers import UNet2DModel

    levels = len(size.dim_mults)
    attn_level = max(levels - 2, 0) if levels > 2 else levels - 1
    down = tuple("AttnDownBlock2D" if i == attn_level else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if levels - 1 - i == attn_level else "UpBlock2D" for i in range(levels))
    return UNet2DModel(
        sample_size=size.image_size,
        in_channels=size.channels,
        out_channels=size.channels,
        layers_per_block=2,
        block_out_channels=tuple(size.dim * m for m in size.dim_mults),
        down_block_types=down,
        up_block_types=up,
    )


class DiffusersNetwork(nn.Module):
    """diffusers' ``UNet2DModel`` behind our network interface, ``(x_t, t) -> output tensor``, for the diagnostic
    recipes that train it inside our GaussianDiffusion (``{"network": DIFFUSERS}``)."""

    def __init__(self, unet: nn.Module, channels: int) -> None:
        super().__init__()
        self.unet, self.channels = unet, channels

    def forward(self, x: Tensor, time: Tensor) -> Tensor:
        return self.unet(x, time, return_dict=False)[0]


def _diffusers(size: NetworkSize, steps: int) -> Contender:
    from diffusers import DDIMScheduler, DDPMScheduler

    unet = diffusers_unet(size)
    train_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")

    def loss(images: Tensor) -> Tensor:
        x0 = images * 2 - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, train_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        x_t = train_scheduler.add_noise(x0, noise, t)
        return F.mse_loss(unet(x_t, t, return_dict=False)[0].float(), noise.float())

    def sample(ema_unet: nn.Module, n: int, generator: torch.Generator) -> Tensor:
        scheduler = DDIMScheduler.from_config(train_scheduler.config)
        scheduler.set_timesteps(steps)
        ema_unet.eval()
        shape = (n, size.channels, size.image_size, size.image_size)
        x = torch.randn(shape, generator=generator, device=generator.device)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                eps = ema_unet(x, t, return_dict=False)[0]
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        return ((x + 1) / 2).clamp(0, 1)

    def predict_eps(ema_unet: nn.Module, x_t: Tensor, t: Tensor) -> Tensor:
        with torch.inference_mode():
            return ema_unet.eval()(x_t, t, return_dict=False)[0]

    return Contender(unet, unet, loss, sample, _count(unet), train_scheduler.alphas_cumprod, predict_eps)
