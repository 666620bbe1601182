"""Sample quality versus network evaluations: a Frechet distance for every sampler at every NFE budget.

Usage:  python benchmarks/quality_vs_cost.py [--cache DIR] [--num-samples 500] [--train-steps 2500] [--threads 1]
                                             [--jobs 1] [--quick] [--results FILE]

Needs scikit-learn (the optional extra ``bench``). The data, the evaluation classifier, the distance and the floor
are harness/digits.py's; the model is harness/digits_models.py's unconditional digits Unet (ε-prediction, cosine
schedule, T = 1000, 0.74 M parameters) trained 2500 steps from seed 0 (cached under ``--cache``). For each sampler
in BENCHED and each budget in NFE_BUDGETS, ``--num-samples`` images from the same seed (so every cell starts from the
same x_T), each sampler at its recommended timestep spacing, and their Frechet distance to the held-out images; Heun
spends 2·steps − 1 evaluations, so it gets the most steps that fit and the NFE it used is shown in parentheses.

Prints a markdown table, the floor's spread over random training subsets (the sampling noise of a single cell), and
whether DPM-Solver++(2M) at 20 evaluations is within 10% of DDPM at 1000, on the mean of ``target_draws`` sample
sets of each (other seeds), judged at two standard errors; the run is appended to benchmarks/results/
quality_vs_cost.jsonl (``--results``). ``--quick`` runs a seconds-long configuration (the test suite's smoke test;
it records only when given a file).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import digits, digits_tables, records, stats
from benchmarks.harness.digits_models import DigitsNet, Recipe, sample_in_chunks, steps_for_budget, trained
from benchmarks.harness.parallel import map_jobs
from denoising_diffusion import SAMPLERS, GaussianDiffusion
from denoising_diffusion.evaluation import FeatureReference, frechet_distance_to
from denoising_diffusion.samplers import SamplerName

NFE_BUDGETS = (5, 10, 20, 50, 100, 250, 1000)
TARGET_CANDIDATE, TARGET_REFERENCE, TARGET_MARGIN = (SamplerName.DPMPP_2M, 20), (SamplerName.DDPM, 1000), 0.10
BENCHED = {name: info for name, info in SAMPLERS.items() if not info.needs_sde}
"""The samplers in the table: the digits model is a discrete DDPM, which those that need the forward SDE (the adaptive
'ode', whose cost the steps do not fix) do not serve."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything that decides the numbers."""

    net: DigitsNet = DigitsNet()
    recipe: Recipe = Recipe()
    classifier_steps: int = 1500  # feature-extractor optimizer steps (batch 128)
    num_samples: int = 500  # generated images per cell (and training images in the floor)
    target_draws: int = 3  # independent sample sets (seeds) for each of the target's two cells
    budgets: tuple[int, ...] = NFE_BUDGETS
    seed: int = 0


