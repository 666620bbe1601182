"""``denoising-diffusion nll CHECKPOINT FOLDER``: the model's negative log-likelihood of a folder of images.

Prints bits per dimension of 8-bit data: the variational bound (T network evaluations per batch; an upper bound)
and, with ``--ode``, the probability-flow ODE likelihood (Hutchinson trace estimate). See docs/likelihood.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.datasets import ImageFolderDataset
from ..data.scan import check_folder_dataset
from ..likelihood import bits_per_dim, default_ode_steps, ode_bits_per_dim
from ..pretrained import resolve_source
from .args import MODEL_HELP, _add_threads_option, device, non_negative_int, positive_int


def add_nll_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "nll",
        help="negative log-likelihood (bits/dim) of a folder of images under a checkpoint",
        description="Rebuild the model from CHECKPOINT and report bits per dimension on the images in FOLDER "
        "(resized and center-cropped to the model's size): the variational bound, and with --ode the "
        "probability-flow ODE likelihood.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help=MODEL_HELP)
    p.add_argument("folder", type=Path, metavar="FOLDER", help="image folder, read recursively")
    p.add_argument("--num", type=positive_int, default=None, help="use the first N images (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per batch (default: 32)")
    p.add_argument(
        "--ode",
        action="store_true",
        help="also compute the ODE likelihood (slower; always on for the score-based processes, which have no VLB)",
    )
    p.add_argument(
        "--ode-steps",
        type=positive_int,
        default=None,
        help="Heun grid points of the ODE, 2*steps-1 evaluations (default: 100, or the model's T if it has fewer)",
    )
    p.add_argument("--probes", type=positive_int, default=1, help="Hutchinson probes for the ODE (default: 1)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the VLB noise and probes (default: 0)")
    p.add_argument("--no-ema", action="store_true", help="use the online weights instead of the EMA weights")
    p.add_argument("--device", type=device, default=None, help="default: cuda if available, else cpu")
    _add_threads_option(p)
    p.set_defaults(run=run_nll)


def _mean_and_error(values: torch.Tensor) -> str:
    """'mean ± standard error' of per-image values."""
    error = float(values.std()) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{float(values.mean()):.4f} ± {error:.4f}"


def run_nll(args: argparse.Namespace) -> int:
    """The ``nll`` subcommand: bits/dim per image, averaged, with its standard error."""
    dev = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    diffusion = resolve_source(args.checkpoint).load(use_ema=not args.no_ema, device=dev)
    dataset = ImageFolderDataset(args.folder, diffusion.image_size, channels=diffusion.channels)
    check_folder_dataset(dataset)  # every unreadable file named in one error, before the first evaluation
    count = len(dataset) if args.num is None else min(args.num, len(dataset))
    loader = DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=args.batch_size)
    generator = torch.Generator(device=dev).manual_seed(args.seed)
    vlb, ode = [], []
    discrete = diffusion.config.get("process", "ddpm") == "ddpm"  # the VLB is the discrete chain's; else ODE only
    ode_steps = default_ode_steps(diffusion.schedule, args.ode_steps)
    parts = (["VLB"] if discrete else []) + ([f"ODE, {ode_steps} steps"] if args.ode or not discrete else [])
    label = f"nll: {' + '.join(parts)}"
    for batch in tqdm(loader, desc=label, unit="batch", file=sys.stderr, dynamic_ncols=True):
        batch = batch.to(dev)
        if discrete:
            vlb.append(bits_per_dim(diffusion, batch, generator=generator).cpu())
        if args.ode or not discrete:
            ode.append(
                ode_bits_per_dim(
                    diffusion,
                    batch,
                    steps=ode_steps,
                    exact_trace=False,
                    num_probes=args.probes,
                    generator=generator,
                )
                .detach()
                .cpu()
            )
    print(f"images:         {count} from {args.folder}")
    if vlb:
        print(f"VLB bits/dim:   {_mean_and_error(torch.cat(vlb))}  (an upper bound)")
    else:
        print(f"VLB bits/dim:   not defined for process {diffusion.config['process']!r} (the ODE's below)")
    if ode:
        print(f"ODE bits/dim:   {_mean_and_error(torch.cat(ode))}  (Hutchinson, {args.probes} probe(s))")
    return 0
