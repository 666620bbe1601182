"""``denoising-diffusion train [FOLDER]``: train a Unet + GaussianDiffusion with the Trainer.

Without FOLDER it trains on the built-in procedural shapes with a small recipe that finishes in a few minutes on a
laptop CPU (:data:`BUILTIN_PRESET`); with FOLDER the defaults are those of Unet, GaussianDiffusion and Trainer
(:data:`FOLDER_PRESET`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..data.datasets import LabelledImageFolder, OnBadImage, get_builtin_dataset
from ..diffusion import GaussianDiffusion
from ..losses import WEIGHTINGS, LossType
from ..nn.unet import Unet
from ..parameterization import Objective
from ..processes import BetaSchedule, process_class, registered_processes
from ..training import Trainer
from ..training.preview import preview_condition
from ..viz import save_denoising_gif
from .args import (
    PROG,
    _add_threads_option,
    _values,
    attention_kinds,
    dim_mults,
    non_negative_int,
    positive_int,
    resnet_blocks,
)

BUILTIN_IMAGES = 2048  # BuiltinShapes length: enough variety that 800 steps of 32 images never repeat a batch


@dataclass(frozen=True)
class TrainPreset:
    """The defaults of every ``train`` option that differs between the folder case and the built-in data."""

    image_size: int
    channels: int
    dim: int
    dim_mults: tuple[int, ...]
    timesteps: int
    sampling_timesteps: int | None  # None: T (ancestral DDPM over every step)
    ddim_eta: float
    objective: str
    beta_schedule: str
    loss_type: str
    batch_size: int
    lr: float
    steps: int
    grad_accum: int
    ema_decay: float
    ema_update_every: int
    save_every: int
    num_samples: int
    seed: int | None
    gif: bool
    resnet_blocks: int | tuple[int, ...] = 2  # Unet's layout options (the same in both presets)
    attention: str | tuple[str, ...] | None = None  # None: Unet's full_attn default
    mid_attn: bool = True
    gradient_checkpointing: bool = False
    clip_denoised: bool = True  # GaussianDiffusion's sampling options (the same in both presets)
    rederive_eps: bool = True


# The documented defaults of Unet, GaussianDiffusion and Trainer; image size and width from the tutorial (DESIGN.md).
FOLDER_PRESET = TrainPreset(
    image_size=128,
    channels=3,
    dim=64,
    dim_mults=(1, 2, 4, 8),
    timesteps=1000,
    sampling_timesteps=None,
    ddim_eta=0.0,
    objective="pred_noise",
    beta_schedule="cosine",
    loss_type="l2",
    batch_size=16,
    lr=1e-4,
    steps=100_000,
    grad_accum=1,
    ema_decay=0.995,
    ema_update_every=10,
    save_every=1000,
    num_samples=25,
    seed=None,
    gif=False,
)

# A few minutes on a 2-core CPU, and the samples clearly show coloured discs and squares (timing: docs/cli.md).
# ddim_eta=1: after 800 steps deterministic DDIM (eta=0) tints the backgrounds; stochastic sampling does not.
BUILTIN_PRESET = replace(
    FOLDER_PRESET,
    image_size=16,
    dim=16,
    dim_mults=(1, 2, 2),
    sampling_timesteps=50,
    ddim_eta=1.0,
    batch_size=32,
    lr=1e-3,
    steps=800,
    ema_update_every=1,
    save_every=200,
    seed=0,
    gif=True,
)


def _show(name: str, value: Any) -> str:
    """A preset value as help text: tuples as '1,2,4'; None as what it means for that option."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if value is None:
        return {
            "sampling_timesteps": "T", "seed": "random", "attention": "full at the deepest level, linear above"
        }.get(name, "none")  # fmt: skip
    return str(value)


def _preset_help(text: str, name: str) -> str:
    folder, builtin = _show(name, getattr(FOLDER_PRESET, name)), _show(name, getattr(BUILTIN_PRESET, name))
    if folder == builtin:
        return f"{text} (default: {folder})"
    return f"{text} (default: {folder}; built-in data: {builtin})"


