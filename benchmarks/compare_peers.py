"""Speed and memory of this project's Unet against its peers at matched network size, measured side by side.

Usage:  python benchmarks/compare_peers.py [--configs 3x32,3x64,1x28] [--repeats 5] [--sample-repeats 2]
                                           [--libraries ours,denoising-diffusion-pytorch,diffusers]
                                           [--threads N] [--skip-missing] [--no-memory] [--quick] [--results FILE]
        python benchmarks/compare_peers.py --profile [--configs 3x32]   # where our training step's time goes
        python benchmarks/compare_peers.py --memory-only                # peak memory only (load-independent)

For each configuration every library builds a network of about the same parameter count (harness/subjects.py; a
count more than 10% away from ours is flagged) and is timed on: a training step (forward + ε-prediction MSE loss +
backward + Adam step), one forward pass under inference_mode (one network evaluation of a sampler), and a 50-step
DDIM sample (each library's own DDIM). The libraries are alternated iteration by iteration within one run, every
iteration is guarded against a busy machine (harness/timing.py), figures are medians after warm-up. Peak memory of a
training step (and of a forward pass) is measured in its own child process per library. The output is a markdown
table per configuration and one table of ratios (ours / peer); each row is appended to benchmarks/results/
compare_peers.jsonl (``--results``; a ``--quick`` run records only when given a file). ``--libraries`` may add
``ours-checkpointed`` (our Unet with gradient checkpointing). ``--skip-missing`` skips a peer that is not installed
instead of failing; ``--quick`` runs a seconds-long smoke configuration (used by the test suite).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampler draws a progress bar; tqdm reads this at import

import torch

from benchmarks.harness import records, speed_tables
from benchmarks.harness.subjects import (
    BUILDERS,
    CONFIGS,
    LIBRARIES,
    OURS,
    QUICK,
    Config,
    inference_fn,
    select_libraries,
    train_step_fn,
)
from benchmarks.harness.timing import alternating_medians, machine_line, max_rss_mib, run_child


def memory_child(payload: dict[str, Any]) -> float:
    """Peak extra resident memory (MiB) of two training steps or one forward pass; run by ``run_child``."""
    torch.manual_seed(0)
    subject = BUILDERS[payload["library"]](Config.from_dict(payload["config"]))
    step = train_step_fn(subject)
    base = max_rss_mib()
    if payload["phase"] == "train":
        step()
        step()  # the second step includes Adam's state
    else:
        inference_fn(subject.forward)()
    return max_rss_mib() - base


def peak_memory(config: Config, library: str, phase: str, threads: int) -> float:
    """:func:`memory_child` in a fresh process (the peak only ever grows, so each phase needs its own)."""
    payload = {"config": asdict(config), "library": library, "phase": phase}
    return run_child("benchmarks.compare_peers", "memory_child", payload, threads)


def _config_fields(config: Config) -> dict[str, Any]:
    shape = f"{config.channels}x{config.image_size}x{config.image_size}"
    return {"config": config.name, "shape": shape, "batch": config.batch, "dim_mults": list(config.dim_mults)}


def measure(config: Config, libraries: list[str], repeats: int, sample_repeats: int,
            memory_phases: tuple[str, ...], header: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Time every library on ``config`` (alternating them), then measure peak memory in child processes: a record
    per library, each peer's with its ratios to ours."""
    torch.manual_seed(0)
    subjects = [BUILDERS[lib](config) for lib in libraries]
    threads = torch.get_num_threads()
    train = alternating_medians({s.library: train_step_fn(s) for s in subjects}, repeats, threads)
    forward = alternating_medians({s.library: inference_fn(s.forward) for s in subjects}, repeats, threads)
    sample = alternating_medians(
        {s.library: inference_fn(s.sample) for s in subjects}, sample_repeats, threads, warmup=0, retries=1
    )
    rows = []
    for s in subjects:
        timings = (train[s.library], forward[s.library], sample[s.library])
        memory = {f"{phase}_mib": peak_memory(config, s.library, phase, threads) for phase in memory_phases}
        rows.append({
            **header, **_config_fields(config), "sample_steps": config.sample_steps, "threads": threads,
            "library": s.library, "params_m": s.params / 1e6, "train_s": timings[0].median_s,
            "train_images_per_s": config.batch / timings[0].median_s, "forward_s": timings[1].median_s,
            "sample_s": timings[2].median_s, **memory, "redone": sum(t.redone for t in timings),
            "unguarded": sum(t.unguarded for t in timings),
        })  # fmt: skip
    ours = next((r for r in rows if r["library"] == OURS), None)
    for r in rows:
        if ours is not None and r is not ours:
            r["ours_over_peer"] = speed_tables.ratios(ours, r)
    return rows


