"""The statistics the benchmarks call differences with, each fixed before the runs it judges.

* **Two standard errors, unpaired** (quality_vs_cost, guidance_scale, classifier_guidance, score_sde, edm, flow):
  per-seed values a and b differ when |mean a − mean b| > 2 se with se = √(sd_a²/n_a + sd_b²/n_b) (:func:`verdict`;
  :func:`summary_verdict` from mean, sd and n where only those are known).
* **95% t-intervals** (peer_quality): a *cell* is the seeds of one configuration; two cells differ when their 95%
  intervals over seeds do not overlap (:func:`compare`); "at most half of X" is met when the interval lies wholly
  below half of X's. The paired form (sampler_variants): a difference when the 95% t-interval of the per-seed
  differences excludes 0 (:func:`paired_interval`), written down after the first variant runs.
* **Two standard errors, paired** (cascade): per-seed differences a − b are lower / higher when their mean ± 2 se
  lies wholly below / above 0 (:func:`paired_call`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (no scipy needed).
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with ``dof`` degrees of freedom (1.96 beyond 30)."""
    return _T95[dof - 1] if 1 <= dof <= len(_T95) else 1.96


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample sd (nan for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error sd/√n (nan for one value)."""
    mean, sd = mean_sd(values)
    return mean, sd / math.sqrt(len(values))


def pooled_sd(groups: Iterable[Sequence[float]]) -> float:
    """The within-group sd pooled over groups (nan without two values in any group)."""
    groups = [g for g in groups if len(g) > 1]
    dof = sum(len(g) - 1 for g in groups)
    return math.sqrt(sum(statistics.variance(g) * (len(g) - 1) for g in groups) / dof) if dof else math.nan


def unpaired(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Δ = mean a − mean b and its standard error √(sd_a²/n_a + sd_b²/n_b) (nan with one value on either side)."""
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    return ma - mb, math.sqrt(sa**2 / len(a) + sb**2 / len(b))


def verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """The two-standard-error rule on per-seed values: 'higher' / 'lower' when a's mean is above / below b's by more
    than 2 se (:func:`unpaired`), else 'no difference shown'; 'n/a' without a spread on either side."""
    return summary_verdict((*mean_sd(a), len(a)), (*mean_sd(b), len(b)))


def summary_verdict(a: tuple[float, float, int], b: tuple[float, float, int]) -> str:
    """:func:`verdict` on summaries (mean, sd, n) where the per-seed values are not known (a record transcribed
    from a table of mean ± sd): se = √(sd_a²/n_a + sd_b²/n_b), 2·√((sd_a² + sd_b²)/n) at equal n."""
    (ma, sa, na), (mb, sb, nb) = a, b
    diff, se = ma - mb, math.sqrt(sa**2 / na + sb**2 / nb)
    if not math.isfinite(se):
        return "n/a"
    if diff > 2 * se:
        return "higher"
    return "lower" if -diff > 2 * se else "no difference shown"


@dataclass(frozen=True)
class Cell:
    """The seeds of one configuration (peer_quality): per-run scores, the sampling noise of one draw and the mean
    training steps."""

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
    """The cell of peer_quality runs: a run's score is the mean Fréchet distance over its draws (``fd``); the sampling
    noise is the within-run sd of one draw, pooled over the runs."""
    records = list(records)
    scores = tuple(statistics.fmean(r["fd"]) for r in records)
    return Cell(scores, pooled_sd([r["fd"] for r in records]), statistics.fmean(r["steps"] for r in records))


def compare(a: Cell, b: Cell, *, scale: float = 1.0) -> str:
    """The rule: 'lower' / 'higher' when a's 95% interval lies wholly below / above ``scale`` x b's, else 'no
    difference shown' ('too few seeds' when either cell has fewer than two)."""
    (a_lo, a_hi), (b_lo, b_hi) = a.interval, b.interval
    if any(math.isnan(v) for v in (a_lo, a_hi, b_lo, b_hi)):
        return "too few seeds"
    if a_hi < scale * b_lo:
        return "lower"
    if a_lo > scale * b_hi:
        return "higher"
    return "no difference shown"


def paired_interval(diffs: Sequence[float]) -> str:
    """Mean of paired differences with its 95% t-interval over seeds, "+m [lo, hi]"; "" below two seeds."""
    if len(diffs) < 2:
        return ""
    lo, hi = Cell(tuple(diffs), math.nan, math.nan).interval
    return f"{statistics.fmean(diffs):+.2f} [{lo:+.2f}, {hi:+.2f}]"


def paired_call(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two standard errors on per-seed paired differences a − b (cascade): their mean, its standard error, and
    'lower' / 'higher' when mean ± 2 se lies wholly below / above 0, else 'no difference shown' ('n/a' below two)."""
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2:
        return {"diff": diffs[0] if diffs else math.nan, "se": math.nan, "call": "n/a"}
    mean, se = mean_se(diffs)
    call = "lower" if mean + 2 * se < 0 else "higher" if mean - 2 * se > 0 else "no difference shown"
    return {"diff": mean, "se": se, "call": call}
