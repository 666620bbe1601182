"""Denoising error against the noise level, for the networks peer_quality.py kept (``--keep-weights``): where along
the noise scale one library's network is better than another's, and how much of its training each spends there.

For every kept network of ``--data`` at ``--minutes`` (all seeds found), the held-out images x_0 (the benchmark's
split, in [−1, 1]) with one fixed ε (seed 0) are noised at each level of a grid of log-SNR λ = log(ᾱ / (1 − ᾱ)):
each library at the time index t of its own schedule whose λ_t is nearest (with 1000 steps within 0.02 of the
grid in [−6, 6] and 0.11 at ±8, where the schedules are steepest; the table prints the largest gap),
x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Ho et al. 2020, eq. 4), and the network's ε̂ (its own output converted to ε,
unclipped: ``Contender.predict_eps``) is scored by the mean squared error per pixel. At one λ the x_0-error is the
same multiple (1/SNR) of the ε-error for every network, so a ratio of ε-errors is a ratio of x_0-errors.

Also printed: the share of training draws (t uniform on 0 … T − 1 in all three libraries) whose λ_t lies within ±1
of each grid level: how much of its training each library's schedule spends near that level, before any loss
weighting (denoising-diffusion-pytorch weights its v-loss by SNR / (SNR + 1); ours and diffusers do not weight).

Usage:  python benchmarks/denoising_error.py --weights DIR [--data digits] [--minutes 16] [--recipe default]
                                              [--results FILE]

The run is appended to benchmarks/results/denoising_error.jsonl (``--results``; a ``--quick`` run, the test suite's,
records only when given a file).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampler draws a progress bar; tqdm reads this at import

import torch
from torch import Tensor, nn

from benchmarks.harness import contenders as libs
from benchmarks.harness import digits_tables, peer_runs, records
from benchmarks.harness.recipes import RECIPES

LOG_SNR_GRID = (-8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0)
SHARE_WIDTH = 1.0  # training share: |λ_t − λ| ≤ this
NOISE_SEED = 0
QUICK_IMAGES = 16  # held-out images scored with --quick (the test suite checks the path, not the figures)


def log_snr(alphas_cumprod: Tensor) -> Tensor:
    """λ_t = log(ᾱ_t / (1 − ᾱ_t)) (T,), in float64."""
    ab = alphas_cumprod.double()
    return torch.log(ab) - torch.log1p(-ab)


def nearest_index(table: Tensor, lam: float) -> int:
    """The time index whose λ_t (``table``, (T,)) is nearest to ``lam``."""
    return int((table - lam).abs().argmin())


def noised(alphas_cumprod: Tensor, t: int, x0: Tensor, eps: Tensor) -> Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε for one index t; x0, eps (N, C, H, W) in float32."""
    ab = alphas_cumprod.double()[t]
    return (ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double()).float()


def epsilon_errors(contender: libs.Contender, network: nn.Module, x0: Tensor, eps: Tensor) -> list[tuple[float, float]]:
    """(λ_t actually used, mean squared ε-error per pixel) at each LOG_SNR_GRID level."""
    if contender.alphas_cumprod is None:
        raise ValueError("the denoising error is defined here for discrete schedules only (a continuous recipe?)")
    table = log_snr(contender.alphas_cumprod)
    rows = []
    for lam in LOG_SNR_GRID:
        t = nearest_index(table, lam)
        x_t = noised(contender.alphas_cumprod, t, x0, eps)
        eps_hat = contender.predict_eps(network, x_t, torch.full((len(x0),), t, dtype=torch.long))
        rows.append((float(table[t]), float(((eps_hat.float() - eps) ** 2).mean())))
    return rows


def training_share(alphas_cumprod: Tensor) -> list[float]:
    """Per LOG_SNR_GRID level: the fraction of time indices (drawn uniformly in training) with
    |λ_t − λ| ≤ SHARE_WIDTH."""
    table = log_snr(alphas_cumprod)
    return [float(((table - lam).abs() <= SHARE_WIDTH).double().mean()) for lam in LOG_SNR_GRID]


