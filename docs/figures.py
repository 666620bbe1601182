"""The docs' figures, drawn from closed forms (no training): ``python docs/figures.py [--out docs/figures]``.

Needs matplotlib (``pip install 'denoising-diffusion[docs]'``). Each figure is one function; the test suite runs
them at a small size (tests/test_figures.py).

* ``score_sde_trajectories.png`` (docs/score-sde.md): a 2-D Gaussian mixture's exact score (tests/oracle.py) driven
  through annealed Langevin dynamics on NCSN levels, the predictor-corrector sampler on the VP SDE and the adaptive
  probability-flow ODE on the VP SDE: a few particles' paths over the data density, and the final samples.
* ``reflow_trajectories.png`` (docs/flow.md): the same mixture on the straight flow path, before and after reflow.
  Left, the 1-rectified flow: the exact velocity E[ε − x_0 | x_t] (oracle.GaussianMixture.velocity). Right, the
  2-rectified flow: E[x_1 − x_0 | x_t] of the left flow's own couplings (x_0 = its ODE's sample from x_1), estimated
  by kernel regression over those pairs (Nadaraya-Watson, no training). Paths from noise to data, the samples of
  100 Euler steps and of one, and each flow's straightness S (Liu et al. 2023, eq. 5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from oracle import GaussianMixture  # noqa: E402  (the tests' closed-form oracle)

from denoising_diffusion.processes import FlowSchedule, NCSNSchedule, VPSchedule  # noqa: E402
from denoising_diffusion.reflow import euler_trajectory, flow_grid  # noqa: E402
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


def reflowed_velocity(x0: Tensor, x1: Tensor, bandwidth: float):
    """E[x_1 − x_0 | x_t] over the pairs (x0, x1) (N, 2) by Nadaraya-Watson: weights exp(−‖x − x_t^i‖²/(2h²)) at
    x_t^i = (1 − t) x0_i + t x1_i. Returns (x (B, 2, 1, 1), t (B,)) -> (B, 2, 1, 1)."""

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        s = float(t[0])
        points = (1 - s) * x0 + s * x1  # (N, 2)
        weights = torch.softmax(-(torch.cdist(x[:, :, 0, 0], points) ** 2) / (2 * bandwidth**2), dim=1)  # (B, N)
        return (weights @ (x1 - x0))[:, :, None, None]

    return velocity


def path_points(trajectory: Any) -> Tensor:
    """The states (K + 1, B, 2) of an Euler trajectory (reflow.Trajectory of (B, 2, 1, 1) states), x_T to x_0."""
    dts = torch.diff(torch.tensor(trajectory.times, dtype=torch.float64))  # (K,), negative: t decreases
    start = trajectory.start[None, :, :, 0, 0]
    return torch.cat([start, start + (dts[:, None, None] * trajectory.velocities[:, :, :, 0, 0]).cumsum(0)])


def reflow_trajectories(out: Path, *, samples: int = 1500, paths: int = 6, pairs: int = 3000) -> Path:
    """docs/flow.md's figure: the 1- and 2-rectified flows of the mixture, their paths and one-step samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flow, lim = FlowSchedule(), 3.5
    fine, one = flow_grid(flow, 100), flow_grid(flow, 1)
    noise = torch.randn(max(samples, pairs), 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    first = MIXTURE.velocity(flow)
    coupling = euler_trajectory(first, noise[:pairs], fine)  # the 1-rectified flow's couplings (x_0, x_1)
    second = reflowed_velocity(coupling.end[:, :, 0, 0], coupling.start[:, :, 0, 0], bandwidth=0.1)
    xx, yy, dens = density_grid(lim)
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 4.4), constrained_layout=True)
    for ax, (title, velocity) in zip(axes, [("1-rectified flow (flow matching)", first), ("2-rectified flow", second)]):
        final = euler_trajectory(velocity, noise[:samples], fine)
        jump = euler_trajectory(velocity, noise[:samples], one).end[:, :, 0, 0]
        traced = euler_trajectory(velocity, noise[samples : samples + paths], fine)
        steps = path_points(traced)
        ax.contour(xx, yy, dens, levels=8, colors="0.6", linewidths=0.6)
        ax.scatter(jump[:, 0], jump[:, 1], s=4, alpha=0.4, color="tab:orange", label="1 Euler step")
        ax.scatter(final.end[:, 0, 0, 0], final.end[:, 1, 0, 0], s=1, alpha=0.4, color="tab:blue", label="100 steps")
        for k in range(paths):
            ax.plot(steps[:, k, 0], steps[:, k, 1], lw=0.8, color="black", alpha=0.7)
        s = float(final.straightness().mean())
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"{title}: S = {s:.2g}", aspect="equal", xticks=[], yticks=[])
    axes[0].legend(loc="lower right", markerscale=8, fontsize=8)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "reflow_trajectories.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw the docs' figures from closed forms.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    print(score_sde_trajectories(args.out))
    print(reflow_trajectories(args.out))


if __name__ == "__main__":
    main()
