"""``train --resume``: the model comes from the checkpoint's own config, so a resumed run needs no model option.

A checkpoint records the config of everything it holds (pipeline.py's spec), so ``train FOLDER --resume auto``
rebuilds the network and the diffusion from it (:func:`resumed_model`) instead of from the command line's options
and the presets. A model option given anyway must agree with the checkpoint; those that do not are one error in
the command line's own terms (:func:`check_resume_options`)::

    --dim: the checkpoint has 32, the command line says 64; --dim-mults: the checkpoint has 1,2, the command line
    says 1,2,4

Training options (steps, batch size, learning rate, EMA, ...) are not part of the model: they come from the command
line and the preset of the checkpoint's image size, as for a fresh run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..pipeline import Spec, build
from .presets import TrainPreset, resolve_train_options


def _pair(value: Any) -> tuple[int, int]:
    """An image size as (H, W): an int n is (n, n)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _levels(value: Any, levels: int) -> tuple[Any, ...]:
    """A per-level option as one value per level: a single value (int or str) is repeated."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * levels


def _attention(model: Mapping[str, Any]) -> tuple[str, ...]:
    """The Unet's attention per level: its ``attention`` option, else what its ``full_attn`` flags mean."""
    if model.get("attention") is not None:
        return _levels(model["attention"], len(model["dim_mults"]))
    return tuple("full" if full else "linear" for full in model["full_attn"])


@dataclass(frozen=True)
class RecordedOption:
    """A command-line option the checkpoint records: its flag, its argparse name, and how to read (and normalize for
    comparison) the checkpoint's value and the given one. ``recorded`` returning None means "not recorded": any value
    agrees."""

    flag: str
    dest: str
    recorded: Callable[[Spec], Any]
    given: Callable[[Any, Spec], Any] = lambda value, spec: value


RECORDED: tuple[RecordedOption, ...] = (
    RecordedOption("--image-size", "image_size", lambda s: _pair(s["image_size"]), lambda v, s: _pair(v)),
    RecordedOption("--channels", "channels", lambda s: s["model"]["channels"]),
    RecordedOption("--dim", "dim", lambda s: s["model"]["dim"]),
    RecordedOption("--dim-mults", "dim_mults", lambda s: tuple(s["model"]["dim_mults"])),
    RecordedOption(
        "--resnet-blocks",
        "resnet_blocks",
        lambda s: _levels(s["model"].get("resnet_blocks", 2), len(s["model"]["dim_mults"])),
        lambda v, s: _levels(v, len(s["model"]["dim_mults"])),
    ),
    RecordedOption(
        "--attention",
        "attention",
        lambda s: _attention(s["model"]),
        lambda v, s: _levels(v, len(s["model"]["dim_mults"])),
    ),  # fmt: skip
    RecordedOption("--mid-attn", "mid_attn", lambda s: s["model"].get("mid_attn", True)),
    RecordedOption("--timesteps", "timesteps", lambda s: s["timesteps"]),
    RecordedOption("--sampling-timesteps", "sampling_timesteps", lambda s: s["sampling_timesteps"]),
    RecordedOption("--ddim-eta", "ddim_eta", lambda s: s["ddim_sampling_eta"]),
    RecordedOption("--objective", "objective", lambda s: s["objective"]),
    RecordedOption("--beta-schedule", "beta_schedule", lambda s: s["beta_schedule"]),
    RecordedOption("--loss-type", "loss_type", lambda s: s["loss_type"]),
    RecordedOption("--clip-denoised", "clip_denoised", lambda s: s["clip_denoised"]),
    RecordedOption("--rederive-eps", "rederive_eps", lambda s: s["rederive_eps"]),
    RecordedOption("--process", "process", lambda s: s.get("process", "ddpm")),
    RecordedOption("--sigma-max", "sigma_max", lambda s: (s.get("process_options") or {}).get("sigma_max")),
    RecordedOption("--loss-weighting", "loss_weighting", lambda s: s.get("loss_weighting", "simple")),
    RecordedOption(
        "--class-cond", "class_cond", lambda s: s["model"].get("num_classes") is not None, lambda v, s: v or None
    ),  # fmt: skip
    RecordedOption("--cond-drop-prob", "cond_drop_prob", lambda s: s["model"].get("cond_drop_prob")),
)


