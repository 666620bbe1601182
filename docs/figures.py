"""The docs' figures: ``python docs/figures.py [--out docs/figures] [--stage STAGE.pt]``.

Needs matplotlib (``pip install 'denoising-diffusion[docs]'``). Each figure is one function; the test suite runs
them at a small size (tests/test_figures.py).

* ``score_sde_trajectories.png`` (docs/score-sde.md): a 2-D Gaussian mixture's exact score (tests/oracle.py) driven
  through annealed Langevin dynamics on NCSN levels, the predictor-corrector sampler on the VP SDE and the adaptive
  probability-flow ODE on the VP SDE: a few particles' paths over the data density, and the final samples.
* ``cascade_augmentation.png`` (docs/cascade.md): a super-resolution stage's input on held-out shapes: the original,
  its low-resolution version, the conditioning input at several augmentation levels, and the stage's output. The
  stage is a trained one (``--stage``: benchmarks/cascade.py ``--save`` keeps them), or an untrained one for the test.
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

from denoising_diffusion import GaussianDiffusion, SuperResolution, Unet, get_builtin_dataset, load_pipeline  # noqa: E402
from denoising_diffusion.cascade import Augmentation, downsample  # noqa: E402
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


def cascade_augmentation(
    out: Path, *, stage: Path | None = None, rows: int = 4, levels: tuple[float, ...] = (0.1, 0.25, 0.5)
) -> Path:
    """docs/cascade.md's figure: per held-out shape (built-in shapes, seed 7), the original x, its low-resolution
    version y = D(x) (shown nearest-upsampled), the conditioning input z_s = α_s U(y) + σ_s ε at ``levels``, and
    the stage's output at its own sample_level. ``stage``: a SuperResolution file (None: an untrained tiny one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if stage is None:
        net = Unet(8, dim_mults=(1, 2), cond_image_channels=3, cond_level=True, image_null=True)
        model = SuperResolution(GaussianDiffusion(net, image_size=16, timesteps=20), low_res_size=8)
    else:
        model = load_pipeline(stage)
    if not isinstance(model, SuperResolution):
        raise ValueError(f"{stage} holds a {type(model).__name__}, not a super-resolution stage")
    data = get_builtin_dataset("shapes", model.image_size, num_images=rows, seed=7)
    x = torch.stack([data[i] for i in range(rows)])
    low = downsample(x, model.low_res_size)
    generator = torch.Generator().manual_seed(0)
    wide = Augmentation((0.0, 1.0))  # shows any level, the ones beyond the stage's training range included
    inputs = [model.diffusion.unnormalize(wide.sampling_input(model.upsampled(low), s, generator)[0]) for s in levels]
    with torch.inference_mode():
        output = model.sample(low_res=low, steps=20, generator=generator)
    shown = torch.nn.functional.interpolate(low, size=model.image_size, mode="nearest")
    columns = [("original x", x), ("low resolution y", shown)]
    columns += [(f"input, level {s:g}", z) for s, z in zip(levels, inputs)]
    columns.append((f"output (level {model.sample_level:g})", output))
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows + 0.3), squeeze=False)
    for j, (title, images) in enumerate(columns):
        for i in range(rows):
            axes[i, j].imshow(images[i].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[i, j].set(xticks=[], yticks=[])
        axes[0, j].set_title(title, fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cascade_augmentation.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw the docs' figures.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--stage", type=Path, default=None, help="a trained super-resolution stage for the cascade")
    args = parser.parse_args(argv)
    print(score_sde_trajectories(args.out))
    print(cascade_augmentation(args.out, stage=args.stage))


if __name__ == "__main__":
    main()
