"""The tutorial's first snippet, exactly as written: build a Unet and a GaussianDiffusion, take one loss, sample.

What it shows: the three calls every user starts with. ``diffusion(images)`` returns the training loss (a scalar)
for a batch of images in [0, 1]; ``loss.backward()`` fills the network's gradients; ``diffusion.sample(batch_size)``
returns new images in [0, 1] of shape (batch, channels, image_size, image_size). The network is untrained here, so
the samples are noise-like: the point is the API, not the pictures (see custom_training_loop.py for training).

Run (from the repository root):

    python examples/tutorial_quickstart.py            # the snippet at full size
    python examples/tutorial_quickstart.py --smoke    # the same calls on a tiny model, in a few seconds

The full-size snippet (a 36M-parameter Unet at 128x128) takes about 15 s for the loss and backward pass and then
1000 sampling steps of about 1.4 s each on a 2-core CPU: roughly half an hour in all; on a GPU it is seconds.
``--smoke`` keeps the same calls but uses dim 8, image_size 16 and timesteps 10.

Outputs, under ``--out`` (default ./results/tutorial_quickstart): ``samples.png``, a 2x2 grid of the samples.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The tutorial's two import lines (Trainer is unused here: tutorial_trainer.py shows it).
import torch
from denoising_diffusion import Unet, GaussianDiffusion, Trainer

from denoising_diffusion import save_image_grid

NAME = "tutorial_quickstart"


def tutorial():
    """The tutorial's lines, verbatim. Returns (loss, sampled_images)."""
    model = Unet(dim = 64, dim_mults = (1, 2, 4, 8))
    diffusion = GaussianDiffusion(model, image_size = 128, timesteps = 1000, loss_type = 'l1')
    training_images = torch.rand(8, 3, 128, 128) # images are normalized from 0 to 1
    loss = diffusion(training_images)
    loss.backward()
    sampled_images = diffusion.sample(batch_size = 4)
    sampled_images.shape # (4, 3, 128, 128)
    return loss, sampled_images


def tutorial_smoke():
    """The same calls at toy sizes (dim 8, image_size 16, timesteps 10). Returns (loss, sampled_images)."""
    model = Unet(dim = 8, dim_mults = (1, 2, 4, 8))
    diffusion = GaussianDiffusion(model, image_size = 16, timesteps = 10, loss_type = 'l1')
    training_images = torch.rand(8, 3, 16, 16) # images are normalized from 0 to 1
    loss = diffusion(training_images)
    loss.backward()
    sampled_images = diffusion.sample(batch_size = 4)
    sampled_images.shape # (4, 3, 16, 16)
    return loss, sampled_images


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="the same calls on a tiny model (dim 8, 16x16, 10 timesteps): a few seconds")
    parser.add_argument("--out", type=Path, default=Path("results") / NAME, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of torch's global generator")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run the snippet and save the samples; returns the path of the grid written."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    loss, sampled_images = tutorial_smoke() if args.smoke else tutorial()
    print(f"loss: {loss.item():.4f}; sampled_images.shape: {tuple(sampled_images.shape)}")
    path = save_image_grid(sampled_images, args.out / "samples.png", nrow=2)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
