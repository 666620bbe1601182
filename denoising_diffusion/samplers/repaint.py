"""RePaint inpainting (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models",
Alg. 1 and the resampling schedule of §4.2), with any denoiser: the network is never told about the mask.

Each reverse step t → s draws the unknown pixels with an ancestral DDPM step and the known ones from the forward
process, x_s^known ~ q(x_s | x_0 = known), and joins them: x_s = m ⊙ x_s^known + (1 − m) ⊙ x_s^unknown (Alg. 1,
lines 5-8). The two halves only meet through the network's next prediction, so the filled-in pixels lag behind the
known ones; resampling gives them time to agree: after every ``jump_length`` reverse steps the state is diffused
forwards again by ``jump_length`` steps, x_t ~ q(x_t | x_s) (Alg. 1, line 10), and the stretch is re-run, ``resample``
times in all (§4.2, "jumps").

Levels: a chain of n timesteps t_0 > t_1 > … > t_{n−1} (any respacing) is walked in *levels*, level k standing for
the timestep t_{n−1−k} (level n − 1 is the first, noisiest entry) and level −1 for clean data. The schedule is a
list of levels in the order visited, consecutive entries differing by one: down is a reverse step, up a forward
jump (:func:`repaint_schedule`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..denoiser import Callback, Denoiser, StepRecord
from ..processes import CLEAN, Schedule, Time
from ..variance import VarianceType
from .common import diffuse, time_batch, time_pairs
from .ddpm import ddpm_step


def repaint_schedule(num_steps: int, jump_length: int = 10, resample: int = 10) -> list[int]:
    """The levels RePaint visits on a chain of ``num_steps`` timesteps, from num_steps − 1 (x_T) down to −1 (clean).

    Jump points are the levels 0, j, 2j, … below num_steps − j (j = ``jump_length``; the official code's
    ``get_schedule_jump`` with one sample per step). Each time the walk comes down to a jump point with jumps
    left, it goes back up j levels one at a time and comes down again; every jump point does so ``resample`` − 1
    times, so each stretch of j steps is run ``resample`` times. The final step 0 → −1 is taken once, after the
    last resampling. resample = 1 is the plain chain [n − 1, …, 0, −1].

    Example: ``repaint_schedule(5, 2, 2) == [4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]``.

    Reverse steps: num_steps + (resample − 1)·j·P, forward jumps (resample − 1)·j·P, with P = ⌈(num_steps − j)/j⌉
    jump points. ValueError unless all three arguments are positive integers, and, when resampling, the chain is
    longer than one jump (jump_length < num_steps).
    """
    for name, value in (("num_steps", num_steps), ("jump_length", jump_length), ("resample", resample)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if resample > 1 and jump_length >= num_steps:
        raise ValueError(
            f"jump_length={jump_length} leaves no room to resample on a chain of {num_steps} steps: "
            f"use a jump_length below {num_steps}, more steps, or resample=1"
        )
    jumps_left = {level: resample - 1 for level in range(0, num_steps - jump_length, jump_length)}
    level = num_steps - 1
    levels = [level]
    while level > CLEAN:
        level -= 1
        levels.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            for _ in range(jump_length):
                level += 1
                levels.append(level)
    return levels


@torch.no_grad()
def sample_repaint(
    denoiser: Denoiser,
    x_T: Tensor,
    schedule: Schedule,
    timesteps: Sequence[Time],
    *,
    known: Tensor,
    mask: Tensor,
    jump_length: int = 10,
    resample: int = 10,
    variance: str | VarianceType = VarianceType.FIXED_SMALL,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1): fill the pixels where ``mask`` is 0, keep those where it is 1.

    For each move of :func:`repaint_schedule` over ``timesteps`` (t → s between the timesteps of two levels):

    * down (a reverse step): x_s^unknown ~ N(μ̃(x_t, x̂_0), Σ), the ancestral DDPM step of ``sample_ddpm`` on the
      (respaced) chain, and x_s^known ~ q(x_s | x_0 = known) = N(α_s known, σ_s² I); x_s = m ⊙ x_s^known +
      (1 − m) ⊙ x_s^unknown. The last step, into clean data, returns x̂_0 and the known pixels exactly.
    * up (a jump back): x_t ~ q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, (1 − ᾱ_t/ᾱ_s) I), all pixels.

    Args:
        denoiser: (x_t, t) -> Prediction; it sees whole images and knows nothing of the mask.
        x_T: (B, C, H, W) noise at timesteps[0].
        schedule: the schedule of the model (schedules.Schedule).
        timesteps: strictly decreasing time indices (e.g. spaced_timesteps); jumps count entries of this list.
        known: the image in the model's space, broadcastable to x_T.
        mask: 1 = keep (known), 0 = fill; bool or {0, 1} values, broadcastable to x_T (e.g. (B, 1, H, W)).
        jump_length: j, reverse steps between jumps back (and the length of each jump).
        resample: r, how often each stretch of j steps is run (1: no resampling).
        variance: the reverse steps' variance, as sample_ddpm's.
        generator: source of all noise drawn.
        callback: receives a StepRecord after every reverse step (network evaluation); a jump back shows as the
            next record's x_t.
    Returns:
        (B, C, H, W), same dtype and device as x_T.
    """
    variance = VarianceType(variance)
    keep = _check_inputs(x_T, known, mask)
    known = known.to(device=x_T.device, dtype=x_T.dtype).expand_as(x_T)  # noise is drawn per sample, not shared
    ts = [t for _, t, _ in time_pairs(timesteps, schedule)] + [CLEAN]  # ts[n] = CLEAN: level k is ts[n - 1 - k]
    n = len(ts) - 1
    levels = repaint_schedule(n, jump_length, resample)
    x, index = x_T, 0
    for here, there in zip(levels, levels[1:]):
        t, s = ts[n - 1 - here], ts[n - 1 - there]
        if there > here:  # jump back: diffuse forwards from t up to s > t
            x = diffuse(x, schedule, t, s, generator)
            continue
        pred = denoiser(x, time_batch(x, t))
        unknown = ddpm_step(pred, x, schedule, t, s, variance, generator)
        known_s = known if s == CLEAN else diffuse(known, schedule, CLEAN, s, generator)
        x_next = torch.where(keep, known_s, unknown)
        if callback is not None:
            callback(StepRecord(index=index, t=t, x_t=x, x_next=x_next, pred_x0=pred.x0))
        x, index = x_next, index + 1
    return x


def _check_inputs(x_T: Tensor, known: Tensor, mask: Tensor) -> Tensor:
    """The mask as a bool tensor on x_T's device; ValueError unless known and mask broadcast to x_T and the mask
    holds only 0 and 1."""
    for name, value in (("known", known), ("mask", mask)):
        if not isinstance(value, Tensor):
            raise ValueError(f"{name} must be a tensor broadcastable to {tuple(x_T.shape)}, got {type(value).__name__}")
        try:
            fits = torch.broadcast_shapes(value.shape, x_T.shape) == x_T.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"{name} of shape {tuple(value.shape)} does not broadcast to x_T's {tuple(x_T.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold only 0 (fill) and 1 (keep)")
        mask = mask == 1
    return mask.to(x_T.device)
