"""The command line: ``denoising-diffusion train|sample|samplers`` (also ``python -m denoising_diffusion``).

* ``train [FOLDER]``: train a Unet + GaussianDiffusion with the Trainer. Without FOLDER it trains on the built-in
  procedural shapes with a small recipe that finishes in a few minutes on a laptop CPU (:data:`BUILTIN_PRESET`);
  with FOLDER the defaults are those of Unet, GaussianDiffusion and Trainer (:data:`FOLDER_PRESET`).
* ``sample CHECKPOINT``: rebuild the pipeline from a checkpoint alone and write a PNG grid (and a denoising GIF).
* ``samplers``: list the sampler registry.

User errors (a missing folder or checkpoint, an empty folder, a corrupt checkpoint, an invalid option value) end
with one line ``denoising-diffusion: error: <message>`` on stderr and exit status 2, never a traceback.
docs/cli.md documents every option and why its default was chosen.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from denoising_diffusion import __version__
from denoising_diffusion.checkpoint import load_pipeline
from denoising_diffusion.data import OnBadImage, get_builtin_dataset
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.losses import LossType
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.parameterization import Objective
from denoising_diffusion.samplers import SAMPLERS, SamplerName
from denoising_diffusion.schedules import BetaSchedule, Spacing
from denoising_diffusion.trainer import Trainer
from denoising_diffusion.viz import save_denoising_gif, save_image_grid

PROG = "denoising-diffusion"
EXIT_USAGE = 2  # argparse's status for bad arguments; used for every user error
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


# The documented defaults of Unet, GaussianDiffusion and Trainer; image size and width from the tutorial (DESIGN.md).
FOLDER_PRESET = TrainPreset(
    image_size=128, channels=3, dim=64, dim_mults=(1, 2, 4, 8), timesteps=1000, sampling_timesteps=None, ddim_eta=0.0,
    objective="pred_noise", beta_schedule="cosine", loss_type="l2", batch_size=16, lr=1e-4, steps=100_000,
    grad_accum=1, ema_decay=0.995, ema_update_every=10, save_every=1000, num_samples=25, seed=None, gif=False)

# Measured on a 2-core CPU: about 2.5 minutes, samples clearly show coloured discs and squares (docs/cli.md).
# ddim_eta=1: after 800 steps deterministic DDIM (eta=0) tints the backgrounds; stochastic sampling does not.
BUILTIN_PRESET = replace(
    FOLDER_PRESET, image_size=16, dim=16, dim_mults=(1, 2, 2), sampling_timesteps=50, ddim_eta=1.0, batch_size=32,
    lr=1e-3, steps=800, ema_update_every=1, save_every=200, seed=0, gif=True)


# ----------------------------------------------------------------------------------------------------------------------
# Argument types: each raises ArgumentTypeError, which argparse reports as "argument --x: <message>".


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def dim_mults(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): comma-separated positive integers."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,2,4, got {text!r}")
    return tuple(int(part) for part in parts)


def milestone(text: str) -> int | str:
    """'latest' or a positive milestone number."""
    if text == "latest" or (text.isdigit() and int(text) >= 1):
        return text if text == "latest" else int(text)
    raise argparse.ArgumentTypeError(f"expected a milestone number >= 1 or 'latest', got {text!r}")


def device(text: str) -> torch.device:
    """A torch device name: cpu, cuda, cuda:1, mps ..."""
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None


def _values(enum: Any) -> list[str]:
    return [member.value for member in enum]


# ----------------------------------------------------------------------------------------------------------------------
# The parser.


def _show(name: str, value: Any) -> str:
    """A preset value as help text: tuples as '1,2,4'; None as what it means for that option."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if value is None:
        return {"sampling_timesteps": "T", "seed": "random"}.get(name, "none")
    return str(value)


def _preset_help(text: str, name: str) -> str:
    folder, builtin = _show(name, getattr(FOLDER_PRESET, name)), _show(name, getattr(BUILTIN_PRESET, name))
    if folder == builtin:
        return f"{text} (default: {folder})"
    return f"{text} (default: {folder}; built-in data: {builtin})"


