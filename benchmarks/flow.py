"""Flow matching against DDPM and EDM at few network evaluations, and the 2-rectified flow (issue 33).

Usage:  python benchmarks/flow.py [--seeds 3] [--dim 16] [--train-steps 2000] [--pairs 8000] [--reflow-steps 2000]
                                  [--num-samples 500] [--jobs 1] [--quick]

Standalone (the package's public API only). Needs scikit-learn for its bundled 8x8 digits (no download).

1. Data: the 1797 digits in [0, 1], 1 channel, 8x8; 1297 to train on, 500 held out (split by seed 0). Features: a
   small CNN trained on the training digits' labels (evaluation.train_classifier, seed 0); its 64 penultimate
   features play Inception's part in FID. Reference: the held-out digits; the floor: as many training digits.
2. Per seed: the same Unet (width --dim, mults (1, 2)) trained for --train-steps Adam steps (batch 128, lr 1e-3 with
   warm-up and cosine decay, EMA 0.999) as GaussianDiffusion with process 'ddpm' (cosine, T = 1000, ε), 'edm'
   (its preconditioned network) and 'flow' (velocity, t uniform); the seed sets the initialisation, the training
   noise and the sampling noise. Then reflow from the flow model (Liu et al. 2023, Alg. 1): --pairs couplings by
   Heun (25 steps, 49 NFE), and the 2-rectified flow, initialised from the flow model, trained --reflow-steps more
   steps on them: it costs those steps and the couplings on top of the flow model's.
3. Fréchet distance of --num-samples images to the held-out set for each model and sampler (euler, heun, dpmpp_2m,
   each at the process's own spacing) at 1, 2, 4, 8, 20 NFE (Heun at the largest 2·steps − 1 that fits, shown in
   brackets when below the budget).

RULE (stated before running). A cell is the mean ± sd over seeds. Two cells differ when their means differ by more
than 2·√((sd_a² + sd_b²)/n) for n seeds, else no difference is shown. The target (issue 33) is met when at 1, 2 and
4 NFE the 2-rectified flow with Euler is lower than every DDPM sampler at the same NFE, each of those 9 comparisons
showing a difference; it is not met when any DDPM cell is lower with a difference shown; otherwise undecided.
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from denoising_diffusion import SAMPLERS, GaussianDiffusion, Unet, generate_couplings
from denoising_diffusion.evaluation import (
    FeatureReference,
    feature_reference,
    frechet_distance_to,
    real_floor,
    train_classifier,
)
from denoising_diffusion.reflow import CouplingDataset, student_of

NFE = (1, 2, 4, 8, 20)
SAMPLER_NAMES = ("euler", "heun", "dpmpp_2m")
PROCESSES = ("ddpm", "edm", "flow")
TARGET_NFE = (1, 2, 4)


@dataclass(frozen=True)
class Config:
    seeds: int = 3
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


QUICK = Config(seeds=2, dim=8, train_steps=4, pairs=32, reflow_steps=4, num_samples=32, batch_size=16,
               classifier_steps=10, coupling_steps=2, nfe=TARGET_NFE)  # fmt: skip


def load_digits_split() -> tuple[Tensor, Tensor, Tensor]:
    """(train images (1297, 1, 8, 8), their labels, held-out images (500, 1, 8, 8)) in [0, 1], split by seed 0."""
    from sklearn.datasets import load_digits  # the 'bench' extra

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return images[order[500:]], labels[order[500:]], images[order[:500]]


def build(process: str, cfg: Config) -> GaussianDiffusion:
    unet = Unet(cfg.dim, dim_mults=(1, 2), channels=1, resnet_block_groups=min(8, cfg.dim), attn_heads=2,
                attn_dim_head=16)  # fmt: skip
    return GaussianDiffusion(unet, image_size=8, timesteps=1000, process=process)


def train(model: GaussianDiffusion, batches: Callable[[int], object], steps: int, cfg: Config) -> nn.Module:
    """Adam (linear warm-up over 100 steps, cosine decay to 10%) on model(batch), batch = batches(step); returns the
    EMA copy of the network (decay min(0.999, (1 + k)/(10 + k)))."""
    ema = copy.deepcopy(model.model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def factor(k: int) -> float:
        return (k + 1) / 100 if k < 100 else 0.1 + 0.45 * (1 + math.cos(math.pi * (k - 100) / max(1, steps - 100)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for step in range(steps):
        loss = model(batches(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.model.parameters()):
                e.lerp_(p, 1 - decay)
    return ema


def steps_for(sampler: str, nfe: int) -> int:
    """The most steps whose network evaluations fit in ``nfe`` (Heun: 2·steps − 1)."""
    info, steps = SAMPLERS[sampler], nfe
    while steps > 1 and info.nfe(steps) > nfe:
        steps -= 1
    return steps


def distances(model: GaussianDiffusion, reference: FeatureReference, cfg: Config, seed: int) -> dict:
    """{(sampler, nfe): Fréchet distance} of ``model``, every cell from the same noise (seed)."""
    out = {}
    for sampler in SAMPLER_NAMES:
        for nfe in cfg.nfe:
            g, steps = torch.Generator().manual_seed(10_000 + seed), steps_for(sampler, nfe)
            chunks = [min(250, cfg.num_samples - i) for i in range(0, cfg.num_samples, 250)]
            images = torch.cat([model.sample(n, sampler=sampler, steps=steps, generator=g) for n in chunks])
            out[(sampler, nfe)] = frechet_distance_to(reference, images)
    return out


def images_of(images: Tensor, batch_size: int) -> Callable[[int], Tensor]:
    """Batches of training images drawn with replacement (from the global RNG, which the seed sets)."""
    return lambda step: images[torch.randint(0, len(images), (batch_size,))]


def pairs_of(data: CouplingDataset, batch_size: int) -> Callable[[int], dict[str, Tensor]]:
    """Batches of couplings {"image": x_0, "noise": x_1}, drawn with replacement: what RectifiedFlow trains on."""

    def batch(step: int) -> dict[str, Tensor]:
        idx = torch.randint(0, len(data), (batch_size,))
        return {"image": data.couplings.x0[idx], "noise": data.couplings.x1[idx]}

    return batch


def run_seed(seed: int, cfg: Config, train_x: Tensor, reference: FeatureReference) -> dict:
    """Every row's distances for one seed: {(row, sampler, nfe): fd}."""
    torch.set_num_threads(1)
    results, start = {}, time.perf_counter()
    for process in PROCESSES:
        torch.manual_seed(seed)
        model = build(process, cfg)
        model.model.load_state_dict(train(model, images_of(train_x, cfg.batch_size), cfg.train_steps, cfg).state_dict())
        results.update({(process, *k): v for k, v in distances(model, reference, cfg, seed).items()})
        if process == "flow":
            g = torch.Generator().manual_seed(seed)
            couplings = generate_couplings(model, cfg.pairs, steps=cfg.coupling_steps, generator=g)
            student = student_of(model)
            batches = pairs_of(CouplingDataset(couplings), cfg.batch_size)
            student.model.load_state_dict(train(student, batches, cfg.reflow_steps, cfg).state_dict())
            results.update({("2-rectified flow", *k): v for k, v in distances(student, reference, cfg, seed).items()})
    print(f"  seed {seed} done in {time.perf_counter() - start:.0f} s", flush=True)
    return results


