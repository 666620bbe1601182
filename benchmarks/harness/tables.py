"""Markdown tables from results records: the tables a script prints after a run are the ones the README shows,
rendered by the same function from the same records (``python -m benchmarks.report``).

This module holds the quality benchmarks' tables; speed_tables.py the speed benchmarks'. Every renderer takes the
records of one results file (or of one run) and returns markdown.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import contenders, stats
from .peer_runs import CPU_SECONDS_PER_MINUTE, OWN_NOISE, PER_SEED_NOISE, SHARED_NOISE, noise_of
from .records import cpu_of, group

Record = dict[str, Any]


def markdown(headings: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A markdown table; ``align`` is one character per column, 'l' (default) or 'r'."""
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(headings), "l")]
    lines = ["| " + " | ".join(headings) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pm(mean: float, spread: float, digits: int = 2) -> str:
    """ "mean ± spread" at ``digits`` decimals."""
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def run_line(record: Record) -> str:
    """Where and how a run's figures were measured: its command, machine, CPU, date, and source when transcribed."""
    parts = [f"`{record['command']}`" if record.get("command") else "", record.get("machine_note") or "",
             cpu_of(record), (record.get("date") or "")[:16].replace("T", " ") + " UTC" if record.get("date") else "",
             f"source: {record['source']}" if record.get("source") else ""]  # fmt: skip
    return "; ".join(p for p in parts if p)


def runs(records: Sequence[Record]) -> list[list[Record]]:
    """The records of each run (one command at one date), in file order."""
    return list(group(records, ("command", "date", "run")).values())


# ----- peer_quality: cells of seeds, called by the 95% rule ---------------------------------------------------------

NOISE_WORDS = {
    SHARED_NOISE: "shared by all libraries",
    OWN_NOISE: "denoising-diffusion-pytorch's own (before the shared-noise fix)",
    PER_SEED_NOISE: "drawn per training seed, shared by all libraries",
}
SETTING = ("data", "budget_cpu_s", "sample_steps", "num_samples", "draws", "device", "x_T", "cpu")


def _cells(records: Sequence[Record]) -> dict[tuple[Any, ...], tuple[list[Record], dict[tuple[str, str], stats.Cell]]]:
    """Per setting (SETTING, the x_T protocol and CPU filled in): its records and its cells by (library, recipe)."""
    records = [{**r, "x_T": noise_of(r), "cpu": cpu_of(r)} for r in records]
    out = {}
    for key, rows in sorted(group(records, SETTING).items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2:]))):
        out[key] = rows, {k: stats.cell(v) for k, v in group(rows, ("library", "recipe")).items()}
    return out


def peer_quality(records: Sequence[Record]) -> str:
    """One table per (data, budget, sampling setting, device, x_T, CPU), rows per library/recipe: every cell with its
    95% interval, the rule's call against each peer's default and against ours' default, and the half target."""
    lines: list[str] = []
    for key, (rows, cells) in _cells(records).items():
        data, budget, steps, n, draws, device, noise, cpu = key
        lines.append(
            f"\n**{data}**, budget {budget:.0f} CPU-s ({budget / CPU_SECONDS_PER_MINUTE:g} min of 2 cores), "
            f"DDIM {steps} steps, {draws} draws of {n} samples, {device} ({cpu}), x_T {NOISE_WORDS[noise]}; "
            f"real-vs-real floor {rows[0]['floor_mean']:.4f} ± {rows[0]['floor_sd']:.4f}\n"
        )
        peer = {lib: cells.get((lib, "default")) for lib in (contenders.LUCIDRAINS, contenders.DIFFUSERS)}
        ours_default, table = cells.get((contenders.OURS, "default")), []
        for (library, recipe), c in sorted(cells.items(), key=lambda kv: kv[1].mean):
            ours = library == contenders.OURS
            vs = [stats.compare(c, p) if p is not None and ours else "" for p in peer.values()]
            half = peer[contenders.LUCIDRAINS]
            met = (
                ""
                if half is None or not ours
                else "met"
                if stats.compare(c, half, scale=0.5) == "lower"
                else "not shown"
            )
            lever = stats.compare(c, ours_default) if ours_default is not None and ours and recipe != "default" else ""
            lo, hi = c.interval
            table.append([f"ours / {recipe}" if ours else library, c.n, f"{c.steps:.0f}", f"{c.mean:.4f} ± {c.sd:.4f}",
                          f"[{lo:.4f}, {hi:.4f}]", f"{c.sampling_sd:.4f}", *vs, met, lever])  # fmt: skip
        lines.append(markdown(["library / recipe", "seeds", "steps", "FD mean ± sd", "95% interval", "sampling sd",
                               "vs lucidrains", "vs diffusers", "≤ ½ lucidrains", "vs ours / default"], table,
                              "lrrrrr"))  # fmt: skip
    return "\n".join(lines)


