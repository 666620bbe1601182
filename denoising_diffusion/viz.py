"""Pictures of samples: image grids (PNG) and animated denoising trajectories (GIF).

Images enter as float tensors in [0, 1] (values outside are clamped), with 1 (grayscale), 3 (RGB) or 4 (RGBA)
channels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid, save_image

_GIF_TARGET_SIDE = 64  # tiny images are upscaled (by an integer factor) to at least this many pixels a side


def _check_images(images: Tensor, name: str = "images") -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a tensor of shape (B, C, H, W), got {shape}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image, got shape {tuple(images.shape)}")
    if images.shape[1] not in (1, 3, 4):
        raise ValueError(f"{name} must have 1, 3 or 4 channels, got shape {tuple(images.shape)}")


def _default_nrow(batch: int, nrow: int | None) -> int:
    if nrow is None:
        return max(1, math.ceil(math.sqrt(batch)))
    if not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    return nrow


def save_image_grid(images: Tensor, path: str | os.PathLike[str], nrow: int | None = None, padding: int = 2) -> Path:
    """Save a batch as one grid image (format from the file extension, e.g. PNG).

    Args:
        images: (B, C, H, W) in [0, 1], C in {1, 3, 4}.
        path: the output file; its folder is created if needed.
        nrow: images per row; default ceil(sqrt(B)), a near-square grid.
        padding: pixels between images.

    Returns:
        The path written.
    """
    _check_images(images)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = images.detach().float().cpu().clamp(0.0, 1.0)
    save_image(images, path, nrow=_default_nrow(images.shape[0], nrow), padding=padding)
    return path


def save_images(images: Tensor, directory: str | os.PathLike[str], prefix: str = "sample") -> list[Path]:
    """Save each image of a batch (B, C, H, W) in [0, 1] as its own PNG, ``{prefix}-00000.png`` onwards, in
    ``directory`` (created if needed). Returns the paths, in batch order."""
    _check_images(images)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images = images.detach().float().cpu().clamp(0.0, 1.0)
    width = max(5, len(str(len(images) - 1)))
    paths = [directory / f"{prefix}-{i:0{width}d}.png" for i in range(len(images))]
    for image, path in zip(images, paths):
        save_image(image, path)
    return paths


def _stack_trajectory(trajectory: Tensor | Sequence[Tensor]) -> Tensor:
    """(B, S, C, H, W) tensor or a list of S tensors (B, C, H, W) -> (B, S, C, H, W) float on CPU."""
    if isinstance(trajectory, Tensor):
        if trajectory.ndim != 5:
            raise ValueError(f"trajectory must have shape (B, S, C, H, W), got {tuple(trajectory.shape)}")
        stacked = trajectory
    else:
        frames = list(trajectory)
        if not frames:
            raise ValueError("trajectory is empty")
        for i, frame in enumerate(frames):
            _check_images(frame, name=f"trajectory[{i}]")
        shapes = sorted({tuple(f.shape) for f in frames})
        if len(shapes) != 1:
            raise ValueError(f"all trajectory frames must share one shape, got {shapes}")
        stacked = torch.stack([f.detach().cpu() for f in frames], dim=1)
    if stacked.shape[1] < 1:
        raise ValueError("trajectory has no steps")
    _check_images(stacked[:, 0], name="trajectory frames")
    return stacked.detach().float().cpu()


def select_frames(num_steps: int, max_frames: int) -> list[int]:
    """Indices of at most ``max_frames`` steps out of ``num_steps``, evenly spaced, always ending at the last one."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if num_steps <= max_frames:
        return list(range(num_steps))
    if max_frames == 1:
        return [num_steps - 1]
    spaced = torch.linspace(0, num_steps - 1, max_frames).round().long().tolist()
    return sorted(set(spaced))  # linspace includes both ends, so the last step is kept


def _to_rgb(images: Tensor) -> Tensor:
    """(B, C, H, W) with C in {1, 3, 4} -> (B, 3, H, W); alpha is composited onto white."""
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] == 4:
        rgb, alpha = images[:, :3], images[:, 3:]
        return rgb * alpha + (1.0 - alpha)
    return images


def _frame_to_pil(images: Tensor, nrow: int, upscale: int, padding: int) -> Image.Image:
    """One step of the batch, (B, C, H, W) in [0, 1] -> an RGB grid image."""
    images = _to_rgb(images.clamp(0.0, 1.0))
    if upscale > 1:
        images = F.interpolate(images, scale_factor=upscale, mode="nearest")
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)  # (3, H', W')
    pixels = grid.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()  # -> (H', W', 3)
    return Image.fromarray(pixels.numpy())  # uint8 (H, W, 3) -> mode "RGB"


def save_denoising_gif(
    trajectory: Tensor | Sequence[Tensor],
    path: str | os.PathLike[str],
    nrow: int | None = None,
    duration_ms: int = 80,
    max_frames: int = 60,
    hold_last_ms: int = 1500,
    upscale: int | None = None,
    padding: int = 2,
) -> Path:
    """Write an animated GIF of a batch being denoised, one grid of the batch per frame, looping forever.

    Args:
        trajectory: (B, S, C, H, W) in [0, 1] (as ``diffusion.sample(..., return_all_timesteps=True)`` returns it:
            pure noise first, the sample last), or a list of S tensors (B, C, H, W).
        path: the output .gif; its folder is created if needed.
        nrow: images per row; default ceil(sqrt(B)).
        duration_ms: display time of each frame.
        max_frames: keep at most this many steps, evenly spaced; the last step (the sample) is always kept.
        hold_last_ms: display time of the last frame, so the result stays visible before the loop restarts.
        upscale: integer nearest-neighbour magnification; default: the smallest factor that makes each image at
            least 64 pixels a side (4 for 16x16 images), 1 for images already that large.
        padding: pixels between images.

    Returns:
        The path written. Pillow merges consecutive frames that are identical after colour quantisation, so
        the file can hold fewer frames than were selected when the trajectory stops changing.
    """
    frames = _stack_trajectory(trajectory)  # (B, S, C, H, W)
    batch, steps, _, height, width = frames.shape
    nrow = _default_nrow(batch, nrow)
    if upscale is None:
        upscale = max(1, math.ceil(_GIF_TARGET_SIDE / max(height, width)))
    if not isinstance(upscale, int) or upscale < 1:
        raise ValueError(f"upscale must be a positive int, got {upscale!r}")
    if duration_ms < 1 or hold_last_ms < 0:
        raise ValueError(f"duration_ms must be >= 1 and hold_last_ms >= 0, got {duration_ms}, {hold_last_ms}")
    indices = select_frames(steps, max_frames)
    images = [_frame_to_pil(frames[:, i], nrow, upscale, padding) for i in indices]
    durations = [duration_ms] * (len(images) - 1) + [max(duration_ms, hold_last_ms)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path