def _add_preset_option(group: Any, flag: str, name: str, kind: Callable[[str], Any], text: str) -> None:
    """An option whose default comes from the preset (None on the command line), its help naming both defaults."""
    group.add_argument(flag, type=kind, default=None, help=_preset_help(text, name))


def _add_preset_switch(group: Any, flag: str, name: str, text: str) -> None:
    """An on/off option (``--x`` / ``--no-x``) whose default comes from the preset, its help naming both defaults."""
    group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_preset_help(text, name))


def add_train_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train on a folder of images, or on built-in shapes when no folder is given",
        description="Train a Unet + GaussianDiffusion. Without FOLDER: a small demo on procedurally generated "
        "shapes (a few minutes on a CPU), ending with a denoising GIF. With FOLDER: the library's defaults. "
        "Every option overrides either default set.",
    )
    p.add_argument(
        "folder",
        nargs="?",
        default=None,
        metavar="FOLDER",
        help="image folder, read recursively (jpg, jpeg, png, webp, bmp, tif, tiff); omit it to train on "
        "built-in shapes",
    )
    model = p.add_argument_group("model (saved in the checkpoint)")
    for flag, name, kind, text in [
        ("--image-size", "image_size", positive_int, "image side in pixels; images are resized and center-cropped"),
        ("--channels", "channels", positive_int, "image channels: 1, 3 or 4"),
        ("--dim", "dim", positive_int, "Unet base width (a multiple of 8)"),
        ("--dim-mults", "dim_mults", dim_mults, "Unet width multiplier per resolution level, e.g. 1,2,4"),
        ("--resnet-blocks", "resnet_blocks", resnet_blocks, "Unet ResNet blocks per level: one for all, or 1,2,2"),
        (
            "--attention",
            "attention",
            attention_kinds,
            "Unet self-attention per level: full, linear or none, one for all or one per level (none,full)",
        ),
        ("--timesteps", "timesteps", positive_int, "T, the length of the diffusion chain"),
        (
            "--sampling-timesteps",
            "sampling_timesteps",
            positive_int,
            "reverse steps for sample grids; below T the default sampler is DDIM, at T ancestral DDPM",
        ),
        ("--ddim-eta", "ddim_eta", float, "DDIM's eta for sample grids: 0 deterministic, 1 ancestral"),
    ]:
        _add_preset_option(model, flag, name, kind, text)
    for flag, name, enum, text in [
        ("--objective", "objective", Objective, "what the network predicts"),
        ("--beta-schedule", "beta_schedule", BetaSchedule, "noise schedule"),
        ("--loss-type", "loss_type", LossType, "training distance"),
    ]:
        model.add_argument(flag, choices=_values(enum), default=None, help=_preset_help(text, name))
    for flag, name, text in [
        ("--mid-attn", "mid_attn", "full self-attention in the Unet's middle"),
        ("--clip-denoised", "clip_denoised", "clamp the predicted x_0 to [-1, 1] while sampling"),
        (
            "--rederive-eps",
            "rederive_eps",
            "with --clip-denoised, recompute the noise prediction from the clamped x_0 (--no-rederive-eps keeps "
            "the network's, as diffusers' DDIMScheduler does)",
        ),
    ]:
        _add_preset_switch(model, flag, name, text)
    _add_process_options(model)
    train = p.add_argument_group("training")
    options: list[tuple[str, str, Callable[[str], Any], str]] = [
        ("--batch-size", "batch_size", positive_int, "images per micro-batch"),
        ("--lr", "lr", float, "Adam learning rate"),
        ("--steps", "steps", positive_int, "optimizer steps in total (a resumed run continues to this number)"),
        ("--grad-accum", "grad_accum", positive_int, "micro-batches per optimizer step"),
        ("--ema-decay", "ema_decay", float, "EMA decay of the sampling network"),
        ("--ema-update-every", "ema_update_every", positive_int, "optimizer steps between EMA updates"),
        ("--save-every", "save_every", positive_int, "steps between checkpoints and sample grids"),
        ("--num-samples", "num_samples", non_negative_int, "images per sample grid and GIF (0: none)"),
        ("--seed", "seed", non_negative_int, "seed of weights, data order and sample noise"),
    ]
    for flag, name, kind, text in options:
        _add_preset_option(train, flag, name, kind, text)
    train.add_argument(
        "--ema-sigma-rel",
        type=float,
        default=None,
        help="use EDM2's power-function EMA of this relative length (e.g. 0.05-0.15, updated every step) instead "
        "of the constant --ema-decay (default: the constant decay)",
    )
    for flag, name, text in [
        ("--gif", "gif", "write results/denoising.gif from the EMA network at the end"),
        (
            "--gradient-checkpointing",
            "gradient_checkpointing",
            "recompute the Unet's blocks in backward: a seventh of the activations kept, ~30%% more time per step",
        ),
    ]:
        _add_preset_switch(train, flag, name, text)
    train.add_argument("--results", type=Path, default=Path("results"), help="output folder (default: ./results)")
    train.add_argument("--amp", action="store_true", help="mixed precision (fp16 on GPU, bf16 on CPU)")
    train.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (the first step compiles for minutes; what it gains is "
        "measured in benchmarks/README.md)",
    )
    train.add_argument(
        "--resume",
        type=resume_target,
        default=None,
        metavar="auto|N|PATH",
        help="continue from the newest valid checkpoint in --results ('auto', alias 'latest'; a fresh "
        "start when there is none), from results/model-N.pt, or from a checkpoint file",
    )
    train.add_argument(
        "--keep-last",
        type=keep_last,
        default=3,
        metavar="N|all",
        help="keep the N newest checkpoints; 'all' keeps every one (default: 3)",
    )
    train.add_argument(
        "--keep-powers-of-two",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also keep milestones 1, 2, 4, 8, ... (sparse history of the whole run; default: on)",
    )
    train.add_argument(
        "--max-bad-steps",
        type=bad_steps,
        default=10,
        metavar="N",
        help="stop after N non-finite steps in a row; 0 or 'none': never (default: 10)",
    )
    train.add_argument(
        "--log-with",
        action="append",
        default=None,
        metavar="TRACKER",
        help="also log to an accelerate tracker (tensorboard, wandb, ...) when installed; repeatable",
    )
    train.add_argument(
        "--tracker-project",
        default="denoising_diffusion",
        help="project name for --log-with trackers (default: denoising_diffusion)",
    )
    cond = p.add_argument_group("class conditioning (saved in the checkpoint)")
    cond.add_argument(
        "--class-cond",
        action="store_true",
        help="class-conditional: labels from FOLDER's sub-folders (one per class), or the built-in shapes' 8 classes "
        "(shape x colour); sample by class name afterwards",
    )
    cond.add_argument(
        "--cond-drop-prob",
        type=float,
        default=0.1,
        help="how often a label is replaced by the null class while training, which trains the unconditional "
        "branch that classifier-free guidance needs (default: 0.1, Ho & Salimans 2021)",
    )
    cond.add_argument(
        "--sample-guidance",
        type=float,
        default=1.0,
        metavar="S",
        help="classifier-free guidance scale of the sample grids and GIF (default: 1, the conditional model as it is)",
    )
    train.add_argument(
        "--on-bad-image",
        choices=_values(OnBadImage),
        default=OnBadImage.ERROR.value,
        help="what to do with an unreadable image file in FOLDER (default: error)",
    )
    _add_threads_option(train)
    p.set_defaults(run=run_train)