def summarize(per_seed: list[dict]) -> dict:
    """{key: (mean, sd, n)} over seeds."""
    values = {key: torch.tensor([r[key] for r in per_seed], dtype=torch.float64) for key in per_seed[0]}
    return {k: (float(v.mean()), float(v.std()) if len(v) > 1 else math.nan, len(v)) for k, v in values.items()}


def differs(a: tuple, b: tuple) -> bool:
    """The rule: |mean_a − mean_b| > 2·√((sd_a² + sd_b²)/n)."""
    return abs(a[0] - b[0]) > 2 * math.sqrt((a[1] ** 2 + b[1] ** 2) / a[2])


def verdict(stats: dict) -> tuple[str, list[str]]:
    """The target's status and one line per comparison."""
    lines, wins, losses = [], 0, 0
    for nfe in TARGET_NFE:
        ours = stats[("2-rectified flow", "euler", nfe)]
        for sampler in SAMPLER_NAMES:
            theirs = stats[("ddpm", sampler, nfe)]
            shown = differs(ours, theirs)
            wins += shown and ours[0] < theirs[0]
            losses += shown and ours[0] > theirs[0]
            lines.append(f"NFE {nfe}: 2-RF euler {ours[0]:.2f} vs ddpm {sampler} {theirs[0]:.2f}: "
                         f"{'difference shown' if shown else 'no difference shown'}")  # fmt: skip
    status = "met" if wins == 3 * len(TARGET_NFE) else "not met" if losses else "undecided"
    return status, lines


def table(stats: dict, floor: tuple[float, float]) -> str:
    budgets = sorted({key[2] for key in stats})
    lines = [
        "| model | sampler | " + " | ".join(f"NFE {n}" for n in budgets) + " |",
        "| --- | --- |" + " ---: |" * len(budgets),
    ]
    for row in (*PROCESSES, "2-rectified flow"):
        for sampler in SAMPLER_NAMES:
            cells = []
            for nfe in budgets:
                mean, sd, _ = stats[(row, sampler, nfe)]
                used = SAMPLERS[sampler].nfe(steps_for(sampler, nfe))
                cells.append(f"{mean:.2f} ± {sd:.2f}" + ("" if used == nfe else f" ({used})"))
            lines.append(f"| {row} | {sampler} | " + " | ".join(cells) + " |")
    lines.append("| real vs real (floor) | | " + " | ".join(f"{floor[0]:.2f} ± {floor[1]:.2f}" for _ in budgets) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(Config()).items():
        if isinstance(value, tuple):
            continue
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    p.add_argument("--jobs", type=int, default=1, help="seeds in parallel processes (default: 1)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run (the test suite's)")
    args = p.parse_args(argv)
    cfg = replace(QUICK if args.quick else Config(), **{k: v for k, v in vars(args).items()
                                                        if k in vars(Config()) and v is not None})  # fmt: skip
    torch.set_num_threads(1)
    start = time.perf_counter()
    train_x, train_y, held_x = load_digits_split()
    classifier = train_classifier(train_x, train_y, steps=cfg.classifier_steps, seed=0)
    reference = feature_reference(classifier, held_x)
    floor = real_floor(reference, train_x, cfg.num_samples)
    print(f"config: {cfg}; floor {floor.mean:.2f} ± {floor.sd:.2f}", flush=True)
    work = [(seed, cfg, train_x, reference) for seed in range(cfg.seeds)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            per_seed = list(pool.map(run_seed, *zip(*work)))
    else:
        per_seed = [run_seed(*w) for w in work]
    stats = summarize(per_seed)
    status, lines = verdict(stats)
    print(table(stats, (floor.mean, floor.sd)))
    print("\n".join(lines))
    print(f"target (2-RF euler below every DDPM sampler at 1, 2, 4 NFE): {status}; {time.perf_counter() - start:.0f} s")
    return {"stats": stats, "floor": floor, "status": status}


if __name__ == "__main__":
    main()
