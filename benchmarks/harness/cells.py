"""Sample sets of digits models of several processes (score_sde.py, edm.py, flow.py): every (process, training seed)
model is trained (or loaded from the cache) in a pool of worker processes, then every cell (a model sampled by a
sampler at a step count) is drawn and scored there. A cell's x_T and noise come from SAMPLE_SEED + its training seed,
so the cells of one seed share their noise; score_sde and edm report the mean ± standard error over the training
seeds (:func:`summary`), flow the mean ± sd."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from denoising_diffusion.evaluation import FeatureReference

from . import stats
from .digits_models import DigitsNet, Recipe, scored_sample, trained
from .parallel import map_jobs


@dataclass(frozen=True)
class Cell:
    """One sample set: the model of ``process`` and ``seed`` sampled by ``sampler`` at ``steps`` with ``options``;
    ``table`` and ``budget`` (an NFE budget, an ODE tolerance, or 0) place it in a report."""

    table: str
    process: str
    seed: int
    sampler: str
    steps: int
    budget: float = 0.0
    options: tuple[tuple[str, Any], ...] = ()


def train_job(net: DigitsNet, recipe: Recipe, seed: int, images: Tensor, cache: Path, threads: int) -> tuple:
    """Train (or load) one model in a worker: (process, seed, training CPU seconds or nan when loaded)."""
    torch.set_num_threads(threads)
    _, seconds = trained(net, recipe, seed, images, cache)
    cpu = float("nan") if seconds is None else seconds["cpu_s"]
    print(f"trained {net.process} seed {seed}: {cpu:.0f} CPU s", flush=True)
    return net.process, seed, cpu


def cell_job(cell: Cell, net: DigitsNet, recipe: Recipe, images: Tensor, cache: Path, reference: FeatureReference,
             num_samples: int, threads: int) -> dict[str, Any]:  # fmt: skip
    """Draw and score one cell in a worker (its model from the cache): {cell, fd, nfe, cpu_seconds}."""
    torch.set_num_threads(threads)
    diffusion, _ = trained(net, recipe, cell.seed, images, cache)
    scored = scored_sample(diffusion, cell.sampler, cell.steps, dict(cell.options), num_samples, cell.seed, reference)
    return {"cell": cell, **scored}


def run(cells: Sequence[Cell], net_of: Callable[[str], DigitsNet], recipe: Recipe, images: Tensor, cache: Path,
        reference: FeatureReference, num_samples: int, jobs: int, threads: int) -> tuple[list[dict], dict]:  # fmt: skip
    """Train every model the cells need, then draw every cell: (results, {(process, seed): training CPU seconds})."""
    models = dict.fromkeys((c.process, c.seed) for c in cells)
    arguments = [(net_of(p), recipe, k, images, cache, threads) for p, k in models]
    seconds = {(p, k): s for p, k, s in map_jobs(train_job, arguments, jobs)}
    results = []
    todo = [(c, net_of(c.process), recipe, images, cache, reference, num_samples, threads) for c in cells]
    for r in map_jobs(cell_job, todo, jobs):
        c = r["cell"]
        print(f"  {c.table} {c.process} seed {c.seed} {c.sampler} {c.steps} steps {dict(c.options)}: FD {r['fd']:.3f}, "
              f"{r['nfe']} NFE, {r['cpu_seconds']:.0f} CPU s", flush=True)  # fmt: skip
        results.append(r)
    return results, seconds


def summary(results: Sequence[dict], key: Callable[[Cell], Any]) -> dict[Any, dict[str, Any]]:
    """Per group of cells (``key``): the per-seed distances, their mean ± se, the NFE used (mean over seeds) and
    the cells' steps."""
    groups: dict[Any, list[dict]] = {}
    for r in results:
        groups.setdefault(key(r["cell"]), []).append(r)
    return {
        k: {"fd_per_seed": [r["fd"] for r in rs], "fd": stats.mean_se([r["fd"] for r in rs]),
            "nfe": sum(r["nfe"] for r in rs) / len(rs), "steps": rs[0]["cell"].steps}
        for k, rs in groups.items()
    }  # fmt: skip


def record_cells(results: Sequence[dict]) -> list[dict[str, Any]]:
    """The cells as JSON-able dicts, for the results file."""
    return [{**{f: getattr(r["cell"], f) for f in Cell.__dataclass_fields__}, "options": dict(r["cell"].options),
             "fd": r["fd"], "nfe": r["nfe"], "cpu_seconds": r["cpu_seconds"]} for r in results]  # fmt: skip
