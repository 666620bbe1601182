"""The peer comparison on an accelerator: bf16 autocast, channels_last, torch.compile; images/s and share of peak.

Usage:  python benchmarks/gpu.py [--device cuda] [--configs 3x32,3x64,1x28] [--repeats 10]
                                 [--libraries ours,denoising-diffusion-pytorch,diffusers] [--skip-missing]
                                 [--dtype bf16|fp32] [--compile/--no-compile] [--channels-last/--no-channels-last]
                                 [--time-budget 420] [--results FILE]
        python benchmarks/gpu.py --device cpu        # dry run at a tiny size (the test suite runs it)

First a large matmul in the chosen dtype gives the device's measured peak rate (TFLOP/s). Then, for each
configuration of harness/subjects.py and each library (compare_peers' matched networks), the training step and one
forward pass are timed (libraries alternated, device synchronised around each iteration, medians after warm-up, which
includes compilation), and a DDIM sample is timed once. The table gives images/s, the achieved FLOP rate (FLOPs
counted by FlopCounterMode on an uncompiled copy) as a fraction of the measured matmul rate, and the peak device
memory of a training step. Meant to finish within 8 minutes on one GPU: compilation is most of the time, and a
configuration that would not fit in ``--time-budget`` (7 minutes) at the pace so far is skipped with a note
(``--no-compile`` is much quicker). On the CPU the same code runs at the quick size, fp32 or bf16 autocast, compile
off unless asked (a dry run: it records nothing unless given ``--results``); on an accelerator each row is appended
to benchmarks/results/gpu.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import records, speed_tables
from benchmarks.harness.subjects import (
    BUILDERS,
    CONFIGS,
    LIBRARIES,
    QUICK,
    Config,
    Subject,
    inference_fn,
    select_libraries,
    train_step_fn,
)
from benchmarks.harness.timing import alternating_medians, machine_line

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def synchronize(device: str) -> None:
    """Wait for queued device work, so host wall time measures it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def synced(fn: Callable[[], Any], device: str) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation."""

    def run() -> None:
        fn()
        synchronize(device)

    return run


def matmul_rate(device: str, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Measured FLOP/s of an n x n x n matmul in ``dtype`` (median over ``repeats`` after warm-up)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timing = alternating_medians({"mm": synced(lambda: a @ b, device)}, repeats, threads=0, warmup=3)
    return 2 * n**3 / timing["mm"].median_s


def autocast_factory(device: str, dtype: torch.dtype) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A no-argument factory of the autocast context (a null context for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def count_flops(subject: Subject, autocast: Callable[[], contextlib.AbstractContextManager[Any]]) -> tuple[int, int]:
    """FLOPs of one training forward + backward and of one forward pass (uncompiled subject)."""
    with FlopCounterMode(display=False) as counter, autocast():
        loss = subject.loss()
    with FlopCounterMode(display=False) as backward_counter:
        loss.backward()
    subject.network.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as forward_counter, torch.inference_mode(), autocast():
        subject.forward()
    return counter.get_total_flops() + backward_counter.get_total_flops(), forward_counter.get_total_flops()


def peak_train_memory_mib(step: Callable[[], None], device: str) -> float | None:
    """Peak device memory (MiB) of one training step, or None off CUDA."""
    if not device.startswith("cuda"):
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def measure(config: Config, libraries: list[str], args: argparse.Namespace, peak: float) -> list[dict[str, Any]]:
    """Count FLOPs on uncompiled copies, then time the compiled subjects (alternated) and their memory: a record's
    figures per library."""
    device, dtype = args.device, DTYPES[args.dtype]
    autocast = autocast_factory(device, dtype)
    flops = {}
    for lib in libraries:
        try:
            flops[lib] = count_flops(BUILDERS[lib](config, device, args.channels_last), autocast)
        except RuntimeError as error:  # e.g. a peer op without a bf16 kernel under CPU autocast
            print(f"Note: {lib} failed on {device} with {args.dtype}, left out: {str(error).splitlines()[0]}")
    libraries = list(flops)
    wrap = (lambda m: torch.compile(m)) if args.compile else (lambda m: m)
    subjects = {lib: BUILDERS[lib](config, device, args.channels_last, wrap) for lib in libraries}
    steps = {lib: synced(train_step_fn(s, autocast), device) for lib, s in subjects.items()}

    def forward_of(s: Subject) -> Callable[[], None]:
        return synced(inference_fn(lambda: _under(autocast, s.forward)), device)

    def sample_of(s: Subject) -> Callable[[], None]:
        return synced(inference_fn(lambda: _under(autocast, s.sample)), device)

    train = alternating_medians(steps, args.repeats, threads=0, warmup=3)
    forward = alternating_medians({lib: forward_of(s) for lib, s in subjects.items()}, args.repeats, 0, warmup=3)
    sample = alternating_medians({lib: sample_of(s) for lib, s in subjects.items()}, 1, 0, warmup=1)
    shape = f"{config.channels}x{config.image_size}x{config.image_size}"
    return [
        {"config": config.name, "shape": shape, "batch": config.batch, "library": lib, "params_m": s.params / 1e6,
         "step_s": train[lib].median_s, "forward_s": forward[lib].median_s, "sample_s": sample[lib].median_s,
         "train_flops": flops[lib][0], "forward_flops": flops[lib][1], "peak_flops": peak,
         "memory_mib": peak_train_memory_mib(steps[lib], device)}
        for lib, s in subjects.items()
    ]  # fmt: skip


def _under(context: Callable[[], contextlib.AbstractContextManager[Any]], fn: Callable[[], Any]) -> Any:
    """``fn()`` inside a fresh ``context()``."""
    with context():
        return fn()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated, from {', '.join(CONFIGS)} (default: all on an accelerator, the quick size on the CPU)",
    )
    p.add_argument("--libraries", default=",".join(LIBRARIES))
    p.add_argument("--skip-missing", action="store_true", help="skip a peer that is not installed")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the networks (default: on for CUDA, off for the CPU)",
    )
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--time-budget",
        type=float,
        default=420,
        help="seconds; configurations that would not fit (at the pace so far) are skipped with a note",
    )
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    on_cpu = args.device == "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("CUDA is not available here; use --device cpu for a dry run")
    if args.compile is None:
        args.compile = not on_cpu
    if args.configs is None:
        args.config_list = [QUICK] if on_cpu else list(CONFIGS.values())
    else:
        unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
        if unknown:
            p.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
        args.config_list = [CONFIGS[c] for c in args.configs.split(",")]
    if on_cpu and args.configs is None:
        args.repeats = min(args.repeats, 2)
    args.dry_run = on_cpu and args.configs is None
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure the matmul peak, then every configuration; print the tables."""
    args = parse(argv)
    libraries, notes = select_libraries(args.libraries.split(","), args.skip_missing)
    started = time.perf_counter()
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    peak = matmul_rate(args.device, DTYPES[args.dtype], 8192 if args.device.startswith("cuda") else 256)
    print(
        f"{name}: measured {args.dtype} matmul rate {peak / 1e9:.1f} GFLOP/s; compile={args.compile}, "
        f"channels_last={args.channels_last}; host: {machine_line()}"
    )
    for note in notes:
        print(f"Note: {note}")
    header = records.header("gpu", argv, seed=0, device=name, dtype=args.dtype, compile=args.compile,
                            channels_last=args.channels_last)  # fmt: skip
    results: list[dict[str, Any]] = []
    for done, config in enumerate(args.config_list):
        elapsed = time.perf_counter() - started
        if done and elapsed * (done + 1) / done > args.time_budget:
            left = ", ".join(c.name for c in args.config_list[done:])
            print(
                f"\nNote: stopped before {left}: another configuration would pass --time-budget "
                f"{args.time_budget:.0f} s (elapsed {elapsed:.0f} s)"
            )
            break
        rows = [{**header, **row} for row in measure(config, libraries, args, peak)]
        results += rows
        print("\n" + speed_tables.gpu(rows), flush=True)
    records.append(records.destination(args.results, "gpu", quick=args.dry_run), *results)
    print(f"\nTotal {time.perf_counter() - started:.0f} s")
    return results


if __name__ == "__main__":
    main()