QUICK = BenchConfig(DigitsNet(dim=8), Recipe(train_steps=20, batch_size=32), classifier_steps=20, num_samples=32,
                    budgets=(5, 10))  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One sample set to draw: a sampler at a step count that fits the budget ``nfe``. Draw 0 (seed + 1, the same
    x_T in every cell) is the table's; draws 1, 2, … use other seeds, for the target's cells only."""

    sampler: SamplerName
    nfe: int
    steps: int
    draw: int = 0


def table_cells(cfg: BenchConfig, num_timesteps: int) -> list[Cell]:
    """Every (sampler, budget) that fits, plus the target's extra draws; most expensive first (so that a pool of
    workers finishes together)."""
    cells = [Cell(name, nfe, steps) for name, info in BENCHED.items() for nfe in cfg.budgets
             if (steps := steps_for_budget(info, nfe, num_timesteps)) is not None]  # fmt: skip
    extra = [replace(c, draw=d) for c in cells if (c.sampler, c.nfe) in (TARGET_CANDIDATE, TARGET_REFERENCE)
             for d in range(1, cfg.target_draws)]  # fmt: skip
    return sorted(cells + extra, key=lambda c: -SAMPLERS[c.sampler].nfe(c.steps))


def run_cell(
    diffusion: GaussianDiffusion, reference: FeatureReference, cell: Cell, cfg: BenchConfig, threads: int = 1
) -> tuple[Cell, float, float]:
    """(cell, Frechet distance of its samples to ``reference``, seconds)."""
    torch.set_num_threads(threads)  # a pool worker starts with torch's default
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(cfg.seed + 1 + 1000 * cell.draw)
    images = sample_in_chunks(diffusion, cfg.num_samples, generator, sampler=cell.sampler.value, steps=cell.steps)
    return cell, frechet_distance_to(reference, images), time.perf_counter() - start


def table_rows(results: dict[Cell, float]) -> dict[str, dict[str, tuple[float, int]]]:
    """The table's draws, as {sampler: {budget: (Frechet distance, network evaluations used)}} (budgets as strings,
    as JSON keeps them), registry order."""
    rows: dict[str, dict[str, tuple[float, int]]] = {name.value: {} for name in BENCHED}
    for cell, fd in sorted(results.items(), key=lambda item: item[0].nfe):
        if cell.draw == 0:
            rows[cell.sampler.value][str(cell.nfe)] = (fd, SAMPLERS[cell.sampler].nfe(cell.steps))
    return rows


def target_verdict(results: dict[Cell, float]) -> dict | None:
    """The target's check on the means over draws: ratio = mean FD of the candidate / mean FD of the reference, with
    its standard error ``ratio_se`` (delta method; nan with one draw). ``status`` is 'met' when ratio + 2 se ≤
    1 + TARGET_MARGIN, 'not met' when ratio − 2 se > 1 + TARGET_MARGIN, else 'undecided' (the sampling noise of
    the distance is too large to tell). None when the configuration has no target cells."""
    fds = [
        [fd for c, fd in results.items() if (c.sampler, c.nfe) == key] for key in (TARGET_CANDIDATE, TARGET_REFERENCE)
    ]
    if not all(fds):
        return None
    (mean_c, sem_c), (mean_r, sem_r) = (stats.mean_se(v) for v in fds)
    ratio = mean_c / mean_r
    se = ratio * math.hypot(sem_c / mean_c, sem_r / mean_r)
    limit = 1 + TARGET_MARGIN
    status = "met" if ratio + 2 * se <= limit else "not met" if ratio - 2 * se > limit else "undecided"
    return {"candidate": fds[0], "reference": fds[1], "ratio": ratio, "ratio_se": se, "status": status}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench",
                   help="folder for the trained diffusion weights (default: %(default)s)")  # fmt: skip
    p.add_argument("--num-samples", type=int, default=None, help="images per cell (default 500; --quick: 32)")
    p.add_argument("--train-steps", type=int, default=None, help="diffusion training steps (default 2500)")
    p.add_argument("--target-draws", type=int, default=None, help="sample sets for each of the target's two cells")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1: tiny models run fastest on one, and a second busy "
                   "process on a 2-core machine makes 2-thread ops stall)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the sampling phase (default 1)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> BenchConfig:
    cfg = QUICK if args.quick else BenchConfig()
    if args.train_steps is not None:
        cfg = replace(cfg, recipe=replace(cfg.recipe, train_steps=args.train_steps))
    overrides = {"num_samples": args.num_samples, "target_draws": args.target_draws}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if min(args.jobs, args.threads, cfg.recipe.train_steps, cfg.target_draws) < 1:
        raise ValueError(
            "--jobs, --threads, --train-steps and --target-draws must be >= 1, got "
            f"{args.jobs}, {args.threads}, {cfg.recipe.train_steps} and {cfg.target_draws}"
        )
    if not 2 <= cfg.num_samples <= 1297:
        raise ValueError(
            f"--num-samples must be in [2, 1297] (the training split is the floor's sample), got {cfg.num_samples}"
        )
    return cfg


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns its record: accuracy, floor (mean, sd), rows, train_seconds (None if cached),
    target."""
    args = parse(argv)
    cfg = config_from(args)
    torch.set_num_threads(args.threads)
    ev = digits.evaluation(cfg.classifier_steps, cfg.num_samples, seed=cfg.seed)
    diffusion, seconds = trained(cfg.net, cfg.recipe, cfg.seed, ev.train_x, args.cache)
    params = sum(p.numel() for p in diffusion.model.parameters()) / 1e6
    source = "loaded from cache" if seconds is None else f"trained in {seconds['wall_s']:.0f} s"
    print(f"diffusion: {cfg.net}, {params:.2f} M parameters, {cfg.recipe.train_steps} steps; {source}", flush=True)
    start, results = time.perf_counter(), {}
    arguments = [
        (diffusion, ev.reference, cell, cfg, args.threads) for cell in table_cells(cfg, diffusion.num_timesteps)
    ]
    for cell, fd, secs in map_jobs(run_cell, arguments, args.jobs):
        results[cell] = fd
        where = f"{cell.sampler.value} @ {cell.nfe} NFE ({cell.steps} steps, draw {cell.draw})"
        print(f"  {where}: {fd:.2f} in {secs:.0f} s", flush=True)
    print(f"sampling: {time.perf_counter() - start:.0f} s", flush=True)
    record = {
        **records.header("quality_vs_cost", argv, seed=cfg.seed), "config": asdict(cfg), "threads": args.threads,
        "accuracy": ev.accuracy, "floor": (ev.floor.mean, ev.floor.sd), "budgets": list(cfg.budgets),
        "rows": table_rows(results), "train_seconds": seconds and seconds["wall_s"], "target": target_verdict(results),
    }  # fmt: skip
    print(f"\n{cfg.num_samples} samples per cell vs {digits.NUM_HELDOUT} held-out digits; {args.threads} thread(s) per "
          f"process, torch {torch.__version__}\n\n{digits_tables.quality_vs_cost([record])}")  # fmt: skip
    records.append(records.destination(args.results, "quality_vs_cost", quick=args.quick), record)
    return record


if __name__ == "__main__":
    main()
