"""``denoising-diffusion sweep CHECKPOINT REAL --samplers ddim,dpmpp_2m --nfe 5,10,20``: metric x sampler x network
evaluations, as a table and a plot (docs/evaluation.md, "Choosing a sampler")."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .._utils import chunk_sizes
from ..evaluation.sweep import check_samplers, format_table, plot_sweep, steps_for_nfe, sweep
from .args import load_model, positive_int
from .evaluate import add_evaluation_options, add_generation_options, load_real, metric_options, print_real
from .progress import SamplingBar


def _comma_list(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
        if not values or any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected comma-separated positive {kind.__name__}s, got {text!r}")
        return values

    parse.__name__ = f"comma-separated {kind.__name__}s"
    return parse


def add_sweep_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="metrics of a checkpoint's samples for several samplers and network-evaluation budgets",
        description="Score --num samples of CHECKPOINT against REAL for every sampler and NFE; print a table and "
        "write a plot.",
    )
    add_evaluation_options(p)
    p.add_argument("--samplers", type=lambda text: [s.strip() for s in text.split(",") if s.strip()], required=True,
                   help="comma-separated sampler names (see `denoising-diffusion samplers`)")  # fmt: skip
    p.add_argument("--nfe", type=_comma_list(int), required=True,
                   help="comma-separated network-evaluation budgets, e.g. 5,10,20,50")  # fmt: skip
    p.add_argument("--tolerances", type=_comma_list(float), default=[1e-3],
                   help="adaptive solvers ('ode'): one run per tolerance, rtol = atol (default: 1e-3)")  # fmt: skip
    p.add_argument("--num", type=positive_int, default=1000, help="generated images per row (default: 1000)")
    p.add_argument("--plot", type=Path, default=Path("sweep.png"), help="the plot (default: sweep.png)")
    add_generation_options(p)
    p.set_defaults(run=run_sweep)


def sweep_bar(diffusion: Any, args: argparse.Namespace) -> SamplingBar:
    """One bar over every sampler step of the sweep: each fixed-step sampler at the most steps within each NFE, for
    --num images in batches; no total when an adaptive solver is among them."""
    infos = check_samplers(diffusion, args.samplers)
    calls = len(chunk_sizes(args.num, args.batch_size))
    steps = None if any(i.adaptive for i in infos) else sum(steps_for_nfe(i, n) for i in infos for n in args.nfe)
    label = f"sweep: {','.join(args.samplers)} at NFE {','.join(map(str, args.nfe))}"
    return SamplingBar(label, None if steps is None else steps * calls, evaluations_per_step=0)


def run_sweep(args: argparse.Namespace) -> int:
    """The ``sweep`` subcommand."""
    diffusion, _ = load_model(args)
    check_samplers(diffusion, args.samplers)  # unknown names fail before any feature is computed
    real, extractor = load_real(args, diffusion)
    print_real(real, args.features)
    with torch.inference_mode(), sweep_bar(diffusion, args) as bar:
        points = sweep(
            diffusion, real, extractor.extractor, args.samplers, args.nfe, num=args.num, tolerances=args.tolerances,
            batch_size=args.batch_size, seed=args.seed, options=metric_options(args), guidance_scale=args.guidance,
            callback=bar,
        )  # fmt: skip
    print(f"generated:  {args.num} images (N) per row, seed {args.seed}")
    print(format_table(points))
    print(f"plot:       {plot_sweep(points, args.plot)}")
    return 0
