"""The default job's CPU time and wall time under several thread settings, alone and beside one busy process.

Why: on a 2-core machine shared with other work, ``denoising-diffusion train`` took 32 minutes and 1,078 CPU-seconds
for a job that needs about 200 alone (issue 28). torch's intra-op pool here is OpenMP (libgomp): at the end of each
parallel region the waiting thread spins (GOMP_SPINCOUNT iterations, unless OMP_WAIT_POLICY=PASSIVE) before it
sleeps, so when another process holds one of the two cores, the thread that still has a core burns it waiting for
the one that lost its core. This script measures each candidate remedy on the real command line:

* ``--threads N``: torch's own default (every core), passed explicitly;
* ``--threads 1``: no second thread to wait for;
* ``OMP_WAIT_POLICY=PASSIVE`` (set in the child's environment, so before torch is imported) with N threads;
* ``GOMP_SPINCOUNT=1000`` with N threads: a short spin;
* the command line's own default (no ``--threads``).

Each is run ``--repeats`` times alone and beside one busy process (a Python loop spinning on one core, started by
this script), in turn, so that a slow spell of the machine hits all alike. It prints the median wall time and
CPU-seconds (the job's user + system time, from wait4) per setting and condition.

    PYTHONPATH=. python benchmarks/threads.py                      # the default job (800 steps), 3 repeats
    PYTHONPATH=. python benchmarks/threads.py --steps 100 --repeats 2
    PYTHONPATH=. python benchmarks/threads.py --settings one,cli --steps 100
    PYTHONPATH=. python benchmarks/threads.py --quick              # seconds: 1 step, 1 setting (the test)

The numbers only mean something on a machine where nothing else runs; the table's header prints the 1-minute load
average at the start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    """One candidate: its key (--settings), name, extra environment for the child, and its --threads (None: the
    command line's default)."""

    key: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None


@dataclass
class Runs:
    """Wall seconds and CPU-seconds of each run of one setting in one condition."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def settings(cores: int) -> list[Setting]:
    """The candidates compared (module docstring)."""
    return [
        Setting("torch", f"--threads {cores} (torch's default)", threads=cores),
        Setting("one", "--threads 1", threads=1),
        Setting("passive", f"--threads {cores}, OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}, cores),
        Setting("spincount", f"--threads {cores}, GOMP_SPINCOUNT=1000", {"GOMP_SPINCOUNT": "1000"}, cores),
        Setting("cli", "the command line's default (no --threads)"),
    ]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH, without inherited OpenMP settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


def run_job(setting: Setting, job: list[str], results: Path) -> tuple[float, float]:
    """Run the job once as ``python -m denoising_diffusion train ...``; (wall seconds, CPU-seconds of the child)."""
    argv = [sys.executable, "-m", "denoising_diffusion", "train", *job, "--results", str(results)]
    if setting.threads is not None:
        argv += ["--threads", str(setting.threads)]
    start = time.perf_counter()
    child = subprocess.Popen(
        argv, env=child_env(setting.env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO_ROOT
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({child.returncode}): {child.stderr.read().decode()[-2000:]}")
    child.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime


def start_busy() -> subprocess.Popen:
    """One process spinning on one core (a pure-Python loop), until stopped."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def measure(candidates: list[Setting], job: list[str], repeats: int) -> dict[tuple[str, str], Runs]:
    """Every (setting, condition) ``repeats`` times, settings in turn within each repeat."""
    table = {(s.name, c): Runs() for s in candidates for c in ("alone", "busy")}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for condition in ("alone", "busy"):
                for setting in candidates:
                    busy = start_busy() if condition == "busy" else None
                    try:
                        results = Path(tmp) / f"r{repeat}-{condition}-{len(table)}-{time.monotonic_ns()}"
                        wall, cpu = run_job(setting, job, results)
                    finally:
                        if busy is not None:
                            stop(busy)
                    runs = table[(setting.name, condition)]
                    runs.wall.append(wall)
                    runs.cpu.append(cpu)
                    print(f"  {setting.name} / {condition}: {wall:.1f} s wall, {cpu:.1f} CPU-s", file=sys.stderr)
    return table


def format_table(candidates: list[Setting], table: dict[tuple[str, str], Runs]) -> str:
    """A markdown table: medians of wall and CPU seconds, alone and busy, one row per setting."""
    lines = [
        "| setting | wall alone | CPU-s alone | wall beside a busy process | CPU-s beside a busy process |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in candidates:
        alone, busy = table[(s.name, "alone")], table[(s.name, "busy")]
        cells = [statistics.median(v) for v in (alone.wall, alone.cpu, busy.wall, busy.cpu)]
        lines.append(f"| {s.name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[tuple[str, str], Runs]:
    """Parse the options, measure, print the table; returns the raw runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the default job's 800)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting and condition (default: 3)")
    parser.add_argument(
        "--settings", default="torch,one,passive,spincount,cli", help="which candidates, comma-separated (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="seconds: 1 step, no grids, one setting, one repeat")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = args.settings.split(",")
    candidates = [s for s in settings(cores) if s.key in wanted]
    if not candidates:
        parser.error(f"--settings: none of {args.settings!r} is a setting (torch, one, passive, spincount, cli)")
    job = [] if args.steps is None else ["--steps", str(args.steps)]
    if args.quick:
        candidates, job, args.repeats = candidates[:1], ["--steps", "1", "--num-samples", "0", "--no-gif"], 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"{cores} cores, 1-min load average {load:.2f} at the start, {time.strftime('%Y-%m-%d %H:%M %Z')}; "
          f"job: denoising-diffusion train {' '.join(job)}; medians of {args.repeats}")  # fmt: skip
    table = measure(candidates, job, args.repeats)
    print(format_table(candidates, table))
    return table


if __name__ == "__main__":
    main()
