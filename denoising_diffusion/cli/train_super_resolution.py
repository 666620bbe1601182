"""``train FOLDER --super-resolution LOW:HIGH``: train a super-resolution stage of a cascade (docs/cascade.md)
instead of a base model, with the same recipe, Trainer, checkpoints and resume.

The stage trains at HIGH px on the folder's images (or the built-in shapes); each image's LOW px version is made on
the fly (an antialiased downsample), upsampled back and given to the network with conditioning augmentation. Its
network is the run's Unet plus the image and level inputs (``cond_image_channels``, ``cond_level``) and a null for
the image (``image_null``, trained at ``--cond-drop-prob``), so that guidance works on the low-resolution input.
train.py calls the hooks here: :func:`add_super_resolution_arguments`, :func:`check_super_resolution_args` before the
options are sized, :func:`stage_network_options` and :func:`as_stage` around the model it builds,
:func:`resumed_diffusion_spec` when it resumes, and :func:`is_stage` / :func:`next_step` when it reports.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cascade import SAMPLE_LEVEL, SuperResolution
from .args import PROG
from .presets import TrainPreset

NOISE_LEVELS = (0.0, 0.5)  # --aug-levels' default: SuperResolution's


def sizes(text: str) -> tuple[int, int]:
    """'16:32' -> (16, 32): the low and the high resolution, LOW < HIGH."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts) or int(parts[0]) >= int(parts[1]):
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH in pixels with LOW < HIGH, such as 16:32, got {text!r}")
    return int(parts[0]), int(parts[1])


def number_pair(text: str) -> tuple[float, float]:
    """'0,0.5' -> (0.0, 0.5)."""
    try:
        lo, hi = (float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LO,HI such as 0,0.5, got {text!r}") from None
    return lo, hi


def add_super_resolution_arguments(p: argparse.ArgumentParser) -> None:
    """The group of options of a super-resolution stage."""
    group = p.add_argument_group("super-resolution stage of a cascade (saved in the checkpoint; docs/cascade.md)")
    group.add_argument("--super-resolution", type=sizes, default=None, metavar="LOW:HIGH",
                       help="train a stage that makes HIGH px images from LOW px ones (LOW must divide HIGH), "
                       "the low-resolution input made from each training image; sample it after a base model "
                       f"with `{PROG} sample-cascade`")  # fmt: skip
    group.add_argument("--aug-levels", type=number_pair, default=None, metavar="LO,HI",
                       help="the range in [0, 1] the conditioning-augmentation level is drawn from in "
                       f"training (default: {NOISE_LEVELS[0]:g},{NOISE_LEVELS[1]:g}; 0 the clean input, 1 pure "
                       "noise)")  # fmt: skip
    group.add_argument("--aug-level", type=float, default=None, metavar="S",
                       help=f"the level the stage samples with by default, within --aug-levels (default: "
                       f"{SAMPLE_LEVEL:g})")  # fmt: skip
    group.add_argument("--aug-blur", type=number_pair, default=None, metavar="LO,HI",
                       help="also blur the training input by a Gaussian of sigma in [LO, HI] pixels, as Cascaded "
                       "Diffusion Models do (default: no blur)")  # fmt: skip


def _stage_options_given(args: argparse.Namespace) -> list[str]:
    flags = {"aug_levels": "--aug-levels", "aug_level": "--aug-level", "aug_blur": "--aug-blur"}
    return [flag for name, flag in flags.items() if getattr(args, name, None) is not None]


def check_super_resolution_args(args: argparse.Namespace) -> None:
    """--super-resolution sets --image-size to HIGH (ValueError when --image-size says otherwise); the --aug-*
    options need it."""
    if args.super_resolution is None:
        given = _stage_options_given(args)
        if given and args.resume is None:
            raise ValueError(f"{', '.join(given)} need --super-resolution LOW:HIGH")
        return
    high = args.super_resolution[1]
    if args.image_size is not None and args.image_size != high:
        raise ValueError(f"--image-size {args.image_size} contradicts --super-resolution "
                         f"{args.super_resolution[0]}:{high} (the stage trains at HIGH = {high} px)")  # fmt: skip
    args.image_size = high


def stage_network_options(args: argparse.Namespace, opts: TrainPreset) -> dict[str, Any]:
    """The Unet's extra inputs of a stage (none without --super-resolution)."""
    if args.super_resolution is None:
        return {}
    return {"cond_image_channels": opts.channels, "cond_level": True, "image_null": True}


def as_stage(args: argparse.Namespace, diffusion: Any) -> Any:
    """The model to train: ``diffusion`` itself, or with --super-resolution the stage around it."""
    if args.super_resolution is None:
        return diffusion
    return SuperResolution(
        diffusion, low_res_size=args.super_resolution[0], noise_levels=args.aug_levels or NOISE_LEVELS,
        sample_level=SAMPLE_LEVEL if args.aug_level is None else args.aug_level, blur_sigma=args.aug_blur,
    )  # fmt: skip


def resumed_diffusion_spec(args: argparse.Namespace, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The GaussianDiffusion spec a resumed run reads its options from: a stage's own diffusion. ValueError when
    --super-resolution or an --aug-* option contradicts the checkpoint."""
    if spec.get("kind") != SuperResolution.__name__:
        if args.super_resolution is not None or _stage_options_given(args):
            raise ValueError("the checkpoint to resume holds a base model, not a super-resolution stage: leave "
                             "--super-resolution and --aug-* out, or pass other --results")  # fmt: skip
        return dict(spec)
    recorded = {
        "--super-resolution": (tuple(spec["low_res_size"]), tuple(spec["diffusion"]["image_size"])),
        "--aug-levels": tuple(spec["noise_levels"]), "--aug-level": spec["sample_level"],
        "--aug-blur": None if spec["blur_sigma"] is None else tuple(spec["blur_sigma"]),
    }  # fmt: skip
    sr = args.super_resolution
    given = {
        "--super-resolution": None if sr is None else ((sr[0], sr[0]), (sr[1], sr[1])),
        "--aug-levels": args.aug_levels, "--aug-level": args.aug_level, "--aug-blur": args.aug_blur,
    }  # fmt: skip
    conflicts = [flag for flag, value in given.items() if value is not None and value != recorded[flag]]
    if conflicts:
        raise ValueError(f"{', '.join(conflicts)} differ from the checkpoint's super-resolution stage (the model is "
                         "rebuilt from the checkpoint: leave them out, or pass other --results)")  # fmt: skip
    return dict(spec["diffusion"])


def is_stage(model: Any) -> bool:
    return isinstance(model, SuperResolution)


def next_step(model: Any, checkpoint: Path) -> str:
    """The command that samples from what was trained."""
    if is_stage(model):
        return f"sample a cascade with: {PROG} sample-cascade BASE_CHECKPOINT {checkpoint} (docs/cascade.md)"
    return f"sample more with: {PROG} sample {checkpoint} --gif"
