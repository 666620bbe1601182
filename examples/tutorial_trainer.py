"""The tutorial's Trainer form: train a GaussianDiffusion on a folder of images with one call.

What it shows: ``Trainer(diffusion, folder, ...)`` reads every image under the folder (recursively; resized and
centre-cropped to ``image_size``), trains with Adam, gradient accumulation, mixed precision (bf16 on a CPU) and an
EMA copy of the network, and writes into its results folder, every ``save_and_sample_every`` steps and at the end:
``model-N.pt`` (checkpoints), ``sample-N.png`` (EMA samples, from the same noise every time) and ``loss.csv``.

Run (from the repository root):

    python examples/tutorial_trainer.py path/to/your/images          # the tutorial's settings: 700k steps (GPU work)
    python examples/tutorial_trainer.py path/to/your/images --smoke  # a tiny model for 4 steps
    python examples/tutorial_trainer.py --smoke                      # the same, on 8 generated PNGs

The full form is the tutorial's code verbatim, except that the folder comes from the command line and
``results_folder`` is set from ``--out`` (the tutorial leaves it at its default, ./results). A 128x128 Unet with
dim 64 takes many seconds per step on a CPU: the full settings are meant for a GPU. ``--smoke`` shrinks the model
(dim 8, 16x16, 10 timesteps), the batch (4) and the run (4 steps, checkpoints and 4-image grids at steps 2 and 4).

Outputs, under ``--out`` (default ./results/tutorial_trainer): model-*.pt, sample-*.png, loss.csv.
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from pathlib import Path

from denoising_diffusion import Unet, GaussianDiffusion, Trainer
from denoising_diffusion import get_builtin_dataset, save_image_grid

NAME = "tutorial_trainer"


def write_generated_images(folder: Path, count: int = 8, size: int = 24) -> Path:
    """Write ``count`` small PNGs of coloured shapes (the built-in dataset) into ``folder``; returns the folder."""
    dataset = get_builtin_dataset("shapes", image_size=size, num_images=count, seed=1)
    for i in range(count):
        save_image_grid(dataset[i].unsqueeze(0), folder / f"shape-{i:02d}.png", padding=0)
    return folder


def build_trainer(folder: str | Path, out: Path, smoke: bool) -> Trainer:
    if smoke:
        model = Unet(dim = 8, dim_mults = (1, 2))
        diffusion = GaussianDiffusion(model, image_size = 16, timesteps = 10, sampling_timesteps = 5, loss_type = 'l1')
        return Trainer(diffusion, folder, train_batch_size = 4, train_lr = 8e-5, train_num_steps = 4,
                       gradient_accumulate_every = 2, ema_decay = 0.995, amp = True, results_folder = out,
                       save_and_sample_every = 2, num_samples = 4, num_workers = 0, seed = 0)
    # The tutorial, verbatim but for the folder and results_folder.
    model = Unet(dim = 64, dim_mults = (1, 2, 4, 8))
    diffusion = GaussianDiffusion(model, image_size = 128, timesteps = 1000, sampling_timesteps = 250, loss_type = 'l1')
    trainer = Trainer(diffusion, folder, train_batch_size = 32, train_lr = 8e-5, train_num_steps = 700000, gradient_accumulate_every = 2, ema_decay = 0.995, amp = True, results_folder = out)
    return trainer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", help="folder of training images (optional with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 4 steps: a few seconds")
    parser.add_argument("--out", type=Path, default=Path("results") / NAME, help="the Trainer's results folder")
    args = parser.parse_args(argv)
    if args.folder is None and not args.smoke:
        parser.error("a folder of training images is required (or pass --smoke to use generated images)")
    return args


def main(argv: list[str] | None = None) -> Trainer:
    """Build the Trainer and train; returns the trained Trainer."""
    args = parse_args(argv)
    with ExitStack() as stack:
        folder = args.folder
        if folder is None:  # --smoke without a folder: a few generated images in a temporary folder
            folder = write_generated_images(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            print(f"training on 8 generated images in {folder}")
        trainer = build_trainer(folder, args.out, args.smoke)
        trainer.train()
    print(f"step {trainer.step}: checkpoints, sample grids and loss.csv in {args.out}")
    return trainer


if __name__ == "__main__":
    main()
