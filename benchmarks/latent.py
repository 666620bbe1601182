"""Latent against pixel-space diffusion (issue 31): training images/s and peak memory at 64x64 and 128x128 with the
same Unet, on the latents of f = 4 and f = 8 autoencoders with the encoder's cost (images encoded every step) and
without it (cached latents); DDIM sampling time per image, decoding included; and the reconstruction PSNR of those
autoencoders after a short training on the built-in shapes.

Usage:  python benchmarks/latent.py [--sizes 64,128] [--batch 8] [--dim 32] [--dim-mults 1,2,4,8] [--ae-dim 16]
                                    [--sample-steps 10] [--sample-batch 2] [--repeats 3] [--retries 2] [--threads 1]
                                    [--no-memory] [--psnr-size 64] [--psnr-steps 200] [--psnr-seeds 0,1]
                                    [--quick] [--results FILE]

The rule, stated before measuring: the target is met when, at 64x64 with f = 4, training on cached latents reaches at
least 4x the images/s of pixel training and sampling is at least 4x faster per image, both ratios taken within one
run. Every timing is the harness's guarded median after warm-up (an iteration that did not get its CPU share is redone
up to --retries times, then kept and counted), the variants of a size timed in turn so that a slow spell of a shared
machine hits them alike; one torch thread. Peak memory is measured in a child process per variant. PSNR = 10 log10(1 /
MSE) per held-out image (pixels in [0, 1]), mean and spread over --psnr-seeds. Records go to
benchmarks/results/latent.jsonl (``--results``; a ``--quick`` run records only when given a file).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import records, speed_tables
from benchmarks.harness.timing import alternating_medians, load_average, machine_line, max_rss_mib, run_child
from denoising_diffusion import (
    Autoencoder,
    AutoencoderTraining,
    BuiltinShapes,
    GaussianDiffusion,
    LatentDiffusion,
    Unet,
)
from denoising_diffusion.training import make_adam

VARIANTS = ("pixel", "f4", "f4 cached", "f8", "f8 cached")
MACHINE_NOTE = "a 2-core machine shared with other engineers' jobs (load average {load:.1f} at the start)"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def build(size: int, variant: str, args: argparse.Namespace) -> tuple[Any, torch.Tensor]:
    """(model, training batch) of a variant: GaussianDiffusion on pixels, or LatentDiffusion whose diffusion has the
    same Unet on the latents (4 channels instead of 3); a cached variant's batch holds posterior moments."""
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, size, size)
    unet = Unet(args.dim, dim_mults=args.dim_mults, channels=3 if variant == "pixel" else 4)
    if variant == "pixel":
        return GaussianDiffusion(unet, image_size=size, timesteps=1000), images
    factor = int(variant.split()[0][1:])
    autoencoder = Autoencoder(factor=factor, latent_channels=4, dim=args.ae_dim)
    diffusion = GaussianDiffusion(unet, image_size=size // factor, timesteps=1000, auto_normalize=False,
                                  clip_denoised=False)  # fmt: skip
    model = LatentDiffusion(autoencoder, diffusion, scale_factor=1.0)
    if variant.endswith("cached"):
        return model.use_cached_latents(), model.posterior(images).moments
    return model, images


def train_step_fn(model: Any, batch: torch.Tensor) -> Callable[[], None]:
    """A training step: zero grads, loss, backward, the Trainer's Adam on the trained network."""
    optimizer = make_adam(model.model.parameters(), lr=1e-4, betas=(0.9, 0.99))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch).backward()
        optimizer.step()

    return step


def sample_fn(model: Any, args: argparse.Namespace) -> Callable[[], None]:
    """DDIM sampling of --sample-batch images at --sample-steps (a latent model decodes them)."""
    return lambda: model.sample(args.sample_batch, sampler="ddim", steps=args.sample_steps,
                                generator=torch.Generator().manual_seed(0))  # fmt: skip


def memory_child(payload: dict[str, Any]) -> float:
    """Peak extra resident memory (MiB) of two training steps of a variant; run by ``run_child``."""
    args = argparse.Namespace(**payload["args"])
    step = train_step_fn(*build(payload["size"], payload["variant"], args))
    base = max_rss_mib()
    step()
    step()  # the second step includes Adam's state
    return max_rss_mib() - base


