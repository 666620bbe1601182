"""Flow matching against DDPM and EDM at few network evaluations, and the 2-rectified flow (issue 33).

Usage:  PYTHONPATH=. python benchmarks/flow.py [--seeds 3] [--dim 16] [--train-steps 2000] [--pairs 8000]
                                               [--reflow-steps 2000] [--num-samples 500] [--cache DIR] [--jobs 1]
                                               [--threads 1] [--quick] [--results FILE]

On the harness: the data, features, floor, digits network and loop, model cache, sample sets and the rule are
harness/digits.py's, digits_models.py's, cells.py's and stats.py's; the table is digits_tables.flow. Needs
scikit-learn for its bundled 8x8 digits (no download).

1. Data: the 1797 digits in [0, 1], 1 channel, 8x8; 1297 to train on, 500 held out (split by seed 0). Features: a
   small CNN trained on the training digits' labels (evaluation.train_classifier, seed 0); its 64 penultimate
   features play Inception's part in FID. Reference: the held-out digits; the floor: as many training digits (mean
   ± sd over 20 random subsets).
2. Per seed: the same Unet (width --dim, mults (1, 2)) trained for --train-steps Adam steps (batch 128, lr 1e-3 with
   warm-up and cosine decay, EMA 0.999) as GaussianDiffusion with process 'ddpm' (cosine, T = 1000, ε), 'edm'
   (its preconditioned network) and 'flow' (velocity, t uniform); the seed sets the initialisation, the training
   noise and the sampling noise. Then reflow from the flow model (Liu et al. 2023, Alg. 1): --pairs couplings by
   Heun (25 steps, 49 NFE), and the 2-rectified flow, initialised from the flow model, trained --reflow-steps more
   steps on them: it costs those steps and the couplings on top of the flow model's. Every model's EMA weights are
   cached under --cache (a rerun only samples).
3. Fréchet distance of --num-samples images to the held-out set for each model and sampler (euler, heun, dpmpp_2m,
   each at the process's own spacing) at 1, 2, 4, 8, 20 NFE (Heun at the largest 2·steps − 1 that fits, shown in
   brackets when below the budget).

RULE (stated before running). A cell is the mean ± sd over seeds. Two cells differ when their means differ by more
than 2·√((sd_a² + sd_b²)/n) for n seeds, else no difference is shown. The target (issue 33) is met when at 1, 2 and
4 NFE the 2-rectified flow with Euler is lower than every DDPM sampler at the same NFE, each of those 9 comparisons
showing a difference; it is not met when any DDPM cell is lower with a difference shown; otherwise undecided.
(harness/stats.summary_verdict, harness/digits_tables.flow_target.)

Records: one per cell (model, sampler, NFE budget) with the distances per seed, appended to
benchmarks/results/flow.jsonl (``--results``; ``--quick``, the test suite's seconds-long run, records only when
given a file; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor, nn

from benchmarks.harness import cells as sweep
from benchmarks.harness import digits, digits_tables, records
from benchmarks.harness.digits_models import (
    DigitsNet,
    Recipe,
    cache_key,
    cached,
    hashed_seed,
    scored_sample,
    steps_for_budget,
    train_ema,
    trained,
)
from benchmarks.harness.parallel import map_jobs
from benchmarks.harness.timing import machine_line
from denoising_diffusion import SAMPLERS, GaussianDiffusion, generate_couplings
from denoising_diffusion.evaluation import FeatureReference, NoiseFloor
from denoising_diffusion.reflow import student_of

NFE = (1, 2, 4, 8, 20)
SAMPLER_NAMES = ("euler", "heun", "dpmpp_2m")
PROCESSES = ("ddpm", "edm", "flow")
STUDENT = digits_tables.FLOW_STUDENT
TARGET_NFE = digits_tables.FLOW_TARGET_NFE


@dataclass(frozen=True)
class Config:
    seeds: int = 3  # training seeds 0 .. seeds − 1
    dim: int = 16
    train_steps: int = 2000
    pairs: int = 8000
    reflow_steps: int = 2000
    num_samples: int = 500
    batch_size: int = 128
    lr: float = 1e-3
    classifier_steps: int = 1500
    coupling_steps: int = 25  # Heun's steps per coupling (49 NFE)
    nfe: tuple[int, ...] = NFE  # the budgets (the command line keeps them)

    def net(self, process: str) -> DigitsNet:
        return DigitsNet(dim=self.dim, process=process)

    def recipe(self, steps: int) -> Recipe:
        return Recipe(train_steps=steps, batch_size=self.batch_size, lr=self.lr)


QUICK = Config(seeds=2, dim=8, train_steps=4, pairs=32, reflow_steps=4, num_samples=32, batch_size=16,
               classifier_steps=10, coupling_steps=2, nfe=TARGET_NFE)  # fmt: skip


def steps_for(sampler: str, nfe: int) -> int:
    """The most steps whose network evaluations fit in ``nfe`` (Heun: 2·steps − 1)."""
    return steps_for_budget(SAMPLERS[sampler], nfe, 1000) or 1


def cells(cfg: Config) -> list[sweep.Cell]:
    """Every sample set: (model, seed, sampler, budget); the 2-rectified flow's are on the flow path."""
    return [sweep.Cell(model, "flow" if model == STUDENT else model, seed, sampler, steps_for(sampler, nfe), nfe)
            for model in (*PROCESSES, STUDENT) for seed in range(cfg.seeds)
            for sampler in SAMPLER_NAMES for nfe in cfg.nfe]  # fmt: skip


