"""The options of ``denoising-diffusion train``: their definitions, help texts and argument types.

Options whose default depends on the data source or image size (presets.py) default to None here, and
:func:`~.presets.resolve_train_options` fills them in; every option the checkpoint records also defaults to None, so
that a resumed run can tell the options given on the command line from the checkpoint's (train_resume.py).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.datasets import OnBadImage
from ..losses import WEIGHTINGS, LossType
from ..parameterization import Objective
from ..processes import BetaSchedule, registered_processes
from .args import (
    _add_threads_option,
    _values,
    attention_kinds,
    dim_mults,
    non_negative_int,
    positive_int,
    resnet_blocks,
)
from .presets import MAX_UPSCALE, preset_help


def _add_preset_option(group: Any, flag: str, name: str, kind: Callable[[str], Any], text: str) -> None:
    """An option whose default comes from the preset (None on the command line), its help naming both defaults."""
    group.add_argument(flag, type=kind, default=None, help=preset_help(text, name))


def _add_preset_switch(group: Any, flag: str, name: str, text: str) -> None:
    """An on/off option (``--x`` / ``--no-x``) whose default comes from the preset, its help naming both defaults."""
    group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=preset_help(text, name))


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of ``train``, in the groups --help shows."""
    p.add_argument(
        "folder",
        nargs="?",
        default=None,
        metavar="FOLDER",
        help="image folder, read recursively (jpg, jpeg, png, webp, bmp, tif, tiff); omit it to train on "
        "built-in shapes or on --dataset",
    )
    _add_data_options(p.add_argument_group("data sets and streams (instead of FOLDER)"))
    model = p.add_argument_group("model (saved in the checkpoint; a resumed run takes them from it)")
    _add_network_options(model)
    _add_process_options(model)
    train = p.add_argument_group("training")
    _add_training_options(train)
    _add_run_options(train)
    _add_class_options(p.add_argument_group("class conditioning (saved in the checkpoint)"))


def _add_network_options(model: Any) -> None:
    """The network and the chain: sizes, layout, T, the grids' sampler, objective, schedule and loss."""
    options: list[tuple[str, str, Callable[[str], Any], str]] = [
        ("--image-size", "image_size", positive_int, "image side in pixels; images are resized and center-cropped"),
        ("--channels", "channels", positive_int, "image channels: 1, 3 or 4"),
        ("--dim", "dim", positive_int, "Unet base width (a multiple of 8)"),
        ("--dim-mults", "dim_mults", dim_mults, "Unet width multiplier per resolution level, e.g. 1,2,4"),
        ("--resnet-blocks", "resnet_blocks", resnet_blocks, "Unet ResNet blocks per level: one for all, or 1,2,2"),
        ("--attention", "attention", attention_kinds,
         "Unet self-attention per level: full, linear or none, one for all or one per level (none,full)"),
        ("--timesteps", "timesteps", positive_int, "T, the length of the diffusion chain"),
        ("--sampling-timesteps", "sampling_timesteps", positive_int,
         "reverse steps for sample grids; below T the default sampler is DDIM, at T ancestral DDPM"),
        ("--ddim-eta", "ddim_eta", float, "DDIM's eta for sample grids: 0 deterministic, 1 ancestral"),
    ]  # fmt: skip
    for flag, name, kind, text in options:
        _add_preset_option(model, flag, name, kind, text)
    for flag, name, enum, text in [
        ("--objective", "objective", Objective, "what the network predicts"),
        ("--beta-schedule", "beta_schedule", BetaSchedule, "noise schedule"),
        ("--loss-type", "loss_type", LossType, "training distance"),
    ]:
        model.add_argument(flag, choices=_values(enum), default=None, help=preset_help(text, name))
    for flag, name, text in [
        ("--mid-attn", "mid_attn", "full self-attention in the Unet's middle"),
        ("--clip-denoised", "clip_denoised", "clamp the predicted x_0 to [-1, 1] while sampling"),
        ("--rederive-eps", "rederive_eps", "with --clip-denoised, recompute the noise prediction from the clamped "
         "x_0 (--no-rederive-eps keeps the network's, as diffusers' DDIMScheduler does)"),
    ]:  # fmt: skip
        _add_preset_switch(model, flag, name, text)
    model.add_argument(
        "--allow-upscale",
        action="store_true",
        help=f"train at an --image-size more than {MAX_UPSCALE:g}x the images' median short side (refused "
        "otherwise: it costs the larger size's time and teaches blurred images)",
    )


