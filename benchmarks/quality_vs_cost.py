"""Sample quality versus network evaluations: a Frechet distance for every sampler at every NFE budget.

Usage:  python benchmarks/quality_vs_cost.py [--cache DIR] [--num-samples 500] [--train-steps 2500] [--threads 1]
                                             [--jobs 1] [--quick]

Needs scikit-learn (the optional extra ``bench``) for its bundled 8x8 digits (``load_digits``: 1797 images, values
0-16; no download). One script, four phases:

1. data: digits scaled to [0, 1], 1 channel, 8x8, split into 1297 training and 500 held-out images (seed 0);
2. a small CNN classifier trained on the training split (digit labels; its held-out accuracy is printed); its
   penultimate layer (64 features) plays the part Inception-v3 plays in FID (Heusel et al. 2017). The classifier,
   the Frechet distance and the floor are ``denoising_diffusion.evaluation``'s (docs/evaluation.md);
3. a Unet + GaussianDiffusion (ε-prediction, cosine schedule, T = 1000) trained with Adam and an EMA of the
   weights; the EMA weights are cached under ``--cache`` (keyed by the configuration), so a rerun does not retrain;
4. for each sampler in SAMPLERS and each budget in NFE_BUDGETS, ``--num-samples`` images from the same seed
   (so every cell starts from the same x_T), each sampler at its recommended timestep spacing, and their Frechet
   distance to the held-out images. The floor is the distance between as many training images and the same
   held-out set: what a perfect model would score, with this sample size.

Prints a markdown table, the floor's spread over random training subsets (the sampling noise of a single cell), and
whether DPM-Solver++(2M) at 20 evaluations is within 10% of DDPM at 1000, on the mean of ``target_draws`` sample
sets of each (other seeds), judged at two standard errors.
``--quick`` runs a seconds-long configuration, used by the test suite as a smoke test.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Protocol

import torch
from torch import Tensor, nn

from denoising_diffusion import SAMPLERS, GaussianDiffusion, Unet
from denoising_diffusion.evaluation import (
    FeatureReference,
    classifier_accuracy,
    feature_reference,
    frechet_distance_to,
    real_floor,
    train_classifier,
)
from denoising_diffusion.samplers import SamplerInfo, SamplerName

NFE_BUDGETS = (5, 10, 20, 50, 100, 250, 1000)
NUM_HELDOUT = 500
FLOOR_DRAWS = 20  # random training subsets behind the floor's mean and spread
TARGET_CANDIDATE, TARGET_REFERENCE, TARGET_MARGIN = (SamplerName.DPMPP_2M, 20), (SamplerName.DDPM, 1000), 0.10
Rows = dict[SamplerName, dict[int, tuple[float, int]]]  # sampler -> budget -> (Frechet distance, NFE used)


@dataclass(frozen=True)
class BenchConfig:
    """Everything that decides the numbers (the cache key is a hash of the diffusion-model fields)."""

    dim: int = 32  # Unet base width
    dim_mults: tuple[int, ...] = (1, 2)
    attn_heads: int = 2  # attention is most of the cost at 8x8: 2 heads of 16 halve an evaluation
    attn_dim_head: int = 16
    train_steps: int = 2500  # diffusion optimizer steps
    batch_size: int = 128  # diffusion training batch
    lr: float = 1e-3  # Adam learning rate, after a linear warm-up, cosine decay to 10%
    ema_decay: float = 0.999
    classifier_steps: int = 1500  # feature-extractor optimizer steps (batch 128)
    num_samples: int = 500  # generated images per cell (and training images in the floor)
    target_draws: int = 3  # independent sample sets (seeds) for each of the target's two cells
    budgets: tuple[int, ...] = NFE_BUDGETS
    seed: int = 0

    def diffusion_key(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if k in _MODEL_FIELDS}
        fields["weights_version"] = _WEIGHTS_VERSION
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


_MODEL_FIELDS = (
    "dim",
    "dim_mults",
    "attn_heads",
    "attn_dim_head",
    "train_steps",
    "batch_size",
    "lr",
    "ema_decay",
    "seed",
)
_WEIGHTS_VERSION = 2  # bump when the code changes the weights a configuration trains to (2: seeded Unet init)
QUICK = BenchConfig(dim=8, train_steps=20, batch_size=32, classifier_steps=20, num_samples=32, budgets=(5, 10))


# ----- data -----------------------------------------------------------------------------------------------------


def load_digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 8x8 digits as (train_x, train_y, heldout_x, heldout_y); images (N, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("this benchmark needs scikit-learn: pip install 'denoising-diffusion[bench]'") from err
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    held, train = order[:NUM_HELDOUT], order[NUM_HELDOUT:]
    return images[train], labels[train], images[held], labels[held]


# ----- diffusion model ------------------------------------------------------------------------------------------


def build_diffusion(cfg: BenchConfig) -> GaussianDiffusion:
    model = Unet(
        cfg.dim,
        dim_mults=cfg.dim_mults,
        channels=1,
        resnet_block_groups=min(8, cfg.dim),
        attn_heads=cfg.attn_heads,
        attn_dim_head=cfg.attn_dim_head,
    )
    return GaussianDiffusion(model, image_size=8, timesteps=1000)


def _lr_factor(step: int, total: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 10% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


class TrainingConfig(Protocol):
    """The fields :func:`train_diffusion` reads (BenchConfig here, guidance_scale.GuidanceConfig there)."""

    train_steps: int
    batch_size: int
    lr: float
    ema_decay: float


def train_diffusion(
    diffusion: GaussianDiffusion, images: Tensor, cfg: TrainingConfig, labels: Tensor | None = None
) -> nn.Module:
    """Adam on the diffusion loss (batches drawn with replacement); returns the EMA copy of the network. Its noise
    comes from the global RNG, which :func:`trained_diffusion` seeds. With ``labels`` (N,), each batch trains with
    its images' labels as ``classes`` (a class-conditional network; the same batches as without)."""
    ema = copy.deepcopy(diffusion.model).eval().requires_grad_(False)
    opt = torch.optim.Adam(diffusion.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.train_steps))
    for step in range(cfg.train_steps):
        idx = torch.randint(0, len(images), (cfg.batch_size,))
        loss = diffusion(images[idx]) if labels is None else diffusion(images[idx], classes=labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # short memory early, while the weights move fast
        with torch.no_grad():
            for e, p in zip(ema.parameters(), diffusion.model.parameters()):
                e.lerp_(p, 1 - decay)
    return ema


def trained_diffusion(cfg: BenchConfig, images: Tensor, cache: Path) -> tuple[GaussianDiffusion, float | None]:
    """The EMA diffusion model from ``cache`` or, if absent, freshly trained (and saved); also the training time
    in seconds (None when loaded)."""
    path = cache / f"digits-diffusion-{cfg.diffusion_key()}.pt"
    torch.manual_seed(cfg.seed)  # the Unet's initialization, then the training noise: from this seed, nothing else
    diffusion = build_diffusion(cfg)
    if path.exists():
        diffusion.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        return diffusion, None
    start = time.perf_counter()
    ema = train_diffusion(diffusion, images, cfg)
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ema.state_dict(), "config": asdict(cfg), "train_seconds": seconds}, path)
    diffusion.model.load_state_dict(ema.state_dict())
    return diffusion, seconds


