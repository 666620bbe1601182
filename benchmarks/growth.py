"""How a training step of the default network grows with image size and batch size: time, FLOPs, FLOP rate, memory.

Usage:  python benchmarks/growth.py [--sizes 16,32,64,128] [--batches 4,16] [--dim 64] [--dim-mults 1,2,4,8]
                                    [--repeats 3] [--max-pixels 65536] [--threads N] [--no-memory] [--quick]
                                    [--results FILE]

For each (image size, batch) the table gives the median guarded training-step time (forward + loss + backward +
Adam), the FLOPs of one step counted by torch.utils.flop_counter.FlopCounterMode (forward and backward
convolutions, matmuls and attention; elementwise work is not counted), the achieved rate in GFLOP/s, and the peak
training memory (its own child process). To predict the cost of a size not measured, count its FLOPs (cheap,
no timing needed) and divide by a GFLOP/s figure of a neighbouring row. Points with batch x size² above
``--max-pixels`` are skipped (memory grows about linearly in that product). ``--quick``: a seconds-long smoke run.
Each point is appended to benchmarks/results/growth.jsonl (``--results``; a ``--quick`` run records only when given a
file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import records, speed_tables
from benchmarks.harness.timing import guarded_median, machine_line, max_rss_mib, run_child
from denoising_diffusion import GaussianDiffusion, Unet
from denoising_diffusion.training import make_adam


def _ints(text: str) -> tuple[int, ...]:
    """Parse '16,32,64' into (16, 32, 64)."""
    return tuple(int(v) for v in text.split(","))


def build(size: int, dim: int, dim_mults: tuple[int, ...]) -> GaussianDiffusion:
    """The network under test, inside GaussianDiffusion for the training loss."""
    torch.manual_seed(0)
    return GaussianDiffusion(Unet(dim, dim_mults=dim_mults), image_size=size, timesteps=1000)


def train_step_fn(diffusion: GaussianDiffusion, batch: int) -> Callable[[], None]:
    """A training step on a fixed batch: zero grads, loss, backward, Adam step (the Trainer's Adam)."""
    images = torch.rand(batch, 3, *diffusion.image_size)
    optimizer = make_adam(diffusion.model.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        diffusion(images).backward()
        optimizer.step()

    return step


def step_flops(diffusion: GaussianDiffusion, batch: int) -> int:
    """FLOPs of one training step's forward and backward pass, as FlopCounterMode counts them."""
    images = torch.rand(batch, 3, *diffusion.image_size)
    with FlopCounterMode(display=False) as counter:
        diffusion(images).backward()
    diffusion.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def memory_child(payload: dict[str, Any]) -> float:
    """Peak extra resident memory (MiB) of two training steps; run by ``run_child``."""
    diffusion = build(payload["size"], payload["dim"], tuple(payload["dim_mults"]))
    step = train_step_fn(diffusion, payload["batch"])
    base = max_rss_mib()
    step()
    step()  # the second step includes Adam's state
    return max_rss_mib() - base


def measure(size: int, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """Time, count and (in a child) measure one point: its record's figures."""
    diffusion = build(size, args.dim, args.dim_mults)
    flops = step_flops(diffusion, batch)
    step_s, redone = guarded_median(train_step_fn(diffusion, batch), args.repeats, torch.get_num_threads(), warmup=1)
    memory = None
    if args.memory:
        payload = {"size": size, "batch": batch, "dim": args.dim, "dim_mults": list(args.dim_mults)}
        memory = run_child("benchmarks.growth", "memory_child", payload, torch.get_num_threads())
    return {"size": size, "batch": batch, "step_s": step_s, "images_per_s": batch / step_s, "flops": flops,
            "gflop": flops / 1e9, "gflop_per_s": flops / step_s / 1e9, "memory_mib": memory,
            "mib_per_image": memory and memory / batch, "redone": redone}  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=_ints, default=(16, 32, 64, 128))
    p.add_argument("--batches", type=_ints, default=(4, 16))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dim-mults", type=_ints, default=(1, 2, 4, 8))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-pixels", type=int, default=16 * 64 * 64, help="skip points with batch x size² above this")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument(
        "--memory", action=argparse.BooleanOptionalAction, default=True, help="measure peak memory in child processes"
    )
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.batches, args.dim, args.dim_mults, args.repeats = (8, 16), (2,), 8, (1, 2), 1
    factor = 2 ** (len(args.dim_mults) - 1)
    bad = [s for s in args.sizes if s % factor]
    if bad:
        p.error(f"image sizes {bad} are not multiples of {factor} = 2**(len(dim_mults) - 1)")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure the grid and print its table; returns the records, one per point."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"Unet(dim={args.dim}, dim_mults={args.dim_mults}), training step, measured on {machine_line()}")
    header = records.header("growth", argv, seed=0, dim=args.dim, dim_mults=list(args.dim_mults),
                            threads=torch.get_num_threads())  # fmt: skip
    points, skipped = [], []
    for batch in args.batches:
        for size in args.sizes:
            if batch * size * size > args.max_pixels:
                skipped.append(f"{size}x{size} batch {batch}")
                continue
            points.append({**header, **measure(size, batch, args)})
            print(f"  {size}x{size} batch {batch}: {points[-1]['step_s']:.3f} s", flush=True)
    print("\n" + speed_tables.growth(points))
    if skipped:
        print(f"\nSkipped (batch x size² > --max-pixels {args.max_pixels}): {', '.join(skipped)}")
    records.append(records.destination(args.results, "growth", quick=args.quick), *points)
    print(f"\nFinished at {machine_line()}")
    return points


if __name__ == "__main__":
    main()
