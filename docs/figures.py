"""The docs' figures, drawn from closed forms (no training): ``python docs/figures.py [--out docs/figures]``.

Needs matplotlib (``pip install 'denoising-diffusion[docs]'``). Each figure is one function; the test suite runs
them at a small size (tests/test_figures.py).

* ``score_sde_trajectories.png`` (docs/score-sde.md): a 2-D Gaussian mixture's exact score (tests/oracle.py) driven
  through annealed Langevin dynamics on NCSN levels, the predictor-corrector sampler on the VP SDE and the adaptive
  probability-flow ODE on the VP SDE: a few particles' paths over the data density, and the final samples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from oracle import GaussianMixture  # noqa: E402  (the tests' closed-form oracle)

from denoising_diffusion.processes import NCSNSchedule, VPSchedule  # noqa: E402
from denoising_diffusion.samplers import SAMPLERS  # noqa: E402

MIXTURE = GaussianMixture([0.35, 0.65], [[-1.5, -0.5], [1.2, 1.0]], [0.35, 0.45])
PANELS = (  # title, schedule, sampler, steps, options
    ("annealed Langevin (NCSN levels)", NCSNSchedule(sigma_min=0.01, sigma_max=6.0, num_levels=30),
     "annealed_langevin", 30, {"steps_per_level": 10}),
    ("predictor-corrector (VP SDE)", VPSchedule(), "pc", 60, {}),
    ("probability-flow ODE, dopri5 (VP SDE)", VPSchedule(), "ode", 25, {"rtol": 1e-4, "atol": 1e-4}),
)  # fmt: skip


def trajectories(schedule, sampler: str, steps: int, options: dict, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(paths (steps + 1, n, 2), final samples (n, 2)) of ``n`` particles sampled with the exact score."""
    info = SAMPLERS[sampler]
    generator = torch.Generator().manual_seed(seed)
    x_T = schedule.prior_std * torch.randn(n, 2, 1, 1, generator=generator, dtype=torch.float64)
    path = [x_T[:, :, 0, 0]]
    record = lambda r: path.append(r.x_next[:, :, 0, 0])  # noqa: E731
    grid = schedule.timesteps(steps, info.spacing)
    out = info.fn(MIXTURE.denoiser(schedule), x_T, schedule, grid, generator=generator, callback=record, **options)
    return torch.stack(path), out[:, :, 0, 0]


def density_grid(lim: float, size: int = 200) -> tuple[Tensor, Tensor, Tensor]:
    """The mixture's density on a size × size grid over [−lim, lim]²."""
    axis = torch.linspace(-lim, lim, size, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx, yy], -1).reshape(-1, 2)
    var = MIXTURE.stds**2
    sq = ((points[:, None] - MIXTURE.means[None]) ** 2).sum(-1)
    dens = (MIXTURE.weights * torch.exp(-0.5 * sq / var) / (2 * torch.pi * var)).sum(-1)
    return xx, yy, dens.reshape(size, size)


def score_sde_trajectories(out: Path, *, samples: int = 2000, paths: int = 4) -> Path:
    """docs/score-sde.md's figure: three samplers' particle paths and samples over the mixture's density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = 3.5
    xx, yy, dens = density_grid(lim)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 4.4), constrained_layout=True)
    for ax, (title, schedule, sampler, steps, options) in zip(axes, PANELS):
        _, final = trajectories(schedule, sampler, steps, options, samples, seed=0)
        traced, _ = trajectories(schedule, sampler, steps, options, paths, seed=1)
        ax.contour(xx, yy, dens, levels=8, colors="0.6", linewidths=0.6)
        ax.scatter(final[:, 0], final[:, 1], s=1, alpha=0.25, color="tab:blue")
        colors = plt.get_cmap("autumn")(torch.linspace(0, 0.8, paths).tolist())
        for k in range(paths):  # each particle's x_t from the prior (clipped to the frame) to its sample (dot)
            xs, ys = traced[:, k, 0].clamp(-lim, lim), traced[:, k, 1].clamp(-lim, lim)
            ax.plot(xs, ys, lw=0.7, alpha=0.6, color=colors[k])
            ax.plot(xs[-1], ys[-1], "o", ms=4, color=colors[k], markeredgecolor="black", markeredgewidth=0.5)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=title, aspect="equal", xticks=[], yticks=[])
    out.mkdir(parents=True, exist_ok=True)
    path = out / "score_sde_trajectories.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw the docs' figures from closed forms.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    print(score_sde_trajectories(args.out))


if __name__ == "__main__":
    main()
