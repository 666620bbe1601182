"""Latent diffusion from the shell: `train-autoencoder FOLDER --factor 4`, then `train FOLDER --latent CKPT` (with
cached latents, and resumed), and `sample` decoding to images; bad input ends in one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.cli import main
from tests.trainer_helpers import isolated_accelerate  # noqa: F401 (autouse fixture)

SIDE = 16
RUN = ["--batch-size", "4", "--steps", "2", "--save-every", "2", "--seed", "0", "--threads", "1"]


def write_images(folder: Path, count: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_autoencoder_then_latent_diffusion_then_samples(tmp_path: Path, capsys) -> None:
    images = write_images(tmp_path / "images")
    ae_args = ["train-autoencoder", str(images), "--factor", "4", "--dim", "8", "--num-samples", "2"]
    assert main([*ae_args, *RUN, "--results", str(tmp_path / "ae")]) == 0
    autoencoder = tmp_path / "ae" / "model-1.pt"
    assert f"--latent {autoencoder}" in capsys.readouterr().out
    assert (tmp_path / "ae" / "sample-1.png").exists()

    latent_args = ["train", str(images), "--latent", str(autoencoder), "--latent-cache", str(tmp_path / "cache"),
                   "--dim", "8", "--num-samples", "2", "--results", str(tmp_path / "ldm")]  # fmt: skip
    assert main([*latent_args, *RUN]) == 0
    assert "16x16 images <-> 4x4x4 latents (factor 4)" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("latents-*.pt"))) == 1
    checkpoint = load_checkpoint(tmp_path / "ldm" / "model-1.pt")
    assert checkpoint["config"]["kind"] == "LatentDiffusion" and checkpoint["config"]["scale_factor"] > 0
    assert checkpoint["trainer"]["options"]["train_num_steps"] == 2

    resumed = [a if a != "2" or i != RUN.index("--steps") + 1 else "3" for i, a in enumerate(RUN)]
    assert main([*latent_args, *resumed, "--resume", "auto"]) == 0
    assert "resumed at step 2 of 3" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("latents-*.pt"))) == 1  # the checkpoint's autoencoder: the same key

    out = tmp_path / "samples.png"
    argv = ["sample", str(tmp_path / "ldm" / "model-2.pt"), "--num", "2", "--steps", "2", "--seed", "0"]
    assert main([*argv, "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    with Image.open(out) as grid:  # two 16-px images in one row of a torchvision grid (2 px of padding)
        assert grid.size == (2 * (SIDE + 2) + 2, SIDE + 4)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train-autoencoder", "{images}", "--factor", "3"], "factor must be a power of two"),
        (["train-autoencoder", "{images}", "--image-size", "18"], "(18, 18) is not divisible by the autoencoder's"),
        (["train", "{images}", "--latent-cache", "{tmp}/cache"], "--latent-cache is for latent diffusion"),
        (["train", "{images}", "--latent", "{tmp}/unet"], "describes a UNet2DModel, not an AutoencoderKL"),
        (["train", "{images}", "--latent", "{tmp}/nothing.pt"], "no such file or directory"),
        (
            ["train", "{images}", "--latent", "{tmp}/unet", "--super-resolution", "8:16"],
            "--latent and --super-resolution cannot be combined",
        ),
    ],
)
def test_bad_latent_options_end_in_one_error_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    images = write_images(tmp_path / "images", count=2)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    filled = [a.format(images=images, tmp=tmp_path) for a in argv]
    assert main([*filled, *RUN, "--results", str(tmp_path / "r")]) == 2
    assert message in error_line(capsys)
