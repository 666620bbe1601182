"""Sample quality per CPU-second against the peers, with the benchmark's own noise measured (issue 14).

Usage:  python benchmarks/peer_quality.py [--data digits shapes] [--minutes 1 4] [--seeds 0 1 2]
                                          [--libraries ours denoising-diffusion-pytorch diffusers]
                                          [--recipes default v ...] [--num-samples 1000] [--draws 2] [--x-t per_seed]
                                          [--sample-steps 50] [--jobs 2] [--threads 1] [--keep-weights DIR]
                                          [--device cpu|cuda] [--bf16] [--compile] [--compile-backend inductor]
        python benchmarks/peer_quality.py --report | --list-recipes | --costs ...   # tables, recipes, a plan's price

Every library trains in one loop (harness/peer_loop.py) for the same budget: ``--minutes M`` is 120·M process
CPU-seconds (M minutes of 2 cores; ``--device cuda``: synchronized wall seconds). Everything else is each library's
default (harness/contenders.py); ``--recipes`` changes ours only (harness/recipes.py). Each run is scored by
``--draws`` sets of ``--num-samples`` images of each library's DDIM (η = 0) at ``--sample-steps``, each set from its
own x_T seed (harness/peer_runs.py: by default per training seed, the same for every library), by the Fréchet
distance to held-out images in the features of ``evaluation.train_classifier``; the real-vs-real floor is stored with
every run. The rule for calling a difference (95% intervals over seeds that do not overlap): harness/stats.py.

Every finished run is appended to ``--results`` (default benchmarks/results/peer_quality.jsonl); a run already there
is skipped, so a second invocation only adds what is missing. ``--keep-weights DIR`` keeps each trained network; an
invocation that differs only in its sampling (more ``--draws``) then samples the kept networks instead.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampler draws a progress bar; tqdm reads this at import

import torch
from torch import nn

from benchmarks.harness import contenders, parallel, peer_loop, peer_runs, records, tables
from benchmarks.harness.recipes import RECIPES
from denoising_diffusion.evaluation import SmallImageClassifier, feature_reference, frechet_distance_to, real_floor

DEFAULT_RESULTS = records.RESULTS / "peer_quality.jsonl"
KEY_FIELDS = ("data", "library", "recipe", "seed", "budget_cpu_s", "sample_steps", "num_samples", "draws", "device")


@dataclass(frozen=True)
class Job:
    data: str
    library: str
    recipe: str
    seed: int
    budget: float  # CPU-seconds (wall seconds on cuda)
    sample_steps: int
    num_samples: int
    draws: int
    threads: int
    device: str
    bf16: bool
    compile_backend: str | None
    noise: str = peer_runs.PER_SEED_NOISE  # the x_T protocol (peer_runs.x_t_seed)
    keep_weights: str | None = None  # a folder for the EMA weights (weights_path); not part of the results key
    command: str = ""  # the invocation that planned it


def run_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """A run's identity: the key fields, its x_T protocol and the CPU it trained on."""
    return (*(record.get(k) for k in KEY_FIELDS), peer_runs.noise_of(record), records.cpu_of(record))


def _job_record(job: Job) -> dict[str, Any]:
    """The job's identifying fields (its results key, :func:`run_key`), the start of its record."""
    return {
        "data": job.data, "library": job.library, "recipe": job.recipe, "seed": job.seed, "budget_cpu_s": job.budget,
        "sample_steps": job.sample_steps, "num_samples": job.num_samples, "draws": job.draws, "device": job.device,
        "x_T": job.noise, "cpu": records.cpu_model(),
    }  # fmt: skip


def weights_path(job: Job) -> Path | None:
    """Where ``--keep-weights`` keeps the job's network (peer_runs.kept_path), or None."""
    if job.keep_weights is None:
        return None
    fields = (job.data, job.library, job.recipe, job.seed, job.budget, job.device, job.bf16)
    return peer_runs.kept_path(Path(job.keep_weights), *fields)


def evaluate(job: Job, ema_model: nn.Module, contender: contenders.Contender, reference: Any) -> list[float]:
    """Fréchet distance of each of the job's draws (generator seeds: peer_runs.x_t_seed) to the reference."""
    distances = []
    for draw in range(job.draws):
        seed = peer_runs.x_t_seed(job.seed, draw, job.noise)
        gen = torch.Generator(job.device).manual_seed(seed)  # on the device: samplers draw there
        with torch.autocast(torch.device(job.device).type, dtype=torch.bfloat16, enabled=job.bf16):
            images = contender.sample(ema_model, job.num_samples, gen)
        distances.append(frechet_distance_to(reference, images.float().cpu().clamp(0, 1)))
    return distances


