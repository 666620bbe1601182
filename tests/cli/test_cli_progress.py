"""Every command that can run for more than a few seconds shows a progress bar on stderr saying what it does (the
sampler, its steps, the run and the network evaluations), driven by the samplers' StepRecord callback; tiny
untrained checkpoints, a folder of 8x8 images and the stand-in feature extractor of eval_helpers.py."""

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
from tests.trainer_helpers import isolated_accelerate  # noqa: F401 (autouse fixture)

STAND_IN = "tests.eval_helpers:pooled"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """An untrained 8x8 checkpoint (T = 20, 4 sampling steps), a folder of six 8x8 images, and a mask."""
    root = tmp_path_factory.mktemp("progress")
    torch.manual_seed(0)
    unet = Unet(8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    checkpoint = save_pipeline(GaussianDiffusion(unet, image_size=8, timesteps=20, sampling_timesteps=4),
                               root / "model-1.pt")  # fmt: skip
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f"{i}.png")
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(root / "mask.png")
    return {"checkpoint": checkpoint, "images": images, "image": images / "0.png", "mask": root / "mask.png"}


def bar_of(capsys, label: str) -> str:
    """The last state of the bar labelled ``label`` on stderr (tqdm redraws it after each \\r)."""
    err = capsys.readouterr().err
    states = [part for part in err.replace("\n", "\r").split("\r") if part.startswith(label)]
    assert states, f"no bar labelled {label!r} in stderr:\n{err}"
    return states[-1]


def test_sample_shows_the_sampler_steps_and_nfe(files, tmp_path: Path, capsys) -> None:
    argv = ["sample", str(files["checkpoint"]), "--num", "3", "--batch-size", "2", "--sampler", "heun", "--steps", "3"]
    assert main([*argv, "--out", str(tmp_path / "s.png"), "--seed", "0"]) == 0
    bar = bar_of(capsys, "sample: heun, 3 steps")
    assert "6/6" in bar and "run 2, step 3, NFE 6" in bar  # two batches of three steps; Heun: 2 evaluations a step


def test_inpaint_counts_every_reverse_step_of_repaint(files, tmp_path: Path, capsys) -> None:
    argv = ["inpaint", str(files["checkpoint"]), str(files["image"]), str(files["mask"]), "--num", "1", "--steps",
            "4", "--jump-length", "2", "--resample", "2", "--out", str(tmp_path / "i.png"), "--seed", "0"]  # fmt: skip
    assert main(argv) == 0
    bar = bar_of(capsys, "inpaint: RePaint, 4 steps, jumps of 2 x 2")
    assert "6/6" in bar  # 4 + (2 - 1)·2·⌈(4 - 2)/2⌉ reverse steps


def test_img2img_counts_the_kept_steps(files, tmp_path: Path, capsys) -> None:
    argv = ["img2img", str(files["checkpoint"]), str(files["image"]), "--strength", "0.5", "--num", "1",
            "--out", str(tmp_path / "e.png"), "--seed", "0"]  # fmt: skip
    assert main(argv) == 0
    assert "2/2" in bar_of(capsys, "img2img: ddim, 2 steps (strength 0.5)")  # half of the model's 4 (DDIM) steps


def test_nll_shows_its_batches(files, capsys) -> None:
    assert main(["nll", str(files["checkpoint"]), str(files["images"]), "--batch-size", "4"]) == 0
    assert "2/2" in bar_of(capsys, "nll: VLB")


@pytest.mark.parametrize("command", ["eval", "sweep"])
def test_eval_and_sweep_show_the_sampling(files, tmp_path: Path, capsys, command: str) -> None:
    common = [str(files["checkpoint"]), str(files["images"]), "--num", "4", "--batch-size", "4", "--features",
              STAND_IN, "--cache-dir", str(tmp_path), "--metrics", "fid"]  # fmt: skip
    if command == "eval":
        assert main(["eval", *common, "--steps", "3", "--sampler", "ddim"]) == 0
        assert "3/3" in bar_of(capsys, "eval: ddim, 3 steps")
    else:
        argv = ["sweep", *common, "--samplers", "ddim,heun", "--nfe", "3,5", "--plot", str(tmp_path / "p.png")]
        assert main(argv) == 0
        assert "13/13" in bar_of(capsys, "sweep: ddim,heun at NFE 3,5")  # ddim 3 + 5 steps, heun (2S - 1 NFE) 2 + 3


def test_train_classifier_shows_the_training_bar(tmp_path: Path, capsys) -> None:
    argv = ["train-classifier", "--image-size", "8", "--dim", "8", "--dim-mults", "1,2", "--timesteps", "20",
            "--batch-size", "4", "--steps", "2", "--save-every", "2", "--results", str(tmp_path / "c"),
            "--threads", "1"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "2/2 [" in err and "loss=" in err
