"""``denoising-diffusion sample-cascade BASE SR1 [SR2 ...]`` (or one cascade file): sample a cascade end to end
(docs/cascade.md) and write the final images, and with ``--save-stages`` every stage's.

Per-stage options take one value for every stage or a comma-separated value per stage (``--steps 50,25``);
``--level`` is per super-resolution stage. ``--save-cascade FILE`` writes the stages as one composed file, with the
options given as its defaults, which ``sample-cascade FILE`` (or ``load_pipeline``) rebuilds alone.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._utils import chunk_sizes
from ..cascade import Cascade
from ..pipeline import load_pipeline, save_pipeline
from ..samplers import SamplerName
from ..training.preview import MAX_CLASS_ROWS
from ..viz import save_image_grid
from .args import _values, add_output_options, device_and_generator, non_negative_int, positive_int


def per_stage(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """'50' -> [50] (for every stage), '50,25' -> [50, 25] (one per stage), each part read by ``kind``."""

    def parse(text: str) -> list[Any]:
        try:
            return [kind(part.strip()) for part in text.split(",")]
        except (ValueError, argparse.ArgumentTypeError) as err:
            raise argparse.ArgumentTypeError(f"expected one value or one per stage, comma-separated: {err}") from None

    return parse


def sampler_name(text: str) -> str:
    if text not in _values(SamplerName):
        raise argparse.ArgumentTypeError(f"unknown sampler {text!r} (see `samplers`)")
    return text


def add_sample_cascade_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sample-cascade",
        help="sample a cascade: a base model, then super-resolution stages",
        description="Rebuild a base model and its super-resolution stages from their checkpoints alone (or one "
        "cascade file) and sample them end to end. Per-stage options take one value for all stages or one per "
        "stage, comma-separated.",
    )
    p.add_argument("models", type=Path, nargs="+", metavar="MODEL",
                   help="the base model's checkpoint then each stage's (train --super-resolution LOW:HIGH), or one "
                   "cascade file (--save-cascade)")  # fmt: skip
    p.add_argument("--num", type=positive_int, default=16, help="number of images (default: 16)")
    stage = p.add_argument_group("per stage (one value for all, or one per stage: --steps 50,25)")
    stage.add_argument("--sampler", type=per_stage(sampler_name), default=None,
                       help="each stage's sampler (default: each model's own)")  # fmt: skip
    stage.add_argument("--steps", type=per_stage(positive_int), default=None,
                       help="each stage's steps (default: each model's sampling_timesteps)")  # fmt: skip
    stage.add_argument("--guidance", type=per_stage(float), default=None, metavar="S",
                       help="each stage's classifier-free guidance scale, on its classes and (super-resolution "
                       "stages) its low-resolution input (default: 1, the conditional model)")  # fmt: skip
    stage.add_argument("--level", type=per_stage(float), default=None, metavar="S",
                       help="each super-resolution stage's augmentation level, within its training range (default: "
                       "the stage's own sample_level)")  # fmt: skip
    cond = p.add_argument_group("classes (given to every stage that takes them)")
    cond.add_argument("--class", dest="class_name", action="append", metavar="NAME",
                      help="sample this class by name (repeatable, cycled over --num); default for a "
                      "class-conditional cascade: one class per row")  # fmt: skip
    cond.add_argument("--class-index", type=non_negative_int, action="append", metavar="N", help="by index")
    out = p.add_argument_group("output")
    out.add_argument("--save-stages", action="store_true",
                     help="also write every stage's images beside --out (STEM-stage0.png, ...)")  # fmt: skip
    out.add_argument("--save-cascade", type=Path, default=None, metavar="FILE",
                     help="also write the cascade as one file, these per-stage options its defaults")  # fmt: skip
    add_output_options(out, "cascade.png", batch_size=True)
    p.set_defaults(run=run_sample_cascade)


def load_cascade(args: argparse.Namespace, device: torch.device) -> Cascade:
    """The cascade of the MODEL files: one cascade file, or a base and its stages."""
    if len(args.models) > 1:
        return Cascade.from_checkpoints(args.models, use_ema=not args.no_ema, device=device)
    model = load_pipeline(args.models[0], use_ema=not args.no_ema, device=device)
    if not isinstance(model, Cascade):
        raise ValueError(f"{args.models[0]} holds a {type(model).__name__}, not a cascade: give the base model's "
                         "checkpoint and one or more super-resolution stages', or one cascade file")  # fmt: skip
    return model


def _spread(values: list[Any] | None, count: int, flag: str, what: str) -> list[Any]:
    """One value per stage from ``values`` (one for all, or ``count``); ValueError naming ``flag`` otherwise."""
    if values is None:
        return [None] * count
    if len(values) not in (1, count):
        raise ValueError(f"{flag} takes one value or one per {what} ({count}), got {len(values)}")
    return values * count if len(values) == 1 else values


def stage_options(args: argparse.Namespace, cascade: Cascade) -> list[dict[str, Any]]:
    """Each stage's sampling options from --sampler, --steps, --guidance and --level (None where not given)."""
    count = len(cascade.stage_list)
    columns = {
        "sampler": _spread(args.sampler, count, "--sampler", "stage"),
        "steps": _spread(args.steps, count, "--steps", "stage"),
        "guidance_scale": _spread(args.guidance, count, "--guidance", "stage"),
        "level": [None, *_spread(args.level, count - 1, "--level", "super-resolution stage")],
    }
    return [{key: column[i] for key, column in columns.items() if column[i] is not None} for i in range(count)]