def run_job(job: Job, data: peer_runs.Dataset, classifier: SmallImageClassifier,
            floor: tuple[float, float]) -> dict[str, Any]:  # fmt: skip
    """Train and evaluate one job in this process; returns its results record."""
    torch.set_num_threads(job.threads)
    start = time.perf_counter()
    options = {"budget": job.budget, "sample_steps": job.sample_steps, "device": job.device, "bf16": job.bf16,
               "compile_backend": job.compile_backend}  # fmt: skip
    network = peer_loop.trained(job.library, job.recipe, job.seed, data, keep=weights_path(job), **options)
    ema_model, contender, figures = network
    sample_cpu = time.process_time()
    distances = evaluate(job, ema_model, contender, feature_reference(classifier, data.heldout))
    return {
        **_job_record(job), "bf16": job.bf16, "compile": job.compile_backend, "threads": job.threads,
        "fd": distances, "floor_mean": floor[0], "floor_sd": floor[1],
        "parameters": contender.num_parameters, "sample_cpu_s": time.process_time() - sample_cpu,
        "wall_s": time.perf_counter() - start, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_share": figures["train_s"] / max(figures["train_wall_s"], 1e-9) / job.threads,
        **figures, **records.header("peer_quality", [], command=job.command, seed=job.seed),
    }  # fmt: skip


def _worker_run(job: Job, shared: dict[str, Any]) -> dict[str, Any]:
    """run_job in a worker: the data sets, the classifiers' weights and the floors are shared by every job."""
    torch.set_num_threads(job.threads)
    data = shared["datasets"][job.data]
    net = SmallImageClassifier(data.train.shape[1], data.train.shape[-1], int(data.train_labels.max()) + 1)
    net.load_state_dict(shared["classifiers"][job.data])
    return run_job(job, data, net.eval(), shared["floors"][(job.data, job.num_samples)])


def _collect(finished: Iterator[dict[str, Any]], path: Path, total: int) -> None:
    for i, record in enumerate(finished, 1):
        records.append(path, record)
        fd = ", ".join(f"{d:.3f}" for d in record["fd"])
        print(f"[{i}/{total}] {record['data']} {record['library']}/{record['recipe']} seed {record['seed']} budget "
              f"{record['budget_cpu_s']:.0f}: {record['steps']} steps, fd [{fd}], cpu share {record['cpu_share']:.2f}, "
              f"wall {record['wall_s']:.0f} s", flush=True)  # fmt: skip


