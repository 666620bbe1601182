"""The command line's default number of torch threads: no more than the cores other processes leave idle.

torch's intra-op pool is OpenMP (libgomp in the CPU builds): at the end of each parallel region a thread that
finished spins before it sleeps, waiting for the others. When another process holds one of the cores, the thread
that lost its core finishes late and the one that kept its core burns it spinning; on a 2-core machine shared with
other work the default job then took 32 minutes and 1,078 CPU-seconds instead of about 2 minutes and 200
(issue 28; benchmarks/threads.py measures it, benchmarks/README.md has the table). One thread never waits for
another. ``OMP_WAIT_POLICY=PASSIVE`` would stop the spinning too, but libgomp reads it only when torch is loaded,
before any command can set it.

So when ``--threads`` is not given, :func:`default_threads` takes torch's own default (the cores, or the physical
cores) and lowers it to the cores that were idle over a short look at the machine (:func:`idle_cores`, from
/proc/stat; the 1-minute load average where that is missing), at least one. On an idle machine this is torch's
default; beside one busy process on two cores it is one thread.
"""

from __future__ import annotations

import math
import os
import time

import torch

LOOK_S = 0.1  # how long default_threads watches the machine's CPU time


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies over every CPU from /proc/stat's first line, or None where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [float(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user .. steal


def idle_cores(look_s: float = LOOK_S) -> float | None:
    """How many CPUs sat idle over the next ``look_s`` seconds (by /proc/stat), or None where it cannot be read."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(look_s)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def default_threads() -> int:
    """torch's default thread count, lowered to the idle cores (rounded to the nearest, at least 1)."""
    idle = idle_cores()
    if idle is None:
        try:
            idle = (os.cpu_count() or 1) - os.getloadavg()[0]
        except OSError:
            return torch.get_num_threads()
    return max(1, min(torch.get_num_threads(), math.floor(idle + 0.5)))
