"""``denoising-diffusion reflow CHECKPOINT --pairs N``: rectified flow's reflow (Liu et al. 2023, Alg. 1).

1. Couplings: N noise draws x_1 and the samples x_0 the teacher's deterministic sampler makes from them (``--sampler``,
   ``--steps``), written to ``RESULTS/couplings.pt`` (or read from ``--couplings FILE``);
2. the student, a RectifiedFlow with the teacher's network (and weights, unless ``--init scratch``) on the straight
   path, trained by the Trainer on x_t = (1 − t) x_0 + t x_1 with target x_1 − x_0 (``RESULTS/model-*.pt``);
3. the straightness S (Liu et al. eq. 5) of the teacher (when it is a flow model) and of the student along their
   own Euler trajectories, printed.

The student samples in one or a few Euler steps: ``denoising-diffusion sample RESULTS/model-K.pt --steps 1``.
docs/flow.md and docs/cli.md give every option with its default and why.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..diffusion import GaussianDiffusion
from ..pipeline import build, checkpoint_spec, load_pipeline, spec_of
from ..reflow import (
    CouplingDataset,
    describe_couplings,
    generate_couplings,
    load_couplings,
    model_straightness,
    save_couplings,
    student_of,
)
from ..registry import kind_named
from ..samplers import SAMPLERS
from ..training import Trainer
from .args import _add_threads_option, device, non_negative_int, positive_int

DETERMINISTIC = [info.name for info in SAMPLERS.values() if not info.stochastic] + ["ddim"]


def add_reflow_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reflow",
        help="straighten a trained model by reflow (rectified flow): couplings, then a student trained on them",
        description="Generate N (noise, sample) couplings from CHECKPOINT with a deterministic sampler, train the "
        "next rectified flow on their straight interpolations, and report the straightness of both flows "
        "(Liu et al. 2023, Alg. 1 and eq. 5). The student samples in one or a few Euler steps.",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="a trained diffusion model (model-*.pt)")
    p.add_argument("--pairs", type=positive_int, required=True, metavar="N", help="couplings to generate (required)")
    p.add_argument("--sampler", choices=sorted(set(DETERMINISTIC)), default="heun",
                   help="the teacher's deterministic ODE sampler (default: heun, second order)")  # fmt: skip
    p.add_argument("--steps", type=positive_int, default=None, metavar="S",
                   help="the teacher sampler's steps (default: its recommended count; heun: 25)")  # fmt: skip
    p.add_argument("--couplings", type=Path, default=None, metavar="FILE",
                   help="train on this coupling set instead of generating one (its first N pairs)")  # fmt: skip
    p.add_argument("--results", type=Path, default=Path("reflow"), help="output folder (default: ./reflow)")
    p.add_argument("--init", choices=("teacher", "scratch"), default="teacher",
                   help="the student's starting weights: the teacher's (default, as Liu et al.) or fresh")  # fmt: skip
    p.add_argument("--train-steps", type=positive_int, default=1000, help="student optimizer steps (default: 1000)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="pairs per training step (default: 32)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4, fine-tuning)")
    p.add_argument("--save-every", type=positive_int, default=500, help="steps between checkpoints (default: 500)")
    p.add_argument("--student-steps", type=positive_int, default=1,
                   help="the student's default sampling steps, its sampling_timesteps (default: 1)")  # fmt: skip
    p.add_argument("--gen-batch-size", type=positive_int, default=64, help="pairs per teacher call (default: 64)")
    p.add_argument("--guidance", type=float, default=1.0, metavar="S",
                   help="classifier-free guidance of the couplings (a conditional teacher; default: 1)")  # fmt: skip
    p.add_argument("--straightness-pairs", type=non_negative_int, default=64, metavar="M",
                   help="noise draws for the straightness report, 0 for none (default: 64)")  # fmt: skip
    p.add_argument("--straightness-steps", type=positive_int, default=32,
                   help="Euler steps along which straightness is measured (default: 32)")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of couplings, training, reports (default: 0)")
    p.add_argument("--no-ema", action="store_true", help="the teacher's online weights instead of its EMA")
    p.add_argument("--device", type=device, default=None, help="default: cuda if available, else cpu")
    _add_threads_option(p)
    p.set_defaults(run=run_reflow)


def load_teacher(path: Path, use_ema: bool, dev: torch.device) -> tuple[GaussianDiffusion, dict[str, Any]]:
    """The trained diffusion model in ``path`` and its spec; ValueError naming what the file holds otherwise (a
    classifier, a coupling set, a model at step 0)."""
    checkpoint = load_checkpoint(path)
    config = checkpoint.get("config")
    name = config.get("kind") if isinstance(config, dict) else None
    kind = kind_named(str(name)) if name is not None else None
    if name == "CouplingSet" or kind is None or not issubclass(kind.cls, GaussianDiffusion):
        raise ValueError(f"{path} holds a {name or 'file of another kind'!r}, not a trained diffusion model: reflow "
                         "needs a GaussianDiffusion checkpoint (written by train, or a pipeline file)")  # fmt: skip
    if checkpoint.get("step") == 0:
        raise ValueError(f"{path} is a diffusion model at step 0 (untrained): its couplings would be noise")
    return load_pipeline(path, use_ema=use_ema, device=dev), checkpoint_spec(checkpoint)


def run_reflow(args: argparse.Namespace) -> int:
    """The ``reflow`` subcommand."""
    dev = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher, spec = load_teacher(args.checkpoint, not args.no_ema, dev)
    generator = torch.Generator(device=dev).manual_seed(args.seed)
    if args.couplings is not None:
        couplings = load_couplings(args.couplings)
        if len(couplings) < args.pairs:
            raise ValueError(f"--couplings {args.couplings} holds {len(couplings)} pairs, fewer than --pairs")
        path = args.couplings
    else:
        couplings = generate_couplings(
            teacher, args.pairs, sampler=args.sampler, steps=args.steps, batch_size=args.gen_batch_size,
            generator=generator, guidance_scale=args.guidance,
            teacher_spec={**spec, "checkpoint": str(args.checkpoint)},
        )  # fmt: skip
        path = save_couplings(couplings, args.results / "couplings.pt")
    print(f"couplings:  {path} ({describe_couplings(couplings)})")
    network = None if args.init == "teacher" else build(spec_of(teacher.model))
    student = student_of(teacher, network, sampling_timesteps=args.student_steps)
    subset = torch.utils.data.Subset(CouplingDataset(couplings), range(args.pairs))
    trainer = Trainer(
        student, subset, train_batch_size=args.batch_size, train_lr=args.lr, train_num_steps=args.train_steps,
        save_and_sample_every=args.save_every, results_folder=args.results, augment_horizontal_flip=False,
        num_workers=0, seed=args.seed, num_samples=min(16, args.pairs),
    )  # fmt: skip
    trainer.train()
    if not trainer.accelerator.is_main_process:
        return 0
    last = trainer.checkpoint_path(trainer.milestone_of(trainer.step))
    print(f"student:    {last} (a RectifiedFlow: `sample {last} --steps 1` takes one Euler step)")
    if args.straightness_pairs:
        report_straightness(teacher, load_pipeline(last, device=dev), args)
    return 0


def report_straightness(teacher: GaussianDiffusion, student: GaussianDiffusion, args: argparse.Namespace) -> None:
    """Print S (mean ± standard error over --straightness-pairs draws) of the teacher (a flow model) and student; a
    class-conditional model's draws cycle through its classes."""
    rows = [("teacher", teacher)] if teacher.process == "flow" else []
    num_classes = student.condition_spec.num_classes
    condition: dict[str, Any] = (
        {} if num_classes is None else {"classes": torch.arange(args.straightness_pairs) % num_classes}
    )
    for label, model in [*rows, ("student", student)]:
        generator = torch.Generator(device=model.device).manual_seed(args.seed + 1)  # the same noise for both
        s = model_straightness(model, args.straightness_pairs, steps=args.straightness_steps, generator=generator,
                               **condition)  # fmt: skip
        error = float(s.std()) / math.sqrt(len(s)) if len(s) > 1 else float("nan")
        print(f"straightness S ({label}): {float(s.mean()):.5f} ± {error:.5f}  (Liu et al. eq. 5, per element, "
              f"{args.straightness_steps} Euler steps, {len(s)} draws)")  # fmt: skip
