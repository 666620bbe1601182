"""Classifier guidance on the digits beside classifier-free guidance: class accuracy and Frechet distance against
the guidance scale.

Usage:  python benchmarks/classifier_guidance.py [--cache DIR] [--seeds 0 1 2] [--sample-draws 2] [--per-class 50]
                                                 [--sampler dpmpp_2m] [--steps 25] [--scales 0 1 2 3 5 10]
                                                 [--threads 1] [--jobs 1] [--quick] [--results FILE]

Issue 11: an unconditional model guided by a noise-aware classifier (Dhariwal & Nichol 2021, §4) beside the
class-conditional model of issue 10 under classifier-free guidance (Ho & Salimans 2021), with guidance_scale.py's
data, evaluation classifier, floors, sampler, steps, labels and sample sizes (harness/digits.py). Per training seed k:

* classifier guidance (CG): the unconditional digits model of seed k (quality_vs_cost's, the same cache file) and a
  guide ``NoiseAwareClassifier.for_diffusion(EncoderClassifier(32, dim_mults=(1, 2)), diffusion)`` (the encoder half
  of the same Unet with an attention pool), trained with cross-entropy on x_t at uniform t by the digits loop from
  seed 1000 + k; sampled with ``classifier=guide, classifier_scale=s``;
* classifier-free guidance (CFG): guidance_scale's class-conditional model of seed k and its sample sets
  (harness/digits_models.classifier_free_run).

Per system, seed, scale and draw: 50 images of each class, scored by (a) the evaluator's accuracy against the labels
asked for, (b) the Frechet distance, and for CG (c) the guide's own accuracy on its final samples (far above (a):
the guidance found features only the guide sees; the evaluator is not the guide: other architecture, inputs and
seeds). A draw's seed is the same at every scale and differs between systems, seeds and draws (unpaired systems).

**Rules (fixed before any measurement)**, on per-seed values, Δ and se = √(sd_a²/n + sd_b²/m) (harness/stats.py):
R1, at the same s, for accuracy and distance: "CG higher" if Δ − 2 se > 0, "CG lower" if Δ + 2 se < 0, else "no
difference shown". R2, Δ(s) = A_CG(s) − A_CFG(1) with margin δ = 0.01: **reaches** when Δ − 2 se ≥ −δ, **falls
short** when Δ + 2 se < −δ, else **undecided**; the headline is the smallest s that reaches. R3, at that s,
F_CG(s) − F_CFG(1) called as in R1, and the ratio of means. With 3 + 3 seeds this is a loose check. The run is
appended to benchmarks/results/classifier_guidance.jsonl (``--results``); ``--quick`` runs a seconds-long
configuration (the test suite's; it records only when given a file).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor

from benchmarks.harness import digits, digits_tables, records, stats
from benchmarks.harness import digits_models as models
from benchmarks.harness.parallel import map_jobs
from benchmarks.harness.timing import machine_line
from denoising_diffusion import NoiseAwareClassifier
from denoising_diffusion.processes import q_sample

SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0)  # issue 11's 0, 1, 3, 10 and issue 10's 0, 1, 2, 3, 5, for both systems
REFERENCE_SCALE = 1.0  # the classifier-free model's unguided conditional samples: R2's and R3's reference
ACCURACY_MARGIN = 0.01  # R2's δ (5 of 500 images; the evaluator itself errs on 1.4% of real digits)
GUIDE_SEED_OFFSET = 1000  # the guide of diffusion seed k is initialized and batched from seed 1000 + k
GUIDE_CHECK_TIMES = (0, 250, 500, 750)  # noise levels at which the guide's held-out accuracy is printed
CG, CFG = "classifier guidance", "classifier-free"


@dataclass(frozen=True)
class ClassifierGuidanceConfig:
    """Everything that decides the numbers: the diffusion models are quality_vs_cost's (CG) and guidance_scale's (CFG)
    with their recipe; the guide's fields are this script's."""

    recipe: models.Recipe = models.Recipe()
    dim: int = 32
    guide_dim: int = 32  # EncoderClassifier: the encoder half of the diffusion's Unet
    guide_dim_mults: tuple[int, ...] = (1, 2)
    guide_recipe: models.Recipe = models.Recipe(train_steps=2000)
    classifier_steps: int = 1500  # the evaluation classifier (guidance_scale's)
    per_class: int = 50
    scales: tuple[float, ...] = SCALES
    sampler: str = "dpmpp_2m"
    steps: int = 25
    seeds: tuple[int, ...] = (0, 1, 2)
    sample_draws: int = 2
    data_seed: int = 0

    @property
    def unconditional(self) -> models.DigitsNet:
        return models.DigitsNet(dim=self.dim)

    @property
    def conditional(self) -> models.DigitsNet:
        return models.DigitsNet(dim=self.dim, num_classes=digits.NUM_CLASSES, cond_drop_prob=0.2)


_QUICK_RECIPE = models.Recipe(train_steps=20, batch_size=32)
QUICK = ClassifierGuidanceConfig(_QUICK_RECIPE, dim=8, guide_dim=8, guide_recipe=_QUICK_RECIPE, classifier_steps=20,
                                 per_class=2, steps=4, seeds=(0, 1))  # fmt: skip


def guide_accuracy(guide: NoiseAwareClassifier, images: Tensor, labels: Tensor, t: int, seed: int = 0) -> float:
    """The guide's accuracy on images (N, 1, 8, 8) in [0, 1] noised to x_t ~ q(x_t | x_0) (t = 0: almost clean)."""
    x_0 = images * 2 - 1
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(seed))
    x_t = q_sample(guide.schedule, x_0, torch.full((len(labels),), t), noise)
    with torch.inference_mode():
        return float((guide.logits(x_t, torch.full((len(labels),), t)).argmax(1) == labels).double().mean())


