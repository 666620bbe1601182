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
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor, nn

from benchmarks import _quality_libraries as libs
from benchmarks import peer_quality

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


def kept_networks(weights: Path, data: str, library: str, recipe: str, budget: float) -> dict[int, Path]:
    """{seed: path} of the kept CPU float32 networks of one library and recipe (peer_quality.WEIGHTS_NAME)."""
    name = peer_quality.WEIGHTS_NAME.format(
        data=data, library=library, recipe=recipe, seed="\0", budget=budget, device="cpu", precision=""
    )
    prefix, suffix = name.split("\0")
    found = {}
    for path in sorted(weights.glob(f"{prefix}*{suffix}")):
        match = re.fullmatch(re.escape(prefix) + r"(\d+)" + re.escape(suffix), path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def measure(weights: Path, data_name: str, budget: float, recipe: str, *, quick: bool = False) -> dict[str, dict]:
    """{label: {"errors": {seed: [(λ, ε-MSE) per level]}, "share": [per level]}} for every library with kept
    networks (ours under ``recipe``, the peers under their defaults). A label is "library[ / recipe] on CPU": a
    network kept from a CPU-second budget had its CPU's number of steps, so networks trained on different CPUs are
    never averaged in one column (peer_quality.trained_on)."""
    data = peer_quality.load_data(data_name, quick=quick)
    x0 = (data.heldout[:QUICK_IMAGES] if quick else data.heldout) * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(NOISE_SEED))
    found: dict[str, dict] = {}
    for library in libs.LIBRARIES:
        library_recipe = recipe if library == libs.OURS else "default"
        label = f"{library} / {library_recipe}" if library == libs.OURS else library
        networks = kept_networks(weights, data_name, library, library_recipe, budget)
        for seed, path in networks.items():
            contender, network = peer_quality.load_kept(library, library_recipe, data, path, 1)
            errors = epsilon_errors(contender, network, x0, eps)  # first: it names a schedule without a table
            column = f"{label} on {peer_quality.trained_on(path)}"
            entry = found.setdefault(column, {"errors": {}, "share": training_share(contender.alphas_cumprod)})
            entry["errors"][seed] = errors
    return found


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.4g} ± {sd:.2g}"


def table(found: dict[str, dict]) -> str:
    """Markdown: per grid level, each library's ε-MSE (mean ± sd over seeds), its ratio to the lowest mean, and the
    training shares."""
    labels = sorted(found)
    seeds = {label: sorted(found[label]["errors"]) for label in labels}
    head = " | ".join(f"{label} ε-MSE (seeds {','.join(map(str, seeds[label]))})" for label in labels)
    shares = " | ".join(f"{label} share" for label in labels)
    lines = [
        f"| λ | {head} | ratios to the lowest mean (column order) | {shares} |",
        "| ---: |" + " ---: |" * (2 * len(labels) + 1),
    ]
    gap = 0.0
    for i, lam in enumerate(LOG_SNR_GRID):
        means = {}
        cells = []
        for label in labels:
            per_seed = [rows[i][1] for rows in found[label]["errors"].values()]
            gap = max(gap, *(abs(rows[i][0] - lam) for rows in found[label]["errors"].values()))
            means[label] = statistics.fmean(per_seed)
            cells.append(_mean_sd(per_seed))
        low = min(means.values())
        ratios = ", ".join(f"{means[label] / low:.2f}" for label in labels)
        share = " | ".join(f"{found[label]['share'][i]:.3f}" for label in labels)
        lines.append(f"| {lam:g} | {' | '.join(cells)} | {ratios} | {share} |")
    lines.append(f"\nlargest |λ_t − λ| used: {gap:.3f}; training share: fraction of t with |λ_t − λ| ≤ {SHARE_WIDTH:g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="the folder given to peer_quality --keep-weights")
    p.add_argument("--data", default="digits", choices=["digits", "shapes"])
    p.add_argument("--minutes", type=float, default=16.0, help="the runs' budget (peer_quality --minutes)")
    p.add_argument("--recipe", default="default", help="ours' recipe (peer_quality --list-recipes)")
    p.add_argument("--quick", action="store_true", help="the quick data of peer_quality --quick (the test suite)")
    args = p.parse_args(argv)
    if args.recipe not in peer_quality.RECIPES:
        p.error(f"unknown recipe {args.recipe!r}; known: {', '.join(peer_quality.RECIPES)}")
    if not args.weights.is_dir():
        p.error(f"--weights {args.weights}: no such folder")
    torch.set_num_threads(1)
    budget = args.minutes * peer_quality.CPU_SECONDS_PER_MINUTE
    try:
        found = measure(args.weights, args.data, budget, args.recipe, quick=args.quick)
    except ValueError as err:  # a continuous-time recipe has no ᾱ table
        p.error(f"--recipe {args.recipe}: {err}")
    if not found:
        p.error(f"no kept networks of {args.data} at {args.minutes:g} minutes in {args.weights}")
    print(f"**{args.data}**, {args.minutes:g} minutes: ε-MSE of the kept EMA networks on the held-out images\n")
    print(table(found))
    return found


if __name__ == "__main__":
    main()
