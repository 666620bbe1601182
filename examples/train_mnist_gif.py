"""Train on MNIST, Fashion-MNIST, CIFAR-10 or your own images, then make the 3x3 denoising GIF.

What it shows: the tutorial's own application, end to end. A torchvision dataset is wrapped so that its items are
(C, H, W) tensors in [0, 1] (labels dropped) and handed to the :class:`Trainer`, which trains with an EMA copy
of the network and writes checkpoints. The EMA network is then rebuilt from the last checkpoint alone
(``load_pipeline``) and ``sample(..., return_all_timesteps=True)`` returns the whole trajectory, pure noise first,
which ``save_denoising_gif(..., nrow=3)`` turns into an animated 3x3 grid.

Image sizes. The Unet halves the resolution ``len(dim_mults) - 1`` times, so the image side must be divisible by
2 ** (len(dim_mults) - 1). MNIST and Fashion-MNIST are 28x28: rather than pad them to 32 (a quarter more pixels,
all constant border) or resize them (blurred strokes), they are kept at 28x28 with ``dim_mults = (1, 2, 4)``:
28 is divisible by 4, so the levels run at 28, 14 and 7 pixels, and full attention at 7x7 is cheap. A fourth
level would need 28 divisible by 8, which it is not. CIFAR-10 is 32x32 and uses DDPM's (1, 2, 2, 2) (Ho et al.
2020, App. B). MNIST digits are not flipped left-right during training (a mirrored 3 is not a digit); the other
datasets are.

Data. ``--dataset`` downloads with torchvision into ``--data-root`` (default ./data): that needs internet on the
first run. ``--data FOLDER`` trains on any folder of images instead (read recursively, resized and centre-cropped
to ``--image-size``) and needs nothing downloaded.

Run (from the repository root):

    python examples/train_mnist_gif.py --dataset mnist                # about 5000 steps: an hour or two on a CPU
    python examples/train_mnist_gif.py --dataset cifar10 --steps 50000 --amp   # a GPU job
    python examples/train_mnist_gif.py --data FOLDER --image-size 32 --channels 3
    python examples/train_mnist_gif.py --checkpoint results/train_mnist_gif/model-5.pt   # only the GIF
    python examples/train_mnist_gif.py --smoke --data FOLDER          # a tiny model, 2 steps: seconds
    python examples/train_mnist_gif.py --smoke                        # the same on generated images

``--smoke`` shrinks the model (dim 8, dim_mults (1, 2)), the chain (10 timesteps) and the run (2 steps of batch 4,
at most 64 training images; folder images at 16x16) and never downloads: without ``--data`` or an explicit
``--dataset`` it trains on a few generated PNGs.

Outputs, under ``--out`` (default ./results/train_mnist_gif): the Trainer's model-*.pt, sample-*.png and
loss.csv; ``denoising.gif`` (the 3x3 trajectory) and ``final-samples.png`` (its last frame as a 3x3 grid).
"""

from __future__ import annotations

import argparse
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from denoising_diffusion import (
    GaussianDiffusion,
    Trainer,
    Unet,
    get_builtin_dataset,
    load_pipeline,
    save_denoising_gif,
    save_image_grid,
)

NAME = "train_mnist_gif"
GRID = 3  # the GIF shows GRID x GRID samples


@dataclass(frozen=True)
class Preset:
    """Per-dataset defaults."""

    torchvision_class: str
    image_size: int
    channels: int
    dim: int
    dim_mults: tuple[int, ...]
    flip: bool


PRESETS = {
    "mnist": Preset("MNIST", 28, 1, 32, (1, 2, 4), flip=False),
    "fashion_mnist": Preset("FashionMNIST", 28, 1, 32, (1, 2, 4), flip=True),
    "cifar10": Preset("CIFAR10", 32, 3, 64, (1, 2, 2, 2), flip=True),
}


class ImagesOnly(Dataset):
    """A torchvision dataset of (PIL image, label) pairs as (C, H, W) float tensors in [0, 1]; labels dropped."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        image, _label = self.base[index]
        return F.to_dtype(F.to_image(image), torch.float32, scale=True)  # uint8 (C, H, W) -> [0, 1]


def torchvision_dataset(name: str, root: Path) -> Dataset:
    """The training split of a torchvision dataset, downloaded into ``root`` if it is not there yet."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, PRESETS[name].torchvision_class)
    return ImagesOnly(cls(root=str(root), train=True, download=True))