def _add_training_options(train: Any) -> None:
    """The recipe: batch, learning rate, steps, EMA, milestones, seed, GIF, gradient checkpointing."""
    options: list[tuple[str, str, Callable[[str], Any], str]] = [
        ("--batch-size", "batch_size", positive_int, "images per micro-batch"),
        ("--lr", "lr", float, "Adam learning rate"),
        ("--steps", "steps", positive_int, "optimizer steps in total (a resumed run continues to this number; "
         "or --epochs)"),
        ("--grad-accum", "grad_accum", positive_int, "micro-batches per optimizer step"),
        ("--ema-decay", "ema_decay", float, "EMA decay of the sampling network"),
        ("--ema-update-every", "ema_update_every", positive_int, "optimizer steps between EMA updates"),
        ("--save-every", "save_every", positive_int, "steps between checkpoints and sample grids"),
        ("--num-samples", "num_samples", non_negative_int, "images per sample grid and GIF (0: none)"),
        ("--seed", "seed", non_negative_int, "seed of weights, data order, noise and dropout; a random one is "
         "printed when not given"),
    ]  # fmt: skip
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
        ("--gradient-checkpointing", "gradient_checkpointing",
         "recompute the Unet's blocks in backward: a seventh of the activations kept, ~30%% more time per step"),
    ]:  # fmt: skip
        _add_preset_switch(train, flag, name, text)


def _add_run_options(train: Any) -> None:
    """Where and how the run goes: results, precision, compile, resume, retention, guards, trackers, bad files."""
    train.add_argument("--results", type=Path, default=Path("results"), help="output folder (default: ./results)")
    train.add_argument("--amp", action="store_true", help="mixed precision (fp16 on GPU, bf16 on CPU)")
    train.add_argument("--compile", action="store_true", help="torch.compile the network (the first step compiles "
                       "for minutes; what it gains is measured in benchmarks/README.md)")  # fmt: skip
    train.add_argument("--resume", type=resume_target, default=None, metavar="auto|N|PATH",
                       help="continue from the newest valid checkpoint in --results ('auto', alias 'latest'; a fresh "
                       "start when there is none), from results/model-N.pt, or from a checkpoint file; the model is "
                       "rebuilt from the checkpoint, so no model option is needed")  # fmt: skip
    train.add_argument("--keep-last", type=keep_last, default=3, metavar="N|all",
                       help="keep the N newest checkpoints; 'all' keeps every one (default: 3)")  # fmt: skip
    train.add_argument("--keep-powers-of-two", action=argparse.BooleanOptionalAction, default=True,
                       help="also keep milestones 1, 2, 4, 8, ... (sparse history of the whole run; "
                       "default: on)")  # fmt: skip
    train.add_argument("--max-bad-steps", type=bad_steps, default=10, metavar="N",
                       help="stop after N non-finite steps in a row; 0 or 'none': never (default: 10)")  # fmt: skip
    train.add_argument("--log-with", action="append", default=None, metavar="TRACKER",
                       help="also log to an accelerate tracker (tensorboard, wandb, ...) when installed; "
                       "repeatable")  # fmt: skip
    train.add_argument("--tracker-project", default="denoising_diffusion",
                       help="project name for --log-with trackers (default: denoising_diffusion)")  # fmt: skip
    train.add_argument("--on-bad-image", choices=_values(OnBadImage), default=OnBadImage.ERROR.value,
                       help="unreadable image files in FOLDER, all found before training starts: error names them "
                       "all and stops, skip trains on the rest (default: error)")  # fmt: skip
    _add_threads_option(train)


