"""Score-based processes on the digits: the discrete DDPM beside the continuous VP, sub-VP and VE SDEs and NCSN,
trained for the same time, and the distance against network evaluations for the SDE and ODE samplers.

Usage:  PYTHONPATH=. python benchmarks/score_sde.py [--cache DIR] [--seeds 0 1 2] [--train-steps 1000]
                                                    [--jobs 2] [--threads 1] [--quick] [--results FILE]

Issue 12: the feature-space distance of the discrete DDPM (ε), continuous VP, sub-VP and VE / NCSN at equal training
time, and distance versus network evaluations for PC, Euler–Maruyama, the adaptive ODE, DPM-Solver++ and Heun, over
3 seeds. Data, evaluation classifier, reference and floor (N = 500) are harness/digits.py's; per process p and seed
k, the digits Unet in ``GaussianDiffusion(process=p)`` with ε-prediction and the process's defaults (ddpm: cosine;
vp, subvp: β ∈ [0.1, 20]; ve and ncsn: σ_min 0.01 and σ_max fitted from the training images; ncsn with NCSN_LEVELS
levels), trained 1000 steps by the digits loop (harness/digits_models.py): the same network, batches and steps, so
equal training time up to the loss's few element-wise operations (the CPU seconds are printed).

* Table A (equal training): per process and seed, 500 samples with DPM-Solver++(2M) at 50 steps (the one solver that
  serves every process) and with the process's own sampler near 200 evaluations (NATIVE);
* Table B, on the vp models: PC, Euler–Maruyama, DPM-Solver++(2M) and Heun at NFE budgets BUDGETS, and the adaptive
  probability-flow ODE (dopri5) at tolerances TOLERANCES, reported at the evaluations it used (mean over seeds).

**How a difference is called (fixed before any measurement)**: each cell is the mean ± standard error over the
training seeds; two cells differ when |Δ| > 2 se, se = √(se_a² + se_b²) (unpaired; harness/stats.verdict). Table A
compares each continuous process with ddpm under DPM-Solver++(2M); table B each sampler with DPM-Solver++(2M) at the
same budget. The run is appended to benchmarks/results/score_sde.jsonl (``--results``). ``--quick`` runs a
seconds-long configuration (the test suite's; it records only when given a file); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import cells as sweep
from benchmarks.harness import digits, digits_tables, records, stats
from benchmarks.harness.digits_models import DigitsNet, Recipe, steps_for_budget
from benchmarks.harness.timing import machine_line
from denoising_diffusion.samplers import SAMPLERS

PROCESSES = ("ddpm", "vp", "subvp", "ve", "ncsn")
NCSN_LEVELS = 100
BUDGETS = (10, 20, 50, 100)
TOLERANCES = (1e-2, 1e-3, 1e-4)
TABLE_B_SAMPLERS = ("pc", "euler_maruyama", "dpmpp_2m", "heun")
NATIVE = {  # the process's own sampler in table A: (sampler, steps, options)
    "ddpm": ("ddpm", 200, {}),
    "vp": ("pc", 100, {}),
    "subvp": ("pc", 100, {}),
    "ve": ("pc", 100, {}),
    "ncsn": ("annealed_langevin", 100, {"steps_per_level": 2}),
}


@dataclass(frozen=True)
class ScoreConfig:
    net: DigitsNet = DigitsNet()
    recipe: Recipe = Recipe(train_steps=1000)
    classifier_steps: int = 1500
    num_samples: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)
    processes: tuple[str, ...] = PROCESSES
    budgets: tuple[int, ...] = BUDGETS
    tolerances: tuple[float, ...] = TOLERANCES
    ncsn_levels: int = NCSN_LEVELS
    native_scale: float = 1.0  # steps of the native samplers and the common solver, as a fraction (--quick)

    def net_of(self, process: str) -> DigitsNet:
        return replace(self.net, process=process, ncsn_levels=self.ncsn_levels)


QUICK = ScoreConfig(DigitsNet(dim=8), Recipe(train_steps=10, batch_size=16), classifier_steps=20, num_samples=20,
                    seeds=(0,), budgets=(10,), tolerances=(1e-2,), ncsn_levels=10, native_scale=0.1)  # fmt: skip


def cells(cfg: ScoreConfig) -> list[sweep.Cell]:
    out = []
    for p in cfg.processes:
        for k in cfg.seeds:
            out.append(sweep.Cell("A", p, k, "dpmpp_2m", max(2, round(50 * cfg.native_scale))))
            name, steps, options = NATIVE[p]
            out.append(sweep.Cell("A", p, k, name, max(2, round(steps * cfg.native_scale)), 0, tuple(options.items())))
    if "vp" in cfg.processes:
        for k in cfg.seeds:
            for name in TABLE_B_SAMPLERS:
                for b in cfg.budgets:
                    if (steps := steps_for_budget(SAMPLERS[name], b, 10**6)) is not None:
                        out.append(sweep.Cell("B", "vp", k, name, steps, b))
            for tol in cfg.tolerances:
                out.append(sweep.Cell("B", "vp", k, "ode", 2, tol, (("rtol", tol), ("atol", tol))))
    return out


def tables_of(results: list[dict], train_seconds: dict, cfg: ScoreConfig) -> dict[str, Any]:
    """The record's tables: A per process (the common solver with its call against ddpm, the own sampler), B per
    sampler and budget (with its call against DPM-Solver++(2M) at that budget), and the ODE per tolerance."""
    by = sweep.summary(results, lambda c: (c.table, c.process, c.sampler, c.budget))
    ddpm = by.get(("A", "ddpm", "dpmpp_2m", 0), {}).get("fd_per_seed", [])
    table_a = []
    for p in cfg.processes:
        common, own = by[("A", p, "dpmpp_2m", 0)], by[("A", p, NATIVE[p][0], 0)]
        secs = [v for (q, _), v in train_seconds.items() if q == p and math.isfinite(v)]
        table_a.append({"process": p, "train_cpu_s": sum(secs) / max(1, len(secs)), "common": common["fd"],
                        "call": "-" if p == "ddpm" else stats.verdict(common["fd_per_seed"], ddpm),
                        "own": f"{NATIVE[p][0]}, {own['steps']} steps", "own_fd": own["fd"],
                        "own_nfe": own["nfe"]})  # fmt: skip
    table_b: list[dict[str, Any]] = []
    for name in TABLE_B_SAMPLERS:
        table_b.append({"sampler": name, "cells": {}})
        for b in cfg.budgets:
            if (cell := by.get(("B", "vp", name, b))) is not None:
                ref = by[("B", "vp", "dpmpp_2m", b)]["fd_per_seed"]
                call = "" if name == "dpmpp_2m" else stats.verdict(cell["fd_per_seed"], ref)
                table_b[-1]["cells"][str(b)] = {"fd": cell["fd"], "nfe": cell["nfe"], "call": call}
    ode = [{"tol": t, "nfe": by[("B", "vp", "ode", t)]["nfe"], "fd": by[("B", "vp", "ode", t)]["fd"]}
           for t in cfg.tolerances if ("B", "vp", "ode", t) in by]  # fmt: skip
    return {"table_a": table_a, "table_b": table_b, "budgets": list(cfg.budgets), "ode": ode}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    cfg = QUICK if args.quick else ScoreConfig()
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    if args.train_steps:
        cfg = replace(cfg, recipe=replace(cfg.recipe, train_steps=args.train_steps))
    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    ev = digits.evaluation(cfg.classifier_steps, cfg.num_samples)
    results, seconds = sweep.run(cells(cfg), cfg.net_of, cfg.recipe, ev.train_x, args.cache, ev.reference,
                                 cfg.num_samples, args.jobs, args.threads)  # fmt: skip
    record = {**records.header("score_sde", argv, seed=list(cfg.seeds)), "config": asdict(cfg),
              "floor": (ev.floor.mean, ev.floor.sd), **tables_of(results, seconds, cfg),
              "cells": sweep.record_cells(results)}  # fmt: skip
    text = digits_tables.score_sde([record])
    print(text, flush=True)
    records.append(records.destination(args.results, "score_sde", quick=args.quick), record)
    return {"results": results, "floor": ev.floor, "report": text, "record": record}


if __name__ == "__main__":
    main()
