"""A training run in its own process, for the tests that kill, resume and launch several processes.

Not a test module (pytest collects only test_*.py). Two jobs:

* ``folder``: a tiny Unet (dim 8, dim_mults (1, 2)) on 8x8 images from a folder, as a user would run it;
  ``--sleep`` slows each step down (in log_fn, which does not touch the numbers) so that the test can kill the
  process between two checkpoints.
* ``sharded``: a small convolutional network without normalisation layers whose loss draws t and the noise from
  a generator seeded by each *image's index* (written into the image), instead of the per-process global RNG.
  One process and two processes then compute the same gradients, so their weights must agree to rounding:
  the check of sharding and gradient averaging. Each process writes the image indices it trained on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a plain script

from denoising_diffusion.diffusion import GaussianDiffusion  # noqa: E402
from denoising_diffusion.nn.unet import Unet  # noqa: E402
from denoising_diffusion.training import Trainer  # noqa: E402

NUM_INDEXED_IMAGES = 16


class PlainNet(nn.Module):
    """conv - SiLU - conv plus a learned per-timestep bias; no normalisation (whose mathematically-zero gradients
    would let rounding noise steer Adam's first steps differently in two runs)."""

    channels = 3
    self_condition = False
    learned_variance = False

    def __init__(self, timesteps: int, width: int = 16) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, width, 3, padding=1)
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        self.time_bias = nn.Embedding(timesteps, width)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = self.inp(x) + self.time_bias(t)[:, :, None, None]
        return self.out(nn.functional.silu(h))


class IndexedDiffusion(GaussianDiffusion):
    """The training loss with t and the noise drawn from a generator seeded by the image's index (pixel [0, 0, 0]
    holds index / 255), so the loss of an image does not depend on which process computed it."""

    seen: list[int]

    def forward(self, img: Tensor) -> Tensor:
        indices = [round(v * 255) for v in img[:, 0, 0, 0].tolist()]
        self.seen.extend(indices)
        t, noise = [], []
        for i in indices:
            gen = torch.Generator().manual_seed(1000 + i)
            t.append(torch.randint(0, self.num_timesteps, (), generator=gen))
            noise.append(torch.randn(img.shape[1:], generator=gen))
        t_batch = torch.stack(t).to(img.device)
        return self.p_losses(self.normalize(img), t_batch, torch.stack(noise).to(img)).mean()


def indexed_images() -> Tensor:
    """(N, 3, 8, 8) random images in [0, 1] whose pixel [0, 0, 0] is index / 255."""
    images = torch.rand(NUM_INDEXED_IMAGES, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    images[:, 0, 0, 0] = torch.arange(NUM_INDEXED_IMAGES) / 255
    return images


def folder_trainer(args: argparse.Namespace) -> Trainer:
    torch.manual_seed(0)
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=10)
    log_fn = (lambda row: time.sleep(args.sleep)) if args.sleep > 0 else None
    return Trainer(
        diffusion,
        args.data,
        train_batch_size=4,
        train_num_steps=args.steps,
        save_and_sample_every=args.save_every,
        num_samples=4,
        results_folder=args.results,
        num_workers=0,
        seed=0,
        ema_update_every=1,
        gradient_accumulate_every=2,
        resume=args.resume,
        log_fn=log_fn,
    )


def sharded_trainer(args: argparse.Namespace) -> Trainer:
    torch.manual_seed(0)  # the same initial weights in every process
    diffusion = IndexedDiffusion(PlainNet(timesteps=10), image_size=8, timesteps=10)
    diffusion.seen = []
    return Trainer(
        diffusion,
        list(indexed_images().unbind(0)),
        train_batch_size=8,
        train_num_steps=args.steps,
        save_and_sample_every=args.steps,
        num_samples=0,
        results_folder=args.results,
        num_workers=0,
        seed=0,
        ema_update_every=1,
        augment_horizontal_flip=False,
        train_lr=1e-3,
        gradient_accumulate_every=2,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=["folder", "sharded"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--save-every", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    trainer = folder_trainer(args) if args.job == "folder" else sharded_trainer(args)
    trainer.train()
    if args.job == "sharded":
        rank = trainer.accelerator.process_index
        seen = {"rank": rank, "world": trainer.accelerator.num_processes, "seen": trainer.diffusion.seen}
        (args.results / f"seen-{rank}.json").write_text(json.dumps(seen))
    if trainer.accelerator.num_processes > 1:
        torch.distributed.destroy_process_group()
    print(f"done rank={os.environ.get('RANK', '0')} step={trainer.step}", flush=True)


if __name__ == "__main__":
    main()