def class_choice(args: argparse.Namespace, cascade: Cascade) -> tuple[Any, int, int]:
    """(classes, images, images per row): the given classes cycled over --num; for a class-conditional cascade
    without them one class per row (at most 10 rows); else no classes."""
    names, indices = args.class_name or [], args.class_index or []
    if names and indices:
        raise ValueError("give classes by --class NAME or by --class-index N, not both")
    given: list[Any] = names or indices
    if given:
        return [given[i % len(given)] for i in range(args.num)], args.num, math.ceil(math.sqrt(args.num))
    num_classes = max((stage.condition_spec.num_classes or 0) for stage in cascade.stage_list)
    if not num_classes:
        return None, args.num, math.ceil(math.sqrt(args.num))
    rows = min(MAX_CLASS_ROWS, num_classes)
    per_row = max(1, args.num // rows)
    return torch.arange(rows).repeat_interleave(per_row).tolist(), rows * per_row, per_row


def run_sample_cascade(args: argparse.Namespace) -> int:
    """The ``sample-cascade`` subcommand: rebuild, sample in batches, write the grids (and the cascade file)."""
    if args.gif:
        raise ValueError("--gif is not available for a cascade (sample one model with `sample` for a GIF)")
    device, generator = device_and_generator(args)
    cascade = load_cascade(args, device)
    options = stage_options(args, cascade)
    classes, count, per_row = class_choice(args, cascade)
    stages: list[list[torch.Tensor]] = [[] for _ in cascade.stage_list]
    start = 0
    for n in chunk_sizes(count, args.batch_size):
        chunk = None if classes is None else classes[start : start + n]
        outputs = cascade.sample(n, classes=chunk, generator=generator, stages=options, return_stages=True)
        for kept, images in zip(stages, outputs):
            kept.append(images.cpu())
        start += n
    if args.save_stages:
        for index, images in enumerate(stages[:-1]):
            path = args.out.with_name(f"{args.out.stem}-stage{index}{args.out.suffix}")
            print(f"stage {index}:    {save_image_grid(torch.cat(images), path, nrow=per_row)}")
    print(f"samples:    {save_image_grid(torch.cat(stages[-1]), args.out, nrow=per_row)}")
    if args.save_cascade is not None:
        merged = [{**stored, **given} for stored, given in zip(cascade.sampling, options)]
        print(f"cascade:    {save_pipeline(Cascade(cascade.stage_list, merged), args.save_cascade)}")
    return 0
