"""``denoising-diffusion train [FOLDER]``: train a Unet + GaussianDiffusion with the Trainer.

Without FOLDER it trains on the built-in procedural shapes with a small recipe that finishes in a few minutes on a
laptop CPU (:data:`~.presets.BUILTIN_PRESET`); with FOLDER the image size is the images' own and the recipe is the
preset of that size (presets.py). What a run does, in order:

1. take the results folder's lock (training/results_lock.py): one run per folder;
2. with ``--resume``, find the checkpoint and rebuild the model from its config (train_resume.py); else check every
   image header of FOLDER (data/scan.py: all unreadable files named in one error), size the options to the images
   and build the model;
3. seed every generator *before* the network is built, so that the same command and seed give the same weights,
   losses and samples (a random seed is drawn and printed when none is given);
4. on a CPU, measure and print what the run will cost (run_cost.py);
5. train, and report the files written.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from ..data.datasets import (
    ImageFolderDataset,
    LabelledImageFolder,
    get_builtin_dataset,
    list_class_folders,
    list_image_files,
)
from ..data.scan import ImageScan, check_folder_dataset, scan_images
from ..diffusion import GaussianDiffusion
from ..nn.unet import Unet
from ..pipeline import checkpoint_spec
from ..processes import process_class
from ..training import Trainer
from ..training.checkpoints import find_resume_checkpoint
from ..training.distributed import use_cpu
from ..training.preview import preview_condition
from ..viz import save_denoising_gif
from . import latent
from . import train_super_resolution as sr
from .args import with_results_locked
from .presets import BUILTIN_IMAGES, TrainPreset, resolve_train_options, sized_ema_decay
from .run_cost import describe_cost, measure_run_cost
from .train_args import add_train_arguments
from .train_data import (
    check_data_options,
    epochs_applied,
    first_image_side,
    indexable,
    source_training_data,
    validation_data,
)
from .train_resume import check_resume_options, resumed_model, resumed_options

COND_DROP_PROB = 0.1  # --cond-drop-prob's default (Ho & Salimans 2021)


def add_train_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train on a folder of images, or on built-in shapes when no folder is given",
        description="Train a Unet + GaussianDiffusion. Without FOLDER: a small demo on procedurally generated "
        "shapes (a few minutes on a CPU), ending with a denoising GIF. With FOLDER: the images' own size and a "
        "recipe sized to it. Every option overrides either default set; a resumed run takes the model from its "
        "checkpoint.",
    )
    add_train_arguments(p)
    sr.add_super_resolution_arguments(p)
    latent.add_latent_arguments(p)
    p.set_defaults(run=with_results_locked(train_command))


def process_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """GaussianDiffusion's process, process_options and loss_weighting from --process, --sigma-max and
    --loss-weighting; ValueError for --sigma-max with a process that has no sigma_max."""
    process = args.process or "ddpm"
    if args.sigma_max is not None and "sigma_max" not in process_class(process).option_defaults():
        raise ValueError(f"--sigma-max is for --process ve or ncsn (or edm), not {process}")
    options = None if args.sigma_max is None else {"sigma_max": args.sigma_max}
    return {"process": process, "process_options": options, "loss_weighting": args.loss_weighting or "simple"}


def build_diffusion(
    opts: TrainPreset,
    class_names: list[str] | None = None,
    cond_drop_prob: float = COND_DROP_PROB,
    process: Mapping[str, Any] | None = None,
    unet_options: Mapping[str, Any] | None = None,
) -> GaussianDiffusion:
    """Unet + GaussianDiffusion from the resolved options (ValueError for options that cannot build a model);
    class-conditional on ``class_names`` when given; ``process``: GaussianDiffusion's process arguments
    (:func:`process_arguments`), default ddpm; ``unet_options``: the Unet's extra arguments (a stage's inputs)."""
    num_classes = None if class_names is None else len(class_names)
    unet = Unet(
        opts.dim, dim_mults=opts.dim_mults, channels=opts.channels, num_classes=num_classes,
        cond_drop_prob=cond_drop_prob, resnet_blocks=opts.resnet_blocks, attention=opts.attention,
        mid_attn=opts.mid_attn, gradient_checkpointing=opts.gradient_checkpointing, **(unet_options or {}),
    )  # fmt: skip
    return GaussianDiffusion(
        unet, class_names=class_names, image_size=opts.image_size, timesteps=opts.timesteps,
        sampling_timesteps=opts.sampling_timesteps, ddim_sampling_eta=opts.ddim_eta, objective=opts.objective,
        beta_schedule=opts.beta_schedule, loss_type=opts.loss_type, clip_denoised=opts.clip_denoised,
        rederive_eps=opts.rederive_eps, **(process or {}),
    )  # fmt: skip


def write_training_gif(trainer: Trainer, num: int, seed: int | None, path: Path) -> Path:
    """A denoising GIF of ``num`` samples from the trainer's EMA network (noise seeded by ``seed`` or the data
    seed); a class-conditional model's rows are its classes, as in the sample grids."""
    condition, count, per_row = preview_condition(trainer.trainable, trainer.dataset, num)
    if trainer.sample_guidance_scale != 1.0:
        condition["guidance_scale"] = trainer.sample_guidance_scale
    trajectory = trainer.sample(count, seed=seed, return_all_timesteps=True, **condition)
    return save_denoising_gif(trajectory, path, nrow=per_row)


