"""``denoising-diffusion train-classifier [FOLDER]``: train a noise-aware classifier for classifier guidance.

FOLDER has one sub-folder per class (LabelledImageFolder); without it the classifier learns the built-in shapes'
8 classes. The classifier must share the noise schedule, image size and channels of the diffusion model it will
guide: ``--diffusion CKPT`` takes them from that model's checkpoint (the usual way); otherwise ``--image-size``,
``--channels``, ``--timesteps`` and ``--beta-schedule`` give them. Checkpoints land in ``--results`` as
``model-N.pt`` (the Trainer's), and ``sample CKPT --classifier RESULTS/model-N.pt --class NAME`` guides with one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data.datasets import LabelledImageFolder, OnBadImage, get_builtin_dataset
from ..nn.encoder_classifier import EncoderClassifier
from ..noise_aware_classifier import NoiseAwareClassifier
from ..pretrained import resolve_source
from ..processes import BetaSchedule
from ..training import Trainer
from .args import _add_threads_option, _values, dim_mults, non_negative_int, positive_int, with_results_locked
from .presets import BUILTIN_IMAGES
from .train import choose_seed
from .train_args import bad_steps, keep_last, resume_target

# (folder, built-in): the built-in demo trains in about a minute on a CPU; a folder gets a full-size recipe.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "image_size": (128, 16), "channels": (3, 3), "timesteps": (1000, 1000), "beta_schedule": ("cosine", "cosine"),
    "dim": (32, 16), "dim_mults": ((1, 2, 4, 8), (1, 2, 2)), "batch_size": (32, 32), "lr": (3e-4, 1e-3),
    "steps": (10_000, 400), "save_every": (1000, 200),
}  # fmt: skip


def add_train_classifier_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-classifier",
        help="train a noise-aware classifier for classifier guidance",
        description="Train a time-conditioned classifier on noisy images x_t of a diffusion model's noise schedule "
        "(Dhariwal & Nichol 2021), for `sample --classifier`. FOLDER: one sub-folder per class; omit it for the "
        "built-in shapes (8 classes).",
    )
    p.add_argument("folder", nargs="?", default=None, metavar="FOLDER", help="labelled image folder (one per class)")
    p.add_argument("--diffusion", type=Path, default=None, metavar="CKPT",
                   help="take the schedule, image size and channels from this diffusion checkpoint")  # fmt: skip
    for flag, name, kind, text in [
        ("--image-size", "image_size", positive_int, "image side in pixels"),
        ("--channels", "channels", positive_int, "image channels"),
        ("--timesteps", "timesteps", positive_int, "T of the noise schedule"),
        ("--dim", "dim", positive_int, "classifier base width"),
        ("--dim-mults", "dim_mults", dim_mults, "width multiplier per level, e.g. 1,2,4"),
        ("--batch-size", "batch_size", positive_int, "images per step"),
        ("--lr", "lr", float, "Adam learning rate"),
        ("--steps", "steps", positive_int, "optimizer steps in total"),
        ("--save-every", "save_every", positive_int, "steps between checkpoints"),
    ]:
        folder, builtin = DEFAULTS[name]
        p.add_argument(flag, dest=name, type=kind, default=None, help=f"{text} (default: {_show(folder)}; built-in "
                       f"data: {_show(builtin)})")  # fmt: skip
    p.add_argument("--beta-schedule", choices=_values(BetaSchedule), default=None, help="noise schedule (cosine)")
    p.add_argument("--results", type=Path, default=Path("classifier"), help="output folder (default: ./classifier)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of weights and data order")
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on GPU, bf16 on CPU)")
    p.add_argument("--resume", type=resume_target, default=None, metavar="auto|N|PATH",
                   help="continue from a checkpoint in --results (as for train)")  # fmt: skip
    p.add_argument("--keep-last", type=keep_last, default=3, metavar="N|all", help="checkpoints kept (default: 3)")
    p.add_argument("--max-bad-steps", type=bad_steps, default=10, metavar="N", help="as for train (default: 10)")
    p.add_argument("--on-bad-image", choices=_values(OnBadImage), default=OnBadImage.ERROR.value,
                   help="what to do with an unreadable image file in FOLDER (default: error)")  # fmt: skip
    _add_threads_option(p)
    p.set_defaults(run=with_results_locked(train_classifier))


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options: given ones, else the diffusion checkpoint's schedule and size, else the defaults."""
    column = 0 if args.folder is not None else 1
    options = {name: values[column] for name, values in DEFAULTS.items()}
    if args.diffusion is not None:
        spec = resolve_source(args.diffusion).spec()
        if spec.get("kind") != "GaussianDiffusion":
            raise ValueError(f"--diffusion {args.diffusion} holds a {spec.get('kind')!r}, not a GaussianDiffusion")
        image_size = spec["image_size"]
        options.update(image_size=image_size[0] if image_size[0] == image_size[1] else tuple(image_size),
                       channels=spec["model"].get("channels", 3), timesteps=spec["timesteps"],
                       beta_schedule=spec["beta_schedule"])  # fmt: skip
    options.update({name: getattr(args, name) for name in DEFAULTS if getattr(args, name) is not None})
    return options


def train_classifier(args: argparse.Namespace) -> int:
    """Build the data and the classifier (seeded first, so that a seed repeats the run), then train."""
    opts = resolve_options(args)
    if args.folder is not None:
        data: Any = LabelledImageFolder(args.folder, opts["image_size"], channels=opts["channels"],
                                        on_bad_image=args.on_bad_image)  # fmt: skip
    else:
        data = get_builtin_dataset("shapes", opts["image_size"], channels=opts["channels"], labelled=True,
                                   num_images=BUILTIN_IMAGES)  # fmt: skip
    print(f"training a classifier of {len(data.classes)} classes ({', '.join(data.classes[:5])}"
          f"{', ...' if len(data.classes) > 5 else ''}) on {len(data)} images")  # fmt: skip
    seed = choose_seed(args.seed)
    network = EncoderClassifier(opts["dim"], num_classes=len(data.classes), channels=opts["channels"],
                                dim_mults=opts["dim_mults"])  # fmt: skip
    classifier = NoiseAwareClassifier(network, image_size=opts["image_size"], timesteps=opts["timesteps"],
                                      beta_schedule=opts["beta_schedule"], class_names=list(data.classes))  # fmt: skip
    trainer = Trainer(
        classifier, data, train_batch_size=opts["batch_size"], train_lr=opts["lr"], train_num_steps=opts["steps"],
        save_and_sample_every=opts["save_every"], results_folder=args.results, amp=args.amp, seed=seed,
        resume=args.resume, keep_last=args.keep_last, max_bad_steps=args.max_bad_steps,
        on_bad_image=args.on_bad_image, augment_horizontal_flip=False,
    )  # fmt: skip
    trainer.train()
    if trainer.accelerator.is_main_process:
        path = trainer.checkpoint_path(trainer.milestone_of(trainer.step))
        print(f"checkpoint: {path}")
        print(f"guide with: denoising-diffusion sample DIFFUSION_CKPT --classifier {path} --class NAME")
    return 0
