"""Score-based processes on the digits: the discrete DDPM beside the continuous VP, sub-VP and VE SDEs and NCSN,
trained for the same time, and the distance against network evaluations for the SDE and ODE samplers.

Usage:  PYTHONPATH=. python benchmarks/score_sde.py [--cache DIR] [--seeds 0 1 2] [--train-steps 1000]
                                                    [--jobs 2] [--threads 1] [--quick]

Needs scikit-learn (the ``test`` and ``bench`` extras) for its bundled 8x8 digits (no download). Issue 12 asks for
the feature-space distance of the discrete DDPM (ε), continuous VP, sub-VP and VE / NCSN at equal training time,
and distance versus network evaluations for PC, Euler–Maruyama, the adaptive ODE, DPM-Solver++ and Heun, over at
least 3 seeds. One run measures both:

1. data, evaluation classifier, reference and floor: quality_vs_cost's (1297 training and 500 held-out digits;
   the small CNN's 64 penultimate features; the real-vs-real floor at N = 500);
2. per process p in PROCESSES and training seed k: quality_vs_cost's Unet (dim 32, dim_mults (1, 2)) in
   ``GaussianDiffusion(image_size=8, timesteps=1000, process=p)`` with ε-prediction and the process's defaults
   (ddpm: the cosine schedule; vp, subvp: β ∈ [0.1, 20]; ve and ncsn: σ_min 0.01 and σ_max fitted from the
   training images, Song & Ermon 2020's technique 1; ncsn with ``NCSN_LEVELS`` levels), trained by
   quality_vs_cost's loop (Adam, warm-up + cosine decay, clipping, EMA) for ``train_steps`` steps from seed k.
   Every process trains the same network on the same batches for the same number of steps, so the training time
   is equal up to the loss's few element-wise operations (the seconds are printed);
3. table A (equal training time): per process and seed, 500 samples with DPM-Solver++(2M) at 50 steps (the one
   solver that serves every process) and with the process's own sampler near 200 evaluations (ddpm: ancestral
   DDPM, 200 steps; vp, subvp, ve: predictor–corrector, 100 steps of reverse diffusion + 1 Langevin corrector;
   ncsn: annealed Langevin, 100 levels × 2 steps);
4. table B (distance against network evaluations), on the vp models: PC, Euler–Maruyama, DPM-Solver++(2M) and
   Heun at NFE budgets ``BUDGETS``, and the adaptive probability-flow ODE (dopri5) at tolerances ``TOLERANCES``,
   reported at the evaluations it used (the mean over seeds).

**How a difference is called (fixed before any measurement).** Each cell is the mean ± standard error over the
training seeds (one sample set per seed, the sample seed shared across cells of a seed). Two cells differ when
|Δ| > 2 se with se = √(se_a² + se_b²) (unpaired, the project's convention); otherwise "no difference shown". The
comparisons read: in table A, each continuous process against ddpm with DPM-Solver++(2M); in table B, each sampler
at each budget against DPM-Solver++(2M) at the same budget. With 3 seeds this is a loose check.

``--quick`` runs a seconds-long configuration (tiny network, 2 processes' worth of steps), the test suite's smoke
test; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from benchmarks import quality_vs_cost as qvc
from benchmarks._timing import machine_line
from denoising_diffusion import GaussianDiffusion, Unet
from denoising_diffusion.evaluation import FeatureReference, feature_reference, frechet_distance_to, real_floor
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
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2)
    attn_heads: int = 2
    attn_dim_head: int = 16
    train_steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    classifier_steps: int = 1500
    num_samples: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)
    processes: tuple[str, ...] = PROCESSES
    budgets: tuple[int, ...] = BUDGETS
    tolerances: tuple[float, ...] = TOLERANCES
    ncsn_levels: int = NCSN_LEVELS
    native_scale: float = 1.0  # steps of the native samplers and the common solver, as a fraction (--quick)


QUICK = ScoreConfig(dim=8, train_steps=10, batch_size=16, classifier_steps=20, num_samples=20, seeds=(0,),
                    budgets=(10,), tolerances=(1e-2,), ncsn_levels=10, native_scale=0.1)  # fmt: skip


def build(process: str, cfg: ScoreConfig) -> GaussianDiffusion:
    """quality_vs_cost's Unet in a GaussianDiffusion of ``process`` (ε-prediction; ncsn with cfg.ncsn_levels)."""
    model = Unet(cfg.dim, dim_mults=cfg.dim_mults, channels=1, resnet_block_groups=min(8, cfg.dim),
                 attn_heads=cfg.attn_heads, attn_dim_head=cfg.attn_dim_head)  # fmt: skip
    if process == "ddpm":
        return GaussianDiffusion(model, image_size=8, timesteps=1000)
    timesteps = cfg.ncsn_levels if process == "ncsn" else 1000
    return GaussianDiffusion(model, image_size=8, timesteps=timesteps, process=process)