def costs(jobs: list[Job], datasets: dict[str, peer_runs.Dataset], processes: int) -> str:
    """A table of measured costs per (data, library, recipe), the training steps each budget buys, and the CPU and
    wall time the jobs would take (wall = CPU / ``processes``, as runs go side by side on one core each)."""
    measured: dict[tuple[str, str, str, int], peer_loop.Cost] = {}
    rows, total = [], 0.0
    for job, seeds in Counter(replace(j, seed=0) for j in jobs).items():  # one row per job, seeds counted
        key = (job.data, job.library, job.recipe, job.num_samples)
        if key not in measured:
            measured[key] = peer_loop.measure_cost(datasets[job.data], job.library, job.recipe, job.num_samples)
        c = measured[key]
        sampling = c.sampling_s(job.draws, job.num_samples, job.sample_steps)
        total += seeds * (job.budget + sampling)
        rows.append([job.data, f"{job.library}/{job.recipe}", f"{c.train_step_s:.4g}", f"{1000 * c.image_step_s:.3g}",
                     f"{job.budget:g}", f"{job.budget / c.train_step_s:.0f}", f"{sampling / 60:.1f}",
                     f"{(job.budget + sampling) / 60:.1f}"])  # fmt: skip
    table = tables.markdown(["data", "library / recipe", "train step (CPU-s)", "image-step (CPU-ms)", "budget (CPU-s)",
                             "steps in budget", "sampling (CPU-min)", "run (CPU-min)"], rows, "llrrrrrr")  # fmt: skip
    return (f"{table}\n\n{len(jobs)} runs: about {total / 3600:.1f} CPU-hours, {total / processes / 3600:.1f} h of "
            f"wall time on {processes} worker(s) (sampling: {jobs[0].draws} draws of {jobs[0].num_samples} samples "
            f"at {jobs[0].sample_steps} steps)")  # fmt: skip


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", default=["digits"], choices=["digits", "shapes"])
    p.add_argument("--minutes", nargs="+", type=float, default=[1.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--libraries", nargs="+", default=list(contenders.LIBRARIES), choices=list(contenders.LIBRARIES))
    p.add_argument("--recipes", nargs="+", default=["default"], help="ours' recipes (--list-recipes)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--x-t", dest="noise", default=peer_runs.PER_SEED_NOISE,
                   choices=[peer_runs.PER_SEED_NOISE, peer_runs.SHARED_NOISE],
                   help="x_T sets per training seed (default) or the same sets for every run")  # fmt: skip
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--jobs", type=int, default=2, help="worker processes (runs in parallel)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training and sampling")
    p.add_argument("--compile", action="store_true", help="torch.compile the training loss")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--cache", type=Path, default=peer_runs.DEFAULT_CACHE)
    p.add_argument("--keep-weights", type=Path, default=None, metavar="DIR",
                   help="keep each run's EMA weights and training figures in DIR and sample kept ones instead of "
                   "retraining: a later run with more --draws reuses them")  # fmt: skip
    p.add_argument("--report", action="store_true", help="print the tables from --results and exit")
    p.add_argument("--list-recipes", action="store_true")
    p.add_argument("--costs", action="store_true",
                   help="measure each library's step costs on the chosen data and price the planned runs (all of "
                   "them, recorded or not), then exit: run it on an idle machine")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a seconds-long run on a few images (the test suite)")
    args = p.parse_args(argv)
    args.command = records.command("peer_quality", argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    if not 1 <= args.draws <= peer_runs.SEED_STRIDE:
        p.error(
            f"--draws {args.draws}: must be 1 to {peer_runs.SEED_STRIDE} (one seed's draws must not reach the next's)"
        )
    return args


def plan(args: argparse.Namespace) -> list[Job]:
    """Every (data, budget, library, recipe, seed) job of the command line, cheapest budget first."""
    keep = str(args.keep_weights) if args.keep_weights else None
    jobs = [
        Job(data, library, recipe, seed, minutes * peer_runs.CPU_SECONDS_PER_MINUTE, args.sample_steps,
            args.num_samples, args.draws, args.threads, args.device, args.bf16,
            args.compile_backend if args.compile else None, args.noise, keep, args.command)
        for minutes in sorted(args.minutes) for data in args.data for seed in args.seeds for library in args.libraries
        for recipe in (args.recipes if library == contenders.OURS else ["default"])
    ]  # fmt: skip
    return list(dict.fromkeys(jobs))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.list_recipes:
        print("\n".join(f"{name}: {recipe}" for name, recipe in RECIPES.items()))
        return
    if args.report:
        print(tables.peer_quality(records.load(args.results)))
        return
    if args.costs:
        torch.set_num_threads(args.threads)
        jobs = plan(args)
        datasets = {name: peer_runs.load_data(name, quick=args.quick) for name in {j.data for j in jobs}}
        print(costs(jobs, datasets, args.jobs))
        return
    done = {run_key(r) for r in records.load(args.results)}
    jobs = [j for j in plan(args) if run_key(_job_record(j)) not in done]
    elsewhere = [why for j in jobs if (path := weights_path(j)) and (why := peer_runs.kept_elsewhere(path, j.device))]
    if elsewhere:
        raise SystemExit(f"peer_quality.py: error: {elsewhere[0]}")
    print(f"{len(jobs)} runs to do ({len(plan(args)) - len(jobs)} already in {args.results})", flush=True)
    if not jobs:
        return
    datasets = {name: peer_runs.load_data(name, quick=args.quick) for name in {j.data for j in jobs}}
    classifiers = {name: peer_runs.feature_classifier(name, d, args.cache, quick=args.quick)
                   for name, d in datasets.items()}  # fmt: skip
    floors = {}
    for name, n in {(j.data, j.num_samples) for j in jobs}:
        reference = feature_reference(classifiers[name], datasets[name].heldout)
        f = real_floor(reference, datasets[name].train, num_samples=min(n, len(datasets[name].train)), seed=0)
        floors[(name, n)] = (f.mean, f.sd)
    shared = {"datasets": datasets, "floors": floors,
              "classifiers": {name: copy.deepcopy(net.state_dict()) for name, net in classifiers.items()}}  # fmt: skip
    _collect(parallel.map_shared(_worker_run, jobs, shared, args.jobs), args.results, len(jobs))
    print(tables.peer_quality([r for r in records.load(args.results) if r["data"] in datasets]))


if __name__ == "__main__":
    main()
