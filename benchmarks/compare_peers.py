"""Speed and memory of this project's Unet against its peers at matched network size, measured side by side.

Usage:  python benchmarks/compare_peers.py [--configs 3x32,3x64,1x28] [--repeats 5] [--sample-repeats 2]
                                           [--libraries ours,denoising-diffusion-pytorch,diffusers]
                                           [--threads N] [--skip-missing] [--no-memory] [--quick]
        python benchmarks/compare_peers.py --profile [--configs 3x32]   # where our training step's time goes
        python benchmarks/compare_peers.py --memory-only                # peak memory only (load-independent)

For each configuration every library builds a network of about the same parameter count (printed; a count more
than 10% away from ours is flagged) and is timed on: a training step (forward + ε-prediction MSE loss + backward +
Adam step), one forward pass under inference_mode (one network evaluation of a sampler), and a 50-step DDIM
sample (each library's own DDIM). The libraries are alternated iteration by iteration within one run, every
iteration is guarded against a busy machine (see ``_timing``), figures are medians after warm-up. Peak memory of
a training step (and of a forward pass) is measured in its own child process per library. The output is a
markdown table per configuration and one table of ratios (ours / peer).

Peers: ``denoising-diffusion-pytorch`` (lucidrains; its Unet and GaussianDiffusion with sampling_timesteps=50,
objective 'pred_noise') and ``diffusers`` (UNet2DModel with one ResNet block per level and attention at the
lowest resolution plus the middle; DDIMScheduler loop). ``--skip-missing`` skips a peer that is not installed
instead of failing. ``--quick`` runs a seconds-long smoke configuration (used by the test suite).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampler draws a progress bar; tqdm reads this at import

import torch
from torch import Tensor, nn

from benchmarks._timing import (
    Timing,
    alternating_medians,
    machine_line,
    max_rss_mib,
    run_child,
)

OURS, LUCIDRAINS, DIFFUSERS = "ours", "denoising-diffusion-pytorch", "diffusers"
OURS_CHECKPOINTED = "ours-checkpointed"  # ours with Unet(gradient_checkpointing=True): the memory-saving setting
LIBRARIES = (OURS, LUCIDRAINS, DIFFUSERS, OURS_CHECKPOINTED)
MODULES = {
    OURS: "denoising_diffusion", LUCIDRAINS: "denoising_diffusion_pytorch", DIFFUSERS: "diffusers",
    OURS_CHECKPOINTED: "denoising_diffusion",
}  # fmt: skip
PARAM_TOLERANCE = 0.10  # a peer whose parameter count differs from ours by more than this is flagged


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: image shape, batch, our Unet's width, and the diffusers network matched to it.

    ``diffusers_channels`` (block_out_channels) and ``diffusers_groups`` (GroupNorm groups) were chosen so that
    UNet2DModel with one ResNet block per level and attention at the lowest level + middle has within 10% of our
    parameter count (lucidrains' Unet has the same layout as ours, so it takes ``dim``/``dim_mults`` as is).
    """

    name: str
    channels: int
    image_size: int
    batch: int
    dim: int
    dim_mults: tuple[int, ...]
    diffusers_channels: tuple[int, ...]
    diffusers_groups: int = 32
    sample_steps: int = 50


CONFIGS = {
    "3x32": Config("3x32", 3, 32, 16, 64, (1, 2, 4, 8), (64, 128, 256, 448)),
    "3x64": Config("3x64", 3, 64, 8, 64, (1, 2, 4, 8), (64, 128, 256, 448)),
    "1x28": Config("1x28", 1, 28, 32, 64, (1, 2, 4), (64, 128, 240), diffusers_groups=16),
}
QUICK = Config("quick", 3, 16, 2, 16, (1, 2), (16, 32), diffusers_groups=8, sample_steps=2)


@dataclass
class Subject:
    """One library's network at one configuration, reduced to what the benchmarks time.

    ``loss()`` returns the training loss of a fixed batch (grad enabled); ``forward()`` is one network
    evaluation at a fixed (x_t, t); ``sample()`` draws one batch with the library's DDIM; ``optimizer(params)``
    builds the Adam its own trainer uses (lr 1e-4).
    """

    library: str
    network: nn.Module
    loss: Callable[[], Tensor]
    forward: Callable[[], Tensor]
    sample: Callable[[], Tensor]
    optimizer: Callable[[Any], torch.optim.Optimizer] = lambda params: torch.optim.Adam(params, lr=1e-4)
    params: int = field(init=False)

    def __post_init__(self) -> None:
        self.params = sum(p.numel() for p in self.network.parameters())


Wrap = Callable[[nn.Module], nn.Module]


