"""The timing guard: guarded medians, contenders alternated within a run, peak memory in a child process.

On a shared 2-core machine another busy process can slow a 2-thread step many times over. Every timed
iteration is therefore *guarded*: when its process CPU time is below ``CPU_SHARE`` x threads x wall time, the
process did not get the CPU it asked for and the iteration is redone (a bounded number of times, then kept and
counted). Figures are medians over guarded iterations after warm-up. Peak memory is measured in a fresh child
process (peak resident memory after the phase minus after building), so phases and libraries do not mask each other.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .records import cpu_model

CPU_SHARE = 0.7  # an iteration is kept when process CPU time >= CPU_SHARE x threads x wall time
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Timing:
    """Median wall time (s) of the kept iterations, how many iterations were redone, and how many were kept
    although the guard still failed (their figures were taken under load)."""

    median_s: float
    redone: int = 0
    unguarded: int = 0


def guarded_call(fn: Callable[[], Any], threads: int, retries: int = 3) -> tuple[float, int, bool]:
    """Wall time of one call of fn that got its CPU share; also the redo count and whether the guard still failed.

    ``threads <= 0`` turns the guard off (e.g. on a GPU, where the host thread mostly waits).
    """
    redone = 0
    while True:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        fn()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        starved = threads > 0 and cpu < CPU_SHARE * threads * wall
        if not starved or redone >= retries:
            return wall, redone, starved
        redone += 1


def guarded_median(fn: Callable[[], Any], repeats: int, threads: int, warmup: int = 2) -> tuple[float, int]:
    """Median wall time of fn over ``repeats`` guarded iterations after ``warmup`` untimed ones; also the redo count."""
    timings = alternating_medians({"fn": fn}, repeats, threads, warmup=warmup)
    return timings["fn"].median_s, timings["fn"].redone


def alternating_medians(
    fns: Mapping[str, Callable[[], Any]], repeats: int, threads: int, warmup: int = 2, retries: int = 3
) -> dict[str, Timing]:
    """Guarded medians of several functions, timed in turn (a, b, c, a, b, c, ...) so that a slow spell of
    the machine hits all of them alike. Each function is warmed up ``warmup`` times first."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    walls: dict[str, list[float]] = {name: [] for name in fns}
    result = {name: Timing(0.0) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, redone, starved = guarded_call(fn, threads, retries)
            walls[name].append(wall)
            result[name].redone += redone
            result[name].unguarded += int(starved)
    for name, timing in result.items():
        timing.median_s = statistics.median(walls[name])
    return result


def max_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux: VmHWM of /proc/self/status, which starts afresh at exec. ru_maxrss does not: it is kept across
    execve, so a child started by a big parent would report the parent's peak and hide its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_child(module: str, function: str, payload: dict[str, Any], threads: int | None = None) -> float:
    """Run ``module.function(payload) -> float`` in a fresh Python process (repo root on the path) and return its value.

    Used for peak-memory figures: the peak only ever grows, so each phase needs its own process.
    """
    code = (
        "import json, sys, torch\n"
        "payload = json.loads(sys.argv[1])\n"
        "if payload.get('_threads'): torch.set_num_threads(payload['_threads'])\n"
        f"from {module} import {function}\n"
        f"print(repr(float({function}(payload))))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    argv = [sys.executable, "-c", code, json.dumps(dict(payload, _threads=threads))]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {module}.{function} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def machine_line() -> str:
    """One line naming the machine state a table was measured in: CPU, cores, threads, torch, date, load."""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, 1-min load average {load_average():.2f}"
    )