def final_guide_accuracy(guide: NoiseAwareClassifier, images: Tensor, labels: Tensor) -> float:
    """The guide's accuracy on generated images as they are (x_0, at t = 0, no noise added)."""
    with torch.inference_mode():
        logits = guide.logits(images * 2 - 1, torch.zeros(len(labels), dtype=torch.long))
    return float((logits.argmax(1) == labels).double().mean())


def cg_sample_seed(seed: int, draw: int) -> int:
    """The sample seed of draw ``draw`` of the classifier-guided system of seed ``seed``: the same at every scale,
    different from every other (system, seed, draw), guidance_scale's included."""
    return models.hashed_seed(f"classifier guidance sample {seed} {draw}")


def run_seed(system: str, cfg: ClassifierGuidanceConfig, seed: int, images: Tensor, labels: Tensor,
             held: tuple[Tensor, Tensor], cache: Path, threads: int = 1) -> dict[str, Any]:  # fmt: skip
    """One system's models of seed ``seed`` (trained or loaded) and every (scale, draw) sample set."""
    options = {"per_class": cfg.per_class, "scales": cfg.scales, "sampler": cfg.sampler, "steps": cfg.steps}
    if system == CFG:
        run = models.classifier_free_run(cfg.conditional, cfg.recipe, seed, images, labels, cache,
                                         draws=cfg.sample_draws, threads=threads, **options)  # fmt: skip
        return {**run, "system": CFG, "guide_seconds": None}
    torch.set_num_threads(threads)  # a pool worker starts with torch's default
    diffusion, seconds = models.trained(cfg.unconditional, cfg.recipe, seed, images, cache)
    guide, guide_seconds = models.trained_guide(cfg.guide_dim, cfg.guide_dim_mults, cfg.guide_recipe,
                                                GUIDE_SEED_OFFSET + seed, diffusion, images, labels, cache)  # fmt: skip
    start = time.perf_counter()
    samples = models.class_sets(diffusion, cfg.per_class, cfg.scales, cfg.sample_draws,
                                lambda d: cg_sample_seed(seed, d), "classifier_scale", sampler=cfg.sampler,
                                steps=cfg.steps, classifier=guide)  # fmt: skip
    return {"system": CG, "seed": seed, "train_seconds": seconds and seconds["wall_s"],
            "guide_seconds": guide_seconds and guide_seconds["wall_s"], "sample_seconds": time.perf_counter() - start,
            "samples": samples, "guide_self": {k: final_guide_accuracy(guide, *pair) for k, pair in samples.items()},
            "guide_heldout": {t: guide_accuracy(guide, *held, t, seed=t) for t in GUIDE_CHECK_TIMES}}  # fmt: skip


