"""Speed and memory of the default network on the CPU: parameters, training step, one network evaluation, peak memory.

Usage:  python benchmarks/bench_unet.py [--image-size 32] [--batch 16] [--dim 64] [--dim-mults 1,2,4,8]
                                        [--repeats 7] [--threads N] [--tiny]

Prints a table. Each timed iteration is guarded: on a shared 2-core machine another busy process can slow a
2-thread step many times over, so an iteration whose process CPU time is below 70% of threads x wall time is
redone (up to 3 times); the first steps are warm-up and not timed; figures are medians. Peak memory is measured in
a fresh subprocess per phase (peak RSS, VmHWM, minus the peak after building the model), so phases do not mask
each other.
``--tiny`` runs a seconds-long configuration, used by the test suite as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks._timing import guarded_median, max_rss_mib
from denoising_diffusion import GaussianDiffusion, Unet
from denoising_diffusion.training.optimizer import make_adam

__all__ = ["build", "guarded_median", "main", "memory_child", "parse", "peak_memory", "time_phases"]


def build(args: argparse.Namespace) -> GaussianDiffusion:
    torch.manual_seed(0)
    model = Unet(dim=args.dim, dim_mults=args.dim_mults)
    return GaussianDiffusion(model, image_size=args.image_size, timesteps=1000)


def time_phases(args: argparse.Namespace) -> dict[str, float]:
    diffusion = build(args)
    images = torch.rand(args.batch, 3, args.image_size, args.image_size)
    opt = make_adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))  # the Trainer's Adam

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        diffusion(images).backward()
        opt.step()

    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    t = torch.full((args.batch,), 500)

    def evaluation() -> None:
        with torch.inference_mode():
            diffusion.model(x, t)

    threads = torch.get_num_threads()
    step, redo_step = guarded_median(train_step, args.repeats, threads)
    fwd, redo_fwd = guarded_median(evaluation, args.repeats, threads)
    return {"step_s": step, "forward_s": fwd, "redone": redo_step + redo_fwd}


def peak_memory(args: argparse.Namespace, phase: str) -> float:
    """Peak extra resident memory (MiB) of one phase ('train' or 'forward'), measured in its own process."""
    code = (
        "import resource, sys, json, torch; sys.argv = ['x'] + json.loads(sys.argv[1]);"
        "import benchmarks.bench_unet as b; a = b.parse(sys.argv[1:]); "
        "torch.set_num_threads(a.threads or torch.get_num_threads());"
        f"print(b.memory_child(a, {phase!r}))"
    )
    argv = json.dumps(args.argv)
    out = subprocess.run(
        [sys.executable, "-c", code, argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return float(out.stdout.strip().splitlines()[-1])


def memory_child(args: argparse.Namespace, phase: str) -> float:
    diffusion = build(args)
    images = torch.rand(args.batch, 3, args.image_size, args.image_size)
    opt = make_adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))  # the Trainer's Adam
    base = max_rss_mib()
    if phase == "train":
        for _ in range(2):  # the second step includes Adam's state
            opt.zero_grad(set_to_none=True)
            diffusion(images).backward()
            opt.step()
    else:
        with torch.inference_mode():
            diffusion.model(images, torch.full((args.batch,), 500))
    return max_rss_mib() - base


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dim-mults", type=lambda s: tuple(int(m) for m in s.split(",")), default=(1, 2, 4, 8))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke configuration")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.tiny:
        args.image_size, args.batch, args.dim, args.dim_mults, args.repeats = 8, 2, 8, (1, 2), 2
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = sum(p.numel() for p in build(args).model.parameters())
    result = time_phases(args)
    result["params_M"] = params / 1e6
    result["train_mem_MiB"] = peak_memory(args, "train")
    result["forward_mem_MiB"] = peak_memory(args, "forward")
    print(
        f"Unet(dim={args.dim}, dim_mults={args.dim_mults}) at {args.image_size}x{args.image_size}, batch "
        f"{args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(
        "| params | train step | images/s (train) | one network evaluation | peak memory, train | "
        "peak memory, forward | redone iterations |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {result['params_M']:.2f} M | {result['step_s']:.3f} s | {args.batch / result['step_s']:.1f} | "
        f"{result['forward_s']:.3f} s | {result['train_mem_MiB']:.0f} MiB | {result['forward_mem_MiB']:.0f} MiB | "
        f"{result['redone']:.0f} |"
    )
    return result


if __name__ == "__main__":
    main()