def measure(weights: Path, data_name: str, budget: float, recipe: str, *, quick: bool = False) -> dict[str, dict]:
    """{label: {"errors": {seed: [(λ, ε-MSE) per level]}, "share": [per level]}} for every library with kept
    networks (ours under ``recipe``, the peers under their defaults). A label is "library[ / recipe] on CPU": a
    network kept from a CPU-second budget had its CPU's number of steps, so networks trained on different CPUs are
    never averaged in one column (peer_runs.trained_on)."""
    data = peer_runs.load_data(data_name, quick=quick)
    x0 = (data.heldout[:QUICK_IMAGES] if quick else data.heldout) * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(NOISE_SEED))
    found: dict[str, dict] = {}
    for library in libs.LIBRARIES:
        library_recipe = recipe if library == libs.OURS else "default"
        label = f"{library} / {library_recipe}" if library == libs.OURS else library
        networks = peer_runs.kept_networks(weights, data_name, library, library_recipe, budget)
        for seed, path in networks.items():
            contender, network = peer_runs.load_kept(library, library_recipe, data, path, 1)
            errors = epsilon_errors(contender, network, x0, eps)  # first: it names a schedule without a table
            column = f"{label} on {peer_runs.trained_on(path)}"
            entry = found.setdefault(column, {"errors": {}, "share": training_share(contender.alphas_cumprod)})
            entry["errors"][seed] = errors
    return found


def networks_of(found: dict[str, dict]) -> list[dict[str, Any]]:
    """Per network column: its seeds, the ε-MSE's mean and sd over seeds per grid level, the largest |λ_t − λ| used,
    the training shares and, beside a diffusers column of the same CPU, the ratio of the means to diffusers'."""
    out = []
    for label in sorted(found):
        errors = found[label]["errors"]
        per_level = [[rows[i][1] for rows in errors.values()] for i in range(len(LOG_SNR_GRID))]
        out.append({"network": label, "seeds": sorted(errors), "mse_mean": [statistics.fmean(v) for v in per_level],
                    "mse_sd": [statistics.stdev(v) if len(v) > 1 else None for v in per_level],
                    "lambda_gap": max(abs(rows[i][0] - lam) for rows in errors.values()
                                      for i, lam in enumerate(LOG_SNR_GRID)),
                    "share": found[label]["share"]})  # fmt: skip
    for n in out:
        cpu = n["network"].split(" on ", 1)[1]
        ref = next((d for d in out if d["network"] == f"{libs.DIFFUSERS} on {cpu}"), None)
        if ref is not None and ref is not n:
            n["mse_over_diffusers"] = [a / b for a, b in zip(n["mse_mean"], ref["mse_mean"])]
    return out


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="the folder given to peer_quality --keep-weights")
    p.add_argument("--data", default="digits", choices=["digits", "shapes"])
    p.add_argument("--minutes", type=float, default=16.0, help="the runs' budget (peer_quality --minutes)")
    p.add_argument("--recipe", default="default", help="ours' recipe (peer_quality --list-recipes)")
    p.add_argument("--quick", action="store_true", help="the quick data of peer_quality --quick (the test suite)")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    if args.recipe not in RECIPES:
        p.error(f"unknown recipe {args.recipe!r}; known: {', '.join(RECIPES)}")
    if not args.weights.is_dir():
        p.error(f"--weights {args.weights}: no such folder")
    torch.set_num_threads(1)
    budget = args.minutes * peer_runs.CPU_SECONDS_PER_MINUTE
    try:
        found = measure(args.weights, args.data, budget, args.recipe, quick=args.quick)
    except ValueError as err:  # a continuous-time recipe has no ᾱ table
        p.error(f"--recipe {args.recipe}: {err}")
    if not found:
        p.error(f"no kept networks of {args.data} at {args.minutes:g} minutes in {args.weights}")
    record = {**records.header("denoising_error", argv), "data": args.data, "budget_cpu_s": budget,
              "recipe": args.recipe, "lambda": list(LOG_SNR_GRID), "share_width": SHARE_WIDTH,
              "networks": networks_of(found)}  # fmt: skip
    print(f"**{args.data}**, {args.minutes:g} minutes: ε-MSE of the kept EMA networks on the held-out images\n")
    print(digits_tables.denoising_error([record]))
    records.append(records.destination(args.results, "denoising_error", quick=args.quick), record)
    return found


if __name__ == "__main__":
    main()