def train(process: str, seed: int, cfg: ScoreConfig, images: Tensor, cache: Path, threads: int) -> tuple[Path, float]:
    """Train (or load from ``cache``) the EMA model of ``process`` and ``seed``; (checkpoint path, seconds or nan)."""
    torch.set_num_threads(threads)
    path = cache / f"digits-score-{process}-{seed}-{cfg.dim}-{cfg.train_steps}-{cfg.ncsn_levels}.pt"
    if path.exists():
        return path, math.nan
    torch.manual_seed(seed)
    diffusion = build(process, cfg)
    if hasattr(diffusion, "fit_data_statistics") and process in ("ve", "ncsn"):
        diffusion.fit_data_statistics(images)
    start = time.process_time()
    ema = qvc.train_diffusion(diffusion, images, cfg)
    seconds = time.process_time() - start
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ema.state_dict(), "config": diffusion.config, "cpu_seconds": seconds}, path)
    return path, seconds


def load(process: str, path: Path, cfg: ScoreConfig) -> GaussianDiffusion:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    diffusion = build(process, cfg)
    diffusion = diffusion.__class__(diffusion.model, **saved["config"])
    diffusion.model.load_state_dict(saved["model"])
    return diffusion


@dataclass(frozen=True)
class Cell:
    """One sample set: ``process``'s model of ``seed`` sampled by ``sampler`` at ``steps`` with ``options``."""

    table: str
    process: str
    seed: int
    sampler: str
    steps: int
    budget: float  # the NFE budget (table B), the tolerance (the ODE), or 0 (table A)
    options: tuple[tuple[str, Any], ...] = ()


def cells(cfg: ScoreConfig) -> list[Cell]:
    out = []
    for p in cfg.processes:
        for k in cfg.seeds:
            out.append(Cell("A", p, k, "dpmpp_2m", max(2, round(50 * cfg.native_scale)), 0))
            name, steps, options = NATIVE[p]
            out.append(Cell("A", p, k, name, max(2, round(steps * cfg.native_scale)), 0, tuple(options.items())))
    if "vp" in cfg.processes:
        for k in cfg.seeds:
            for name in TABLE_B_SAMPLERS:
                info = SAMPLERS[name]
                for b in cfg.budgets:
                    if (steps := qvc.steps_for_budget(info, b, 10**6)) is not None:
                        out.append(Cell("B", "vp", k, name, steps, b))
            for tol in cfg.tolerances:
                out.append(Cell("B", "vp", k, "ode", 2, tol, (("rtol", tol), ("atol", tol))))
    return out


def run_cell(cell: Cell, path: Path, cfg: ScoreConfig, reference: FeatureReference, threads: int) -> dict:
    """Sample ``cell`` (its seed's x_T and noise from seed 10_000 + seed) and score it."""
    torch.set_num_threads(threads)
    diffusion = load(cell.process, path, cfg)
    generator = torch.Generator().manual_seed(10_000 + cell.seed)
    nfe = [0]

    def count(record: Any) -> None:
        nfe[0] = record.nfe if record.nfe is not None else nfe[0] + SAMPLERS[cell.sampler].evals_per_step

    start = time.process_time()
    images = diffusion.sample(cfg.num_samples, sampler=cell.sampler, steps=cell.steps, generator=generator,
                              callback=count, **dict(cell.options))  # fmt: skip
    info = SAMPLERS[cell.sampler]
    used = nfe[0] if info.adaptive else info.nfe(cell.steps, dict(cell.options))  # Heun's last step: 1 evaluation
    return {"cell": cell, "fd": frechet_distance_to(reference, images), "nfe": used,
            "cpu_seconds": time.process_time() - start}  # fmt: skip


def _pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def _map(fn: Any, arguments: list[tuple], jobs: int) -> Iterator[Any]:
    if jobs == 1:
        yield from (fn(*a) for a in arguments)
        return
    with _pool(jobs) as pool:
        for future in as_completed([pool.submit(fn, *a) for a in arguments]):
            yield future.result()


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def verdict(a: list[float], b: list[float]) -> str:
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    se = math.sqrt(sa**2 + sb**2)
    if not math.isfinite(se):
        return "n/a"
    if ma - mb > 2 * se:
        return "higher"
    if mb - ma > 2 * se:
        return "lower"
    return "no difference shown"