# ----- the table ------------------------------------------------------------------------------------------------


def steps_for_budget(info: SamplerInfo, nfe: int, num_timesteps: int) -> int | None:
    """The most timesteps whose network evaluations fit in ``nfe`` (Heun: 2·steps − 1), or None if none fit."""
    steps = min((nfe + info.evals_per_step - 1) // info.evals_per_step, num_timesteps)
    while steps >= 1 and info.nfe(steps) > nfe:
        steps -= 1
    return steps if steps >= 1 else None


def generate(
    diffusion: GaussianDiffusion, sampler: SamplerName, steps: int, num: int, seed: int, chunk: int = 250
) -> Tensor:
    """``num`` images (N, 1, 8, 8) in [0, 1], in chunks (faster on a CPU), all noise from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    parts = [
        diffusion.sample(min(chunk, num - i), sampler=sampler.value, steps=steps, generator=generator)
        for i in range(0, num, chunk)
    ]
    return torch.cat(parts)


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
    cells = [
        Cell(name, nfe, steps)
        for name, info in SAMPLERS.items()
        if not info.needs_sde  # the model is a discrete DDPM: no SDE to integrate
        for nfe in cfg.budgets
        if (steps := steps_for_budget(info, nfe, num_timesteps)) is not None
    ]
    extra = [
        replace(c, draw=d)
        for c in cells
        if (c.sampler, c.nfe) in (TARGET_CANDIDATE, TARGET_REFERENCE)
        for d in range(1, cfg.target_draws)
    ]
    return sorted(cells + extra, key=lambda c: -SAMPLERS[c.sampler].nfe(c.steps))


def run_cell(
    diffusion: GaussianDiffusion, reference: FeatureReference, cell: Cell, cfg: BenchConfig, threads: int = 1
) -> tuple[Cell, float, float]:
    """(cell, Frechet distance of its samples to ``reference``, seconds)."""
    torch.set_num_threads(threads)  # a pool worker starts with torch's default
    start = time.perf_counter()
    images = generate(diffusion, cell.sampler, cell.steps, cfg.num_samples, cfg.seed + 1 + 1000 * cell.draw)
    return cell, frechet_distance_to(reference, images), time.perf_counter() - start


def run_cells(
    diffusion: GaussianDiffusion, reference: FeatureReference, cfg: BenchConfig, jobs: int = 1, threads: int = 1
) -> dict[Cell, float]:
    """Frechet distance of every cell, in ``jobs`` processes (the numbers do not depend on ``jobs``)."""
    arguments = [(diffusion, reference, cell, cfg, threads) for cell in table_cells(cfg, diffusion.num_timesteps)]
    results = {}
    for cell, fd, seconds in _map(arguments, jobs):
        results[cell] = fd
        print(
            f"  {cell.sampler.value} @ {cell.nfe} NFE ({cell.steps} steps, draw {cell.draw}): {fd:.2f} "
            f"in {seconds:.0f} s",
            flush=True,
        )
    return results


def _map(arguments: list[tuple], jobs: int) -> Iterator[tuple[Cell, float, float]]:
    """run_cell over ``arguments``, here or in a pool of ``jobs`` spawned processes, in completion order."""
    if jobs == 1:
        yield from (run_cell(*a) for a in arguments)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_cell, *a) for a in arguments]):
            yield future.result()


def table_rows(results: dict[Cell, float]) -> Rows:
    """The table's draws, as {sampler: {budget: (Frechet distance, network evaluations used)}}, registry order."""
    rows: Rows = {name: {} for name, info in SAMPLERS.items() if not info.needs_sde}
    for cell, fd in sorted(results.items(), key=lambda item: item[0].nfe):
        if cell.draw == 0:
            rows[cell.sampler][cell.nfe] = (fd, SAMPLERS[cell.sampler].nfe(cell.steps))
    return rows


def format_table(rows: Rows, floor: float, budgets: tuple[int, ...]) -> str:
    """A markdown table: one row per sampler, one column per budget; '(n)' marks cells that used n < budget."""
    lines = ["| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |", "| --- |" + " ---: |" * len(budgets)]
    for name, row in rows.items():
        cells = [
            ("-" if b not in row else f"{row[b][0]:.2f}" + ("" if row[b][1] == b else f" ({row[b][1]})"))
            for b in budgets
        ]
        lines.append(f"| {name.value} | " + " | ".join(cells) + " |")
    lines.append("| real vs real (floor) | " + " | ".join(f"{floor:.2f}" for _ in budgets) + " |")
    return "\n".join(lines)


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
    (mean_c, sem_c), (mean_r, sem_r) = (_mean_sem(v) for v in fds)
    ratio = mean_c / mean_r
    se = ratio * math.hypot(sem_c / mean_c, sem_r / mean_r)
    status = (
        "met"
        if ratio + 2 * se <= 1 + TARGET_MARGIN
        else "not met"
        if ratio - 2 * se > 1 + TARGET_MARGIN
        else "undecided"
    )
    return {"candidate": fds[0], "reference": fds[1], "ratio": ratio, "ratio_se": se, "status": status}


def _mean_sem(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (nan for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan


# ----- command line ---------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench",
        help="folder for the trained diffusion weights (default: %(default)s)",
    )
    p.add_argument("--num-samples", type=int, default=None, help="images per cell (default 500; --quick: 32)")
    p.add_argument("--train-steps", type=int, default=None, help="diffusion training steps (default 2500)")
    p.add_argument(
        "--target-draws", type=int, default=None, help="sample sets for each of the target's two cells (default 3)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process (default 1: tiny models run fastest on one, and a second busy "
        "process on a 2-core machine makes 2-thread ops stall)",
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the sampling phase (default 1)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> BenchConfig:
    cfg = QUICK if args.quick else BenchConfig()
    overrides = {"num_samples": args.num_samples, "train_steps": args.train_steps, "target_draws": args.target_draws}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if min(args.jobs, args.threads, cfg.train_steps, cfg.target_draws) < 1:
        raise ValueError(
            "--jobs, --threads, --train-steps and --target-draws must be >= 1, got "
            f"{args.jobs}, {args.threads}, {cfg.train_steps} and {cfg.target_draws}"
        )
    if not 2 <= cfg.num_samples <= 1297:
        raise ValueError(
            f"--num-samples must be in [2, 1297] (the training split is the floor's sample), got {cfg.num_samples}"
        )
    return cfg


def prepare(cfg: BenchConfig, cache: Path) -> dict:
    """Data, feature extractor, diffusion model (trained or cached), reference statistics and the floor."""
    train_x, train_y, held_x, held_y = load_digits_split(cfg.seed)
    start = time.perf_counter()
    net = train_classifier(train_x, train_y, steps=cfg.classifier_steps, seed=cfg.seed)
    acc = classifier_accuracy(net, held_x, held_y)
    print(f"classifier: held-out accuracy {acc:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    diffusion, train_seconds = trained_diffusion(cfg, train_x, cache)
    params = sum(p.numel() for p in diffusion.model.parameters()) / 1e6
    source = "loaded from cache" if train_seconds is None else f"trained in {train_seconds:.0f} s"
    print(
        f"diffusion: Unet(dim={cfg.dim}, dim_mults={cfg.dim_mults}), {params:.2f} M parameters, "
        f"{cfg.train_steps} steps; {source}",
        flush=True,
    )
    reference = feature_reference(net, held_x)
    floor = real_floor(reference, train_x, cfg.num_samples, draws=FLOOR_DRAWS, seed=cfg.seed + 2)
    return {
        "accuracy": acc,
        "diffusion": diffusion,
        "train_seconds": train_seconds,
        "reference": reference,
        "floor": floor,
    }


def report(rows: Rows, floor: tuple[float, float], verdict: dict | None, cfg: BenchConfig, threads: int) -> None:
    """Print the table, the floor's spread and the target's verdict."""
    print(
        f"\n{cfg.num_samples} samples per cell vs {NUM_HELDOUT} held-out digits; "
        f"{threads} thread(s) per process, torch {torch.__version__}\n"
    )
    print(format_table(rows, floor[0], cfg.budgets))
    print(
        f"\nfloor: mean ± sd over {FLOOR_DRAWS} random sets of {cfg.num_samples} training images: "
        f"{floor[0]:.2f} ± {floor[1]:.2f} (the sd is the sampling noise of any one cell)"
    )
    if verdict is not None:
        c, r = (" ".join(f"{v:.2f}" for v in verdict[k]) for k in ("candidate", "reference"))
        print(
            f"target: DPM-Solver++(2M) @ 20 NFE [{c}] vs DDPM @ 1000 NFE [{r}] ({len(verdict['candidate'])} draws "
            f"each): ratio of means {verdict['ratio']:.3f} ± {verdict['ratio_se']:.3f} (standard error); "
            f"within {TARGET_MARGIN:.0%} (judged at ± 2 se): {verdict['status']}"
        )


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns accuracy, floor (mean, sd), rows, train_seconds (None if cached), verdict."""
    args = parse(argv)
    cfg = config_from(args)
    torch.set_num_threads(args.threads)
    setup = prepare(cfg, args.cache)
    start = time.perf_counter()
    results = run_cells(setup["diffusion"], setup["reference"], cfg, args.jobs, args.threads)
    print(f"sampling: {time.perf_counter() - start:.0f} s", flush=True)
    rows, verdict = table_rows(results), target_verdict(results)
    report(rows, setup["floor"], verdict, cfg, args.threads)
    return {
        "accuracy": setup["accuracy"],
        "floor": setup["floor"],
        "rows": rows,
        "train_seconds": setup["train_seconds"],
        "verdict": verdict,
    }


if __name__ == "__main__":
    main()
