"""``denoising-diffusion sample CHECKPOINT`` and ``denoising-diffusion samplers``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from ..classifier import NoiseAwareClassifier
from ..pipeline import load_pipeline
from ..samplers import SAMPLERS, SamplerName, sampler_options
from ..schedules import Spacing
from ..training.preview import MAX_CLASS_ROWS, sample_in_chunks
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
    cond = p.add_argument_group("conditioning and guidance")
    cond.add_argument(
        "--class",
        dest="class_name",
        action="append",
        metavar="NAME",
        help="sample this class, by name (repeat for several, cycled over --num); default for a class-conditional "
        "model: one class per row",
    )
    cond.add_argument(
        "--class-index",
        type=non_negative_int,
        action="append",
        metavar="N",
        help="sample class number N (so that a folder named '1' is never mistaken for an index); repeatable",
    )
    cond.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        metavar="S",
        help="classifier-free guidance scale: 1 the conditional model as it is (default), 0 unconditional, >1 guided",
    )
    cond.add_argument(
        "--guidance-rescale", type=float, default=0.0, metavar="PHI", help="guidance rescale in [0, 1] (default: 0)"
    )
    cond.add_argument(
        "--classifier",
        type=Path,
        default=None,
        metavar="CKPT",
        help="classifier guidance with this noise-aware classifier (written by train-classifier) towards --class",
    )
    cond.add_argument(
        "--classifier-scale", type=float, default=None, metavar="S", help="classifier guidance scale (default: 1)"
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
    classifier = load_classifier(args, dev)
    condition, count, per_row = sample_condition(diffusion, args, classifier)
    generator_options = {"sampler": args.sampler, "steps": args.steps, "spacing": args.spacing}
    result = sample_in_chunks(diffusion, count, args.batch_size, generator, condition,
                              return_all_timesteps=args.gif, **generator_options, **options)  # fmt: skip
    images = result[:, -1] if args.gif else result  # result: (N, C, H, W), or (N, S + 1, C, H, W) with --gif
    print(f"samples:    {save_image_grid(images, args.out, nrow=per_row)}")
    if args.gif:
        print(f"denoising:  {save_denoising_gif(result, args.out.with_suffix('.gif'), nrow=per_row)}")
    return 0


def load_classifier(args: argparse.Namespace, device: torch.device) -> Any:
    """The --classifier checkpoint as a NoiseAwareClassifier (EMA weights), or None; --classifier-scale needs it."""
    if args.classifier is None:
        if args.classifier_scale is not None:
            raise ValueError("--classifier-scale needs --classifier CKPT")
        return None
    classifier = load_pipeline(args.classifier, device=device)
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