def _identity(module: nn.Module) -> nn.Module:
    """The network as it is (no compilation)."""
    return module


def _inputs(config: Config, device: str, channels_last: bool) -> tuple[Tensor, Tensor, Tensor]:
    """A fixed training batch in [0, 1], a fixed x_t and a fixed timestep, the same for every library."""
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch, config.channels, config.image_size, config.image_size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.rand(shape, generator=generator).to(device, memory_format=fmt)
    x_t = torch.randn(shape, generator=generator).to(device, memory_format=fmt)
    return images, x_t, torch.full((config.batch,), 500, device=device)


def build_ours(
    config: Config,
    device: str = "cpu",
    channels_last: bool = False,
    wrap: Wrap = _identity,
    gradient_checkpointing: bool = False,
) -> Subject:
    """This project: Unet inside GaussianDiffusion (ε-prediction, L2), DDIM through ``diffusion.sample``, and the
    Trainer's Adam (fused where the device has the kernel); ``gradient_checkpointing`` as the Unet's option."""
    from denoising_diffusion import GaussianDiffusion, Unet
    from denoising_diffusion.training.optimizer import make_adam

    net = Unet(
        config.dim, dim_mults=config.dim_mults, channels=config.channels, gradient_checkpointing=gradient_checkpointing
    ).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    diffusion = GaussianDiffusion(net, image_size=config.image_size, timesteps=1000).to(device)
    diffusion.model = wrap(net)
    images, x_t, t = _inputs(config, device, channels_last)
    return Subject(
        OURS_CHECKPOINTED if gradient_checkpointing else OURS,
        net,
        lambda: diffusion(images),
        lambda: diffusion.model(x_t, t),
        lambda: diffusion.sample(config.batch, sampler="ddim", steps=config.sample_steps),
        lambda params: make_adam(params, lr=1e-4, betas=(0.9, 0.99)),
    )


