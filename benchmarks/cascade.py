"""A two-stage cascade on the built-in shapes (16 -> 32) against bicubic upsampling and against one 32x32 model
trained for the same CPU time (docs/cascade.md).

Usage:  python benchmarks/cascade.py [--seeds 0 1 2] [--jobs 3] [--quick] [--results FILE]

Data: 2048 built-in shapes drawn at 32x32 (seed 0) for training, their 16x16 versions by the stage's own antialiased
downsample for the base; held out, 1000 shapes (seed 1) as the reference set and ``num_samples`` (400) others (seed
2) whose 16x16 versions the stage upsamples. Features: the small measuring classifier (width 16, 300 steps of 64)
trained on the training shapes' 8 labels (its held-out accuracy is printed); FD is the Fréchet distance to the
reference in its 64 features, the floor is real-vs-real at the same N. Per training seed (0, 1, 2), with one torch
thread per process: a base ``Unet(16, (1, 2, 2))`` at 16x16 (1200 steps of 32), a stage ``Unet(16, (1, 2, 2))`` +
image and level inputs at 32x32 (1200 steps of 16, augmentation levels U[0, 0.5]), and a single
``Unet(16, (1, 2, 2, 2))`` at 32x32 trained until its CPU time equals the base's and the stage's together; Adam
1e-3, EMA 0.995 warmed up (min(0.995, (1 + n)/(10 + n)) at step n), T = 1000 cosine, ε-prediction. Every model
samples with DDIM, η = 1, 20 steps.

Measured per seed: (a) the stage on the held-out 16x16 inputs at its default level, against their bicubic upsample
(the stage's own ``upsample``): PSNR to the originals (mean over images) and FD; (b) the cascade (base samples, then
the stage at levels 0, 0.1, 0.25 on the same base samples and noise) and the single model: FD, and CPU seconds
per sample (sampling only). The rule, fixed before any run: a paired per-seed difference (stage − bicubic; cascade at
the default level − single; cascade at level s − level 0) is **lower** / **higher** when its mean ± 2 standard errors
lies wholly below / above 0, else **no difference shown**. PSNR carries no target (a sample of p(x | y) is not its
mean, which is what PSNR rewards); it is reported with the same rule. Records go to benchmarks/results/cascade.jsonl
(``--results``); ``--quick`` runs a seconds-long configuration that records nothing unless given a file.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import cascade_tables, records, stats
from benchmarks.harness.digits_models import warmup_ema_decay
from benchmarks.harness.parallel import map_shared
from benchmarks.harness.timing import machine_line
from denoising_diffusion import GaussianDiffusion, SuperResolution, Unet, get_builtin_dataset, save_pipeline
from denoising_diffusion.cascade import SAMPLE_LEVEL, downsample, upsample
from denoising_diffusion.evaluation import (
    classifier_accuracy,
    feature_reference,
    frechet_distance_to,
    real_floor,
    train_classifier,
)


@dataclass(frozen=True)
class CascadeConfig:
    """Everything that decides the numbers."""

    train_images: int = 2048
    dim: int = 16
    base_steps: int = 1200
    stage_steps: int = 1200
    base_batch: int = 32
    stage_batch: int = 16
    single_batch: int = 32
    lr: float = 1e-3
    ema_decay: float = 0.995
    timesteps: int = 1000
    steps: int = 20  # DDIM steps of every model
    eta: float = 1.0
    num_samples: int = 400
    levels: tuple[float, ...] = (0.0, 0.1, 0.25)
    classifier_steps: int = 300
    classifier_batch: int = 64
    reference_images: int = 1000
    seeds: tuple[int, ...] = (0, 1, 2)


QUICK = CascadeConfig(train_images=64, dim=8, base_steps=2, stage_steps=2, base_batch=4, stage_batch=4,
                      single_batch=4, timesteps=20, steps=2, num_samples=12, levels=(0.0, 0.1), classifier_steps=2,
                      classifier_batch=8, reference_images=24, seeds=(0, 1))  # fmt: skip


def shapes(size: int, count: int, seed: int, labelled: bool = False) -> Any:
    data = get_builtin_dataset("shapes", size, labelled=labelled, num_images=count, seed=seed)
    items = [data[i] for i in range(count)]
    if labelled:
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
    return torch.stack(items)


def build(cfg: CascadeConfig, kind: str) -> Any:
    """The base (16x16), the stage (16 -> 32) or the single model (32x32) of the module docstring."""
    mults = (1, 2, 2, 2) if kind == "single" else (1, 2, 2)
    stage = {"cond_image_channels": 3, "cond_level": True, "image_null": True} if kind == "stage" else {}
    net = Unet(cfg.dim, dim_mults=mults, **stage)
    diffusion = GaussianDiffusion(net, image_size=16 if kind == "base" else 32, timesteps=cfg.timesteps,
                                  sampling_timesteps=cfg.steps, ddim_sampling_eta=cfg.eta)  # fmt: skip
    return SuperResolution(diffusion, low_res_size=16) if kind == "stage" else diffusion


def train(model: Any, images: torch.Tensor, batch: int, cfg: CascadeConfig, seed: int, *, steps: int = 0,
          cpu_budget: float = 0.0) -> tuple[Any, float, int]:  # fmt: skip
    """Adam and an EMA (warmed up: digits_models.warmup_ema_decay) for ``steps`` steps, or until ``cpu_budget`` CPU
    seconds; returns (the model around its EMA network, CPU seconds, steps)."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = copy.deepcopy(model.model).requires_grad_(False)
    start, done = time.process_time(), 0
    while (done < steps) if steps else (time.process_time() - start < cpu_budget):
        loss = model(images[torch.randint(len(images), (batch,), generator=generator)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.model.parameters()):
                e.lerp_(p, 1 - warmup_ema_decay(done, cfg.ema_decay))
        done += 1
    return model.with_model(ema).eval(), time.process_time() - start, done


def timed(fn: Any, **kwargs: Any) -> tuple[torch.Tensor, float]:
    """(fn(**kwargs), its CPU seconds)."""
    start = time.process_time()
    return fn(**kwargs), time.process_time() - start


def run_seed(seed: int, shared: dict[str, Any]) -> dict[str, Any]:
    """Train the seed's three models and draw every sample set; returns images and CPU seconds."""
    cfg: CascadeConfig = shared["cfg"]
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    train32 = shared["train32"]
    base, base_s, _ = train(build(cfg, "base"), downsample(train32, (16, 16)), cfg.base_batch, cfg, seed,
                            steps=cfg.base_steps)  # fmt: skip
    stage, stage_s, _ = train(build(cfg, "stage"), train32, cfg.stage_batch, cfg, seed + 100, steps=cfg.stage_steps)
    single, single_s, single_steps = train(build(cfg, "single"), train32, cfg.single_batch, cfg, seed + 200,
                                           cpu_budget=base_s + stage_s)  # fmt: skip
    n, g = cfg.num_samples, lambda k: torch.Generator().manual_seed(1000 * seed + k)  # noqa: E731
    sets: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        sets["stage"], _ = timed(stage.sample, low_res=shared["inputs16"], generator=g(1))
        low, base_cost = timed(base.sample, batch_size=n, generator=g(2))
        costs = {}
        for level in cfg.levels:
            sets[f"cascade@{level:g}"], costs[level] = timed(stage.sample, low_res=low, level=level, generator=g(3))
        sets["single"], single_cost = timed(single.sample, batch_size=n, generator=g(4))
    if shared.get("save") is not None:  # the trained models, for docs/figures.py
        for name, model in (("base", base), ("stage", stage)):
            save_pipeline(model, shared["save"] / f"{name}-seed{seed}.pt")
    return {"seed": seed, "sets": sets, "train_cpu_s": {"base": base_s, "stage": stage_s, "single": single_s},
            "single_steps": single_steps, "cost_cascade": (base_cost + costs[SAMPLE_LEVEL]) / n,
            "cost_single": single_cost / n, "cpu_s": time.process_time(), "pid": os.getpid()}  # fmt: skip


def psnr(images: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over images of 10 log10(1 / MSE), images in [0, 1]."""
    mse = ((images.clamp(0, 1) - truth) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def score(runs: list[dict[str, Any]], shared: dict[str, Any], cfg: CascadeConfig) -> dict[str, Any]:
    """Per seed FD of every set and PSNR of the stage and of bicubic; the paired calls of the rule."""
    reference, truth = shared["reference"], shared["inputs32"]
    bicubic = upsample(shared["inputs16"], (32, 32)).clamp(0, 1)
    fd_bicubic = frechet_distance_to(reference, bicubic)
    per_seed = {run["seed"]: {name: frechet_distance_to(reference, images) for name, images in run["sets"].items()}
                for run in runs}  # fmt: skip
    seeds = sorted(per_seed)
    column = lambda name: [per_seed[k][name] for k in seeds]  # noqa: E731
    psnr_stage = [psnr(run["sets"]["stage"], truth) for run in sorted(runs, key=lambda r: r["seed"])]
    default = f"cascade@{SAMPLE_LEVEL:g}"
    return {
        "seeds": seeds, "fd": {name: column(name) for name in per_seed[seeds[0]]}, "fd_bicubic": fd_bicubic,
        "psnr_stage": psnr_stage, "psnr_bicubic": psnr(bicubic, truth),
        "stage_vs_bicubic": stats.paired_call(column("stage"), [fd_bicubic] * len(seeds)),
        "psnr_vs_bicubic": stats.paired_call(psnr_stage, [psnr(bicubic, truth)] * len(seeds)),
        "cascade_vs_single": stats.paired_call(column(default), column("single")),
        "levels_vs_0": {f"{s:g}": stats.paired_call(column(f"cascade@{s:g}"), column("cascade@0")) for s in cfg.levels},
        "cost_cascade": [r["cost_cascade"] for r in runs], "cost_single": [r["cost_single"] for r in runs],
        "train_cpu_s": {r["seed"]: r["train_cpu_s"] for r in runs},
        "single_steps": {r["seed"]: r["single_steps"] for r in runs},
    }  # fmt: skip


def total_cpu_s(runs: list[dict[str, Any]], main_cpu: float) -> float:
    """The run's CPU seconds: this process's, plus each worker process's CPU time at the end of its last seed."""
    workers: dict[int, float] = {}
    for run in runs:
        if run["pid"] != os.getpid():
            workers[run["pid"]] = max(workers.get(run["pid"], 0.0), run["cpu_s"])
    return main_cpu + sum(workers.values())


def prepare(cfg: CascadeConfig) -> dict[str, Any]:
    """The data, the measuring classifier (accuracy printed), the reference and the floor."""
    train32, labels = shapes(32, cfg.train_images, seed=0, labelled=True)
    held, held_labels = shapes(32, cfg.reference_images, seed=1, labelled=True)
    classifier = train_classifier(train32, labels, steps=cfg.classifier_steps, batch_size=cfg.classifier_batch,
                                  width=16, seed=0)  # fmt: skip
    accuracy = classifier_accuracy(classifier, held, held_labels)
    inputs32 = shapes(32, cfg.num_samples, seed=2)
    reference = feature_reference(classifier, held)
    floor = real_floor(reference, train32, cfg.num_samples, draws=10, seed=3)
    print(f"classifier: held-out accuracy {accuracy:.3f}; floor at N = {cfg.num_samples}: "
          f"{floor.mean:.2f} ± {floor.sd:.2f}", flush=True)  # fmt: skip
    return {"cfg": cfg, "train32": train32, "inputs32": inputs32, "inputs16": downsample(inputs32, (16, 16)),
            "reference": reference, "accuracy": accuracy, "floor": (floor.mean, floor.sd)}  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    p.add_argument("--jobs", type=int, default=1, help="processes, one seed each at a time, one thread each")
    p.add_argument("--note", default="", help="a note on the machine's state, recorded (e.g. 'shared')")
    p.add_argument("--save", type=Path, default=None, help="a folder to keep each seed's base and stage in")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the record."""
    args = parse(argv)
    cfg = QUICK if args.quick else CascadeConfig()
    if args.seeds is not None:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    if args.jobs < 1 or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"--jobs must be >= 1 and --seeds distinct; got {args.jobs} and {list(cfg.seeds)}")
    torch.set_num_threads(1)
    start, cpu_start = time.perf_counter(), time.process_time()
    shared = {**prepare(cfg), "save": args.save}
    runs = []
    for run in map_shared(run_seed, list(cfg.seeds), shared, args.jobs):
        runs.append(run)
        print(f"seed {run['seed']}: trained in {sum(run['train_cpu_s'].values()):.0f} CPU s", flush=True)
    record = {
        **records.header("cascade", argv, seed=list(cfg.seeds)), "machine_note": args.note, "config": asdict(cfg),
        "accuracy": shared["accuracy"], "floor": shared["floor"], **score(runs, shared, cfg),
        "cpu_s": total_cpu_s(runs, time.process_time() - cpu_start),
        "wall_s": time.perf_counter() - start,
    }  # fmt: skip
    print(f"\n{machine_line()}\n\n{cascade_tables.cascade([record])}")
    records.append(records.destination(args.results, "cascade", quick=args.quick), record)
    return record


if __name__ == "__main__":
    main()
