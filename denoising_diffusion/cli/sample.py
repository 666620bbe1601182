"""``denoising-diffusion sample CHECKPOINT`` and ``denoising-diffusion samplers``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from .._utils import chunk_sizes
from ..pipeline import load_pipeline
from ..samplers import SAMPLERS, SamplerName, sampler_options
from ..schedules import Spacing
from ..viz import save_denoising_gif, save_image_grid
from .args import PROG, _add_threads_option, _values, device, non_negative_int, positive_int


def add_sample_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sample",
        help="sample images from a checkpoint",
        description="Rebuild the model from CHECKPOINT alone (its config travels inside) and write a grid of samples.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a model-*.pt written by train")
    p.add_argument("--num", type=positive_int, default=16, help="number of images (default: 16)")
    p.add_argument(
        "--sampler",
        choices=_values(SamplerName),
        default=None,
        help=f"see `{PROG} samplers` (default: the model's own, DDIM when its sampling_timesteps < T, else DDPM)",
    )
    p.add_argument(
        "--steps", type=positive_int, default=None, help="network evaluations (default: the model's sampling_timesteps)"
    )
    for option in sampler_options().values():  # each sampler's own options, declared in its registry entry
        takes = ", ".join(info.name for info in SAMPLERS.values() if option.name in info.option_names)
        p.add_argument(
            f"--{option.name.replace('_', '-')}",
            dest=option.name,
            default=None,
            metavar="VALUE",
            help=f"{option.help}; only for: {takes}",
        )
    p.add_argument(
        "--spacing",
        choices=_values(Spacing),
        default=None,
        help="which timesteps to visit (default: the model's timestep_spacing, else the sampler's own)",
    )
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="output PNG grid (default: samples.png)")
    p.add_argument("--gif", action="store_true", help="also write the denoising GIF next to --out (same stem, .gif)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of the noise (default: random)")
    p.add_argument("--no-ema", action="store_true", help="use the online weights instead of the EMA weights")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per network call (default: 64)")
    p.add_argument("--device", type=device, default=None, help="default: cuda if available, else cpu")
    _add_threads_option(p)
    p.set_defaults(run=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    """The ``sample`` subcommand: rebuild from the checkpoint, sample, write the grid (and the GIF)."""
    dev = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {dev}: CUDA is not available on this machine; use --device cpu")
    diffusion = load_pipeline(args.checkpoint, use_ema=not args.no_ema, device=dev)
    generator = torch.Generator(device=dev)
    if args.seed is not None:
        generator.manual_seed(args.seed)
    else:
        generator.seed()
    options = {name: getattr(args, name) for name in sampler_options()}
    chunks = [
        diffusion.sample(
            n,
            sampler=args.sampler,
            steps=args.steps,
            spacing=args.spacing,
            generator=generator,
            return_all_timesteps=args.gif,
            **options,
        ).cpu()
        for n in chunk_sizes(args.num, args.batch_size)
    ]
    result = torch.cat(chunks)  # (N, C, H, W), or (N, S + 1, C, H, W) with --gif
    images = result[:, -1] if args.gif else result
    print(f"samples:    {save_image_grid(images, args.out, nrow=math.ceil(math.sqrt(args.num)))}")
    if args.gif:
        print(f"denoising:  {save_denoising_gif(result, args.out.with_suffix('.gif'))}")
    return 0


def run_samplers(args: argparse.Namespace) -> int:
    """The ``samplers`` subcommand: one line per registered sampler, name then description."""
    width = max(len(info.name) for info in SAMPLERS.values())
    for info in SAMPLERS.values():
        alias = f" (= {info.alias})" if info.alias else ""
        options = f"; options: {', '.join(info.option_names)}" if info.options else ""
        print(f"{info.name:<{width}}  {info.description}{alias}{options}")
    return 0


def add_samplers_parser(subparsers: Any) -> None:
    samplers = subparsers.add_parser(
        "samplers", help="list the available samplers", description="List the samplers that --sampler accepts."
    )
    samplers.set_defaults(run=run_samplers)
