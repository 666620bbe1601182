"""``denoising-diffusion sample CHECKPOINT`` and ``denoising-diffusion samplers``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from .._utils import call_each, chunk_sizes
from ..evaluation.sweep import NfeMeter
from ..noise_aware_classifier import NoiseAwareClassifier
from ..pretrained import resolve_source
from ..samplers import SAMPLERS
from ..training.preview import MAX_CLASS_ROWS, sample_in_chunks
from ..viz import save_images
from .args import (
    MODEL_HELP,
    add_condition_options,
    add_output_options,
    add_sampler_options,
    given_sampler_options,
    load_model,
    positive_int,
    write_results,
)
from .progress import sampling_bar


def add_sample_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sample",
        help="sample images from a checkpoint",
        description="Rebuild the model from CHECKPOINT alone (its config travels inside) and write a grid of samples.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help=MODEL_HELP)
    p.add_argument("--num", type=positive_int, default=16, help="number of images (default: 16)")
    add_sampler_options(p)
    add_condition_options(p)
    add_output_options(p, "samples.png", batch_size=True)
    out = p.add_argument_group("what to write (the grid, the images, the GIF: any of them)")
    out.add_argument("--no-grid", action="store_true", help="do not write the --out grid")
    out.add_argument("--images", type=Path, default=None, metavar="DIR",
                     help="also write each image as its own PNG in DIR (sample-00000.png, ...)")  # fmt: skip
    p.set_defaults(run=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    """The ``sample`` subcommand: rebuild the model, sample, write the grid, the images and the GIF as asked."""
    if args.no_grid and args.images is None and not args.gif:
        raise ValueError("--no-grid leaves nothing to write: add --images DIR or --gif")
    diffusion, generator = load_model(args)
    classifier = load_classifier(args, generator.device)
    condition, count, per_row = sample_condition(diffusion, args, classifier)
    generator_options = {"sampler": args.sampler, "steps": args.steps, "spacing": args.spacing}
    meter = NfeMeter()
    calls = len(chunk_sizes(count, args.batch_size))
    with sampling_bar("sample", diffusion, args.sampler, args.steps, args.spacing, calls) as bar:
        result = sample_in_chunks(diffusion, count, args.batch_size, generator, condition,
                                  return_all_timesteps=args.gif, callback=call_each(meter, bar),
                                  **generator_options, **given_sampler_options(args))  # fmt: skip
    info = diffusion.sampler_info(args.sampler)
    given = {k: v for k, v in given_sampler_options(args).items() if v is not None}
    print(f"sampler:    {info.name}, NFE {meter.per_call(diffusion, info, args.steps, given):g} per image")
    write_results(result, args, per_row, grid=not args.no_grid)  # (N, C, H, W), or (N, S + 1, C, H, W) with --gif
    if args.images is not None:
        paths = save_images(result[:, -1] if args.gif else result, args.images)
        print(f"images:     {len(paths)} in {args.images} ({paths[0].name} ... {paths[-1].name})")
    return 0


def load_classifier(args: argparse.Namespace, device: torch.device) -> Any:
    """The --classifier checkpoint as a NoiseAwareClassifier (EMA weights), or None; --classifier-scale needs it."""
    if args.classifier is None:
        if args.classifier_scale is not None:
            raise ValueError("--classifier-scale needs --classifier CKPT")
        return None
    classifier = resolve_source(args.classifier).load(device=device)
    if not isinstance(classifier, NoiseAwareClassifier):
        raise ValueError(f"--classifier {args.classifier} holds a {type(classifier).__name__}, not a noise-aware "
                         "classifier (train one with train-classifier)")  # fmt: skip
    return classifier


def sample_condition(
    diffusion: Any, args: argparse.Namespace, classifier: Any = None
) -> tuple[dict[str, Any], int, int]:
    """(condition, images, images per grid row) from --class/--class-index/--guidance/--classifier: the given
    classes cycled over --num images; for a class-conditional model (or a classifier) without them, one class per row
    (at most 10 rows). Class names are resolved by the model (or the classifier's names with --classifier)."""
    names, indices = args.class_name or [], args.class_index or []
    if names and indices:
        raise ValueError("give classes by --class NAME or by --class-index N, not both")
    guidance: dict[str, Any] = {"guidance_scale": args.guidance, "guidance_rescale": args.guidance_rescale}
    if classifier is not None:
        guidance.update(classifier=classifier, classifier_scale=1.0 if args.classifier_scale is None
                        else args.classifier_scale)  # fmt: skip
    if names or indices:
        given: list[Any] = names or indices
        classes = [given[i % len(given)] for i in range(args.num)]
        return {"classes": classes, **guidance}, args.num, math.ceil(math.sqrt(args.num))
    num_classes = diffusion.condition_spec.num_classes or (classifier.num_classes if classifier is not None else None)
    if num_classes is None:
        return guidance, args.num, math.ceil(math.sqrt(args.num))
    rows = min(MAX_CLASS_ROWS, num_classes)
    per_row = max(1, args.num // rows)
    return {"classes": torch.arange(rows).repeat_interleave(per_row), **guidance}, rows * per_row, per_row


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
