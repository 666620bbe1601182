"""The defaults of ``train``: a preset per data source and image size, the image size read from the data, and the EMA
sized to the run.

* Without FOLDER: :data:`BUILTIN_PRESET`, a recipe measured to draw clean discs and squares in about two minutes on
  two CPU cores (docs/cli.md, "How the demo recipe was chosen").
* With FOLDER: the image size is the data's (:func:`infer_image_size`: the largest of :data:`SIZE_PRESETS`' sizes
  that does not upscale the median image) unless ``--image-size`` says otherwise, and the network, schedule and
  training recipe come from the preset of that size (:func:`preset_for_size`). A 16-px folder then trains like the
  demo instead of as a 128-px, 100,000-step GPU job on images upscaled eightfold (issue 28).
* Upscaling by more than :data:`MAX_UPSCALE` (an ``--image-size`` far above the images' own) is refused unless
  ``--allow-upscale``: it costs the time of the larger size and teaches the model blurred images.
* The EMA decay, unless given, is sized to the run (:func:`ema_decay_for`): it averages about the last quarter of
  the steps, as the demo's 0.995 over 800 steps does, so the grids of a short folder run are as clear as its
  online weights (a fixed 0.995 updated every 10 steps averaged weights from near the start of a 300-step run).
* With ``--dataset NAME`` (mnist, fashion-mnist, cifar10) the preset is that data set's (:data:`NAMED_PRESETS`); with
  ``--dataset hf:...`` or ``shards:...`` it is chosen as for a folder, from the first image's size.
* ``--epochs N`` sets the steps from the data's length (:func:`steps_for_epochs`).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields, replace
from typing import Any

from ..data.named import named_dataset
from ..processes import process_class

BUILTIN_IMAGES = 2048  # BuiltinShapes length: enough variety that 800 steps of 32 images never repeat a batch
MAX_UPSCALE = 2.0  # how far --image-size may exceed the images' median short side without --allow-upscale
EMA_SHARE = 4  # the EMA averages about the last 1/EMA_SHARE of the steps (the demo's measured 0.995 over 800 steps)
EMA_DECAY_RANGE = (0.9, 0.9999)  # the sized decay is clipped to this range (10 to 10,000 steps of memory)


@dataclass(frozen=True)
class TrainPreset:
    """The defaults of every ``train`` option that differs between data sources and image sizes."""

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
    ema_decay: float | None  # None: sized to the steps (ema_decay_for)
    ema_update_every: int
    save_every: int
    num_samples: int
    seed: int | None
    gif: bool
    resnet_blocks: int | tuple[int, ...] = 2  # Unet's layout options (the same in every preset)
    attention: str | tuple[str, ...] | None = None  # None: Unet's full_attn default
    mid_attn: bool = True
    gradient_checkpointing: bool = False
    clip_denoised: bool = True  # GaussianDiffusion's sampling options (the same in every preset)
    rederive_eps: bool = True
    flip: bool = True  # random left-right flips (Trainer's augment_horizontal_flip); off where a mirror image is wrong


# The documented defaults of Unet, GaussianDiffusion and Trainer; image size and width from the tutorial (DESIGN.md).
# The EMA is updated every step with a decay sized to the run (module docstring), not the Trainer's 0.995 every 10.
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
    ema_decay=None,
    ema_update_every=1,
    save_every=1000,
    num_samples=25,
    seed=None,
    gif=False,
)

# A few minutes on a 2-core CPU, and the samples clearly show coloured discs and squares (timing: docs/cli.md).
# ddim_eta=1: after 800 steps deterministic DDIM (eta=0) tints the backgrounds; stochastic sampling does not.
SMALL_RECIPE = dict(
    dim=16, dim_mults=(1, 2, 2), sampling_timesteps=50, ddim_eta=1.0, batch_size=32, lr=1e-3, steps=800, save_every=200
)
BUILTIN_PRESET = replace(FOLDER_PRESET, image_size=16, seed=0, gif=True, **SMALL_RECIPE)  # type: ignore[arg-type]

# Folder presets by image size. 16 px: the demo's recipe (its data is 16 px). 32 px: twice the width and one more
# level, sampled as the demo (its cost is printed at the start on a CPU). 64 and 128 px: the library's defaults.
SIZE_PRESETS: dict[int, TrainPreset] = {
    16: replace(FOLDER_PRESET, image_size=16, **SMALL_RECIPE),  # type: ignore[arg-type]
    32: replace(
        FOLDER_PRESET,
        image_size=32,
        dim=32,
        dim_mults=(1, 2, 2, 2),
        sampling_timesteps=50,
        ddim_eta=1.0,
        batch_size=32,
        lr=5e-4,
        steps=5000,
    ),  # fmt: skip
    64: replace(FOLDER_PRESET, image_size=64),
    128: FOLDER_PRESET,
}


# The tutorial's data sets. 28 px does not take four levels (28 / 8 is not an integer): three levels, 28, 14 and 7 px,
# with full attention at 7x7, instead of padding to 32 (a third more pixels, all border) or resizing (blurred strokes).
# CIFAR-10: DDPM's (1, 2, 2, 2) at half its width (Ho et al. 2020, App. B). Grids: DDIM 50 steps, eta = 1, as the
# small presets. Digits are not flipped (a mirrored 3 is no digit). Not measured for quality: a GPU's recipe, and the
# cost is printed at the start on a CPU. Batch 128 and lr 2e-4: DDPM's CIFAR-10 recipe.
_TUTORIAL = dict(sampling_timesteps=50, ddim_eta=1.0, batch_size=128, lr=2e-4, gif=True)
NAMED_PRESETS: dict[str, TrainPreset] = {
    "mnist": replace(FOLDER_PRESET, image_size=28, channels=1, dim=32, dim_mults=(1, 2, 4), steps=5000,
                     flip=False, **_TUTORIAL),  # type: ignore[arg-type]
    "fashion-mnist": replace(FOLDER_PRESET, image_size=28, channels=1, dim=32, dim_mults=(1, 2, 4), steps=5000,
                             **_TUTORIAL),  # type: ignore[arg-type]
    "cifar10": replace(FOLDER_PRESET, image_size=32, channels=3, dim=64, dim_mults=(1, 2, 2, 2), steps=100_000,
                       save_every=5000, **_TUTORIAL),  # type: ignore[arg-type]
}  # fmt: skip


def named_preset(dataset: str | None) -> TrainPreset | None:
    """The preset of ``--dataset`` when it names one of NAMED_PRESETS (aliases as data/named.py takes them)."""
    if dataset is None or ":" in dataset:
        return None
    return NAMED_PRESETS[named_dataset(dataset).name]


def steps_for_epochs(epochs: int, num_items: int, batch_size: int, grad_accum: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``num_items`` items: ceil(epochs · num_items / (batch_size ·
    grad_accum)), batch_size being the global micro-batch (the command line's --batch-size, split over processes)."""
    return max(1, math.ceil(epochs * num_items / (batch_size * grad_accum)))