def write_generated_images(folder: Path, count: int = 12, size: int = 24) -> Path:
    """Write ``count`` small PNGs of coloured shapes (the built-in dataset) into ``folder``; returns the folder."""
    dataset = get_builtin_dataset("shapes", image_size=size, num_images=count, seed=2)
    for i in range(count):
        save_image_grid(dataset[i].unsqueeze(0), folder / f"shape-{i:02d}.png", padding=0)
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", choices=sorted(PRESETS), help="a torchvision dataset (default: mnist)")
    source.add_argument("--data", type=Path, help="a folder of images instead of a torchvision dataset")
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="where torchvision stores downloads")
    parser.add_argument("--image-size", type=int, default=32, help="image side for --data")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3, 4), help="channels for --data")
    parser.add_argument("--no-flip", action="store_true", help="no left-right flips (for --data)")
    parser.add_argument("--dim", type=int, help="the Unet's base width (default: per dataset)")
    parser.add_argument("--dim-mults", type=int, nargs="+", help="the Unet's width per level (default: per dataset)")
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--save-every", type=int, default=1000, help="steps between checkpoints and sample grids")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16 on a CPU, fp16 on a GPU)")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm", help="sampler for the GIF")
    parser.add_argument("--sample-steps", type=int, help="sampling steps for the GIF (default: all timesteps)")
    parser.add_argument("--checkpoint", type=Path, help="skip training: make the GIF from this checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results") / NAME, help="output folder")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 steps, no download: seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.dim, args.dim_mults, args.timesteps, args.steps = 8, [1, 2], 10, 2
        args.batch_size, args.save_every = 4, 2
        args.image_size = min(args.image_size, 16)
    return args


def prepare_data(args: argparse.Namespace, stack: ExitStack) -> tuple[Dataset | Path, Preset]:
    """The training data (a Dataset or a folder) and the settings that go with it."""
    if args.data is None and args.dataset is None and args.smoke:  # never download in a smoke run
        args.data = write_generated_images(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        print(f"--smoke: training on generated images in {args.data}")
    if args.data is not None:
        preset = Preset("", args.image_size, args.channels, 32, (1, 2, 4), flip=not args.no_flip)
        return args.data, preset
    name = args.dataset or "mnist"
    preset = PRESETS[name]
    dataset = torchvision_dataset(name, args.data_root)
    if args.smoke:
        dataset = Subset(dataset, range(min(64, len(dataset))))
    return dataset, preset


def train(args: argparse.Namespace) -> Path:
    """Train with the Trainer; returns the path of the last checkpoint."""
    with ExitStack() as stack:
        data, preset = prepare_data(args, stack)
        model = Unet(
            args.dim or preset.dim, dim_mults=tuple(args.dim_mults or preset.dim_mults), channels=preset.channels
        )
        diffusion = GaussianDiffusion(
            model, image_size=preset.image_size, timesteps=args.timesteps, sampling_timesteps=min(250, args.timesteps)
        )
        trainer = Trainer(
            diffusion,
            data,
            train_batch_size=args.batch_size,
            train_lr=args.lr,
            train_num_steps=args.steps,
            save_and_sample_every=args.save_every,
            num_samples=GRID * GRID,
            augment_horizontal_flip=preset.flip,
            amp=args.amp,
            results_folder=args.out,
            seed=args.seed,
            num_workers=0 if args.smoke else None,
        )
        trainer.train()
    return trainer.checkpoint_path(trainer.latest_milestone())


def make_gif(checkpoint: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Sample GRID x GRID images from the checkpoint's EMA network, keeping every step; write the GIF and grid."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    diffusion = load_pipeline(checkpoint, use_ema=True, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    trajectory = diffusion.sample(
        batch_size=GRID * GRID,
        sampler=args.sampler,
        steps=args.sample_steps,
        generator=generator,
        return_all_timesteps=True,
    )  # (9, S + 1, C, H, W) in [0, 1]
    print(f"sampled {trajectory.shape[1] - 1} steps with {args.sampler} from {checkpoint}")
    return {
        "gif": save_denoising_gif(trajectory, args.out / "denoising.gif", nrow=GRID),
        "grid": save_image_grid(trajectory[:, -1], args.out / "final-samples.png", nrow=GRID),
    }


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Train (unless --checkpoint), then write the GIF and the final grid; returns the paths written."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    checkpoint = args.checkpoint if args.checkpoint is not None else train(args)
    paths = {"checkpoint": checkpoint, **make_gif(checkpoint, args)}
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths


if __name__ == "__main__":
    main()