def scan_folder(args: argparse.Namespace) -> ImageScan:
    """Every image header of FOLDER (its class sub-folders with --class-cond), checked before anything else."""
    if args.class_cond:
        paths = [path for files in list_class_folders(args.folder)[1] for path in files]
    else:
        paths = list_image_files(args.folder)
    return scan_images(paths)


def training_data(args: argparse.Namespace, opts: TrainPreset, scan: ImageScan | None = None) -> Any:
    """The folder (labelled by its sub-folders with --class-cond; ``scan``: its headers, already checked), the
    --dataset (train_data.py), or the built-in shapes; says which."""
    if args.dataset is not None:
        return source_training_data(args, opts)
    if args.folder is None:
        print(f"training on {BUILTIN_IMAGES} built-in {opts.image_size}x{opts.image_size} shape images "
              f"({opts.steps} steps; pass a FOLDER to train on your own images)")  # fmt: skip
        return get_builtin_dataset("shapes", opts.image_size, channels=opts.channels, labelled=args.class_cond,
                                   num_images=BUILTIN_IMAGES)  # fmt: skip
    kind = LabelledImageFolder if args.class_cond else ImageFolderDataset
    data = kind(args.folder, opts.image_size, channels=opts.channels, on_bad_image=args.on_bad_image)
    data.header_scan = scan
    check_folder_dataset(data)  # every unreadable file named in one error (--on-bad-image error) before building
    print(f"training on the {len(data)} images in {args.folder}{' (a class per sub-folder)' if args.class_cond else ''}"
          f" at {opts.image_size} px")  # fmt: skip
    return data


