"""Your own training loop and your own sampling call: the pieces without the Trainer.

What it shows:

* training: ``loss = diffusion(batch)`` is the whole diffusion-specific part of a training step (a batch of images
  in [0, 1] in, a scalar loss out); the DataLoader, the optimizer, the loop and the logging are plain PyTorch
  and entirely yours;
* sampling: call a sampler function directly, ``sample_ddim(denoiser, x_T, schedule, timesteps, eta=..., generator=...,
  callback=...)``, with ``diffusion.denoiser()`` (the network plus its objective and clipping), the diffusion's
  noise schedule, your own starting noise and your own choice of time steps (``spaced_timesteps``). The sampler
  works in the model's space [-1, 1]: ``diffusion.unnormalize`` maps the result back to [0, 1]. The ``callback``
  receives a record per step; here it keeps the predicted x_0 for a picture of how the samples form.

By default it trains on the built-in shapes dataset (a disc or a square of one of four colours on light grey,
generated, nothing to download): with the defaults (a 2.6M-parameter Unet, 16x16, 1500 steps of batch 32) that
takes about 5 minutes on a 2-core CPU and the samples are recognisable discs and squares. ``--data FOLDER``
trains on your own images instead.

Run (from the repository root):

    python examples/custom_training_loop.py                 # built-in shapes, about 5 minutes on a CPU
    python examples/custom_training_loop.py --data FOLDER --image-size 32 --steps 20000
    python examples/custom_training_loop.py --smoke         # a tiny model for a few steps: seconds

Outputs, under ``--out`` (default ./results/custom_training_loop):

* ``samples.png``: a grid of the DDIM samples;
* ``progress.png``: one row per sample, the predicted x_0 at evenly spaced sampling steps (left: first step);
* ``loss.csv``: step, loss.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from denoising_diffusion import (
    GaussianDiffusion,
    ImageFolderDataset,
    StepRecord,
    Unet,
    get_builtin_dataset,
    sample_ddim,
    save_image_grid,
    spaced_timesteps,
)

NAME = "custom_training_loop"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="a folder of images (default: the built-in shapes dataset)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3, 4))
    parser.add_argument("--dim", type=int, default=32, help="the Unet's base width")
    parser.add_argument("--dim-mults", type=int, nargs="+", default=[1, 2, 4], help="the Unet's width per level")
    parser.add_argument("--timesteps", type=int, default=1000, help="T, the length of the forward process")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sampling-steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("results") / NAME, help="output folder")
    parser.add_argument("--smoke", action="store_true", help="a tiny model for a few steps: seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.dim, args.dim_mults, args.timesteps, args.steps = 8, [1, 2], 10, 5
        args.batch_size, args.sampling_steps, args.num_samples = 8, 5, 4
        args.image_size = min(args.image_size, 16)
    return args


def load_dataset(args: argparse.Namespace) -> Dataset:
    """Items are (C, H, W) tensors in [0, 1], the form ``diffusion(batch)`` expects once batched."""
    if args.data is not None:
        return ImageFolderDataset(args.data, args.image_size, channels=args.channels)
    num_images = 64 if args.smoke else 4096
    return get_builtin_dataset("shapes", image_size=args.image_size, channels=args.channels, num_images=num_images)


def endless(loader: DataLoader) -> Iterator[torch.Tensor]:
    while True:
        yield from loader


def train(diffusion: GaussianDiffusion, dataset: Dataset, args: argparse.Namespace) -> None:
    """A plain PyTorch loop: the only diffusion-specific line is ``loss = diffusion(batch)``."""
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= args.batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=args.lr)
    batches = endless(loader)
    diffusion.train()
    start = time.perf_counter()
    with open(args.out / "loss.csv", "w", newline="") as file:
        log = csv.writer(file)
        log.writerow(["step", "loss"])
        for step in range(1, args.steps + 1):
            batch = next(batches).to(args.device)  # (B, C, H, W) in [0, 1]
            loss = diffusion(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
            optimizer.step()
            log.writerow([step, f"{loss.item():.6g}"])
            if step % 100 == 0 or step == args.steps:
                print(f"step {step}/{args.steps}  loss {loss.item():.4f}  ({time.perf_counter() - start:.0f} s)")


@torch.no_grad()
def sample(diffusion: GaussianDiffusion, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM straight from the sampler function. Returns (samples (N, C, H, W), progress (N, K, C, H, W)), in [0, 1]."""
    diffusion.eval()
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    x_T = torch.randn((args.num_samples, diffusion.channels, *diffusion.image_size), generator=g, device=args.device)
    snapshots: list[torch.Tensor] = []
    keep_every = max(1, args.sampling_steps // 8)

    def keep_prediction(record: StepRecord) -> None:  # called once per step; tensors are in [-1, 1]
        if record.index % keep_every == 0 or record.index == args.sampling_steps - 1:
            snapshots.append(record.pred_x0.cpu())

    x_0 = sample_ddim(
        diffusion.denoiser(),
        x_T,
        diffusion.schedule,
        spaced_timesteps(diffusion.num_timesteps, args.sampling_steps),
        eta=0.0,
        generator=g,
        callback=keep_prediction,
    )
    images = diffusion.unnormalize(x_0).clamp(0.0, 1.0)
    progress = diffusion.unnormalize(torch.stack(snapshots, dim=1)).clamp(0.0, 1.0)
    return images.cpu(), progress


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Train, sample, save; returns the paths written."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    model = Unet(args.dim, dim_mults=tuple(args.dim_mults), channels=args.channels)
    diffusion = GaussianDiffusion(model, image_size=args.image_size, timesteps=args.timesteps).to(args.device)
    dataset = load_dataset(args)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; {len(dataset)} training images")

    train(diffusion, dataset, args)
    images, progress = sample(diffusion, args)

    paths = {
        "samples": save_image_grid(images, args.out / "samples.png"),
        "progress": save_image_grid(progress.flatten(0, 1), args.out / "progress.png", nrow=progress.shape[1]),
        "loss": args.out / "loss.csv",
    }
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths


if __name__ == "__main__":
    main()