def _add_threads_option(parser: Any) -> None:
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's own choice; 1 helps on a busy machine)")


def _add_train_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train on a folder of images, or on built-in shapes when no folder is given",
        description="Train a Unet + GaussianDiffusion. Without FOLDER: a small demo on procedurally generated "
        "shapes (a few minutes on a CPU), ending with a denoising GIF. With FOLDER: the library's defaults. "
        "Every option overrides either default set.")
    p.add_argument("folder", nargs="?", default=None, metavar="FOLDER",
                   help="image folder, read recursively (jpg, jpeg, png, webp, bmp, tif, tiff); omit it to train on "
                   "built-in shapes")
    model = p.add_argument_group("model (saved in the checkpoint)")
    for flag, name, kind, text in [
        ("--image-size", "image_size", positive_int, "image side in pixels; images are resized and center-cropped"),
        ("--channels", "channels", positive_int, "image channels: 1, 3 or 4"),
        ("--dim", "dim", positive_int, "Unet base width (a multiple of 8)"),
        ("--dim-mults", "dim_mults", dim_mults, "Unet width multiplier per resolution level, e.g. 1,2,4"),
        ("--timesteps", "timesteps", positive_int, "T, the length of the diffusion chain"),
        ("--sampling-timesteps", "sampling_timesteps", positive_int,
         "reverse steps for sample grids; below T the default sampler is DDIM, at T ancestral DDPM"),
        ("--ddim-eta", "ddim_eta", float, "DDIM's eta for sample grids: 0 deterministic, 1 ancestral"),
    ]:
        model.add_argument(flag, type=kind, default=None, help=_preset_help(text, name))
    for flag, name, enum, text in [("--objective", "objective", Objective, "what the network predicts"),
                                   ("--beta-schedule", "beta_schedule", BetaSchedule, "noise schedule"),
                                   ("--loss-type", "loss_type", LossType, "training distance")]:
        model.add_argument(flag, choices=_values(enum), default=None, help=_preset_help(text, name))
    train = p.add_argument_group("training")
    for flag, name, kind, text in [
        ("--batch-size", "batch_size", positive_int, "images per micro-batch"),
        ("--lr", "lr", float, "Adam learning rate"),
        ("--steps", "steps", positive_int, "optimizer steps in total (a resumed run continues to this number)"),
        ("--grad-accum", "grad_accum", positive_int, "micro-batches per optimizer step"),
        ("--ema-decay", "ema_decay", float, "EMA decay of the sampling network"),
        ("--ema-update-every", "ema_update_every", positive_int, "optimizer steps between EMA updates"),
        ("--save-every", "save_every", positive_int, "steps between checkpoints and sample grids"),
        ("--num-samples", "num_samples", non_negative_int, "images per sample grid and GIF (0: none)"),
        ("--seed", "seed", non_negative_int, "seed of weights, data order and sample noise"),
    ]:
        train.add_argument(flag, type=kind, default=None, help=_preset_help(text, name))
    train.add_argument("--gif", action=argparse.BooleanOptionalAction, default=None,
                       help=_preset_help("write results/denoising.gif from the EMA network at the end", "gif"))
    train.add_argument("--results", type=Path, default=Path("results"), help="output folder (default: ./results)")
    train.add_argument("--amp", action="store_true", help="mixed precision (fp16 on GPU, bf16 on CPU)")
    train.add_argument("--resume", type=milestone, default=None, metavar="MILESTONE",
                       help="continue from results/model-MILESTONE.pt; 'latest': the newest one, or a fresh start "
                       "when there is none")
    train.add_argument("--on-bad-image", choices=_values(OnBadImage), default=OnBadImage.ERROR.value,
                       help="what to do with an unreadable image file in FOLDER (default: error)")
    _add_threads_option(train)
    p.set_defaults(run=run_train)