def memory_rows(configs: list[Config], libraries: list[str], threads: int, header: dict[str, Any]) -> list[dict]:
    """Peak memory only (no timing; unaffected by a busy machine): a record per config x library."""
    rows = []
    for config in configs:
        for lib in libraries:
            params = sum(p.numel() for p in BUILDERS[lib](config).network.parameters())
            mem = {f"{phase}_mib": peak_memory(config, lib, phase, threads) for phase in ("train", "forward")}
            rows.append({**header, "mode": "memory", **_config_fields(config), "threads": threads, "library": lib,
                         "params_m": params / 1e6, **mem})  # fmt: skip
            print(f"  {config.name} {lib}: {mem['train_mib']:.0f} MiB", flush=True)
    return rows


def profile_ours(config: Config, steps: int = 3, top: int = 15) -> str:
    """Where the time of our training step goes: torch.profiler's top ops by self CPU time over ``steps`` steps
    (after two warm-up steps), as a markdown table with each op's share of the total."""
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.harness.tables import markdown

    torch.manual_seed(0)
    step = train_step_fn(BUILDERS[OURS](config))
    step()
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [[e.key, f"{e.self_cpu_time_total / total:.1%}", f"{e.self_cpu_time_total / steps / 1e3:.1f}",
             e.count // steps] for e in events[:top]]  # fmt: skip
    return (f"Our training step at {config.name}, batch {config.batch}: top ops by self CPU time "
            f"({total / steps / 1e6:.3f} s per step under the profiler)\n\n"
            + markdown(["op", "share", "ms per step", "calls per step"], rows))  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--libraries", default=",".join(LIBRARIES[:3]), help="comma-separated, from " + ", ".join(LIBRARIES))
    p.add_argument("--repeats", type=int, default=5, help="timed iterations of the train step and forward pass")
    p.add_argument("--sample-repeats", type=int, default=2, help="timed DDIM samples per library")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--skip-missing", action="store_true", help="skip a peer that is not installed")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="measure peak memory in child processes (--no-memory: timings only)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory table (no timing)")
    p.add_argument("--profile", action="store_true",
                   help="instead of comparing, profile our training step at the first config (top ops)")  # fmt: skip
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown and not args.quick:
        p.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    args.config_list = [QUICK] if args.quick else [CONFIGS[c] for c in args.configs.split(",")]
    if args.quick:
        args.repeats, args.sample_repeats = 1, 1
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the comparison and print its tables; returns the records (one per configuration and library)."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        print(f"Measured on {machine_line()}\n\n{profile_ours(args.config_list[0], steps=1 if args.quick else 3)}")
        return []
    libraries, notes = select_libraries(args.libraries.split(","), args.skip_missing)
    print(f"Measured on {machine_line()}")
    for note in notes:
        print(f"Note: {note}")
    header = records.header("compare_peers", argv, seed=0)
    if args.memory_only:
        rows = memory_rows(args.config_list, libraries, torch.get_num_threads(), header)
        print("\n" + speed_tables.memory(rows))
    else:
        phases = () if not args.memory else ("train",) if args.quick else ("train", "forward")
        rows = []
        for config in args.config_list:
            rows += measure(config, libraries, args.repeats, args.sample_repeats, phases, header)
            config_rows = [r for r in rows if r["config"] == config.name]
            print("\n" + speed_tables.compare_peers(config_rows, with_ratios=False), flush=True)
        print("\n" + speed_tables.peer_ratios(rows))
    records.append(records.destination(args.results, "compare_peers", quick=args.quick), *rows)
    print(f"\nFinished at {machine_line()}")
    return rows


if __name__ == "__main__":
    main()
