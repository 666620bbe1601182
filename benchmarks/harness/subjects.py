"""The speed benchmarks' subjects: this project's network and each peer's at about the same parameter count, reduced
to what is timed (a training step, one network evaluation, a DDIM sample), at the benchmark configurations.

Peers: ``denoising-diffusion-pytorch`` (lucidrains; its Unet with ours' arguments, which has ours' layout, and its
GaussianDiffusion with objective 'pred_noise' and sampling_timesteps = the DDIM steps) and ``diffusers``
(``UNet2DModel`` with one ResNet block per level and attention at the lowest resolution plus the middle, widths
chosen to come within 10% of ours' parameter count; ε-prediction MSE with ``DDIMScheduler.add_noise``; a
``DDIMScheduler`` loop). Each library trains with the Adam its own trainer uses (ours: the fused kernel).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampler draws a progress bar; tqdm reads this at import

import torch
from torch import Tensor, nn

OURS, LUCIDRAINS, DIFFUSERS = "ours", "denoising-diffusion-pytorch", "diffusers"
OURS_CHECKPOINTED = "ours-checkpointed"  # ours with Unet(gradient_checkpointing=True): the memory-saving setting
LIBRARIES = (OURS, LUCIDRAINS, DIFFUSERS, OURS_CHECKPOINTED)
MODULES = {
    OURS: "denoising_diffusion", LUCIDRAINS: "denoising_diffusion_pytorch", DIFFUSERS: "diffusers",
    OURS_CHECKPOINTED: "denoising_diffusion",
}  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Image shape, batch, our Unet's width, and the diffusers network matched to it (``diffusers_channels``:
    block_out_channels, ``diffusers_groups``: GroupNorm groups)."""

    name: str
    channels: int
    image_size: int
    batch: int
    dim: int
    dim_mults: tuple[int, ...]
    diffusers_channels: tuple[int, ...]
    diffusers_groups: int = 32
    sample_steps: int = 50

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Config:
        """The inverse of dataclasses.asdict after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


CONFIGS = {
    "3x32": Config("3x32", 3, 32, 16, 64, (1, 2, 4, 8), (64, 128, 256, 448)),
    "3x64": Config("3x64", 3, 64, 8, 64, (1, 2, 4, 8), (64, 128, 256, 448)),
    "1x28": Config("1x28", 1, 28, 32, 64, (1, 2, 4), (64, 128, 240), diffusers_groups=16),
}
QUICK = Config("quick", 3, 16, 2, 16, (1, 2), (16, 32), diffusers_groups=8, sample_steps=2)


@dataclass
class Subject:
    """One library's network at one configuration: ``loss()`` the training loss of a fixed batch (grad enabled),
    ``forward()`` one network evaluation at a fixed (x_t, t), ``sample()`` one batch of the library's DDIM,
    ``optimizer(params)`` the Adam its own trainer uses (lr 1e-4)."""

    library: str
    network: nn.Module
    loss: Callable[[], Tensor]
    forward: Callable[[], Tensor]
    sample: Callable[[], Tensor]
    optimizer: Callable[[Any], torch.optim.Optimizer] = lambda params: torch.optim.Adam(params, lr=1e-4)
    params: int = field(init=False)

    def __post_init__(self) -> None:
        self.params = sum(p.numel() for p in self.network.parameters())


Wrap = Callable[[nn.Module], nn.Module]


def _identity(module: nn.Module) -> nn.Module:
    """The network as it is (no compilation)."""
    return module


def _inputs(config: Config, device: str, channels_last: bool) -> tuple[Tensor, Tensor, Tensor]:
    """A fixed training batch in [0, 1], a fixed x_t and a fixed timestep, the same for every library."""
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch, config.channels, config.image_size, config.image_size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.rand(shape, generator=generator).to(device, memory_format=fmt)
    x_t = torch.randn(shape, generator=generator).to(device, memory_format=fmt)
    return images, x_t, torch.full((config.batch,), 500, device=device)


def _placed(net: nn.Module, device: str, channels_last: bool) -> nn.Module:
    net = net.to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def build_ours(config: Config, device: str = "cpu", channels_last: bool = False, wrap: Wrap = _identity,
               gradient_checkpointing: bool = False) -> Subject:  # fmt: skip
    """This project: Unet inside GaussianDiffusion (ε-prediction, L2), DDIM through ``diffusion.sample``, and the
    Trainer's Adam (fused where the device has the kernel); ``gradient_checkpointing`` as the Unet's option."""
    from denoising_diffusion import GaussianDiffusion, Unet
    from denoising_diffusion.training import make_adam

    net = Unet(config.dim, dim_mults=config.dim_mults, channels=config.channels,
               gradient_checkpointing=gradient_checkpointing)  # fmt: skip
    net = _placed(net, device, channels_last)
    diffusion = GaussianDiffusion(net, image_size=config.image_size, timesteps=1000).to(device)
    diffusion.model = wrap(net)
    images, x_t, t = _inputs(config, device, channels_last)
    return Subject(
        OURS_CHECKPOINTED if gradient_checkpointing else OURS, net, lambda: diffusion(images),
        lambda: diffusion.model(x_t, t),
        lambda: diffusion.sample(config.batch, sampler="ddim", steps=config.sample_steps),
        lambda params: make_adam(params, lr=1e-4, betas=(0.9, 0.99)),
    )  # fmt: skip


def build_lucidrains(config: Config, device: str = "cpu", channels_last: bool = False,
                     wrap: Wrap = _identity) -> Subject:  # fmt: skip
    """denoising-diffusion-pytorch: its Unet and GaussianDiffusion (ε-prediction, sampling_timesteps = DDIM steps)."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    net = _placed(Unet(config.dim, dim_mults=config.dim_mults, channels=config.channels), device, channels_last)
    diffusion = GaussianDiffusion(net, image_size=config.image_size, timesteps=1000, objective="pred_noise",
                                  sampling_timesteps=config.sample_steps).to(device)  # fmt: skip
    diffusion.model = wrap(net)
    images, x_t, t = _inputs(config, device, channels_last)
    return Subject(LUCIDRAINS, net, lambda: diffusion(images), lambda: diffusion.model(x_t, t),
                   lambda: diffusion.sample(batch_size=config.batch))  # fmt: skip