def _add_process_options(group: Any) -> None:
    """--process, --sigma-max, --loss-weighting (GaussianDiffusion's process, process_options, loss_weighting)."""
    group.add_argument(
        "--process",
        choices=registered_processes(),
        default="ddpm",
        help="the diffusion process: ddpm (discrete, --beta-schedule), the score SDEs vp, subvp, ve (continuous "
        "time; --timesteps is then the default number of sampling steps), ncsn (--timesteps noise levels) or edm "
        "(Karras et al. 2022: sigma as time, preconditioned network, objective edm, heun sampler) (default: ddpm)",
    )
    group.add_argument(
        "--sigma-max",
        type=positive_float,
        default=None,
        metavar="SIGMA",
        help="sigma_max of --process ve or ncsn (default: the largest distance between two training images, "
        "computed once before training and saved in the checkpoint; Song & Ermon 2020), or edm (default 80)",
    )
    group.add_argument(
        "--loss-weighting",
        choices=WEIGHTINGS.names(),
        default="simple",
        help="simple: the objective's own loss; likelihood: g(t)^2-weighted score matching (vp, subvp, ve with "
        "pred_noise; Song et al. 2021); min_snr: min-SNR-5 (Hang et al. 2023) (default: simple)",
    )


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def process_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """GaussianDiffusion's process, process_options and loss_weighting from --process, --sigma-max and
    --loss-weighting; ValueError for --sigma-max with a process that has no sigma_max."""
    if args.sigma_max is not None and "sigma_max" not in process_class(args.process).option_defaults():
        raise ValueError(f"--sigma-max is for --process ve or ncsn (or edm), not {args.process}")
    options = None if args.sigma_max is None else {"sigma_max": args.sigma_max}
    return {"process": args.process, "process_options": options, "loss_weighting": args.loss_weighting}


