"""Classifier-free guidance on the digits: class accuracy and Frechet distance at guidance scales 0, 1, 2, 3, 5.

Usage:  python benchmarks/guidance_scale.py [--cache DIR] [--train-steps 2500] [--seeds 0 1 2] [--sample-draws 2]
                                            [--threads 1] [--jobs 1] [--quick] [--results FILE]

Needs scikit-learn. Data, evaluation classifier (its held-out accuracy is the ceiling of the accuracy column), feature
space and floors (random and class-balanced, N = 500) are harness/digits.py's. Per training seed (0, 1, 2) a
class-conditional ``Unet(num_classes=10, cond_drop_prob=0.2)`` (the digits Unet plus the class embedding; 0.2 rather
than 0.1 because the run is short and the unconditional branch learns only from the dropped labels) is trained by
harness/digits_models.py's loop on (image, label) batches and cached. Per model, scale and draw: 50 images of each
class (N = 500), DPM-Solver++(2M) at 25 steps, guidance rescale 0; a draw's x_T and labels are the same at every
scale (paired scales) and differ between models and draws (``digits_models.cfg_sample_seed``). Scores of a set: (a)
the classifier's accuracy against the labels asked for; (b) the Frechet distance to the 500 held-out digits. Per
scale: mean ± sd over seeds (each seed's value the mean over its draws), and the sample noise (the sd of one draw
between draws of the same model, pooled), to compare with the seed spread.

The target (issue 10) and its rule, fixed before any measurement. For model k, A_k(s) and F_k(s) its accuracy and
distance at scale s, and D_k(s) = F_k(s) − 1.5 · F_k(1) (paired with the unguided conditional model):

* at s the target is **met** if  mean A(s) − 2·sd(A(s))/√n ≥ 0.95  and  mean D(s) + 2·sd(D(s))/√n ≤ 0;
  **not met** if  mean A(s) + 2·sd(A(s))/√n < 0.95  or  mean D(s) − 2·sd(D(s))/√n > 0;  else undecided;
* overall: **met** if met at some scale, **not met** if not met at every scale, otherwise undecided.

With n = 3 this is a loose check (about a one-sided 90% t test), loosened further by the best of five scales. The
distances are plug-in values, floor included; the excess over the balanced floor is printed for reading only. The run
is appended to benchmarks/results/guidance_scale.jsonl (``--results``). ``--quick`` runs a seconds-long
configuration (the test suite's; it records only when given a file); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import digits, digits_tables, records, stats, tables
from benchmarks.harness.digits_models import DigitsNet, Recipe, classifier_free_run
from benchmarks.harness.parallel import map_jobs
from benchmarks.harness.timing import machine_line
from denoising_diffusion.evaluation import FeatureReference, SmallImageClassifier

SCALES = (0.0, 1.0, 2.0, 3.0, 5.0)
REFERENCE_SCALE = 1.0  # the unguided conditional model: the distance the target is relative to
TARGET_ACCURACY, TARGET_DISTANCE_FACTOR = 0.95, 1.5


@dataclass(frozen=True)
class GuidanceConfig:
    """Everything that decides the numbers."""

    net: DigitsNet = DigitsNet(num_classes=digits.NUM_CLASSES, cond_drop_prob=0.2)
    recipe: Recipe = Recipe()
    classifier_steps: int = 1500
    per_class: int = 50  # generated images per class in each sample set (N = 10 · per_class)
    scales: tuple[float, ...] = SCALES
    sampler: str = "dpmpp_2m"
    steps: int = 25
    guidance_rescale: float = 0.0
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds (initialization, batches, noise, label dropping)
    sample_draws: int = 2  # sample sets per model (other sample seeds), for the sample noise
    data_seed: int = 0  # the split and the classifier

    @property
    def num_samples(self) -> int:
        return digits.NUM_CLASSES * self.per_class


QUICK = GuidanceConfig(DigitsNet(dim=8, num_classes=digits.NUM_CLASSES, cond_drop_prob=0.2),
                       Recipe(train_steps=20, batch_size=32), classifier_steps=20, per_class=2, steps=4,
                       seeds=(0, 1))  # fmt: skip


def run_seed(cfg: GuidanceConfig, seed: int, images: Any, labels: Any, cache: Path, threads: int = 1) -> dict[str, Any]:
    """Train (or load) the model of one training seed and draw every (scale, draw) sample set."""
    return classifier_free_run(cfg.net, cfg.recipe, seed, images, labels, cache, per_class=cfg.per_class,
                               scales=cfg.scales, draws=cfg.sample_draws, threads=threads, sampler=cfg.sampler,
                               steps=cfg.steps, guidance_rescale=cfg.guidance_rescale)  # fmt: skip


def scale_verdict(accuracies: list[float], distances: list[float], reference_distances: list[float]) -> dict:
    """The rule at one scale (module docstring), on per-seed values: accuracies A_k, distances F_k at this scale,
    and F_k at the reference scale (same seeds, same order). Returns the means, the standard errors, the paired
    difference D = F − 1.5 · F_ref and ``status``: 'met', 'not met' or 'undecided'."""
    n = len(accuracies)
    if n == 0 or not len(distances) == len(reference_distances) == n:
        raise ValueError(f"need one accuracy and two distances per seed, got {n}, {len(distances)} and "
                         f"{len(reference_distances)}")  # fmt: skip
    diffs = [f - TARGET_DISTANCE_FACTOR * r for f, r in zip(distances, reference_distances)]
    (acc, acc_se), (diff, diff_se) = stats.mean_se(accuracies), stats.mean_se(diffs)
    if acc - 2 * acc_se >= TARGET_ACCURACY and diff + 2 * diff_se <= 0:
        status = "met"
    elif acc + 2 * acc_se < TARGET_ACCURACY or diff - 2 * diff_se > 0:
        status = "not met"
    else:
        status = "undecided"  # also with one seed: the nan standard errors make every comparison False
    return {"accuracy": acc, "accuracy_se": acc_se, "diff": diff, "diff_se": diff_se, "status": status}


def overall_verdict(statuses: list[str]) -> str:
    """'met' if met at some scale, 'not met' if not met at every scale, else 'undecided'."""
    if "met" in statuses:
        return "met"
    return "not met" if statuses and all(s == "not met" for s in statuses) else "undecided"


def score(runs: list[dict[str, Any]], classifier: SmallImageClassifier, reference: FeatureReference,
          cfg: GuidanceConfig) -> dict[str, Any]:  # fmt: skip
    """Accuracy, distance and per-class accuracy of every sample set; per-seed means over draws; per-scale
    summaries (mean, sd over seeds; sample noise) and verdicts."""
    cells = {(run["seed"], scale, draw): digits.set_scores(classifier, reference, *pair)
             for run in runs for (scale, draw), pair in run["samples"].items()}  # fmt: skip
    seeds, draws = sorted(run["seed"] for run in runs), range(cfg.sample_draws)
    per_seed = {(k, s): tuple(stats.mean_sd([cells[k, s, d][i] for d in draws])[0] for i in (0, 1))
                for k in seeds for s in cfg.scales}  # fmt: skip
    summary = {}
    for s in cfg.scales:
        accs, fds = [per_seed[k, s][0] for k in seeds], [per_seed[k, s][1] for k in seeds]
        refs = [per_seed[k, REFERENCE_SCALE][1] for k in seeds]
        summary[s] = {
            "acc": stats.mean_sd(accs), "fd": stats.mean_sd(fds),
            "ratio": stats.mean_sd([f / r for f, r in zip(fds, refs)]),
            "noise_acc": stats.pooled_sd([[cells[k, s, d][0] for d in draws] for k in seeds]),
            "noise_fd": stats.pooled_sd([[cells[k, s, d][1] for d in draws] for k in seeds]),
            "per_class": torch.stack([cells[k, s, d][2] for k in seeds for d in draws]).mean(0).tolist(),
            "verdict": scale_verdict(accs, fds, refs),
        }  # fmt: skip
    overall = overall_verdict([summary[s]["verdict"]["status"] for s in cfg.scales])
    return {"cells": cells, "per_seed": per_seed, "summary": summary, "verdict": overall}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench",
                   help="folder for the trained models' weights (default: %(default)s)")  # fmt: skip
    p.add_argument("--train-steps", type=int, default=None, help="diffusion training steps (default 2500)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    p.add_argument("--sample-draws", type=int, default=None, help="sample sets per model (default 2)")
    p.add_argument("--per-class", type=int, default=None, help="generated images per class and set (default 50)")
    p.add_argument("--rescale", type=float, default=None, help="guidance rescale φ in [0, 1] (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="processes, one training seed each at a time (default 1)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> GuidanceConfig:
    cfg = QUICK if args.quick else GuidanceConfig()
    if args.train_steps is not None:
        cfg = replace(cfg, recipe=replace(cfg.recipe, train_steps=args.train_steps))
    overrides = {"seeds": None if args.seeds is None else tuple(args.seeds), "sample_draws": args.sample_draws,
                 "per_class": args.per_class, "guidance_rescale": args.rescale}  # fmt: skip
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if min(args.jobs, args.threads, cfg.recipe.train_steps, cfg.sample_draws) < 1:
        raise ValueError(
            "--jobs, --threads, --train-steps and --sample-draws must be >= 1, got "
            f"{args.jobs}, {args.threads}, {cfg.recipe.train_steps} and {cfg.sample_draws}"
        )
    if cfg.per_class < 1 or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"--per-class must be >= 1 and --seeds distinct; got {cfg.per_class} and {list(cfg.seeds)}")
    return cfg


def report(result: dict[str, Any], record: dict[str, Any], cfg: GuidanceConfig) -> None:
    """Print the per-scale table (the record's), every sample set, per-class accuracies and the verdict."""
    print(f"\n{cfg.num_samples} samples per set ({cfg.per_class} per class) vs {digits.NUM_HELDOUT} held-out digits; "
          f"{cfg.sampler}, {cfg.steps} steps, rescale {cfg.guidance_rescale}; {len(cfg.seeds)} training seeds "
          f"{list(cfg.seeds)} x {cfg.sample_draws} sample draws\n{machine_line()}\n")  # fmt: skip
    print(digits_tables.guidance_scale([record]))
    sets = [[k, d, *(f"{result['cells'][k, s, d][0]:.3f} / {result['cells'][k, s, d][1]:.2f}" for s in cfg.scales)]
            for k in sorted(cfg.seeds) for d in range(cfg.sample_draws)]  # fmt: skip
    print("\nevery sample set: accuracy / Frechet distance\n")
    print(tables.markdown(["seed", "draw", *(f"s = {s:g}" for s in cfg.scales)], sets, "rr" + "r" * len(cfg.scales)))
    per_class = [[f"{s:g}", *(f"{a:.2f}" for a in row["per_class"])] for s, row in result["summary"].items()]
    print("\nper-class accuracy (mean over seeds and draws)\n")
    print(tables.markdown(["scale", *map(str, range(digits.NUM_CLASSES))], per_class, "r" * 11))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the scores (``score``'s dict) plus accuracy, floors and per-seed wall times."""
    args = parse(argv)
    cfg = config_from(args)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ev = digits.evaluation(cfg.classifier_steps, cfg.num_samples, seed=cfg.data_seed, per_class=cfg.per_class)
    runs = []
    for run in map_jobs(run_seed, [(cfg, k, ev.train_x, ev.train_y, args.cache, args.threads) for k in cfg.seeds],
                        args.jobs):  # fmt: skip
        runs.append(run)
        trained = "loaded" if run["train_seconds"] is None else f"trained in {run['train_seconds']:.0f} s"
        print(f"seed {run['seed']}: {trained}, sampled in {run['sample_seconds']:.0f} s", flush=True)
    result = score(runs, ev.classifier, ev.reference, cfg)
    summary = {f"{s:g}": {**{k: v for k, v in row.items() if k != "verdict"}, **row["verdict"]}
               for s, row in result["summary"].items()}  # fmt: skip
    record = {
        **records.header("guidance_scale", argv, seed=list(cfg.seeds)), "config": asdict(cfg),
        "accuracy": ev.accuracy, "floor": (ev.floor.mean, ev.floor.sd), "summary": summary,
        "verdict": result["verdict"], "balanced_floor": (ev.balanced_floor.mean, ev.balanced_floor.sd),
    }  # fmt: skip
    report(result, record, cfg)
    records.append(records.destination(args.results, "guidance_scale", quick=args.quick), record)
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")
    result.update(accuracy=ev.accuracy, floor=ev.floor, balanced_floor=ev.balanced_floor,
                  seconds={run["seed"]: (run["train_seconds"], run["sample_seconds"]) for run in runs})  # fmt: skip
    return result


if __name__ == "__main__":
    main()
