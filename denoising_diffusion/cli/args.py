"""Argument types and the options and steps the sampling subcommands share (sample, inpaint, img2img). Each type
raises ArgumentTypeError, which argparse reports as "argument --x: <message>"."""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..nn.encoder import ATTENTION_KINDS
from ..pretrained import resolve_source
from ..processes import Spacing
from ..samplers import SAMPLERS, SamplerName, sampler_options
from ..training.results_lock import ResultsLock
from ..viz import save_denoising_gif, save_image_grid

PROG = "denoising-diffusion"
EXIT_USAGE = 2  # argparse's status for bad arguments; used for every user error
MODEL_HELP = "a model-*.pt written by train, a directory written by export or save_pretrained, or a Hub repo id"


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def unit_float(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def dim_mults(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): comma-separated positive integers."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,2,4, got {text!r}")
    return tuple(int(part) for part in parts)


def resnet_blocks(text: str) -> int | tuple[int, ...]:
    """--resnet-blocks: '2' -> 2 (every level), '1,2' -> (1, 2) (one per level)."""
    blocks = dim_mults(text)
    return blocks[0] if len(blocks) == 1 else blocks


def attention_kinds(text: str) -> str | tuple[str, ...]:
    """--attention: 'linear' -> 'linear' (every level), 'none,full' -> ('none', 'full') (one per level)."""
    kinds = tuple(part.strip() for part in text.split(","))
    if not all(kind in ATTENTION_KINDS for kind in kinds):
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(ATTENTION_KINDS)}, or one per level such as none,full, got {text!r}"
        )
    return kinds[0] if len(kinds) == 1 else kinds


def device(text: str) -> torch.device:
    """A torch device name: cpu, cuda, cuda:1, mps ..."""
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None


def _values(enum: Any) -> list[str]:
    return [member.value for member in enum]


def _add_threads_option(parser: Any) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's own choice; 1 helps on a busy machine)",
    )


# ----- options shared by the sampling subcommands -------------------------------------------------------------------


def add_sampler_options(p: Any) -> None:
    """--sampler, --steps, every sampler's own options (from the registry, as --<name>) and --spacing."""
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


def given_sampler_options(args: argparse.Namespace) -> dict[str, Any]:
    """The values of the registry's sampler options (None where not given)."""
    return {name: getattr(args, name) for name in sampler_options()}


def add_condition_options(p: Any) -> None:
    """The group --class, --class-index, --guidance, --guidance-rescale, --classifier, --classifier-scale."""
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


def add_output_options(p: Any, default_out: str, *, batch_size: bool = False) -> None:
    """--out, --gif, --seed, --no-ema (and --batch-size), --device, --threads."""
    p.add_argument("--out", type=Path, default=Path(default_out), help=f"output PNG grid (default: {default_out})")
    p.add_argument("--gif", action="store_true", help="also write the denoising GIF next to --out (same stem, .gif)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of the noise (default: random)")
    p.add_argument("--no-ema", action="store_true", help="use the online weights instead of the EMA weights")
    if batch_size:
        p.add_argument("--batch-size", type=positive_int, default=64, help="images per network call (default: 64)")
    p.add_argument("--device", type=device, default=None, help="default: cuda if available, else cpu")
    _add_threads_option(p)


def load_model(args: argparse.Namespace) -> tuple[Any, torch.Generator]:
    """The model of ``args.checkpoint`` (a checkpoint, a saved model's directory or a Hub repo id:
    pretrained.resolve_source) on --device (default: cuda if available, else cpu; EMA weights unless --no-ema) and
    a generator on that device seeded with --seed (randomly without it)."""
    dev, generator = device_and_generator(args)
    return resolve_source(args.checkpoint).load(use_ema=not args.no_ema, device=dev), generator


def device_and_generator(args: argparse.Namespace) -> tuple[torch.device, torch.Generator]:
    """--device (default: cuda if available, else cpu) and a generator on it seeded with --seed (randomly without
    it); ValueError for a CUDA device on a machine without one."""
    dev = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {dev}: CUDA is not available on this machine; use --device cpu")
    generator = torch.Generator(device=dev)
    if args.seed is not None:
        generator.manual_seed(args.seed)
    else:
        generator.seed()
    return dev, generator


def write_results(
    result: Tensor, args: argparse.Namespace, per_row: int, label: str = "samples", *, grid: bool = True
) -> None:
    """The grid at --out (unless ``grid`` is off) and, with --gif, the trajectory (N, S + 1, C, H, W) as a GIF
    beside it; prints both."""
    images = result[:, -1] if args.gif else result
    if grid:
        print(f"{label + ':':<11} {save_image_grid(images, args.out, nrow=per_row)}")
    if args.gif:
        print(f"denoising:  {save_denoising_gif(result, args.out.with_suffix('.gif'), nrow=per_row)}")


def with_results_locked(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` run with ``args.results`` locked for its whole run (training/results_lock.py): a second run on the
    same folder is refused with the holder's process, never interleaved."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        with ResultsLock(args.results, hint="pass another --results"):
            return command(args)

    return run