def report(results: list[dict], floor: Any, train_seconds: dict, cfg: ScoreConfig) -> str:
    lines = [f"real-vs-real floor (N = {cfg.num_samples}): {floor.mean:.3f} ± {floor.sd:.3f}", ""]
    by: dict[tuple, list[dict]] = {}
    for r in results:
        c = r["cell"]
        by.setdefault((c.table, c.process, c.sampler, c.budget), []).append(r)
    lines += ["Table A: equal training (mean ± se over seeds; CPU s of training per seed)", "",
              "| process | train CPU s | DPM-Solver++(2M) 50 steps | vs ddpm | own sampler | FD | NFE |",
              "| --- | ---: | ---: | --- | --- | ---: | ---: |"]  # fmt: skip
    ddpm = [r["fd"] for r in by.get(("A", "ddpm", "dpmpp_2m", 0), [])]
    for p in cfg.processes:
        common = [r["fd"] for r in by.get(("A", p, "dpmpp_2m", 0), [])]
        name = NATIVE[p][0]
        own = by.get(("A", p, name, 0), [])
        m, s = mean_se(common)
        mo, so = mean_se([r["fd"] for r in own])
        secs = [v for (q, _), v in train_seconds.items() if q == p and math.isfinite(v)]
        call = "-" if p == "ddpm" else verdict(common, ddpm)
        nfe = own[0]["nfe"] if own else 0
        lines.append(f"| {p} | {sum(secs) / max(1, len(secs)):.0f} | {m:.3f} ± {s:.3f} | {call} | {name} | "
                     f"{mo:.3f} ± {so:.3f} | {nfe} |")  # fmt: skip
    lines += ["", "Table B: vp models, distance against network evaluations (mean ± se over seeds; "
              "vs DPM-Solver++(2M) at the same budget)", "",
              "| sampler | " + " | ".join(f"NFE {b}" for b in cfg.budgets) + " |",
              "| --- |" + " ---: |" * len(cfg.budgets)]  # fmt: skip
    for name in TABLE_B_SAMPLERS:
        row = []
        for b in cfg.budgets:
            rs = by.get(("B", "vp", name, b), [])
            if not rs:
                row.append("-")
                continue
            m, s = mean_se([r["fd"] for r in rs])
            ref = [r["fd"] for r in by.get(("B", "vp", "dpmpp_2m", b), [])]
            call = (
                ""
                if name == "dpmpp_2m"
                else {"higher": " (worse)", "lower": " (better)"}.get(verdict([r["fd"] for r in rs], ref), "")
            )
            used = rs[0]["nfe"]
            row.append(f"{m:.3f} ± {s:.3f}" + ("" if used == b else f" [{used}]") + call)
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", "| adaptive ODE (dopri5) | rtol = atol | mean NFE used | FD |", "| --- | ---: | ---: | ---: |"]
    for tol in cfg.tolerances:
        rs = by.get(("B", "vp", "ode", tol), [])
        if rs:
            m, s = mean_se([r["fd"] for r in rs])
            lines.append(f"| ode | {tol:g} | {sum(r['nfe'] for r in rs) / len(rs):.0f} | {m:.3f} ± {s:.3f} |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    cfg = QUICK if args.quick else ScoreConfig()
    if args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    if args.train_steps:
        cfg = replace(cfg, train_steps=args.train_steps)
    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    train_x, train_y, held_x, _ = qvc.load_digits_split(0)
    net = qvc.train_classifier(train_x, train_y, steps=cfg.classifier_steps, seed=0)
    reference = feature_reference(net, held_x)
    floor = real_floor(reference, train_x, cfg.num_samples, draws=qvc.FLOOR_DRAWS, seed=2)
    jobs = [(p, k, cfg, train_x, args.cache, args.threads) for p in cfg.processes for k in cfg.seeds]
    paths, train_seconds = {}, {}
    for p, k, path, secs in _map(_train_star, [(j,) for j in jobs], args.jobs):
        paths[p, k], train_seconds[p, k] = path, secs
    results = []
    todo = [(c, paths[c.process, c.seed], cfg, reference, args.threads) for c in cells(cfg)]
    for r in _map(run_cell, todo, args.jobs):
        c = r["cell"]
        print(f"  {c.table} {c.process} seed {c.seed} {c.sampler} {c.steps} steps: FD {r['fd']:.3f}, "
              f"{r['nfe']} NFE, {r['cpu_seconds']:.0f} CPU s", flush=True)  # fmt: skip
        results.append(r)
    text = report(results, floor, train_seconds, cfg)
    print(text, flush=True)
    return {"results": results, "floor": floor, "report": text}


def _train_star(job: tuple) -> tuple[str, int, Path, float]:
    process, seed, cfg, images, cache, threads = job
    path, secs = train(process, seed, cfg, images, cache, threads)
    print(f"trained {process} seed {seed}: {secs:.0f} CPU s", flush=True)
    return process, seed, path, secs


if __name__ == "__main__":
    main()