def measure_size(size: int, args: argparse.Namespace, header: dict[str, Any]) -> list[dict[str, Any]]:
    """Every variant at one image size: guarded training and sampling medians (alternated), memory in children."""
    threads = torch.get_num_threads()
    built = {variant: build(size, variant, args) for variant in VARIANTS}
    train = alternating_medians({v: train_step_fn(*built[v]) for v in VARIANTS}, args.repeats, threads, warmup=1,
                                retries=args.retries)  # fmt: skip
    sampled = [v for v in VARIANTS if not v.endswith("cached")]
    sample = alternating_medians({v: sample_fn(built[v][0], args) for v in sampled}, args.repeats, threads,
                                 warmup=1, retries=args.retries)  # fmt: skip
    rows = []
    for variant in VARIANTS:
        model = built[variant][0]
        sample_s = sample[variant.split()[0]].median_s / args.sample_batch
        memory = None
        if args.memory:
            payload = {"size": size, "variant": variant, "args": vars(args)}
            memory = run_child("benchmarks.latent", "memory_child", payload, threads)
        rows.append({**header, "kind": "speed", "size": size, "variant": variant, "batch": args.batch,
                     "shape": list(model.latent_shape if variant != "pixel" else (3, size, size)),
                     "train_s": train[variant].median_s, "images_per_s": args.batch / train[variant].median_s,
                     "sample_s_per_image": sample_s, "memory_mib": memory,
                     "redone": train[variant].redone, "unguarded": train[variant].unguarded})  # fmt: skip
    pixel = rows[0]
    for row in rows:
        row["train_vs_pixel"] = row["images_per_s"] / pixel["images_per_s"]
        row["sample_vs_pixel"] = pixel["sample_s_per_image"] / row["sample_s_per_image"]
    return rows


def psnr_after_training(factor: int, seed: int, args: argparse.Namespace) -> float:
    """Mean PSNR (dB) on 64 held-out shapes of an f-autoencoder trained --psnr-steps steps (batch 8, Adam 1e-3)."""
    torch.manual_seed(seed)
    training = AutoencoderTraining(Autoencoder(factor=factor, latent_channels=4, dim=args.ae_dim),
                                   image_size=args.psnr_size)  # fmt: skip
    data = BuiltinShapes(512, args.psnr_size, seed=seed).images
    optimizer = make_adam(training.parameters(), lr=1e-3, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(args.psnr_steps):
        optimizer.zero_grad(set_to_none=True)
        training(data[torch.randint(0, len(data), (8,), generator=generator)]).backward()
        optimizer.step()
    held_out = BuiltinShapes(64, args.psnr_size, seed=1000 + seed).images
    mse = (training.reconstruct(held_out) - held_out).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=_ints, default=(64, 128))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--dim-mults", type=_ints, default=(1, 2, 4, 8))
    p.add_argument("--ae-dim", type=int, default=16)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--sample-batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--retries", type=int, default=2, help="redos of an iteration that did not get its CPU share")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--psnr-size", type=int, default=64)
    p.add_argument("--psnr-steps", type=int, default=200)
    p.add_argument("--psnr-seeds", type=_ints, default=(0, 1))
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    p.add_argument("--results", type=Path, default=None, help="the results file (default: benchmarks/results/)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.dim, args.dim_mults, args.ae_dim = (32,), 2, 8, (1, 2), 8
        args.sample_steps, args.sample_batch, args.repeats, args.memory = 2, 1, 1, False
        args.psnr_size, args.psnr_steps, args.psnr_seeds = 16, 2, (0,)
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure, print the tables, append the records; returns them."""
    args = parse(argv)
    torch.set_num_threads(args.threads)
    print(f"Unet(dim={args.dim}, dim_mults={args.dim_mults}), batch {args.batch}; measured on {machine_line()}")
    header = records.header("latent", argv, seed=0, threads=args.threads, dim=args.dim,
                            dim_mults=list(args.dim_mults), ae_dim=args.ae_dim, sample_steps=args.sample_steps,
                            machine_note=MACHINE_NOTE.format(load=load_average()))  # fmt: skip
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        rows += measure_size(size, args, header)
        print(f"  {size}x{size}: done", flush=True)
    for factor in (4, 8):
        values = [psnr_after_training(factor, seed, args) for seed in args.psnr_seeds]
        rows.append({**header, "kind": "psnr", "factor": factor, "size": args.psnr_size, "steps": args.psnr_steps,
                     "seeds": list(args.psnr_seeds), "psnr_db": values,
                     "psnr_mean": statistics.fmean(values), "psnr_spread": max(values) - min(values)})  # fmt: skip
    print("\n" + speed_tables.latent(rows))
    records.append(records.destination(args.results, "latent", quick=args.quick), *rows)
    print(f"\nFinished at {machine_line()}")
    return rows


if __name__ == "__main__":
    main()
