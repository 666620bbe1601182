"""`denoising-diffusion inpaint` and `img2img`, run in-process through main([...]) on tiny untrained checkpoints
written with save_pipeline (as test_cli.py's `sample` tests do)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from denoising_diffusion.cli import main
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.pipeline import save_pipeline

SIZE = 8
TILE = SIZE + 2  # torchvision's grid: 2 px of padding before each image


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected a message on stderr"
    return err[-1]


def tiny_checkpoint(path: Path, **unet_options) -> Path:
    torch.manual_seed(0)
    unet = Unet(8, dim_mults=(1, 2), channels=3, resnet_block_groups=4, attn_heads=2, attn_dim_head=8, **unet_options)
    names = {"class_names": ["cat", "dog", "owl"]} if unet_options.get("num_classes") else {}
    diffusion = GaussianDiffusion(unet, image_size=SIZE, timesteps=20, sampling_timesteps=4, **names)
    return save_pipeline(diffusion, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints (unconditional, class-conditional), an 8x8 RGB image (no resizing at the model's size, so its
    8-bit pixels are the model's input exactly) and its mask: white (keep) left half, black (fill) right half."""
    root = tmp_path_factory.mktemp("editing")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "image.png")
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[:, : SIZE // 2] = 255
    Image.fromarray(mask).save(root / "mask.png")
    return {
        "plain": tiny_checkpoint(root / "plain.pt"),
        "classes": tiny_checkpoint(root / "classes.pt", num_classes=3),
        "image": root / "image.png",
        "mask": root / "mask.png",
    }


def tiles(grid_path: Path, count: int, per_row: int) -> list[np.ndarray]:
    """The images of a PNG grid (H, W, 3) uint8, in order."""
    grid = np.asarray(Image.open(grid_path).convert("RGB"))
    return [
        grid[2 + (i // per_row) * TILE : 2 + (i // per_row) * TILE + SIZE, 2 + (i % per_row) * TILE :][:, :SIZE]
        for i in range(count)
    ]


def test_inpaint_keeps_the_white_part_of_the_mask_and_writes_a_gif(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "filled.png"
    argv = ["inpaint", str(files["plain"]), str(files["image"]), str(files["mask"]), "--num", "3",
            "--jump-length", "2", "--resample", "2", "--seed", "0", "--device", "cpu", "--threads", "1"]  # fmt: skip
    assert main([*argv, "--out", str(out), "--gif"]) == 0
    printed = capsys.readouterr().out
    assert f"inpainted:  {out}" in printed and str(out.with_suffix(".gif")) in printed
    source = np.asarray(Image.open(files["image"]).convert("RGB"))
    for tile in tiles(out, 3, per_row=2):  # 3 images, ceil(sqrt(3)) = 2 per row
        assert np.array_equal(tile[:, : SIZE // 2], source[:, : SIZE // 2])  # kept, to the 8-bit value
        assert not np.array_equal(tile[:, SIZE // 2 :], source[:, SIZE // 2 :])  # filled
    with Image.open(out.with_suffix(".gif")) as gif:
        assert gif.n_frames > 1
    again = tmp_path / "again.png"
    assert main([*argv, "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()  # --seed


def test_inpaint_with_classes_and_guidance(files, tmp_path: Path) -> None:
    """--class by name and --guidance as for sample; without --class a class-conditional model gets one class per
    row (3 rows of --num // 3)."""
    common = [str(files["classes"]), str(files["image"]), str(files["mask"]), "--jump-length", "2", "--resample", "1"]
    out = tmp_path / "owl.png"
    assert main(["inpaint", *common, "--class", "owl", "--guidance", "2", "--num", "2", "--out", str(out)]) == 0
    with Image.open(out) as grid:
        assert grid.size == (2 + 2 * TILE, 2 + 1 * TILE)
    rows = tmp_path / "rows.png"
    assert main(["inpaint", *common, "--num", "6", "--out", str(rows)]) == 0
    with Image.open(rows) as grid:
        assert grid.size == (2 + 2 * TILE, 2 + 3 * TILE)


def test_img2img_strength_zero_is_the_image_and_one_is_sample(files, tmp_path: Path) -> None:
    """--strength 0 writes the image itself; --strength 1 writes exactly the grid `sample` writes with the same
    seed, sampler and options."""
    image = str(files["image"])
    zero = tmp_path / "zero.png"
    assert main(["img2img", str(files["plain"]), image, "--strength", "0", "--num", "2", "--out", str(zero)]) == 0
    source = np.asarray(Image.open(files["image"]).convert("RGB"))
    assert all(np.array_equal(tile, source) for tile in tiles(zero, 2, per_row=2))
    options = ["--num", "4", "--sampler", "ddim", "--eta", "0.5", "--steps", "3", "--seed", "5"]
    edited, sampled = tmp_path / "edited.png", tmp_path / "sampled.png"
    assert main(["img2img", str(files["plain"]), image, "--strength", "1", *options, "--out", str(edited)]) == 0
    assert main(["sample", str(files["plain"]), *options, "--out", str(sampled)]) == 0
    assert edited.read_bytes() == sampled.read_bytes()
    half = tmp_path / "half.png"
    argv = ["img2img", str(files["classes"]), image, "--strength", "0.5", "--class-index", "1", "--guidance", "3",
            "--sampler", "dpmpp_2m", "--num", "2", "--gif", "--out", str(half)]  # fmt: skip
    assert main(argv) == 0
    with Image.open(half.with_suffix(".gif")) as gif:
        assert gif.n_frames >= 2  # the noised image and the steps after it


@pytest.mark.parametrize(
    "argv, message",
    [
        (["img2img", "{plain}", "{image}", "--strength", "1.5"], "argument --strength: expected a number in [0, 1]"),
        (["img2img", "{plain}", "{image}"], "the following arguments are required: --strength"),
        (["img2img", "{plain}", "{image}", "--strength", "0.5", "--sampler", "ddpm", "--eta", "1"],
         "sampler 'ddpm' takes no option 'eta' (its options: variance); img2img's other keywords are the conditions"),
        (["img2img", "{plain}", "{missing}", "--strength", "0.5"], "cannot read image file"),
        (["inpaint", "{plain}", "{image}", "{missing}"], "cannot read image file"),
        (["inpaint", "{plain}", "{image}", "{mask}"], "jump_length=10 leaves no room to resample on a chain of 4"),
        (["inpaint", "{plain}", "{image}", "{mask}", "--jump-length", "0"], "argument --jump-length: expected an"),
        (["inpaint", "{plain}", "{image}", "{mask}", "--jump-length", "2", "--class-index", "0"],
         "takes no condition, so it cannot be given 'classes'"),
        (["inpaint", "{classes}", "{image}", "{mask}", "--jump-length", "2", "--class", "emu"], "unknown class 'emu'"),
        (["inpaint", "{missing}", "{image}", "{mask}"], "checkpoint file not found"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_exit_2(files, tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    paths = {**{name: str(path) for name, path in files.items()}, "missing": str(tmp_path / "nope.png")}
    out = tmp_path / "out.png"
    assert main([part.format(**paths) for part in argv] + ["--out", str(out)]) == 2
    line = error_line(capsys)
    assert message in line and "Traceback" not in line
    assert not out.exists()