def choose_seed(seed: int | None) -> int:
    """``seed``, or a random one (printed, so that the run can be repeated); every generator is seeded with it."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
        print(f"seed {seed} (drawn at random: --seed {seed} repeats this run)")
    set_seed(seed)  # Python, NumPy and torch (CPU and CUDA): the network's initialization and dropout included
    return seed


def prepare_model(args: argparse.Namespace) -> tuple[TrainPreset, Any, Any, str | None]:
    """(options, data, model, the checkpoint file to resume from): rebuilt from the checkpoint ``--resume`` finds,
    else built from the options sized to the data. Seeds every generator before the network is built."""
    check_data_options(args)
    sr.check_super_resolution_args(args)
    latent.check_latent_args(args)
    found = find_resume_checkpoint(args.results, args.resume) if args.resume is not None else None
    if found is not None:
        path, checkpoint = found
        spec = checkpoint_spec(checkpoint)
        view = latent.pixel_view(sr.resumed_diffusion_spec(args, spec))  # the diffusion of a stage or latent model
        check_resume_options(args, view, str(path))
        args.class_cond = view["model"].get("num_classes") is not None
        opts = resumed_options(args, view, (checkpoint.get("trainer") or {}).get("options") or {})
        data = training_data(args, opts)
        opts = epochs_applied(args, opts, data)
        model = resumed_model(spec, args.gradient_checkpointing)
        return opts, *latent.latent_data(args, data, model, checkpoint), str(path)
    if args.resume is not None:
        print(f"nothing to resume in {args.results}; starting from step 0")
    scan = scan_folder(args) if args.folder is not None else None
    side = scan.median_short_side if scan is not None else first_image_side(args) if args.dataset else None
    opts = resolve_train_options(args, side)
    data = training_data(args, opts, scan)
    opts = epochs_applied(args, opts, data)
    class_names = list(data.classes) if args.class_cond else None
    opts = replace(opts, seed=choose_seed(opts.seed))
    drop = COND_DROP_PROB if args.cond_drop_prob is None else args.cond_drop_prob
    network = sr.stage_network_options(args, opts)
    process = process_arguments(args)
    model = latent.build_model(
        args, opts, lambda o, **more: build_diffusion(o, class_names, drop, {**process, **more}, network)
    )
    return opts, *latent.latent_data(args, data, sr.as_stage(args, model)), None


def make_trainer(args: argparse.Namespace, opts: TrainPreset, data: Any, model: Any, resume: str | None) -> Trainer:
    """The Trainer of the run: the options, written into the (locked) results folder."""
    return Trainer(
        model, data, train_batch_size=opts.batch_size, gradient_accumulate_every=opts.grad_accum, train_lr=opts.lr,
        train_num_steps=opts.steps, ema_update_every=opts.ema_update_every, ema_decay=sized_ema_decay(opts),
        ema_sigma_rel=args.ema_sigma_rel, save_and_sample_every=opts.save_every, num_samples=opts.num_samples,
        results_folder=args.results, amp=args.amp, compile=args.compile, on_bad_image=args.on_bad_image,
        seed=opts.seed, resume=resume, keep_last=args.keep_last, keep_powers_of_two=args.keep_powers_of_two,
        max_bad_steps=args.max_bad_steps, log_with=args.log_with, tracker_project_name=args.tracker_project,
        sample_guidance_scale=args.sample_guidance, validation=validation_data(args, opts),
        augment_horizontal_flip=opts.flip and getattr(args, "latent_cache", None) is None,  # cached latents: flipped
    )  # fmt: skip


def print_cost(args: argparse.Namespace, trainer: Trainer, opts: TrainPreset) -> None:
    """On a CPU (main process): what the run will cost, measured on a few steps (run_cost.py)."""
    if not use_cpu() or args.compile or not trainer.accelerator.is_main_process or trainer.step >= opts.steps:
        return  # (a compiled network would be compiled again for the copy: minutes)
    cost = measure_run_cost(
        trainer.trainable, indexable(trainer.dataset, opts.batch_size), batch_size=opts.batch_size,
        num_samples=opts.num_samples, steps_left=opts.steps - trainer.step, save_every=opts.save_every,
        start=trainer.step,
    )  # fmt: skip
    for line in describe_cost(cost, torch.get_num_threads()):
        print(line)


def train_command(args: argparse.Namespace) -> int:
    """The ``train`` subcommand (run with the results folder locked): build (or rebuild), train, then report the
    files written."""
    opts, data, model, resume = prepare_model(args)
    trainer = make_trainer(args, opts, data, model, resume)
    if "sigma_max" in getattr(model, "process_options", {}):
        print(f"{model.process} process with sigma_max = {model.process_options['sigma_max']:.4g}")
    if trainer.step > 0:
        print(f"resumed at step {trainer.step} of {opts.steps}")
    print_cost(args, trainer, opts)
    trainer.train()
    if trainer.accelerator.is_main_process:  # only the main process writes (and reports)
        report(trainer, opts)
    return 0


def report(trainer: Trainer, opts: TrainPreset) -> None:
    """The GIF (when asked), then where the files are."""
    milestone = trainer.milestone_of(trainer.step)
    written = [
        ("checkpoint", trainer.checkpoint_path(milestone)),
        ("samples", trainer.results_folder / f"sample-{milestone}.png"),
        ("loss log", trainer.results_folder / "loss.csv"),
    ]
    if opts.gif and opts.num_samples > 0 and not sr.is_stage(trainer.trainable):  # a stage needs low-res input
        gif = write_training_gif(trainer, opts.num_samples, opts.seed, trainer.results_folder / "denoising.gif")
        written.append(("denoising", gif))
    for label, path in written:
        if path.exists():
            print(f"{label + ':':12}{path}")
    print(sr.next_step(trainer.trainable, trainer.checkpoint_path(milestone)))
