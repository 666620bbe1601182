"""``denoising-diffusion img2img CHECKPOINT IMAGE --strength S``: SDEdit, noise IMAGE part of the way and sample."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data.image_files import load_image
from ..editing import img2img, strength_timesteps
from .args import (
    MODEL_HELP,
    add_condition_options,
    add_output_options,
    add_sampler_options,
    given_sampler_options,
    load_model,
    positive_int,
    unit_float,
    write_results,
)
from .progress import SamplingBar
from .sample import load_classifier, sample_condition


def add_img2img_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "img2img",
        help="turn an image into a sample near it (SDEdit)",
        description="Diffuse IMAGE part of the way to noise and sample back with the model of CHECKPOINT "
        "(SDEdit, Meng et al. 2022): small --strength keeps the image's details, large keeps only its layout.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help=MODEL_HELP)
    p.add_argument(
        "image", type=Path, metavar="IMAGE", help="the image; resized and centre-cropped to the model's size"
    )
    p.add_argument(
        "--strength",
        type=unit_float,
        required=True,
        metavar="S",
        help="in [0, 1]: the share of the sampler's steps that run, from noise level S on; 0 returns the image, "
        "1 is a new sample",
    )
    p.add_argument("--num", type=positive_int, default=4, help="variations of the image (default: 4)")
    add_sampler_options(p)
    add_condition_options(p)
    add_output_options(p, "img2img.png")
    p.set_defaults(run=run_img2img)


def run_img2img(args: argparse.Namespace) -> int:
    """The ``img2img`` subcommand: rebuild from the checkpoint, read the image, edit it, write the grid."""
    diffusion, generator = load_model(args)
    image = load_image(args.image, diffusion.image_size, diffusion.channels)  # (C, H, W) in [0, 1]
    condition, count, per_row = sample_condition(diffusion, args, load_classifier(args, generator.device))
    info = diffusion.sampler_info(args.sampler)
    kept = len(strength_timesteps(diffusion.runner.times(args.steps, args.spacing, info), args.strength))
    with SamplingBar(
        f"img2img: {info.name}, {kept} steps (strength {args.strength:g})", kept, info.evals_per_step
    ) as bar:
        result = img2img(diffusion, image.expand(count, *image.shape), args.strength, sampler=args.sampler,
                         steps=args.steps, spacing=args.spacing, generator=generator, callback=bar,
                         return_all_timesteps=args.gif, **condition, **given_sampler_options(args))  # fmt: skip
    write_results(result, args, per_row, label="edited")
    return 0
