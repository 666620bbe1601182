"""EDM (Karras et al. 2022) against the discrete DDPM on the digits, trained for the same time: the distance against
network evaluations for EDM's Heun (with and without churn) and DPM-Solver++(2M), beside the DDPM sampled with 1000
ancestral steps.

Usage:  PYTHONPATH=. python benchmarks/edm.py [--cache DIR] [--seeds 0 1 2] [--jobs 2] [--threads 1] [--quick]
                                              [--results FILE]

Everything but the process is score_sde.py's setting (harness/digits.py and harness/digits_models.py: data,
evaluation classifier, floor, the digits Unet and loop for 1000 steps from each seed; the ddpm models are the same
cache files): ``GaussianDiffusion(process="edm")`` with its defaults (σ ∈ [0.002, 80], σ_data 0.5, log-normal σ
training, λ(σ) = 1/c_out², the preconditioned network). Per seed, 500 samples each:

* the reference: the ddpm model with ancestral DDPM at 1000 steps (1000 network evaluations);
* EDM with ``heun`` (deterministic, Alg. 1) at 5, 10 and 18 steps (9, 19 and 35 evaluations), with ``heun`` and
  churn (Alg. 2: S_churn = 10, S_noise = 1.003, all σ) at the same steps, and with ``dpmpp_2m`` at 10, 20 and 35 steps.

**The rule (fixed before measuring).** Per cell, mean ± standard error over the training seeds; EDM at a budget is
"at least as good as" the reference unless its mean exceeds the reference's by more than 2 se (se = √(se_a² + se_b²),
unpaired); "better" when it is lower by more than 2 se. The target of issue 13: some EDM cell at ≤ 35 evaluations
at least as good as the DDPM at 1000 steps. The run is appended to benchmarks/results/edm.jsonl (``--results``;
``--quick``, the test suite's seconds-long run, records only when given a file).
"""

from __future__ import annotations

import argparse
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
from benchmarks.harness.digits_models import DigitsNet, Recipe
from benchmarks.harness.timing import machine_line

CHURN = (("s_churn", 10.0), ("s_noise", 1.003))
EDM_CELLS = (  # (sampler, steps, options)
    *(("heun", s, ()) for s in (5, 10, 18)),
    *(("heun", s, CHURN) for s in (5, 10, 18)),
    *(("dpmpp_2m", s, ()) for s in (10, 20, 35)),
)
REFERENCE = ("ddpm", 1000, ())
WORDS = {"lower": "better", "higher": "worse", "no difference shown": "as good (no difference shown)"}


@dataclass(frozen=True)
class EDMConfig:
    net: DigitsNet = DigitsNet()
    recipe: Recipe = Recipe(train_steps=1000)  # score_sde's: the ddpm models are its files
    classifier_steps: int = 1500
    num_samples: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)
    quick: bool = False  # the same cells at a few steps

    def net_of(self, process: str) -> DigitsNet:
        return replace(self.net, process=process)


QUICK = EDMConfig(DigitsNet(dim=8), Recipe(train_steps=10, batch_size=16), classifier_steps=20, num_samples=20,
                  seeds=(0,), quick=True)  # fmt: skip


def cells(cfg: EDMConfig) -> list[sweep.Cell]:
    ref_scale, edm_scale = (0.02, 0.4) if cfg.quick else (1.0, 1.0)
    out = []
    for k in cfg.seeds:
        name, steps, options = REFERENCE
        out.append(sweep.Cell("ref", "ddpm", k, name, max(2, round(steps * ref_scale)), 0, options))
        for name, steps, options in EDM_CELLS:
            out.append(sweep.Cell("edm", "edm", k, name, max(2, round(steps * edm_scale)), 0, options))
    return out


def rows_of(results: list[dict]) -> tuple[list[dict[str, Any]], str]:
    """The record's rows (the reference, then each EDM cell with its call by the rule) and the target's verdict."""
    by = sweep.summary(results, lambda c: (c.table, c.sampler, c.steps, c.options))
    (ref_key, ref), *_ = [(k, v) for k, v in by.items() if k[0] == "ref"]
    rows = [{"model": "ddpm", "sampler": f"ddpm, {ref['steps']} steps", "nfe": ref["nfe"], "fd": ref["fd"],
             "call": "reference"}]  # fmt: skip
    met = False
    for (table, sampler, steps, options), cell in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][3], kv[0][2])):
        if table != "edm":
            continue
        call = stats.verdict(cell["fd_per_seed"], ref["fd_per_seed"])
        met = met or (call in ("lower", "no difference shown") and cell["nfe"] <= 35)
        label = sampler + (" + churn" if options else "")
        rows.append({"model": "edm", "sampler": f"{label}, {steps} steps", "nfe": cell["nfe"], "fd": cell["fd"],
                     "call": WORDS.get(call, call)})  # fmt: skip
    return rows, "met" if met else "not met"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else EDMConfig()
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    ev = digits.evaluation(cfg.classifier_steps, cfg.num_samples)
    results, _ = sweep.run(cells(cfg), cfg.net_of, cfg.recipe, ev.train_x, args.cache, ev.reference, cfg.num_samples,
                           args.jobs, args.threads)  # fmt: skip
    rows, target = rows_of(results)
    record = {**records.header("edm", argv, seed=list(cfg.seeds)), "config": asdict(cfg),
              "floor": (ev.floor.mean, ev.floor.sd), "rows": rows, "target": target,
              "cells": sweep.record_cells(results)}  # fmt: skip
    text = digits_tables.edm([record])
    print(text, flush=True)
    records.append(records.destination(args.results, "edm", quick=args.quick), record)
    return {"results": results, "report": text, "record": record}


if __name__ == "__main__":
    main()