def _add_data_options(data: Any) -> None:
    """--dataset and what it reads: the data root, columns, classes, streaming; --validation; --epochs."""
    data.add_argument("--dataset", default=None, metavar="SOURCE", help="train on a named data set (mnist, "
                      "fashion-mnist, cifar10: downloaded once to --data-root, with labels and a preset sized to it), "
                      "a Hugging Face dataset (hf:NAME_OR_PATH) or WebDataset tar shards (shards:PATTERN, e.g. "
                      "shards:data/train-{000000..000099}.tar)")  # fmt: skip
    data.add_argument("--data-root", type=Path, default=None, metavar="DIR", help="where the named data sets are "
                      "downloaded to and read from (default: $DENOISING_DIFFUSION_DATA, else "
                      "~/.cache/denoising_diffusion/datasets)")  # fmt: skip
    data.add_argument("--no-download", action="store_true", help="never download a named data set: a missing one "
                      "is an error listing the files to put under --data-root")  # fmt: skip
    data.add_argument("--split", default="train", help="the split of an hf: dataset to train on (default: train)")
    data.add_argument("--streaming", action=argparse.BooleanOptionalAction, default=None, help="read an hf: "
                      "dataset as a stream, shard by shard, instead of loading it (default: stream Hub ids, load "
                      "local data)")  # fmt: skip
    data.add_argument(
        "--image-column",
        default=None,
        metavar="NAME",
        help="the image column of an hf: dataset, "
        "or the image suffix of shards (default: the first Image column; the first of jpg, png, ...)",
    )
    data.add_argument("--label-column", default=None, metavar="NAME", help="the label column (default: the first "
                      "ClassLabel column; cls in shards), read with --class-cond")  # fmt: skip
    data.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        metavar="N",
        help="the number of classes "
        "of a labelled stream whose labels are plain integers (shards; non-ClassLabel columns)",
    )
    data.add_argument("--shuffle-window", type=positive_int, default=1000, metavar="N", help="records of a stream "
                      "shuffled together, after its shards are (default: 1000)")  # fmt: skip
    data.add_argument("--validation", default=None, metavar="SOURCE", help="held-out data for a validation loss at "
                      "each milestone (fixed t and noise; results/validation.csv): a split of --dataset (e.g. "
                      "test), a folder, or a --dataset SOURCE")  # fmt: skip
    data.add_argument("--validation-num", type=positive_int, default=1000, metavar="N", help="validation items "
                      "kept (default: 1000)")  # fmt: skip
    data.add_argument("--epochs", type=positive_int, default=None, metavar="N", help="train for N passes over the "
                      "data instead of --steps: steps = ceil(N x items / (batch size x grad accum))")  # fmt: skip


def _add_class_options(cond: Any) -> None:
    """--class-cond, --cond-drop-prob, --sample-guidance."""
    cond.add_argument("--class-cond", action="store_true", help="class-conditional: labels from FOLDER's sub-folders "
                      "(one per class), --dataset's labels, or the built-in shapes' 8 classes (shape x colour); "
                      "sample by class name afterwards")  # fmt: skip
    cond.add_argument("--cond-drop-prob", type=float, default=None, help="how often a label is replaced by the null "
                      "class while training, which trains the unconditional branch that classifier-free guidance "
                      "needs (default: 0.1, Ho & Salimans 2021)")  # fmt: skip
    cond.add_argument("--sample-guidance", type=float, default=1.0, metavar="S", help="classifier-free guidance "
                      "scale of the sample grids and GIF (default: 1, the conditional model as it is)")  # fmt: skip


def _add_process_options(group: Any) -> None:
    """--process, --sigma-max, --loss-weighting (GaussianDiffusion's process, process_options, loss_weighting)."""
    group.add_argument(
        "--process",
        choices=registered_processes(),
        default=None,
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
        default=None,
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