def with_epochs(opts: TrainPreset, epochs: int | None, num_items: int | None, ema_given: bool) -> TrainPreset:
    """``opts`` with the steps of ``epochs`` (and the EMA decay sized to them unless given); unchanged without
    epochs. ValueError when the data's length is unknown (a stream that does not know it)."""
    if epochs is None:
        return opts
    if num_items is None:
        raise ValueError("--epochs needs the number of items in the data, which this stream does not know: give "
                         "--steps instead")  # fmt: skip
    opts = replace(opts, steps=steps_for_epochs(epochs, num_items, opts.batch_size, opts.grad_accum))
    return opts if ema_given else replace(opts, ema_decay=ema_decay_for(opts.steps))


def preset_for_size(image_size: int) -> TrainPreset:
    """The folder preset of the largest preset size <= ``image_size`` (the smallest for smaller images), at
    ``image_size``."""
    fitting = [size for size in SIZE_PRESETS if size <= image_size] or [min(SIZE_PRESETS)]
    return replace(SIZE_PRESETS[max(fitting)], image_size=image_size)


def infer_image_size(median_side: int) -> int:
    """The training size for images whose median short side is ``median_side`` px: the largest preset size that
    does not upscale them; below the smallest, their side rounded down to a multiple of 4 (at least 4), which the
    smallest preset's three levels divide."""
    fitting = [size for size in SIZE_PRESETS if size <= median_side]
    return max(fitting) if fitting else max(4, median_side // 4 * 4)


def check_upscale(image_size: int, median_side: int, allow: bool) -> None:
    """ValueError when ``image_size`` would upscale the median image by more than MAX_UPSCALE and ``allow`` is off."""
    factor = image_size / median_side
    if factor > MAX_UPSCALE and not allow:
        raise ValueError(
            f"--image-size {image_size} would upscale the images {factor:.3g}x (their median short side is "
            f"{median_side} px; the limit is {MAX_UPSCALE:g}x): leave --image-size out to train at "
            f"{infer_image_size(median_side)} px, or pass --allow-upscale to train on upscaled images"
        )


def ema_decay_for(steps: int) -> float:
    """An EMA decay that averages about the last 1/EMA_SHARE of ``steps`` updates: 1 − EMA_SHARE/steps, clipped to
    EMA_DECAY_RANGE (0.995 for the demo's 800 steps)."""
    low, high = EMA_DECAY_RANGE
    return min(high, max(low, 1.0 - EMA_SHARE / steps))


def sized_ema_decay(opts: TrainPreset) -> float:
    """The options' EMA decay: the one given, else sized to the steps (:func:`ema_decay_for`)."""
    return ema_decay_for(opts.steps) if opts.ema_decay is None else opts.ema_decay


def resolve_train_options(args: argparse.Namespace, data_side: int | None = None) -> TrainPreset:
    """The preset for the data source, with every option given on the command line applied.

    With FOLDER (or --dataset hf:/shards:) the preset is that of the image size (``--image-size``, else the
    one inferred from ``data_side``, the images' median short side (the first image's for a data set), else
    128); a named --dataset has its own preset (NAMED_PRESETS). A preset's sampling_timesteps is capped at T
    when only --timesteps was given (e.g. --timesteps 20); the EMA decay is sized to the steps unless --ema-decay
    was given. ValueError for an --image-size that upscales the data more than MAX_UPSCALE without
    --allow-upscale.
    """
    given = {f.name: getattr(args, f.name) for f in fields(TrainPreset) if getattr(args, f.name, None) is not None}
    named = named_preset(getattr(args, "dataset", None))
    if named is not None:
        preset = named
    elif args.folder is None and getattr(args, "dataset", None) is None:
        preset = BUILTIN_PRESET
    elif "image_size" in given:
        preset = preset_for_size(given["image_size"])
        if data_side is not None:
            check_upscale(given["image_size"], data_side, getattr(args, "allow_upscale", False))
    else:
        preset = FOLDER_PRESET if data_side is None else preset_for_size(infer_image_size(data_side))
    own_objective = process_class(args.process).objective if getattr(args, "process", None) else None
    if own_objective is not None and "objective" not in given:
        given["objective"] = own_objective  # process 'edm' trains EDM's preconditioned network
    opts = replace(preset, **given)
    if "sampling_timesteps" not in given and opts.sampling_timesteps is not None:
        opts = replace(opts, sampling_timesteps=min(opts.sampling_timesteps, opts.timesteps))
    return replace(opts, ema_decay=sized_ema_decay(opts))


def show(name: str, value: Any) -> str:
    """A preset value as help text: tuples as '1,2,4'; None as what it means for that option."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if value is None:
        return {
            "sampling_timesteps": "T", "seed": "random", "attention": "full at the deepest level, linear above",
            "ema_decay": f"1 - {EMA_SHARE}/steps, within {EMA_DECAY_RANGE[0]}-{EMA_DECAY_RANGE[1]}",
        }.get(name, "none")  # fmt: skip
    return str(value)


def preset_help(text: str, name: str) -> str:
    """``text`` and the option's defaults: the folder's (by image size when they differ) and the built-in data's."""
    by_size = {size: show(name, getattr(preset, name)) for size, preset in SIZE_PRESETS.items()}
    builtin = show(name, getattr(BUILTIN_PRESET, name))
    if name == "image_size":
        folder = "the images' own, one of " + ", ".join(map(str, SIZE_PRESETS))
    elif len(set(by_size.values())) == 1:
        folder = by_size[128]
    else:
        folder = ", ".join(f"{value} at {size} px" for size, value in by_size.items())
    if folder == builtin:
        return f"{text} (default: {folder})"
    return f"{text} (default for a folder: {folder}; built-in data: {builtin})"