def peer_quality_summary(records: Sequence[Record]) -> str:
    """The README's view: every cell of two or more seeds (the old protocol where lucidrains drew its own x_T left
    out), one table, with the rule's call against ours' default in the same setting."""
    table = []
    for key, (_rows, cells) in _cells(records).items():
        data, budget, steps, n, draws, device, noise, cpu = key
        if noise == OWN_NOISE:
            continue
        ours_default = cells.get((contenders.OURS, "default"))
        for (library, recipe), c in sorted(cells.items(), key=lambda kv: kv[1].mean):
            if c.n < 2:
                continue
            name = f"ours / {recipe}" if library == contenders.OURS else library
            call = "" if ours_default is None or c is ours_default else stats.compare(c, ours_default)
            lo, hi = c.interval
            table.append([f"{data}, {budget / CPU_SECONDS_PER_MINUTE:g} min", cpu, f"{draws} x {n}, {noise}", name, c.n,
                          f"{c.steps:.0f}", pm(c.mean, c.sd), f"[{lo:.2f}, {hi:.2f}]", call])  # fmt: skip
    return markdown(["data, budget", "CPU", "draws x samples, x_T", "library / recipe", "seeds", "steps",
                     "FD mean ± sd", "95% interval", "vs ours / default"], table, "llllrrrr")  # fmt: skip


# ----- sampler_variants: DDIM variants on kept networks, paired per seed ---------------------------------------------


def variants(found: Sequence[Record], own: Callable[[str], str]) -> str:
    """Per network, each variant's FD (mean of draws, then mean ± sd over seeds) and its paired difference from the
    network's own library's DDIM (``own(library)``) where that was sampled too (per seed, then mean with its 95%
    t-interval). A network is a (seed, CPU it trained on): differences pair within one network; a row may pool
    networks of several CPUs."""
    score = {(r["library"], r["recipe"], r["variant"], (r["seed"], cpu_of(r))): statistics.fmean(r["fd"])
             for r in found}  # fmt: skip
    table = []
    for library, recipe, variant in dict.fromkeys((r["library"], r["recipe"], r["variant"]) for r in found):
        seeds = sorted(s for (lib, rec, var, s) in score if (lib, rec, var) == (library, recipe, variant))
        values = [score[library, recipe, variant, s] for s in seeds]
        mine = own(library)
        diffs = [score[library, recipe, variant, s] - score[library, recipe, mine, s] for s in seeds
                 if (library, recipe, mine, s) in score]  # fmt: skip
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        paired = ", ".join(f"{d:+.2f}" for d in diffs) if variant != mine else ""
        table.append([f"{library}/{recipe}", variant, len(seeds), pm(statistics.fmean(values), sd),
                      ", ".join(f"{v:.2f}" for v in values), paired,
                      stats.paired_interval(diffs) if variant != mine else ""])  # fmt: skip
    return markdown(["network", "variant", "seeds", "FD mean ± sd", "per seed", "− own DDIM, per seed",
                     "− own DDIM, mean [95%]"], table, "llrr")  # fmt: skip