def resolve_train_options(args: argparse.Namespace) -> TrainPreset:
    """The preset for the data source (folder or built-in), with every option given on the command line applied.

    A preset's sampling_timesteps is capped at T when only --timesteps was given (e.g. --timesteps 20).
    """
    preset = FOLDER_PRESET if args.folder is not None else BUILTIN_PRESET
    given = {f.name: getattr(args, f.name) for f in fields(TrainPreset) if getattr(args, f.name) is not None}
    own_objective = process_class(args.process).objective if getattr(args, "process", None) else None
    if own_objective is not None and "objective" not in given:
        given["objective"] = own_objective  # process 'edm' trains EDM's preconditioned network
    opts = replace(preset, **given)
    if "sampling_timesteps" not in given and opts.sampling_timesteps is not None:
        opts = replace(opts, sampling_timesteps=min(opts.sampling_timesteps, opts.timesteps))
    return opts


def build_diffusion(
    opts: TrainPreset,
    class_names: list[str] | None = None,
    cond_drop_prob: float = 0.1,
    process: Mapping[str, Any] | None = None,
) -> GaussianDiffusion:
    """Unet + GaussianDiffusion from the resolved options (ValueError for options that cannot build a model);
    class-conditional on ``class_names`` when given; ``process``: GaussianDiffusion's process arguments
    (:func:`process_arguments`), default ddpm."""
    num_classes = None if class_names is None else len(class_names)
    unet = Unet(
        opts.dim, dim_mults=opts.dim_mults, channels=opts.channels, num_classes=num_classes,
        cond_drop_prob=cond_drop_prob, resnet_blocks=opts.resnet_blocks, attention=opts.attention,
        mid_attn=opts.mid_attn, gradient_checkpointing=opts.gradient_checkpointing,
    )  # fmt: skip
    return GaussianDiffusion(
        unet,
        class_names=class_names,
        image_size=opts.image_size,
        timesteps=opts.timesteps,
        sampling_timesteps=opts.sampling_timesteps,
        ddim_sampling_eta=opts.ddim_eta,
        objective=opts.objective,
        beta_schedule=opts.beta_schedule,
        loss_type=opts.loss_type,
        clip_denoised=opts.clip_denoised,
        rederive_eps=opts.rederive_eps,
        **(process or {}),
    )


def resume_target(text: str) -> str | int:
    """--resume: 'auto' (or 'latest'), a milestone number >= 1, or a checkpoint path."""
    if text in ("auto", "latest"):
        return "auto"
    if text.isdigit():
        if int(text) < 1:
            raise argparse.ArgumentTypeError(f"milestones start at 1, got {text}")
        return int(text)
    return text


def keep_last(text: str) -> int | None:
    """--keep-last: a positive integer, or 'all' for keeping every checkpoint."""
    return None if text.lower() == "all" else positive_int(text)