def call_difference(diff: float, se: float) -> str:
    """R1's call: 'CG higher' if diff − 2 se > 0, 'CG lower' if diff + 2 se < 0, else 'no difference shown'."""
    if diff - 2 * se > 0:
        return "CG higher"
    return "CG lower" if diff + 2 * se < 0 else "no difference shown"


def call_reach(diff: float, se: float, margin: float = ACCURACY_MARGIN) -> str:
    """R2's call on Δ = A_CG(s) − A_CFG(1): 'reaches' if Δ − 2 se ≥ −margin, 'falls short' if Δ + 2 se < −margin,
    else 'undecided' (also with a nan se)."""
    if diff - 2 * se >= -margin:
        return "reaches"
    return "falls short" if diff + 2 * se < -margin else "undecided"


def score(runs: list[dict[str, Any]], ev: digits.Evaluation, cfg: ClassifierGuidanceConfig) -> dict[str, Any]:
    """Every sample set's scores, per-seed means over draws, per-(system, scale) summaries and the comparisons."""
    cells = {(run["system"], run["seed"], scale, draw): digits.set_scores(ev.classifier, ev.reference, *pair)
             for run in runs for (scale, draw), pair in run["samples"].items()}  # fmt: skip
    seeds, draws = sorted(cfg.seeds), range(cfg.sample_draws)
    guide_runs = {run["seed"]: run for run in runs if run["system"] == CG}

    def per_seed(system: str, scale: float, index: int) -> list[float]:
        return [stats.mean_sd([float(cells[system, k, scale, d][index]) for d in draws])[0] for k in seeds]

    summary: dict[tuple[str, float], dict[str, Any]] = {}
    for system in (CG, CFG):
        for s in cfg.scales:
            summary[system, s] = {
                "acc": stats.mean_sd(per_seed(system, s, 0)), "fd": stats.mean_sd(per_seed(system, s, 1)),
                "noise_acc": stats.pooled_sd([[cells[system, k, s, d][0] for d in draws] for k in seeds]),
                "noise_fd": stats.pooled_sd([[cells[system, k, s, d][1] for d in draws] for k in seeds]),
                "per_class": torch.stack([cells[system, k, s, d][2] for k in seeds for d in draws]).mean(0).tolist(),
            }  # fmt: skip
            if system == CG:
                selfs = [stats.mean_sd([guide_runs[k]["guide_self"][s, d] for d in draws])[0] for k in seeds]
                summary[system, s]["guide_self"] = stats.mean_sd(selfs)
    reference_acc, reference_fd = per_seed(CFG, REFERENCE_SCALE, 0), per_seed(CFG, REFERENCE_SCALE, 1)
    comparisons: dict[float, dict[str, Any]] = {}
    for s in cfg.scales:
        acc = stats.unpaired(per_seed(CG, s, 0), per_seed(CFG, s, 0))
        fd = stats.unpaired(per_seed(CG, s, 1), per_seed(CFG, s, 1))
        reach, cost = (
            stats.unpaired(per_seed(CG, s, 0), reference_acc),
            stats.unpaired(per_seed(CG, s, 1), reference_fd),
        )
        ratio = statistics.fmean(per_seed(CG, s, 1)) / statistics.fmean(reference_fd)
        comparisons[s] = {"acc": (*acc, call_difference(*acc)), "fd": (*fd, call_difference(*fd)),
                          "reach": (*reach, call_reach(*reach)), "cost": (*cost, call_difference(*cost)),
                          "cost_ratio": ratio}  # fmt: skip
    reached = [s for s in sorted(cfg.scales) if comparisons[s]["reach"][2] == "reaches"]
    heldout = {t: stats.mean_sd([guide_runs[k]["guide_heldout"][t] for k in seeds]) for t in GUIDE_CHECK_TIMES}
    return {"cells": cells, "summary": summary, "comparisons": comparisons,
            "first_reached": reached[0] if reached else None, "guide_heldout": heldout}  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench",
                   help="folder for the trained models' weights, shared with quality_vs_cost and guidance_scale "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    p.add_argument("--sample-draws", type=int, default=None, help="sample sets per model (default 2)")
    p.add_argument("--per-class", type=int, default=None, help="generated images per class and set (default 50)")
    p.add_argument("--sampler", default=None, help="the sampler of both systems (default dpmpp_2m)")
    p.add_argument("--steps", type=int, default=None, help="its steps (default 25)")
    p.add_argument("--scales", type=float, nargs="+", default=None, help="guidance scales (default 0 1 2 3 5 10)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="processes, one system and seed each at a time (default 1)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else ClassifierGuidanceConfig()
    overrides = {"seeds": args.seeds and tuple(args.seeds), "sample_draws": args.sample_draws,
                 "per_class": args.per_class, "sampler": args.sampler, "steps": args.steps,
                 "scales": args.scales and tuple(args.scales)}  # fmt: skip
    args.cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if min(args.jobs, args.threads, args.cfg.sample_draws, args.cfg.per_class) < 1:
        raise ValueError("--jobs, --threads, --sample-draws and --per-class must be >= 1, got "
                         f"{args.jobs}, {args.threads}, {args.cfg.sample_draws} and {args.cfg.per_class}")  # fmt: skip
    if len(set(args.cfg.seeds)) != len(args.cfg.seeds):
        raise ValueError(f"--seeds must be distinct, got {list(args.cfg.seeds)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``score``'s dict plus evaluator accuracy, floors and per-run wall times."""
    args = parse(argv)
    cfg = args.cfg
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ev = digits.evaluation(cfg.classifier_steps, digits.NUM_CLASSES * cfg.per_class, seed=cfg.data_seed,
                           per_class=cfg.per_class)  # fmt: skip
    tasks = [(system, cfg, k, ev.train_x, ev.train_y, (ev.heldout_x, ev.heldout_y), args.cache, args.threads)
             for system in (CG, CFG) for k in cfg.seeds]  # fmt: skip
    runs, seconds = [], {}
    for run in map_jobs(run_seed, tasks, args.jobs):
        runs.append(run)
        times = seconds[run["system"], run["seed"]] = (
            run["train_seconds"],
            run["guide_seconds"],
            run["sample_seconds"],
        )
        trained_in = "loaded" if times[0] is None else f"trained in {times[0]:.0f} s"
        print(f"{run['system']}, seed {run['seed']}: {trained_in}, sampled in {times[2]:.0f} s", flush=True)
    result = score(runs, ev, cfg)
    record = {**records.header("classifier_guidance", argv, seed=list(cfg.seeds)), "config": asdict(cfg),
              **digits_tables.classifier_guidance_fields(result, ev)}  # fmt: skip
    print(f"\n{machine_line()}\n\n{digits_tables.classifier_guidance([record])}")
    records.append(records.destination(args.results, "classifier_guidance", quick=args.quick), record)
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")
    result.update(accuracy=ev.accuracy, floor=ev.floor, balanced_floor=ev.balanced_floor, seconds=seconds)
    return result


if __name__ == "__main__":
    main()