def _add_sample_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sample", help="sample images from a checkpoint",
        description="Rebuild the model from CHECKPOINT alone (its config travels inside) and write a grid of samples.")
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a model-*.pt written by train")
    p.add_argument("--num", type=positive_int, default=16, help="number of images (default: 16)")
    p.add_argument("--sampler", choices=_values(SamplerName), default=None,
                   help=f"see `{PROG} samplers` (default: the model's own, DDIM when its sampling_timesteps < T, "
                   "else DDPM)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="network evaluations (default: the model's sampling_timesteps)")
    p.add_argument("--eta", type=float, default=None, help="DDIM's eta, 0 deterministic .. 1 ancestral "
                   "(ddim only; default: the model's ddim_sampling_eta)")
    p.add_argument("--spacing", choices=_values(Spacing), default=None,
                   help="which timesteps to visit (default: the model's timestep_spacing, else the sampler's own)")
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="output PNG grid (default: samples.png)")
    p.add_argument("--gif", action="store_true", help="also write the denoising GIF next to --out (same stem, .gif)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of the noise (default: random)")
    p.add_argument("--no-ema", action="store_true", help="use the online weights instead of the EMA weights")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per network call (default: 64)")
    p.add_argument("--device", type=device, default=None, help="default: cuda if available, else cpu")
    _add_threads_option(p)
    p.set_defaults(run=run_sample)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of all subcommands; each sets ``args.run`` to its handler."""
    parser = argparse.ArgumentParser(prog=PROG, description="Denoising diffusion models: train, sample, inspect.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_sample_parser(subparsers)
    samplers = subparsers.add_parser("samplers", help="list the available samplers",
                                     description="List the samplers that --sampler accepts.")
    samplers.set_defaults(run=run_samplers)
    return parser


# ----------------------------------------------------------------------------------------------------------------------
# train


def resolve_train_options(args: argparse.Namespace) -> TrainPreset:
    """The preset for the data source (folder or built-in), with every option given on the command line applied.

    A preset's sampling_timesteps is capped at T when only --timesteps was given (e.g. --timesteps 20).
    """
    preset = FOLDER_PRESET if args.folder is not None else BUILTIN_PRESET
    given = {f.name: getattr(args, f.name) for f in fields(TrainPreset) if getattr(args, f.name) is not None}
    opts = replace(preset, **given)
    if "sampling_timesteps" not in given and opts.sampling_timesteps is not None:
        opts = replace(opts, sampling_timesteps=min(opts.sampling_timesteps, opts.timesteps))
    return opts


def build_diffusion(opts: TrainPreset) -> GaussianDiffusion:
    """Unet + GaussianDiffusion from the resolved options (ValueError for options that cannot build a model)."""
    unet = Unet(opts.dim, dim_mults=opts.dim_mults, channels=opts.channels)
    return GaussianDiffusion(unet, image_size=opts.image_size, timesteps=opts.timesteps,
                             sampling_timesteps=opts.sampling_timesteps, ddim_sampling_eta=opts.ddim_eta,
                             objective=opts.objective, beta_schedule=opts.beta_schedule, loss_type=opts.loss_type)


def _resume(trainer: Trainer, wanted: int | str | None) -> None:
    if wanted is None:
        return
    number = trainer.latest_milestone() if wanted == "latest" else wanted
    if number is None:
        print(f"no checkpoint in {trainer.results_folder}; starting from step 0")
        return
    trainer.load(int(number))
    print(f"resumed from {trainer.checkpoint_path(int(number))} at step {trainer.step}")


def write_training_gif(trainer: Trainer, num: int, seed: int | None, path: Path) -> Path:
    """A denoising GIF of ``num`` samples from the trainer's EMA network (noise seeded by ``seed`` or the data seed)."""
    dev = trainer.accelerator.device
    ema_diffusion = trainer.diffusion.with_model(trainer.ema.ema_model).to(dev)
    generator = torch.Generator(device=dev).manual_seed(trainer.data_seed if seed is None else seed)
    trajectory = ema_diffusion.sample(num, generator=generator, return_all_timesteps=True)
    return save_denoising_gif(trajectory.cpu(), path)


def run_train(args: argparse.Namespace) -> int:
    """The ``train`` subcommand: build, train, then report the files written."""
    opts = resolve_train_options(args)
    if args.folder is not None:
        data: Any = args.folder
        print(f"training on the images in {args.folder}")
    else:
        data = get_builtin_dataset("shapes", opts.image_size, channels=opts.channels, num_images=BUILTIN_IMAGES)
        print(f"training on {BUILTIN_IMAGES} built-in {opts.image_size}x{opts.image_size} shape images "
              f"({opts.steps} steps; pass a FOLDER to train on your own images)")
    diffusion = build_diffusion(opts)
    trainer = Trainer(diffusion, data, train_batch_size=opts.batch_size, gradient_accumulate_every=opts.grad_accum,
                      train_lr=opts.lr, train_num_steps=opts.steps, ema_update_every=opts.ema_update_every,
                      ema_decay=opts.ema_decay, save_and_sample_every=opts.save_every,
                      num_samples=opts.num_samples, results_folder=args.results, amp=args.amp,
                      on_bad_image=args.on_bad_image, seed=opts.seed)
    _resume(trainer, args.resume)
    trainer.train()
    if not trainer.accelerator.is_main_process:
        return 0  # only the main process writes (and reports)
    milestone_number = trainer.milestone_of(trainer.step)
    written = [("checkpoint", trainer.checkpoint_path(milestone_number)),
               ("samples", trainer.results_folder / f"sample-{milestone_number}.png"),
               ("loss log", trainer.results_folder / "loss.csv")]
    if opts.gif and opts.num_samples > 0:
        written.append(("denoising", write_training_gif(trainer, opts.num_samples, opts.seed,
                                                        trainer.results_folder / "denoising.gif")))
    for label, path in written:
        if path.exists():
            print(f"{label + ':':12}{path}")
    print(f"sample more with: {PROG} sample {trainer.checkpoint_path(milestone_number)} --gif")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# sample


def _batch_sizes(total: int, batch: int) -> list[int]:
    return [batch] * (total // batch) + ([total % batch] if total % batch else [])


def run_sample(args: argparse.Namespace) -> int:
    """The ``sample`` subcommand: rebuild from the checkpoint, sample, write the grid (and the GIF)."""
    dev = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {dev}: CUDA is not available on this machine; use --device cpu")
    diffusion = load_pipeline(args.checkpoint, use_ema=not args.no_ema, device=dev)
    generator = torch.Generator(device=dev)
    if args.seed is not None:
        generator.manual_seed(args.seed)
    else:
        generator.seed()
    chunks = [diffusion.sample(n, sampler=args.sampler, steps=args.steps, eta=args.eta, spacing=args.spacing,
                               generator=generator, return_all_timesteps=args.gif).cpu()
              for n in _batch_sizes(args.num, args.batch_size)]
    result = torch.cat(chunks)  # (N, C, H, W), or (N, S + 1, C, H, W) with --gif
    images = result[:, -1] if args.gif else result
    print(f"samples:    {save_image_grid(images, args.out, nrow=math.ceil(math.sqrt(args.num)))}")
    if args.gif:
        print(f"denoising:  {save_denoising_gif(result, args.out.with_suffix('.gif'))}")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# samplers and main


def run_samplers(args: argparse.Namespace) -> int:
    """The ``samplers`` subcommand: one line per registered sampler, name then description."""
    width = max(len(name.value) for name in SAMPLERS)
    for name, info in SAMPLERS.items():
        print(f"{name.value:<{width}}  {info.description}")
    return 0


def _one_line(err: BaseException) -> str:
    """The error's message on one line. An error re-raised from a DataLoader worker carries the worker's whole
    traceback in its message; its last line holds the original message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        last = lines[-1]
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        return last[len(prefix):] if last.startswith(prefix) else last
    return "; ".join(lines) if lines else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); returns the exit status.

    User errors print ``denoising-diffusion: error: <message>`` on stderr and return 2. ``--threads`` is undone
    before returning, so that calling main() in-process leaves torch as it found it.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or argparse's own usage error (already printed)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    threads = torch.get_num_threads()
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError; FileNotFoundError an OSError
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)
