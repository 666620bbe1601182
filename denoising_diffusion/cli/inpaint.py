"""``denoising-diffusion inpaint CHECKPOINT IMAGE MASK``: fill the black part of MASK in IMAGE with RePaint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data.image_files import load_image
from ..editing import inpaint
from ..samplers.repaint import repaint_schedule
from .args import (
    MODEL_HELP,
    add_condition_options,
    add_output_options,
    load_model,
    positive_int,
    write_results,
)
from .progress import SamplingBar
from .sample import load_classifier, sample_condition

MASK_THRESHOLD = 0.5  # mask pixels at or above it (in [0, 1]) are kept


def add_inpaint_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inpaint",
        help="fill the masked part of an image (RePaint)",
        description="Fill the black part of MASK in IMAGE with the model of CHECKPOINT, keeping the white part "
        "(RePaint, Lugmayr et al. 2022): --num different fillings in one grid.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help=MODEL_HELP)
    p.add_argument(
        "image", type=Path, metavar="IMAGE", help="the image; resized and centre-cropped to the model's size"
    )
    p.add_argument(
        "mask",
        type=Path,
        metavar="MASK",
        help="an image of the same framing: white = keep, black = fill (read as grayscale at the model's size, "
        f"kept where >= {MASK_THRESHOLD}; transparent counts as white)",
    )
    p.add_argument("--num", type=positive_int, default=4, help="fillings of the image (default: 4)")
    p.add_argument(
        "--jump-length",
        type=positive_int,
        default=10,
        metavar="J",
        help="reverse steps between jumps back, and the length of each jump (default: 10, RePaint's)",
    )
    p.add_argument(
        "--resample",
        type=positive_int,
        default=10,
        metavar="R",
        help="how often each stretch of J steps is run; 1: no resampling (default: 10, RePaint's)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="length of the chain the jumps move on (default: the model's sampling_timesteps); the network runs "
        "S + (R - 1)·J·ceil((S - J)/J) times",
    )
    add_condition_options(p)
    add_output_options(p, "inpainted.png")
    p.set_defaults(run=run_inpaint)


def run_inpaint(args: argparse.Namespace) -> int:
    """The ``inpaint`` subcommand: rebuild from the checkpoint, read the image and mask, inpaint, write the grid."""
    diffusion, generator = load_model(args)
    image = load_image(args.image, diffusion.image_size, diffusion.channels)  # (C, H, W) in [0, 1]
    keep = load_image(args.mask, diffusion.image_size, channels=1) >= MASK_THRESHOLD  # (1, H, W)
    condition, count, per_row = sample_condition(diffusion, args, load_classifier(args, generator.device))
    images = image.expand(count, *image.shape)
    masks = keep.expand(count, *keep.shape)
    steps = len(diffusion.runner.times(args.steps))
    moves = repaint_schedule(steps, args.jump_length, args.resample)  # its ValueErrors before any bar
    total = sum(after < before for before, after in zip(moves, moves[1:]))  # reverse steps: one callback each
    label = f"inpaint: RePaint, {steps} steps, jumps of {args.jump_length} x {args.resample}"
    with SamplingBar(label, total) as bar:
        result = inpaint(diffusion, images, masks, jump_length=args.jump_length, resample=args.resample,
                         steps=args.steps, generator=generator, callback=bar, return_all_timesteps=args.gif,
                         **condition)  # fmt: skip
    write_results(result, args, per_row, label="inpainted")
    return 0