def build_lucidrains(
    config: Config, device: str = "cpu", channels_last: bool = False, wrap: Wrap = _identity
) -> Subject:
    """denoising-diffusion-pytorch: its Unet and GaussianDiffusion (ε-prediction, sampling_timesteps = DDIM steps)."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    net = Unet(config.dim, dim_mults=config.dim_mults, channels=config.channels).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    diffusion = GaussianDiffusion(
        net,
        image_size=config.image_size,
        timesteps=1000,
        objective="pred_noise",
        sampling_timesteps=config.sample_steps,
    ).to(device)
    diffusion.model = wrap(net)
    images, x_t, t = _inputs(config, device, channels_last)
    return Subject(
        LUCIDRAINS,
        net,
        lambda: diffusion(images),
        lambda: diffusion.model(x_t, t),
        lambda: diffusion.sample(batch_size=config.batch),
    )


def diffusers_network(config: Config) -> nn.Module:
    """UNet2DModel matched to ``config``: one ResNet block per level, attention at the lowest level and the middle."""
    from diffusers import UNet2DModel

    levels = len(config.diffusers_channels)
    down = ("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=config.channels,
        out_channels=config.channels,
        block_out_channels=config.diffusers_channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=config.diffusers_groups,
    )


def build_diffusers(
    config: Config, device: str = "cpu", channels_last: bool = False, wrap: Wrap = _identity
) -> Subject:
    """diffusers: UNet2DModel, ε-prediction MSE with DDIMScheduler.add_noise, DDIMScheduler sampling loop."""
    from diffusers import DDIMScheduler

    net = diffusers_network(config).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    run = wrap(net)
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    images, x_t, t = _inputs(config, device, channels_last)

    def loss() -> Tensor:
        x_0 = images * 2 - 1
        noise = torch.randn_like(x_0)
        steps = torch.randint(0, 1000, (config.batch,), device=device)
        return nn.functional.mse_loss(run(scheduler.add_noise(x_0, noise, steps), steps).sample, noise)

    def sample() -> Tensor:
        scheduler.set_timesteps(config.sample_steps)
        x = torch.randn_like(x_t)
        for step in scheduler.timesteps:
            x = scheduler.step(run(x, step.to(device)).sample, step, x).prev_sample
        return x

    return Subject(DIFFUSERS, net, loss, lambda: run(x_t, t).sample, sample)


BUILDERS: dict[str, Callable[..., Subject]] = {
    OURS: build_ours,
    LUCIDRAINS: build_lucidrains,
    DIFFUSERS: build_diffusers,
    OURS_CHECKPOINTED: functools.partial(build_ours, gradient_checkpointing=True),
}


def available(library: str) -> bool:
    """Whether ``library`` can be imported here."""
    return importlib.util.find_spec(MODULES[library]) is not None


def select_libraries(requested: list[str], skip_missing: bool) -> tuple[list[str], list[str]]:
    """The libraries to run and the notes about skipped ones; a missing peer raises SystemExit unless skipped."""
    unknown = [lib for lib in requested if lib not in LIBRARIES]
    if unknown:
        raise SystemExit(f"unknown libraries {unknown}; choose from {', '.join(LIBRARIES)}")
    chosen, notes = [], []
    for lib in requested:
        if available(lib):
            chosen.append(lib)
        elif skip_missing:
            notes.append(f"{lib} is not installed: skipped (pip install {lib} to include it)")
        else:
            raise SystemExit(f"{lib} is not installed; `pip install {lib}` or pass --skip-missing to leave it out")
    return chosen, notes


def train_step_fn(
    subject: Subject, autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
) -> Callable[[], None]:
    """One training step of ``subject``: zero grads, loss (under ``autocast`` if given), backward, Adam step."""
    optimizer = subject.optimizer(subject.network.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if autocast is None:
            loss = subject.loss()
        else:
            with autocast():
                loss = subject.loss()
        loss.backward()
        optimizer.step()

    return step


def inference_fn(fn: Callable[[], Tensor]) -> Callable[[], None]:
    """``fn`` run under torch.inference_mode, its result dropped."""

    def run() -> None:
        with torch.inference_mode():
            fn()

    return run


def memory_child(payload: dict[str, Any]) -> float:
    """Peak extra resident memory (MiB) of two training steps or one forward pass; run by ``run_child``."""
    config = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()})
    torch.manual_seed(0)
    subject = BUILDERS[payload["library"]](config)
    step = train_step_fn(subject)
    base = max_rss_mib()
    if payload["phase"] == "train":
        step()
        step()  # the second step includes Adam's state
    else:
        inference_fn(subject.forward)()
    return max_rss_mib() - base


@dataclass
class Row:
    """The measured figures of one library at one configuration."""

    library: str
    params: int
    train: Timing
    forward: Timing
    sample: Timing
    memory_mib: dict[str, float]


def measure(
    config: Config, libraries: list[str], repeats: int, sample_repeats: int, memory_phases: tuple[str, ...]
) -> list[Row]:
    """Time every library on ``config`` (alternating them), then measure peak memory in child processes."""
    torch.manual_seed(0)
    subjects = [BUILDERS[lib](config) for lib in libraries]
    threads = torch.get_num_threads()
    steps = {s.library: train_step_fn(s) for s in subjects}
    train = alternating_medians(steps, repeats, threads)
    forward = alternating_medians({s.library: inference_fn(s.forward) for s in subjects}, repeats, threads)
    sample = alternating_medians(
        {s.library: inference_fn(s.sample) for s in subjects}, sample_repeats, threads, warmup=0, retries=1
    )
    rows = []
    for s in subjects:
        memory = {
            phase: run_child(
                "benchmarks.compare_peers",
                "memory_child",
                {"config": asdict(config), "library": s.library, "phase": phase},
                threads,
            )
            for phase in memory_phases
        }
        rows.append(Row(s.library, s.params, train[s.library], forward[s.library], sample[s.library], memory))
    return rows


def memory_table(configs: list[Config], libraries: list[str], threads: int) -> str:
    """Peak memory only (no timing; unaffected by a busy machine): a markdown table, one row per config x library."""
    lines = [
        "| config | library | params | peak memory, train | peak memory, forward |",
        "| --- | --- | --- | --- | --- |",
    ]
    for config in configs:
        for lib in libraries:
            params = sum(p.numel() for p in BUILDERS[lib](config).network.parameters())
            mem = [
                run_child(
                    "benchmarks.compare_peers",
                    "memory_child",
                    {"config": asdict(config), "library": lib, "phase": phase},
                    threads,
                )
                for phase in ("train", "forward")
            ]
            lines.append(f"| {config.name} | {lib} | {params / 1e6:.2f} M | {mem[0]:.0f} MiB | {mem[1]:.0f} MiB |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def format_config_table(config: Config, rows: list[Row]) -> str:
    """A markdown table of one configuration's figures, one row per library."""
    ours = next((r.params for r in rows if r.library == OURS), None)
    lines = [
        (
            f"**{config.name}**: {config.channels}x{config.image_size}x{config.image_size}, batch {config.batch}, "
            f"dim_mults {config.dim_mults}, DDIM {config.sample_steps} steps; (!) marks a parameter count more than "
            f"{PARAM_TOLERANCE:.0%} away from ours"
        ),
        "",
        (
            "| library | params | train step | images/s (train) | forward | DDIM sample | peak memory, train | "
            "peak memory, forward | redone / kept under load |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        flag = " (!)" if ours and abs(r.params / ours - 1) > PARAM_TOLERANCE else ""
        mem = [f"{r.memory_mib[p]:.0f} MiB" if p in r.memory_mib else "-" for p in ("train", "forward")]
        redone = sum(t.redone for t in (r.train, r.forward, r.sample))
        unguarded = sum(t.unguarded for t in (r.train, r.forward, r.sample))
        lines.append(
            f"| {r.library} | {r.params / 1e6:.2f} M{flag} | {r.train.median_s:.3f} s | "
            f"{config.batch / r.train.median_s:.1f} | {r.forward.median_s:.3f} s | "
            f"{r.sample.median_s:.2f} s | {mem[0]} | {mem[1]} | {redone} / {unguarded} |"
        )
    return "\n".join(lines)


def format_ratio_table(results: list[tuple[Config, list[Row]]]) -> str:
    """Markdown table of ours / peer: training images/s, forward time, DDIM time, peak training memory."""
    lines = [
        "| config | ours / peer | train images/s | forward time | DDIM time | peak train memory |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for config, rows in results:
        ours = next((r for r in rows if r.library == OURS), None)
        for peer in (r for r in rows if r.library != OURS and ours is not None):
            mem = (
                f"{ours.memory_mib['train'] / peer.memory_mib['train']:.2f}"
                if "train" in ours.memory_mib and peer.memory_mib.get("train")
                else "-"
            )
            lines.append(
                f"| {config.name} | {peer.library} | {peer.train.median_s / ours.train.median_s:.2f} | "
                f"{ours.forward.median_s / peer.forward.median_s:.2f} | "
                f"{ours.sample.median_s / peer.sample.median_s:.2f} | {mem} |"
            )
    return "\n".join(lines)


def profile_ours(config: Config, steps: int = 3, top: int = 15) -> str:
    """Where the time of our training step goes: torch.profiler's top ops by self CPU time over ``steps`` steps
    (after two warm-up steps), as a markdown table with each op's share of the total."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    step = train_step_fn(build_ours(config))
    step()
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines = [
        (
            f"Our training step at {config.name}, batch {config.batch}: top ops by self CPU time "
            f"({total / steps / 1e6:.3f} s per step under the profiler)"
        ),
        "",
        "| op | share | ms per step | calls per step |",
        "| --- | --- | --- | --- |",
    ]
    for e in events[:top]:
        lines.append(
            f"| {e.key} | {e.self_cpu_time_total / total:.1%} | {e.self_cpu_time_total / steps / 1e3:.1f} | "
            f"{e.count // steps} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--libraries", default=",".join(LIBRARIES[:3]), help="comma-separated, from " + ", ".join(LIBRARIES))
    p.add_argument("--repeats", type=int, default=5, help="timed iterations of the train step and forward pass")
    p.add_argument("--sample-repeats", type=int, default=2, help="timed DDIM samples per library")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--skip-missing", action="store_true", help="skip a peer that is not installed")
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure peak memory in child processes (--no-memory: timings only)",
    )
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory table (no timing)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of comparing, profile our training step at the first config (top ops)",
    )
    args = p.parse_args(argv)
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown and not args.quick:
        p.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    args.config_list = [QUICK] if args.quick else [CONFIGS[c] for c in args.configs.split(",")]
    if args.quick:
        args.repeats, args.sample_repeats = 1, 1
    return args


def main(argv: list[str] | None = None) -> list[tuple[Config, list[Row]]]:
    """Run the comparison and print its tables; returns the measured rows per configuration."""
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        print(f"Measured on {machine_line()}\n\n{profile_ours(args.config_list[0], steps=1 if args.quick else 3)}")
        return []
    libraries, notes = select_libraries(args.libraries.split(","), args.skip_missing)
    print(f"Measured on {machine_line()}")
    for note in notes:
        print(f"Note: {note}")
    if args.memory_only:
        print("\n" + memory_table(args.config_list, libraries, torch.get_num_threads()))
        return []
    phases = () if not args.memory else ("train",) if args.quick else ("train", "forward")
    results = []
    for config in args.config_list:
        rows = measure(config, libraries, args.repeats, args.sample_repeats, phases)
        results.append((config, rows))
        print("\n" + format_config_table(config, rows), flush=True)
    print("\nRatios ours / peer (train images/s: higher is better; times and memory: lower is better)\n")
    print(format_ratio_table(results))
    print(f"\nFinished at {machine_line()}")
    return results


if __name__ == "__main__":
    main()
