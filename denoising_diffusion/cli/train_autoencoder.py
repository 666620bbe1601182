"""``denoising-diffusion train-autoencoder [FOLDER] --factor 4``: train the KL autoencoder of latent diffusion.

The Trainer trains nn/autoencoder.py's Autoencoder through latent/autoencoder_training.py's objective (L1
reconstruction + β KL) with everything it gives a diffusion: EMA (sized to the run, as ``train`` sizes it), mixed
precision, checkpoints in ``--results``, ``--resume``, unreadable images named or skipped. Each milestone's
``sample-N.png`` shows training images beside their reconstructions. Without FOLDER it learns the built-in shapes
(16 px) in about a minute on a CPU. Afterwards ``train FOLDER --latent RESULTS/model-N.pt`` trains a diffusion on its
latents.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .._utils import normalize_image_size
from ..data.datasets import ImageFolderDataset, OnBadImage, get_builtin_dataset, list_image_files
from ..data.scan import check_folder_dataset, scan_images
from ..latent import KL_WEIGHT, AutoencoderTraining
from ..nn.autoencoder import Autoencoder, check_divides
from ..training import Trainer
from .args import _add_threads_option, _values, dim_mults, non_negative_int, positive_int, with_results_locked
from .presets import BUILTIN_IMAGES, ema_decay_for, infer_image_size
from .train import choose_seed
from .train_args import bad_steps, keep_last, positive_float, resume_target

# (folder, built-in). Built-in: measured to reconstruct the 16-px shapes to a mean error of ~0.07 in 200 steps of
# a narrower network (tests/training/test_autoencoder.py); a folder gets a wider network and a full-length run.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "image_size": (None, 16), "channels": (3, 3), "dim": (64, 16), "resnet_blocks": (2, 1), "batch_size": (16, 16),
    "lr": (1e-4, 2e-3), "steps": (20_000, 400), "save_every": (1000, 100), "num_samples": (16, 16),
}  # fmt: skip


def add_train_autoencoder_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-autoencoder",
        help="train the KL autoencoder of latent diffusion (train --latent uses it)",
        description="Train a KL-regularized convolutional autoencoder (Rombach et al. 2022) with downsampling factor "
        "--factor: L1 reconstruction + a small KL weight. FOLDER: images, read recursively; omit it for the "
        "built-in shapes. Then: train FOLDER --latent RESULTS/model-N.pt.",
    )
    p.add_argument("folder", nargs="?", default=None, metavar="FOLDER", help="image folder (default: built-in shapes)")
    p.add_argument("--factor", type=positive_int, default=4, help="downsampling factor f, a power of two: latents "
                   "are image size / f (default: 4; 8 halves the latent side again)")  # fmt: skip
    p.add_argument("--latent-channels", type=positive_int, default=4, help="latent channels c (default: 4)")
    p.add_argument("--dim-mults", type=dim_mults, default=None, help="width multiplier per level, log2(f) + 1 of "
                   "them (default: 1,2,4 for f = 4; 1,2,4,4 for f = 8)")  # fmt: skip
    p.add_argument("--kl-weight", type=float, default=KL_WEIGHT, help=f"beta, the KL term's weight (default: "
                   f"{KL_WEIGHT:g}, Rombach et al.'s)")  # fmt: skip
    for flag, name, kind, text in [
        ("--image-size", "image_size", positive_int, "image side in pixels, a multiple of --factor"),
        ("--channels", "channels", positive_int, "image channels"),
        ("--dim", "dim", positive_int, "width of the first level"),
        ("--resnet-blocks", "resnet_blocks", positive_int, "ResNet blocks per level"),
        ("--batch-size", "batch_size", positive_int, "images per step"),
        ("--lr", "lr", positive_float, "Adam learning rate"),
        ("--steps", "steps", positive_int, "optimizer steps in total"),
        ("--save-every", "save_every", positive_int, "steps between checkpoints and grids"),
        ("--num-samples", "num_samples", non_negative_int, "images (with their reconstructions) per grid"),
    ]:
        folder, builtin = DEFAULTS[name]
        folder_text = "the images' own" if folder is None else folder
        p.add_argument(flag, dest=name, type=kind, default=None, help=f"{text} (default: {folder_text}; built-in "
                       f"data: {builtin})")  # fmt: skip
    p.add_argument("--results", type=Path, default=Path("autoencoder"), help="output folder (default: ./autoencoder)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of weights and data order")
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on GPU, bf16 on CPU)")
    p.add_argument("--resume", type=resume_target, default=None, metavar="auto|N|PATH",
                   help="continue from a checkpoint in --results (as for train)")  # fmt: skip
    p.add_argument("--keep-last", type=keep_last, default=3, metavar="N|all", help="checkpoints kept (default: 3)")
    p.add_argument("--max-bad-steps", type=bad_steps, default=10, metavar="N", help="as for train (default: 10)")
    p.add_argument("--on-bad-image", choices=_values(OnBadImage), default=OnBadImage.ERROR.value,
                   help="what to do with an unreadable image file in FOLDER (default: error)")  # fmt: skip
    _add_threads_option(p)
    p.set_defaults(run=with_results_locked(train_autoencoder))


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The given options, else the defaults of the data source; a folder's image size is its images' median short
    side rounded as ``train`` rounds it, then down to a multiple of the factor."""
    column = 0 if args.folder is not None else 1
    options = {name: getattr(args, name) if getattr(args, name) is not None else values[column]
               for name, values in DEFAULTS.items()}  # fmt: skip
    if options["image_size"] is None:
        side = scan_images(list_image_files(args.folder)).median_short_side or 128
        options["image_size"] = max(args.factor, infer_image_size(side) // args.factor * args.factor)
    check_divides(args.factor, *normalize_image_size(options["image_size"]))
    return options


def train_autoencoder(args: argparse.Namespace) -> int:
    """Build the data and the autoencoder (seeded first), train, and report the reconstruction error."""
    opts = resolve_options(args)
    if args.folder is not None:
        data: Any = ImageFolderDataset(args.folder, opts["image_size"], channels=opts["channels"],
                                       on_bad_image=args.on_bad_image)  # fmt: skip
        check_folder_dataset(data)
    else:
        data = get_builtin_dataset("shapes", opts["image_size"], channels=opts["channels"], num_images=BUILTIN_IMAGES)
    seed = choose_seed(args.seed)
    network = Autoencoder(opts["channels"], factor=args.factor, latent_channels=args.latent_channels, dim=opts["dim"],
                          dim_mults=args.dim_mults, resnet_blocks=opts["resnet_blocks"])  # fmt: skip
    training = AutoencoderTraining(network, image_size=opts["image_size"], kl_weight=args.kl_weight)
    print(f"training a factor-{args.factor} autoencoder ({opts['image_size']} px images <-> {args.latent_channels}-"
          f"channel latents) on {len(data)} images")  # fmt: skip
    trainer = Trainer(
        training, data, train_batch_size=opts["batch_size"], train_lr=opts["lr"], train_num_steps=opts["steps"],
        save_and_sample_every=opts["save_every"], num_samples=opts["num_samples"], ema_update_every=1,
        ema_decay=ema_decay_for(opts["steps"]), results_folder=args.results, amp=args.amp, seed=seed,
        resume=args.resume, keep_last=args.keep_last, max_bad_steps=args.max_bad_steps,
        on_bad_image=args.on_bad_image,
    )  # fmt: skip
    trainer.train()
    if trainer.accelerator.is_main_process:
        path = trainer.checkpoint_path(trainer.milestone_of(trainer.step))
        images = torch.stack([data[i] for i in range(min(64, len(data)))]).to(trainer.accelerator.device)
        error = (training.with_model(trainer.ema.ema_model).reconstruct(images) - images).abs().mean()  # type: ignore[union-attr]
        print(f"reconstruction: mean absolute error {float(error):.4f} on {len(images)} training images (EMA)")
        print(f"checkpoint: {path}")
        print(f"train latent diffusion with: denoising-diffusion train FOLDER --latent {path}")
    return 0
