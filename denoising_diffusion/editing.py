"""Editing images with a trained model: inpainting (RePaint) and image-to-image (SDEdit). Neither needs training.

* :func:`inpaint` (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models"):
  fill the pixels where a mask is 0, keeping those where it is 1 (samplers/repaint.py).
* :func:`invert`: DDIM inversion (Song et al. 2021, §4.1; its deterministic update run from x_0 up to x_T).
* :func:`img2img` (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
  Equations"): diffuse an image part of the way, x_t ~ q(x_t | x_0), and run any sampler from there.

All are free functions of a model (``GaussianDiffusion.inpaint`` / ``img2img`` / ``invert`` call them) that run
through its sampling runner (sampling.py, ``runner_of``), as ``sample`` does: the condition and guidance, eval mode,
inference mode, the trajectory and the output range. Images enter and leave in [0, 1] (the model's data range with
auto_normalize off). This module imports sampling.py, below it; nothing here calls back into the model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .conditioning import CONDITION_NAMES, broadcast_condition, class_indices
from .data.batch import check_images
from .denoiser import Callback
from .processes import CLEAN, Time
from .samplers import SAMPLERS, SamplerName, invert_ddim, sample_repaint
from .samplers.common import diffuse
from .samplers.repaint import repaint_schedule
from .sampling import runner_of

# ----- inpainting ----------------------------------------------------------------------------------------------------


def inpaint(
    diffusion: Any,
    images: Tensor,
    mask: Tensor,
    *,
    jump_length: int = 10,
    resample: int = 10,
    steps: int | None = None,
    spacing: str | None = None,
    variance: str | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    return_all_timesteps: bool = False,
    guidance_scale: float = 1.0,
    guidance_rescale: float = 0.0,
    classifier: nn.Module | None = None,
    classifier_scale: float = 1.0,
    **condition: Any,
) -> Tensor:
    """Fill the pixels of ``images`` where ``mask`` is 0 with RePaint (Lugmayr et al. 2022, Alg. 1 + resampling).

    Args:
        images: (B, C, H, W) in [0, 1], the model's channels and image size; only the kept pixels are read.
        mask: (B, 1, H, W) (one mask for all channels) or (B, C, H, W), values in {0, 1} (or bool): 1 = keep,
            0 = fill.
        jump_length: j, reverse steps between jumps back, and the length of each jump (RePaint's default 10).
        resample: r, how often each stretch of j steps is run; 1 turns resampling off (RePaint's default 10).
        steps: length of the (respaced) chain the jumps move on; None: the model's sampling_timesteps. The network
            runs steps + (r − 1)·j·⌈(steps − j)/j⌉ times (2410 for RePaint's 250 steps, j = r = 10).
        spacing: which timesteps the chain visits; None: the model's timestep_spacing, else 'linspace' (DDPM's).
        variance: the reverse steps' variance ('fixed_small', 'fixed_large', 'learned_range'); None: the model's
            variance_type.
        generator: draws all noise.
        callback: a StepRecord per reverse step (tensors in the model's space).
        return_all_timesteps: return (B, S + 1, C, H, W), x_T first, one frame per reverse step.
        guidance_scale, guidance_rescale, classifier, classifier_scale, condition: as for ``sample`` (classes=,
            context=, ...): classifier-free and classifier guidance act on the denoiser, so on every reverse step.
    Returns:
        (B, C, H, W) in [0, 1], the kept pixels equal to ``images`` up to the normalize/unnormalize round trip.
    Raises:
        ValueError for images or a mask of the wrong shape, mask values other than 0 and 1, a condition that does
        not fit, or a jump longer than the chain.
    """
    runner = runner_of(diffusion)
    check_images(images, runner.shape)
    keep = check_mask(mask, images)
    timesteps = runner.times(steps, spacing)
    repaint_schedule(len(timesteps), jump_length, resample)  # its ValueErrors before any work
    options = SAMPLERS[SamplerName.DDPM].bind({"variance": variance}, runner.sampler_defaults())
    batch = images.shape[0]
    denoiser = runner.sampling_denoiser(
        batch, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, classifier=classifier,
        classifier_scale=classifier_scale, **condition,
    )  # fmt: skip
    known = runner.data.normalize(images.to(device=runner.device, dtype=runner.dtype))
    x_T = runner.prior(images.shape, generator)
    run = partial(sample_repaint, denoiser, schedule=runner.schedule, known=known, mask=keep.to(runner.device),
                  jump_length=jump_length, resample=resample, **options)  # fmt: skip
    return runner.run(run, x_T, timesteps, generator=generator, callback=callback,
                      return_all_timesteps=return_all_timesteps, also_eval=(classifier,))  # fmt: skip


# ----- image-to-image ------------------------------------------------------------------------------------------------


def img2img(
    diffusion: Any,
    images: Tensor,
    strength: float,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    spacing: str | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    return_all_timesteps: bool = False,
    guidance_scale: float = 1.0,
    guidance_rescale: float = 0.0,
    classifier: nn.Module | None = None,
    classifier_scale: float = 1.0,
    **condition_and_options: Any,
) -> Tensor:
    """SDEdit (Meng et al. 2022, Alg. 1): noise ``images`` to x_t ~ q(x_t | x_0) and sample from there.

    The sampler's timesteps are chosen as ``sample`` chooses them (``steps``, ``spacing``); ``strength`` keeps their
    last round(strength·steps) entries (:func:`strength_timesteps`, diffusers' img2img convention) and the run
    starts at the first kept index t: x_t = α_t x_0 + σ_t ε, ε from ``generator``.

    * strength 0 keeps no step: the input comes back unchanged (as it was given, not round-tripped).
    * strength 1 keeps every step: exactly ``diffusion.sample`` with the same generator (x_T ~ N(0, I) drawn as
      ``sample`` draws it; the input only sets the batch size).

    Args:
        images: (B, C, H, W) in [0, 1], the model's channels and image size.
        strength: in [0, 1]; how far towards noise the input is taken. Small values keep its details, large ones
            keep only its coarse layout.
        sampler, steps, spacing, generator, callback, return_all_timesteps, guidance_scale, guidance_rescale,
            classifier, classifier_scale: as for ``sample`` (return_all_timesteps: (B, k + 1, C, H, W) for k kept
            steps, x_t first).
        condition_and_options: the condition (classes=, context=, context_mask=, cond_image=, cond_level=) and the
            sampler's own options (eta=, variance=; bound as ``sample`` binds them).
    Raises:
        ValueError for a strength outside [0, 1], images of the wrong shape, an argument that is neither a condition
        nor an option of the sampler, or a condition that does not fit.
    """
    runner = runner_of(diffusion)
    check_images(images, runner.shape)
    strength = check_strength(strength)
    info = runner.sampler_info(sampler)
    condition = {name: value for name, value in condition_and_options.items() if name in CONDITION_NAMES}
    options = {  # None means "not given", as for sample()
        name: value
        for name, value in condition_and_options.items()
        if name not in CONDITION_NAMES and value is not None
    }
    also = f"img2img's other keywords are the conditions {', '.join(CONDITION_NAMES)}"
    bound = info.bind(options, runner.sampler_defaults(), also=also)
    batch = images.shape[0]
    denoiser = runner.sampling_denoiser(
        batch, guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, classifier=classifier,
        classifier_scale=classifier_scale, **condition,
    )  # fmt: skip
    timesteps = runner.times(steps, spacing, info)
    kept = strength_timesteps(timesteps, strength)
    if not kept:
        return images[:, None].clone() if return_all_timesteps else images.clone()
    if len(kept) == len(timesteps):  # ordinary sampling: x_T exactly as sample() draws it
        x_start = runner.prior((batch, *runner.shape), generator)
    else:
        x_0 = runner.data.normalize(images.to(device=runner.device, dtype=runner.dtype))
        x_start = diffuse(x_0, runner.schedule, CLEAN, kept[0], generator)
    run = partial(info.fn, denoiser, schedule=runner.schedule, **bound)
    return runner.run(run, x_start, kept, generator=generator, callback=callback,
                      return_all_timesteps=return_all_timesteps, also_eval=(classifier,))  # fmt: skip


def strength_timesteps(timesteps: Sequence[Time], strength: float) -> list[Time]:
    """The last round(strength · len(timesteps)) entries of a sampler's timesteps (halves round up): where SDEdit
    at ``strength`` starts and what it visits. [] at strength 0, all of them at 1."""
    strength = check_strength(strength)
    keep = math.floor(strength * len(timesteps) + 0.5)
    return list(timesteps[len(timesteps) - keep :])


# ----- checks --------------------------------------------------------------------------------------------------------


def check_strength(strength: Any) -> float:
    """``strength`` as a float in [0, 1]; ValueError for anything else (NaN, a string, a bool included)."""
    value = float(strength) if isinstance(strength, numbers.Real) and not isinstance(strength, bool) else math.nan
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"strength must be a number in [0, 1] (0: the input unchanged, 1: a new sample), got {strength!r}"
        )
    return value


def check_mask(mask: Any, images: Tensor) -> Tensor:
    """The mask as a bool tensor (True = keep); ValueError unless it is (B, 1, H, W) or (B, C, H, W) for images
    (B, C, H, W) and holds only 0 and 1."""
    batch, channels, height, width = images.shape
    if (
        not isinstance(mask, Tensor)
        or mask.ndim != 4
        or tuple(mask.shape)
        not in {
            (batch, 1, height, width),
            (batch, channels, height, width),
        }
    ):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"mask must have shape ({batch}, 1, {height}, {width}) or ({batch}, {channels}, {height}, {width}) "
            f"to match the images, got {shape}"
        )
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 (fill) and 1 (keep); threshold a soft mask first, e.g. mask > 0.5")
    return mask == 1


# ----- inversion -----------------------------------------------------------------------------------------------------


def invert(
    diffusion: Any, images: Tensor, *, steps: int | None = None, spacing: str | None = None, **condition: Any
) -> Tensor:
    """DDIM inversion: images (B, C, H, W) in [0, 1] -> the latent x_T (model space) from which ``sample(sampler=
    'ddim', eta=0, steps=steps)``'s update reconstructs them (samplers.invert_ddim). Uses the network without x̂_0
    clipping, so that the map stays smooth and invertible; ``condition`` is the network's (as for ``sample``)."""
    runner = runner_of(diffusion)
    check_images(images, runner.shape)
    timesteps = runner.times(steps, spacing, runner.sampler_info("ddim"))
    if "classes" in condition:  # class names, as sample() takes them
        condition["classes"] = class_indices(condition["classes"], runner.class_names)
    with torch.inference_mode():
        denoiser = runner.denoiser(False, **broadcast_condition(condition, images.shape[0]))
        return invert_ddim(denoiser, runner.data.normalize(images), runner.schedule, timesteps)