def bad_steps(text: str) -> int | None:
    """--max-bad-steps: a positive integer, or 0/'none' for never stopping."""
    if text.lower() in ("0", "none"):
        return None
    return positive_int(text)


def write_training_gif(trainer: Trainer, num: int, seed: int | None, path: Path) -> Path:
    """A denoising GIF of ``num`` samples from the trainer's EMA network (noise seeded by ``seed`` or the data
    seed); a class-conditional model's rows are its classes, as in the sample grids."""
    condition, count, per_row = preview_condition(trainer.trainable, trainer.dataset, num)
    if trainer.sample_guidance_scale != 1.0:
        condition["guidance_scale"] = trainer.sample_guidance_scale
    trajectory = trainer.sample(count, seed=seed, return_all_timesteps=True, **condition)
    return save_denoising_gif(trajectory, path, nrow=per_row)


def training_data(args: argparse.Namespace, opts: TrainPreset) -> Any:
    """The folder (labelled by its sub-folders with --class-cond), or the built-in shapes; says which."""
    if args.folder is not None:
        print(f"training on the images in {args.folder}{' (a class per sub-folder)' if args.class_cond else ''}")
        if not args.class_cond:
            return args.folder
        return LabelledImageFolder(args.folder, opts.image_size, channels=opts.channels, on_bad_image=args.on_bad_image)
    print(
        f"training on {BUILTIN_IMAGES} built-in {opts.image_size}x{opts.image_size} shape images "
        f"({opts.steps} steps; pass a FOLDER to train on your own images)"
    )
    return get_builtin_dataset(
        "shapes", opts.image_size, channels=opts.channels, labelled=args.class_cond, num_images=BUILTIN_IMAGES
    )


def run_train(args: argparse.Namespace) -> int:
    """The ``train`` subcommand: build, train, then report the files written."""
    opts = resolve_train_options(args)
    data = training_data(args, opts)
    class_names = list(data.classes) if args.class_cond else None
    diffusion = build_diffusion(opts, class_names, args.cond_drop_prob, process_arguments(args))
    trainer = Trainer(
        diffusion,
        data,
        train_batch_size=opts.batch_size,
        gradient_accumulate_every=opts.grad_accum,
        train_lr=opts.lr,
        train_num_steps=opts.steps,
        ema_update_every=opts.ema_update_every,
        ema_decay=opts.ema_decay,
        ema_sigma_rel=args.ema_sigma_rel,
        save_and_sample_every=opts.save_every,
        num_samples=opts.num_samples,
        results_folder=args.results,
        amp=args.amp,
        compile=args.compile,
        on_bad_image=args.on_bad_image,
        seed=opts.seed,
        resume=args.resume,
        keep_last=args.keep_last,
        keep_powers_of_two=args.keep_powers_of_two,
        max_bad_steps=args.max_bad_steps,
        log_with=args.log_with,
        tracker_project_name=args.tracker_project,
        sample_guidance_scale=args.sample_guidance,
    )
    if "sigma_max" in diffusion.process_options:
        print(f"{diffusion.process} process with sigma_max = {diffusion.process_options['sigma_max']:.4g}")
    if trainer.step > 0:
        print(f"resumed at step {trainer.step} of {opts.steps}")
    elif args.resume is not None:
        print(f"nothing to resume in {args.results}; starting from step 0")
    trainer.train()
    if not trainer.accelerator.is_main_process:
        return 0  # only the main process writes (and reports)
    milestone_number = trainer.milestone_of(trainer.step)
    written = [
        ("checkpoint", trainer.checkpoint_path(milestone_number)),
        ("samples", trainer.results_folder / f"sample-{milestone_number}.png"),
        ("loss log", trainer.results_folder / "loss.csv"),
    ]
    if opts.gif and opts.num_samples > 0:
        written.append(
            (
                "denoising",
                write_training_gif(trainer, opts.num_samples, opts.seed, trainer.results_folder / "denoising.gif"),
            )
        )
    for label, path in written:
        if path.exists():
            print(f"{label + ':':12}{path}")
    print(f"sample more with: {PROG} sample {trainer.checkpoint_path(milestone_number)} --gif")
    return 0
