"""The docs' figures, drawn from closed forms and tiny models: ``python docs/figures.py [--out docs/figures]
[--only NAME ...] [--stage STAGE.pt]``. Every figure of docs/ comes from here (tests/contracts/test_figures.py
checks that each image a page shows is one of :data:`FIGURES` and runs each function at a small size).

Needs matplotlib (``pip install 'denoising-diffusion[docs]'``). Each figure is one function taking the output folder
and its sizes as keywords (their defaults draw the committed PNGs):

* ``forward_process.png`` (docs/theory.md): one built-in shape diffused by q(x_t | x_0) at several t, with the same
  ε, under the linear and the cosine schedule (T = 1000).
* ``schedules.png`` (docs/theory.md): ᾱ_t and the log-SNR λ_t = log(ᾱ_t / (1 − ᾱ_t)) of each β schedule.
* ``reverse_trajectory.png`` (docs/theory.md): DDPM's ancestral sampler driven by the exact denoiser of a small
  training set (the built-in shapes): x_t and the prediction x̂_0 at several steps, from noise to a training image.
* ``score_sde_trajectories.png`` (docs/score-sde.md): a 2-D Gaussian mixture's exact score (tests/oracle.py) driven
  through annealed Langevin dynamics on NCSN levels, the predictor-corrector sampler on the VP SDE and the adaptive
  probability-flow ODE on the VP SDE: a few particles' paths over the data density, and the final samples.
* ``cascade_augmentation.png`` (docs/cascade.md): a super-resolution stage's input on held-out shapes: the original,
  its low-resolution version, the conditioning input at several augmentation levels, and the stage's output. The
  stage is a trained one (``--stage``: benchmarks/cascade.py ``--save`` keeps them), or an untrained one for the test.
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

from denoising_diffusion import (  # noqa: E402
    BuiltinShapes,
    GaussianDiffusion,
    Prediction,
    SuperResolution,
    Unet,
    get_builtin_dataset,
    load_pipeline,
)
from denoising_diffusion.cascade import Augmentation, downsample  # noqa: E402
from denoising_diffusion.processes import (  # noqa: E402  # noqa: E402
    FlowSchedule,
    NCSNSchedule,
    NoiseSchedule,
    VPSchedule,
    path_coefficients,
    q_sample,
)
from denoising_diffusion.reflow import euler_trajectory, flow_grid  # noqa: E402
from denoising_diffusion.samplers import SAMPLERS, sample_ddpm  # noqa: E402

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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=110)
    fig.clf()
    return path


def _show(ax, image: Tensor) -> None:
    """An image (C, H, W) in [−1, 1] on an axis without ticks."""
    ax.imshow(((image + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set(xticks=[], yticks=[])


def forward_process(out: Path, *, size: int = 48, times: tuple[int, ...] = (0, 50, 100, 250, 500, 750, 999)) -> Path:
    """docs/theory.md: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (processes.q_sample) at ``times`` for the linear and the cosine
    schedule, one image and one ε for both rows, so the rows differ only by ᾱ_t."""
    plt = _pyplot()
    x0 = BuiltinShapes(num_images=1, image_size=size, seed=3)[0][None].double() * 2 - 1
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    names = ("linear", "cosine")
    fig, axes = plt.subplots(len(names), len(times), figsize=(1.5 * len(times), 1.75 * len(names) + 0.2),
                             constrained_layout=True, squeeze=False)  # fmt: skip
    for row, name in enumerate(names):
        schedule = NoiseSchedule.from_name(name, 1000)
        for col, t in enumerate(times):
            x_t = q_sample(schedule, x0, torch.tensor([t]), eps)
            _show(axes[row, col], x_t[0].float())
            axes[row, col].set_title(f"t = {t}\nᾱ_t = {schedule.alphas_cumprod[t]:.3f}", fontsize=8)
        axes[row, 0].set_ylabel(name)
    return _save(fig, out, "forward_process.png")


def schedules(out: Path, *, timesteps: int = 1000) -> Path:
    """docs/theory.md: ᾱ_t and λ_t = log(ᾱ_t/(1 − ᾱ_t)) per β schedule (processes/beta_schedules.py), t/T on x."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    t = torch.arange(timesteps) / timesteps
    for name in ("linear", "cosine", "sigmoid", "quadratic"):
        alphabar = NoiseSchedule.from_name(name, timesteps).alphas_cumprod
        left.plot(t, alphabar, label=name)
        right.plot(t, (alphabar / (1 - alphabar)).log(), label=name)
    left.set(xlabel="t / T", ylabel="ᾱ_t", title="signal kept: ᾱ_t")
    right.set(xlabel="t / T", ylabel="λ_t = log SNR", title="log-SNR: log(ᾱ_t / (1 − ᾱ_t))")
    left.legend(), right.axhline(0, color="0.7", lw=0.6)
    return _save(fig, out, "schedules.png")