def reflow_job(seed: int, cfg: Config, images: Tensor, cache: Path, reference: FeatureReference,
               todo: list[sweep.Cell], threads: int) -> list[dict[str, Any]]:  # fmt: skip
    """In a worker: the flow model of ``seed`` (from the cache), its couplings by Heun, the 2-rectified flow trained
    on them from the flow model's weights (cached too; batches and noise from a seed of its own), and its cells."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    net, recipe, reflow = cfg.net("flow"), cfg.recipe(cfg.train_steps), cfg.recipe(cfg.reflow_steps)
    teacher, _ = trained(net, recipe, seed, images, cache)
    key = cache_key(what="reflow", teacher={**asdict(net), **asdict(recipe)}, seed=seed, pairs=cfg.pairs,
                    coupling_steps=cfg.coupling_steps, recipe=asdict(reflow))  # fmt: skip

    def train(student: Any) -> nn.Module:
        g = torch.Generator().manual_seed(seed)
        pairs = generate_couplings(teacher, cfg.pairs, steps=cfg.coupling_steps, generator=g)
        x0, x1 = pairs.x0, pairs.x1
        return train_ema(student, student.model, lambda i: student({"image": x0[i], "noise": x1[i]}), len(x0), reflow)

    module, _ = cached(cache / f"digits-reflow-{key}.pt", hashed_seed(f"reflow {seed}"), lambda: student_of(teacher),
                       train, target=lambda d: d.get_submodule("model"))  # fmt: skip
    student = cast(GaussianDiffusion, module)
    out = [{"cell": c, **scored_sample(student, c.sampler, c.steps, {}, cfg.num_samples, c.seed, reference)}
           for c in todo]  # fmt: skip
    print(f"  reflow seed {seed}: couplings, 2-rectified flow and its {len(out)} cells in "
          f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    return out


def records_of(results: list[dict[str, Any]], cfg: Config, floor: NoiseFloor, header: dict[str, Any]) -> list[dict]:
    """One record per (model, sampler, budget), in the table's order: the distances per seed (in seed order), the
    steps and the network evaluations used, the floor and the configuration."""
    by: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in sorted(results, key=lambda r: r["cell"].seed):
        by.setdefault((r["cell"].table, r["cell"].sampler, r["cell"].budget), []).append(r)
    out = []
    for model in (*PROCESSES, STUDENT):
        for sampler in SAMPLER_NAMES:
            for nfe in cfg.nfe:
                rs = by[model, sampler, nfe]
                c = rs[0]["cell"]
                out.append({**header, "model": model, "process": c.process, "sampler": sampler, "nfe": nfe,
                            "steps": c.steps, "nfe_used": rs[0]["nfe"], "fd_per_seed": [r["fd"] for r in rs],
                            "sample_cpu_s": [round(r["cpu_seconds"], 2) for r in rs],
                            "floor": [floor.mean, floor.sd], "config": asdict(cfg)})  # fmt: skip
    return out


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Config]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(Config()).items():
        if not isinstance(value, tuple):
            p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench")
    p.add_argument("--jobs", type=int, default=1, help="models and sample sets in parallel processes (default: 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default: 1)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run (the test suite's)")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k in vars(Config()) and v is not None}
    return args, replace(QUICK if args.quick else Config(), **given)


def main(argv: list[str] | None = None) -> dict:
    args, cfg = parse(argv)
    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    print(f"config: {cfg}", flush=True)
    ev = digits.evaluation(cfg.classifier_steps, cfg.num_samples)
    todo = cells(cfg)
    results, _ = sweep.run([c for c in todo if c.table != STUDENT], cfg.net, cfg.recipe(cfg.train_steps), ev.train_x,
                           args.cache, ev.reference, cfg.num_samples, args.jobs, args.threads)  # fmt: skip
    jobs = [(k, cfg, ev.train_x, args.cache, ev.reference, [c for c in todo if c.table == STUDENT and c.seed == k],
             args.threads) for k in range(cfg.seeds)]  # fmt: skip
    for done in map_jobs(reflow_job, jobs, args.jobs):
        results += done
    header = records.header("flow", argv, seed=list(range(cfg.seeds)))
    rows = records_of(results, cfg, ev.floor, header)
    text = digits_tables.flow(rows, detail=True)
    print(text, flush=True)
    records.append(records.destination(args.results, "flow", quick=args.quick), *rows)
    status, _ = digits_tables.flow_target({(r["model"], r["sampler"], r["nfe"]): digits_tables.flow_cell(r)
                                           for r in rows})  # fmt: skip
    return {"results": results, "records": rows, "report": text, "status": status}


if __name__ == "__main__":
    main()
