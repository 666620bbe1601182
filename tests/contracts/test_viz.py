"""Tests for denoising_diffusion.viz: PNG grids and denoising GIFs (frame count, size, durations, input checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from denoising_diffusion.viz import save_denoising_gif, save_image_grid, select_frames


def gif_frames(path: Path) -> tuple[int, tuple[int, int], list[int]]:
    """(number of frames, (width, height), per-frame durations in ms) of a GIF file."""
    with Image.open(path) as image:
        durations = []
        for i in range(image.n_frames):
            image.seek(i)
            durations.append(image.info["duration"])
        return image.n_frames, image.size, durations


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and stall when the CPU is shared)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def test_png_grid_is_written_with_grid_geometry(tmp_path: Path) -> None:
    path = save_image_grid(torch.rand(6, 3, 8, 8), tmp_path / "out" / "grid.png")  # folder created
    with Image.open(path) as image:
        # nrow = ceil(sqrt(6)) = 3 columns, 2 rows, 2-pixel padding around every tile.
        assert image.size == (3 * (8 + 2) + 2, 2 * (8 + 2) + 2)


def test_png_grid_accepts_grayscale_and_explicit_nrow(tmp_path: Path) -> None:
    path = save_image_grid(torch.rand(4, 1, 8, 8) * 3 - 1, tmp_path / "gray.png", nrow=4)  # out of range: clamped
    with Image.open(path) as image:
        assert image.size == (4 * 10 + 2, 12)


def test_gif_has_one_frame_per_step_and_upscaled_tiles(tmp_path: Path) -> None:
    trajectory = torch.rand(2, 10, 3, 8, 8)  # (B, S, C, H, W)
    path = save_denoising_gif(trajectory, tmp_path / "denoise.gif", nrow=2, duration_ms=50, hold_last_ms=700)
    frames, size, durations = gif_frames(path)
    assert frames == 10
    assert size == (2 * (64 + 2) + 2, 64 + 2 + 2)  # 8x8 tiles upscaled 8x to 64x64
    assert durations[:-1] == [50] * 9 and durations[-1] == 700


def test_gif_subsamples_long_trajectories_and_keeps_the_last_step(tmp_path: Path) -> None:
    assert select_frames(5, 60) == [0, 1, 2, 3, 4]
    chosen = select_frames(1001, 60)
    assert len(chosen) == 60 and chosen[0] == 0 and chosen[-1] == 1000
    assert select_frames(10, 1) == [9]
    path = save_denoising_gif(torch.rand(1, 101, 3, 16, 16), tmp_path / "long.gif", max_frames=12)
    frames, size, _ = gif_frames(path)
    assert frames == 12 and size == (64, 64)  # 16x16 upscaled 4x; a single image gets no padding


def test_gif_from_a_list_of_grayscale_batches(tmp_path: Path) -> None:
    steps = [torch.rand(3, 1, 8, 8) for _ in range(4)]
    frames, _, _ = gif_frames(save_denoising_gif(steps, tmp_path / "gray.gif", upscale=1))
    assert frames == 4


def test_gif_last_frame_shows_the_sample(tmp_path: Path) -> None:
    trajectory = torch.rand(1, 3, 3, 8, 8)
    trajectory[:, -1] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # the final sample is pure red
    path = save_denoising_gif(trajectory, tmp_path / "red.gif", upscale=1, padding=0)
    with Image.open(path) as image:
        image.seek(image.n_frames - 1)
        assert image.convert("RGB").getpixel((4, 4)) == (255, 0, 0)


@pytest.mark.parametrize(
    "bad",
    [torch.rand(2, 3, 8, 8), torch.rand(2, 3, 2, 8, 8), torch.rand(0, 3, 3, 8, 8), []],
    ids=["4d", "2-channels", "empty-batch", "empty-list"],
)
def test_gif_rejects_wrong_shapes(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError):
        save_denoising_gif(bad, tmp_path / "bad.gif")
    assert not (tmp_path / "bad.gif").exists()


def test_gif_rejects_mismatched_frames_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="share one shape"):
        save_denoising_gif([torch.rand(2, 3, 8, 8), torch.rand(2, 3, 4, 4)], tmp_path / "a.gif")
    with pytest.raises(ValueError, match="max_frames"):
        save_denoising_gif(torch.rand(1, 4, 3, 8, 8), tmp_path / "b.gif", max_frames=0)
    with pytest.raises(ValueError, match="upscale"):
        save_denoising_gif(torch.rand(1, 4, 3, 8, 8), tmp_path / "c.gif", upscale=0)


def test_png_grid_rejects_wrong_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        save_image_grid(torch.rand(3, 8, 8), tmp_path / "x.png")
    with pytest.raises(ValueError, match="nrow"):
        save_image_grid(torch.rand(2, 3, 8, 8), tmp_path / "y.png", nrow=0)


def test_gif_of_a_real_sampling_trajectory(tmp_path: Path) -> None:
    from denoising_diffusion.diffusion import GaussianDiffusion
    from denoising_diffusion.nn.unet import Unet

    unet = Unet(8, dim_mults=(1, 2), channels=1, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=10)
    trajectory = diffusion.sample(batch_size=4, return_all_timesteps=True)  # (4, 11, 1, 8, 8)
    frames, _, _ = gif_frames(save_denoising_gif(trajectory, tmp_path / "sample.gif"))
    assert 1 < frames <= 11  # identical consecutive frames may be merged by Pillow