def training_set_denoiser(schedule, images: Tensor):
    """The exact denoiser of the empirical distribution of ``images`` (K, C, H, W) in [−1, 1]: x̂_0 = Σ_k w_k x_k with
    w = softmax_k(−‖x_t − α_t x_k‖² / 2σ_t²), the posterior mean; ε̂ = (x_t − α_t x̂_0)/σ_t."""
    flat = images.flatten(1)

    def denoise(x_t: Tensor, t: Tensor) -> Prediction:
        alpha, sigma = path_coefficients(schedule, t, x_t)
        a, x = alpha.flatten()[:, None], x_t.flatten(1)  # (B, 1), (B, D)
        sq = (x**2).sum(1, keepdim=True) - 2 * a * x @ flat.T + a**2 * (flat**2).sum(1)  # ‖x_t − α_t x_k‖², (B, K)
        weights = torch.softmax(-sq / (2 * sigma.flatten()[:, None] ** 2), dim=1)
        x0 = (weights @ flat).view_as(x_t)
        return Prediction(x0=x0, eps=(x_t - alpha * x0) / sigma)

    return denoise


SHOWN_STEPS = (0.0, 0.03, 0.06, 0.1, 0.15, 0.3, 1.0)
"""Where in the reverse run reverse_trajectory's columns sit (fractions of the steps): mostly early, where the
exact denoiser of a small training set makes up its mind."""


def reverse_trajectory(out: Path, *, size: int = 32, images: int = 64, steps: int = 100) -> Path:
    """docs/theory.md: DDPM's ancestral sampling (samplers.sample_ddpm, fixed_small variance) on the cosine schedule
    (T = 1000, ``steps`` respaced), driven by the exact denoiser of ``images`` built-in shapes: x_t (top) and x̂_0
    (bottom) at the steps :data:`SHOWN_STEPS`, from x_T to the sample."""
    plt = _pyplot()
    data = torch.stack([BuiltinShapes(num_images=images, image_size=size, seed=1)[i] for i in range(images)])
    schedule = NoiseSchedule.from_name("cosine", 1000)
    records = []
    generator = torch.Generator().manual_seed(5)
    x_T = torch.randn(1, *data.shape[1:], generator=generator, dtype=torch.float64)
    grid = schedule.timesteps(steps, "linspace")
    sample_ddpm(training_set_denoiser(schedule, data.double() * 2 - 1), x_T, schedule, grid, generator=generator,
                callback=records.append)  # fmt: skip
    shown = sorted({round(f * (len(records) - 1)) for f in SHOWN_STEPS})
    fig, axes = plt.subplots(2, len(shown), figsize=(1.5 * len(shown), 3.5), constrained_layout=True, squeeze=False)
    for col, i in enumerate(shown):
        record = records[i]
        _show(axes[0, col], record.x_t[0].float())
        _show(axes[1, col], record.pred_x0[0].float())
        axes[0, col].set_title(f"t = {record.t}", fontsize=8)
    axes[0, 0].set_ylabel("x_t")
    axes[1, 0].set_ylabel("x̂_0")
    return _save(fig, out, "reverse_trajectory.png")


def cascade_augmentation(
    out: Path, *, stage: Path | None = None, rows: int = 4, levels: tuple[float, ...] = (0.1, 0.25, 0.5)
) -> Path:
    """docs/cascade.md's figure: per held-out shape (built-in shapes, seed 7), the original x, its low-resolution
    version y = D(x) (shown nearest-upsampled), the conditioning input z_s = α_s U(y) + σ_s ε at ``levels``, and
    the stage's output at its own sample_level. ``stage``: a SuperResolution file (None: an untrained tiny one)."""
    plt = _pyplot()
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
    return _save(fig, out, "cascade_augmentation.png")


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
    plt = _pyplot()
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
    return _save(fig, out, "reflow_trajectories.png")


FIGURES = {
    "forward_process.png": forward_process,
    "schedules.png": schedules,
    "reverse_trajectory.png": reverse_trajectory,
    "score_sde_trajectories.png": score_sde_trajectories,
    "cascade_augmentation.png": cascade_augmentation,
    "reflow_trajectories.png": reflow_trajectories,
}
"""Every figure of docs/: the file name and the function that draws it."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw the docs' figures.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES), default=sorted(FIGURES), metavar="NAME",
                        help="draw only these figures (default: all)")  # fmt: skip
    parser.add_argument("--stage", type=Path, default=None, help="a trained super-resolution stage for the cascade")
    args = parser.parse_args(argv)
    for name in args.only:
        options = {"stage": args.stage} if name == "cascade_augmentation.png" else {}
        print(FIGURES[name](args.out, **options))


if __name__ == "__main__":
    main()
