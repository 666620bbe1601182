"""The results file of peer_quality.py and the statistics read from it.

Every finished run is one JSON line in ``benchmarks/results/peer_quality.jsonl`` (appended, never rewritten), so
results accumulate across invocations and machines instead of being repeated; a run whose key is already there is
skipped. A *cell* is one (data, budget, library, recipe, sampler steps, sample count, CPU); its seeds are its runs.

Statistics (the rule is fixed here, before any measurement):

* a run's score is the mean Fréchet distance over its ``draws`` sample sets (different sampling seeds);
* the *sampling noise* of one draw is the within-run standard deviation pooled over the cell's runs; it must be
  small next to the seed spread, or the sample count is too small;
* a cell reports mean ± sd over seeds and the 95% t-interval of the mean;
* **two cells differ when their 95% intervals do not overlap**, otherwise "no difference shown"; the target
  "ours at most half of X" is met when ours' interval lies wholly below half of X's interval.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_FIELDS = ("data", "library", "recipe", "seed", "budget_cpu_s", "sample_steps", "num_samples", "draws", "device")

# Where a run's initial noise x_T came from. "shared": every library starts each draw from the same x_T (the first
# draw of the generator seeded SAMPLE_SEED + draw). Before 2026-11-30 23:45 UTC denoising-diffusion-pytorch drew its
# x_T from a global seed derived from that generator, so its records without the field are "own": a different fixed
# x_T set, whose luck was shared by all its runs and so invisible in the seed spread (benchmarks/README.md).
# "per_seed" (from 2026-12-01): training seed s draws its x_T sets from its own seeds, still the same for every library
# (peer_quality.sample_seed), so which sets were drawn varies with the seed and shows in the seed spread.
SHARED_NOISE, OWN_NOISE, PER_SEED_NOISE = "shared", "own", "per_seed"
_LUCIDRAINS = (
    "denoising-diffusion-pytorch"  # _quality_libraries.LUCIDRAINS; not imported, to keep this module torch-free
)


def noise_of(record: dict[str, Any]) -> str:
    """The record's x_T protocol: its ``x_T`` field, else "own" for denoising-diffusion-pytorch's old records (ours and
    diffusers always drew x_T from the generator itself, the shared draw)."""
    return record.get("x_T") or (OWN_NOISE if record["library"] == _LUCIDRAINS else SHARED_NOISE)


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (no scipy needed).
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with ``dof`` degrees of freedom (1.96 beyond 30)."""
    return _T95[dof - 1] if 1 <= dof <= len(_T95) else 1.96


# The CPU a run trained on. A budget of process CPU-seconds buys a machine's own number of steps (on 2026-12-02 a
# 2-core AMD EPYC made 5300 steps of ours' digits network in 1920 CPU-s where the 2-core Xeon of every earlier record
# made 12400), so runs on different CPUs are different experiments: the CPU is part of a run's key and of a cell.
# Records written before the field existed all came from that Xeon (their step rates agree: benchmarks/README.md).
LEGACY_CPU = "Intel Xeon (before records named the CPU)"


def cpu_model(cpuinfo: str | None = None) -> str:
    """This machine's CPU: /proc/cpuinfo's "model name" with its family, model and stepping (``cpuinfo``: that
    file's text, read when None), else platform.processor(), else "unknown".

    A virtual machine's model name can be generic: two 2-core "AMD EPYC" machines of this benchmark bought 1438 and
    about 1075 steps of the same network in 480 CPU-s (2026-12-01 and 12-02), so the name alone does not identify a
    CPU-second's worth of steps."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if not name:
        return platform.processor() or "unknown"
    numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model", "stepping") if fields.get(key)]
    return f"{name} ({', '.join(numbers)})" if numbers else name


def cpu_of(record: dict[str, Any]) -> str:
    """The record's ``cpu`` field, else LEGACY_CPU."""
    return record.get("cpu") or LEGACY_CPU


def run_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (*(record.get(k) for k in KEY_FIELDS), noise_of(record), cpu_of(record))


def load(path: Path) -> list[dict[str, Any]]:
    """All records of the results file (none if it does not exist); a malformed line is an error naming it."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON line ({err})") from None
    return records


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line (flushed and fsynced: a crash loses at most the line being written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class Cell:
    """The seeds of one configuration: per-run scores and the statistics of the rule."""

    scores: tuple[float, ...]
    sampling_sd: float
    steps: float

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.scores) if self.n > 1 else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """95% t-interval of the mean (nan-wide with one seed)."""
        if self.n < 2:
            return (math.nan, math.nan)
        half = t95(self.n - 1) * self.sd / math.sqrt(self.n)
        return (self.mean - half, self.mean + half)


def cell(records: Iterable[dict[str, Any]]) -> Cell:
    records = list(records)
    scores = tuple(statistics.fmean(r["fd"]) for r in records)
    within = [statistics.variance(r["fd"]) for r in records if len(r["fd"]) > 1]
    sampling_sd = math.sqrt(statistics.fmean(within)) if within else math.nan
    return Cell(scores, sampling_sd, statistics.fmean(r["steps"] for r in records))


def compare(a: Cell, b: Cell, *, scale: float = 1.0) -> str:
    """The rule: 'lower' / 'higher' when a's 95% interval lies wholly below / above ``scale`` x b's, else 'no
    difference shown' (also when either cell has fewer than two seeds)."""
    (a_lo, a_hi), (b_lo, b_hi) = a.interval, b.interval
    if any(math.isnan(v) for v in (a_lo, a_hi, b_lo, b_hi)):
        return "too few seeds"
    if a_hi < scale * b_lo:
        return "lower"
    if a_lo > scale * b_hi:
        return "higher"
    return "no difference shown"


def group(records: Sequence[dict[str, Any]], fields: Sequence[str]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(tuple(r.get(f) for f in fields), []).append(r)
    return out
