"""What a ``train`` run will cost on this CPU, measured on a few steps before it starts, and how to make it fit.

The folder defaults used to start a 128-px, 100,000-step job on a 2-core CPU without a word: 25 s per step, about 29
days (issue 28). Before a CPU run starts, :func:`measure_run_cost` times training steps of a copy of the model on
real batches of its data, reading them included (one warm-up step, then two timed ones, or one when a step takes
longer than :data:`SLOW_STEP_S`), under a forked RNG, so the run itself is exactly what it would have been without the
measurement (the reproducibility test runs with it). :func:`describe_cost` turns that into a few lines: seconds per
step, peak memory, disk per checkpoint, time to the first sample grid and to the end, and, when the run would take
longer than :data:`FIT_S`, the ``--steps`` that fit in that time.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from .._utils import chunk_sizes
from ..data.batch import collate_batch
from ..training.optimizer import make_adam

SLOW_STEP_S = 10.0  # a warm-up step slower than this is followed by one timed step instead of two
FIT_S = 30 * 60  # runs estimated longer than this get a suggestion that fits in it
ADAM_COPIES = 4  # a checkpoint holds the weights, their EMA and Adam's two moments: four copies of the parameters


@dataclass(frozen=True)
class RunCost:
    """Measured and derived costs of a run (seconds, bytes)."""

    step_s: float  # one optimizer step
    grid_s: float  # one sample grid (0 without grids)
    peak_memory: int  # this process's peak resident memory after the measured steps
    checkpoint_bytes: int
    steps_left: int
    save_every: int
    first_step: int  # the step the run starts from (0, or a resumed step)

    @property
    def grids(self) -> int:
        """Sample grids still to come (one per milestone and one at the end)."""
        return math.ceil(self.steps_left / self.save_every)

    @property
    def first_sample_s(self) -> float:
        """Time until the first grid is written."""
        to_milestone = self.save_every - self.first_step % self.save_every
        return min(to_milestone, self.steps_left) * self.step_s + self.grid_s

    @property
    def total_s(self) -> float:
        return self.steps_left * self.step_s + self.grids * self.grid_s


def _peak_memory() -> int:
    """This process's peak resident memory in bytes (Linux: VmHWM; elsewhere ru_maxrss)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _read_batch(dataset: Any, batch_size: int, index: int) -> Any:
    """Batch number ``index`` of ``dataset`` in order (wrapping around), read and collated as the Trainer does."""
    return collate_batch([dataset[(index * batch_size + i) % len(dataset)] for i in range(batch_size)])


def _timed_steps(model: Any, dataset: Any, batch_size: int) -> float:
    """Seconds per optimizer step of ``model`` (a copy), reading its batch from ``dataset`` included: a warm-up,
    then the mean of two steps (one after a warm-up slower than SLOW_STEP_S)."""
    opt = make_adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))  # the Trainer's Adam

    def step(index: int) -> float:
        start = time.perf_counter()
        model(_read_batch(dataset, batch_size, index)).backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - start

    warm_up = step(0)
    times = [step(index) for index in range(1, 2 if warm_up > SLOW_STEP_S else 3)]
    return sum(times) / len(times)


def measure_run_cost(
    diffusion: Any, dataset: Any, *, batch_size: int, num_samples: int, steps_left: int, save_every: int, start: int
) -> RunCost:
    """Time training steps (and one network evaluation for the grids) on a copy of ``diffusion`` with the first
    ``batch_size`` items of ``dataset``, leaving the model, its RNGs and the data order untouched."""
    with torch.random.fork_rng(devices=[]):
        model = copy.deepcopy(diffusion).train()
        step_s = _timed_steps(model, dataset, batch_size)
        grid_s = 0.0
        if num_samples > 0 and hasattr(diffusion, "sampler_info"):
            batch = _read_batch(dataset, batch_size, 0)
            with torch.no_grad():
                start_time = time.perf_counter()
                model.eval()(batch)  # one forward pass of the network (and the loss), the cost of an evaluation
                forward_s = time.perf_counter() - start_time
            evaluations = diffusion.sampler_info(None).nfe(diffusion.sampling_timesteps)
            grid_s = len(chunk_sizes(num_samples, batch_size)) * evaluations * forward_s
    parameters = sum(p.numel() * p.element_size() for p in diffusion.model.parameters())
    return RunCost(step_s, grid_s, _peak_memory(), ADAM_COPIES * parameters, steps_left, save_every, start)


def _duration(seconds: float) -> str:
    """'45 s', '12 min', '3.5 h', '29 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _size(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.1f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.0f} MiB"


def describe_cost(cost: RunCost, threads: int) -> list[str]:
    """Lines for the start of a CPU run: the cost, and the options that make a long run fit in FIT_S."""
    lines = [
        f"on this CPU ({threads} thread{'s' if threads != 1 else ''}): {cost.step_s:.3g} s per step (measured), "
        f"peak memory {_size(cost.peak_memory)}, {_size(cost.checkpoint_bytes)} per checkpoint",
        f"first sample grid in ~{_duration(cost.first_sample_s)}; the {cost.steps_left} steps left "
        f"and {cost.grids} grid(s) in ~{_duration(cost.total_s)}",
    ]
    if cost.total_s > FIT_S:
        fitting = max(1, int(FIT_S / (cost.step_s + cost.grid_s / cost.save_every)))
        lines.append(
            f"to finish in ~{_duration(FIT_S)}: --steps {cost.first_step + fitting} (and --save-every "
            f"{max(1, fitting // 4)} for four grids); smaller images train far faster: --image-size 16 or 32 picks "
            "a small network, --dim 16 narrows this one; --threads 1 on a machine shared with other work"
        )
    return lines