def _show(value: Any) -> str:
    """A value as the command line writes it: 1,2,4; 16 (or 16x8); on/off; none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1] and isinstance(value[0], int):
        return str(value[0])
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def resume_conflicts(args: argparse.Namespace, spec: Spec) -> list[str]:
    """'--dim: the checkpoint has 32, the command line says 64' for every given model option the checkpoint
    contradicts."""
    found = []
    for option in RECORDED:
        value = getattr(args, option.dest, None)
        if value is None:
            continue
        recorded, given = option.recorded(spec), option.given(value, spec)
        if given is not None and recorded is not None and given != recorded:
            found.append(f"{option.flag}: the checkpoint has {_show(recorded)}, the command line says {_show(given)}")
    return found


def check_resume_options(args: argparse.Namespace, spec: Spec, source: str) -> None:
    """ValueError listing every conflict (:func:`resume_conflicts`) with the checkpoint ``source``."""
    conflicts = resume_conflicts(args, spec)
    if conflicts:
        raise ValueError(
            f"{'; '.join(conflicts)} (resuming {source}: the model is rebuilt from the checkpoint, so leave these "
            "options out, or pass other --results to start a new run)"
        )


# The recipe options a Trainer records in its checkpoints ("trainer" -> "options"), by their command-line names.
RECORDED_RECIPE = {
    "batch_size": "train_batch_size", "grad_accum": "gradient_accumulate_every", "lr": "train_lr",
    "steps": "train_num_steps", "save_every": "save_and_sample_every", "num_samples": "num_samples",
    "ema_decay": "ema_decay", "ema_update_every": "ema_update_every", "ema_sigma_rel": "ema_sigma_rel",
}  # fmt: skip


def resumed_options(args: argparse.Namespace, spec: Spec, recorded: Mapping[str, Any]) -> TrainPreset:
    """The options of a resumed run: the model's from the checkpoint; the recipe as given on the command line, else
    as the checkpoint's run had it (``recorded``: the Trainer's ``run_options``; milestones keep their numbers),
    else the preset of the checkpoint's image size. Sets ``args.ema_sigma_rel`` the same way."""
    model = spec["model"]
    height, width = _pair(spec["image_size"])
    side: Any = height if height == width else (height, width)
    given = {name: recorded[key] for name, key in RECORDED_RECIPE.items() if getattr(args, name) is None
             and recorded.get(key) is not None}  # fmt: skip
    args.ema_sigma_rel = given.pop("ema_sigma_rel", args.ema_sigma_rel)
    recipe = resolve_train_options(argparse.Namespace(**{**vars(args), **given, "image_size": height}))
    return replace(
        recipe, image_size=side, channels=model["channels"], dim=model["dim"], dim_mults=tuple(model["dim_mults"]),
        resnet_blocks=model.get("resnet_blocks", 2), attention=model.get("attention"),
        mid_attn=model.get("mid_attn", True), timesteps=spec["timesteps"],
        sampling_timesteps=spec["sampling_timesteps"], ddim_eta=spec["ddim_sampling_eta"],
        objective=spec["objective"], beta_schedule=spec["beta_schedule"], loss_type=spec["loss_type"],
        clip_denoised=spec["clip_denoised"], rederive_eps=spec["rederive_eps"],
    )  # fmt: skip


def resumed_model(spec: Spec, gradient_checkpointing: bool | None) -> Any:
    """The model the checkpoint describes (its weights are loaded by the Trainer); --gradient-checkpointing, which
    the checkpoint does not record, may differ from the first run's."""
    model = build(spec)
    if gradient_checkpointing is not None and hasattr(model.model, "gradient_checkpointing"):
        model.model.gradient_checkpointing = gradient_checkpointing
    return model
