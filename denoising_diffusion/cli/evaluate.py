"""``denoising-diffusion eval CHECKPOINT REAL --num N``: FID, KID and precision/recall of a model's samples against
a folder of real images or a built-in data set (real_sets.py; docs/evaluation.md), and the options ``sweep``
shares."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .._utils import chunk_sizes
from ..data.datasets import BUILTIN_DATASETS
from ..evaluation.feature_cache import default_cache_dir, real_features
from ..evaluation.features import INCEPTION, NamedExtractor, resolve_extractor
from ..evaluation.metrics import KID_SUBSETS, PR_NEIGHBOURS, Metric, MetricOptions, RealFeatures, Scores, score_images
from ..evaluation.real_sets import REFERENCE_IMAGES, REFERENCE_SEED, resolve_real
from ..evaluation.sweep import generate
from .args import (
    MODEL_HELP,
    _add_threads_option,
    add_sampler_options,
    device,
    given_sampler_options,
    load_model,
    non_negative_int,
    positive_int,
)
from .progress import sampling_bar


def metric_list(text: str) -> tuple[Metric, ...]:
    """'fid,kid' -> (Metric.FID, Metric.KID)."""
    try:
        return tuple(Metric(part.strip()) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_evaluation_options(p: Any) -> None:
    """REAL and everything about the features and metrics (eval and sweep)."""
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help=MODEL_HELP)
    p.add_argument(
        "real",
        metavar="REAL",
        help="folder of real images, read recursively; or, when no such path exists, a built-in data set "
        f"({', '.join(BUILTIN_DATASETS)}) drawn afresh at the model's size (seed {REFERENCE_SEED}, not the training "
        "seed 0)",
    )
    group = p.add_argument_group("features and metrics")
    group.add_argument(
        "--real-num",
        type=positive_int,
        default=None,
        metavar="M",
        help=f"images drawn when REAL is a built-in data set (default: {REFERENCE_IMAGES}); a folder's are all used",
    )
    group.add_argument(
        "--features",
        default=INCEPTION,
        metavar="NAME",
        help="'inception' (default: the standard FID Inception-v3 pool features) or an importable "
        "'module:attribute', a callable images (N, C, H, W) in [0, 1] -> (N, F)",
    )
    group.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        metavar="PATH",
        help="the FID Inception weights file (weights-inception-2015-12-05-6726825d.pth); default: torch.hub's "
        "cache, downloaded there on first use",
    )
    group.add_argument(
        "--metrics", type=metric_list, default=tuple(Metric), help="comma-separated: fid, kid, pr (default: all)"
    )
    group.add_argument(
        "--kid-subsets", type=positive_int, default=KID_SUBSETS, help=f"KID's subsets (default: {KID_SUBSETS})"
    )
    group.add_argument(
        "--kid-subset-size",
        type=positive_int,
        default=None,
        help="KID's subset size (default: min(1000, real, generated))",
    )
    group.add_argument(
        "--neighbours", type=positive_int, default=PR_NEIGHBOURS, help="precision/recall's k (default: 3)"
    )
    group.add_argument(
        "--resize",
        action="store_true",
        help="resize and centre-crop real images of another size to the model's (as training does); without it "
        "they must already have the model's size",
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"where real features are cached (default: {default_cache_dir()})",
    )
    group.add_argument("--no-cache", action="store_true", help="neither read nor write the real-feature cache")


def add_generation_options(p: Any, *, batch_size: int = 64) -> None:
    """--guidance, --batch-size, --seed (default 0: a fixed sample set), --no-ema, --device, --threads."""
    p.add_argument("--guidance", type=float, default=1.0, metavar="S",
                   help="classifier-free guidance scale (default: 1, the conditional model as it is)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help=f"images per network call, and per feature batch (default: {batch_size})")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the sampling noise and KID's subsets (default: 0: a run is repeatable)")  # fmt: skip
    p.add_argument("--no-ema", action="store_true", help="use the online weights instead of the EMA weights")
    p.add_argument("--device", type=device, default=None, help="default: cuda if available, else cpu")
    _add_threads_option(p)


def add_eval_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="FID / KID / precision-recall of a checkpoint's samples against real images",
        description="Draw --num samples from CHECKPOINT and score them against the images in REAL "
        "(docs/evaluation.md).",
    )
    add_evaluation_options(p)
    p.add_argument("--num", type=positive_int, required=True, help="generated images (FID depends on it: required)")
    add_sampler_options(p)
    add_generation_options(p)
    p.set_defaults(run=run_eval)


def metric_options(args: argparse.Namespace) -> MetricOptions:
    return MetricOptions(
        metrics=args.metrics, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
        neighbours=args.neighbours, seed=args.seed,
    )  # fmt: skip


def load_real(args: argparse.Namespace, diffusion: Any) -> tuple[RealFeatures, NamedExtractor]:
    """The extractor of --features on the model's device and the real features of REAL (cached): a folder, or a
    built-in data set of --real-num images (real_sets.resolve_real)."""
    source = resolve_real(args.real, args.real_num)
    extractor = resolve_extractor(args.features, inception_weights=args.inception_weights, device=diffusion.device)
    real = real_features(
        source, extractor, image_size=_side(diffusion), channels=diffusion.channels, resize=args.resize,
        cache_dir=args.cache_dir, use_cache=not args.no_cache, batch_size=args.batch_size, device=diffusion.device,
    )  # fmt: skip
    return real, extractor


def _side(diffusion: Any) -> int:
    height, width = diffusion.image_size
    if height != width:
        raise ValueError(f"evaluation needs a square model, this one generates {height}x{width}")
    return int(height)


def print_real(real: RealFeatures, features: str) -> None:
    """``real:       M images from SOURCE (features: NAME)``: M is part of the result (FID depends on it)."""
    print(f"real:       {real.num_images} images from {real.source} (features: {features})")


def print_scores(scores: Scores) -> None:
    """One line per computed metric."""
    if scores.fid is not None:
        print(f"FID:        {scores.fid:.4f}")
    if scores.kid_mean is not None:
        print(f"KID:        {scores.kid_mean:.5f} ± {scores.kid_sd:.5f}  (sd over subsets of {scores.kid_subset_size})")
    if scores.precision is not None:
        print(f"precision:  {scores.precision:.4f}")
        print(f"recall:     {scores.recall:.4f}")


def run_eval(args: argparse.Namespace) -> int:
    """The ``eval`` subcommand: real features (cached), samples, scores."""
    diffusion, _ = load_model(args)
    options = metric_options(args)
    real, extractor = load_real(args, diffusion)
    print_real(real, args.features)
    given = {k: v for k, v in given_sampler_options(args).items() if v is not None}
    calls = len(chunk_sizes(args.num, args.batch_size))
    bar = sampling_bar("eval", diffusion, args.sampler, args.steps, args.spacing, calls)
    with torch.inference_mode(), bar:
        made = generate(diffusion, args.num, batch_size=args.batch_size, seed=args.seed, sampler=args.sampler,
                        steps=args.steps, spacing=args.spacing, guidance_scale=args.guidance, callback=bar,
                        **given)  # fmt: skip
    info = diffusion.sampler_info(args.sampler)
    print(f"generated:  {args.num} images (N), sampler {info.name}, NFE {made.nfe:g} per image, seed {args.seed}")
    scores = score_images(real, extractor.extractor, made.images.to(diffusion.device), options)
    print_scores(scores)
    return 0