def diffusers_network(config: Config) -> nn.Module:
    """UNet2DModel matched to ``config``: one ResNet block per level, attention at the lowest level and the middle."""
    from diffusers import UNet2DModel

    levels = len(config.diffusers_channels)
    return UNet2DModel(
        sample_size=config.image_size, in_channels=config.channels, out_channels=config.channels,
        block_out_channels=config.diffusers_channels, layers_per_block=1,
        down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1), norm_num_groups=config.diffusers_groups,
    )  # fmt: skip


def build_diffusers(config: Config, device: str = "cpu", channels_last: bool = False,
                    wrap: Wrap = _identity) -> Subject:  # fmt: skip
    """diffusers: UNet2DModel, ε-prediction MSE with DDIMScheduler.add_noise, DDIMScheduler sampling loop."""
    from diffusers import DDIMScheduler

    net = _placed(diffusers_network(config), device, channels_last)
    run = wrap(net)
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    images, x_t, t = _inputs(config, device, channels_last)

    def loss() -> Tensor:
        x_0 = images * 2 - 1
        noise = torch.randn_like(x_0)
        steps = torch.randint(0, 1000, (config.batch,), device=device)
        return nn.functional.mse_loss(run(scheduler.add_noise(x_0, noise, steps), steps).sample, noise)

    def sample() -> Tensor:
        scheduler.set_timesteps(config.sample_steps)
        x = torch.randn_like(x_t)
        for step in scheduler.timesteps:
            x = scheduler.step(run(x, step.to(device)).sample, step, x).prev_sample
        return x

    return Subject(DIFFUSERS, net, loss, lambda: run(x_t, t).sample, sample)


BUILDERS: dict[str, Callable[..., Subject]] = {
    OURS: build_ours,
    LUCIDRAINS: build_lucidrains,
    DIFFUSERS: build_diffusers,
    OURS_CHECKPOINTED: functools.partial(build_ours, gradient_checkpointing=True),
}


def select_libraries(requested: list[str], skip_missing: bool) -> tuple[list[str], list[str]]:
    """The libraries to run and notes about skipped ones; a missing peer raises SystemExit unless skipped."""
    unknown = [lib for lib in requested if lib not in LIBRARIES]
    if unknown:
        raise SystemExit(f"unknown libraries {unknown}; choose from {', '.join(LIBRARIES)}")
    chosen, notes = [], []
    for lib in requested:
        if importlib.util.find_spec(MODULES[lib]) is not None:
            chosen.append(lib)
        elif skip_missing:
            notes.append(f"{lib} is not installed: skipped (pip install {lib} to include it)")
        else:
            raise SystemExit(f"{lib} is not installed; `pip install {lib}` or pass --skip-missing to leave it out")
    return chosen, notes


def train_step_fn(
    subject: Subject, autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
) -> Callable[[], None]:
    """One training step of ``subject``: zero grads, loss (under ``autocast`` if given), backward, Adam step."""
    optimizer = subject.optimizer(subject.network.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast() if autocast is not None else contextlib.nullcontext():
            loss = subject.loss()
        loss.backward()
        optimizer.step()

    return step


def inference_fn(fn: Callable[[], Tensor]) -> Callable[[], None]:
    """``fn`` run under torch.inference_mode, its result dropped."""

    def run() -> None:
        with torch.inference_mode():
            fn()

    return run
