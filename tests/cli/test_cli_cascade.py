"""``train --super-resolution LOW:HIGH`` and ``sample-cascade`` (docs/cascade.md), in-process through main([...])."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from denoising_diffusion import GaussianDiffusion, SuperResolution, Unet, save_pipeline
from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.cli import main
from tests.trainer_helpers import isolated_accelerate  # noqa: F401 (autouse fixture)

TINY = ["--dim", "8", "--dim-mults", "1,2", "--timesteps", "20", "--sampling-timesteps", "3", "--batch-size", "4",
        "--steps", "2", "--save-every", "2", "--num-samples", "3", "--threads", "1"]  # fmt: skip
SMALL = {"dim": 8, "dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_train_a_class_conditional_stage_then_sample_the_cascade(tmp_path: Path, capsys) -> None:
    base, sr = tmp_path / "base", tmp_path / "sr"
    assert main(["train", *TINY, "--image-size", "8", "--class-cond", "--results", str(base)]) == 0
    assert main(["train", *TINY, "--super-resolution", "8:16", "--class-cond", "--aug-levels", "0,0.4",
                 "--aug-level", "0.2", "--results", str(sr)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"sample-cascade BASE_CHECKPOINT {sr / 'model-1.pt'}" in out
    assert sorted(p.name for p in sr.iterdir()) == ["loss.csv", "model-1.pt", "sample-1.png"]  # no GIF for a stage
    spec = load_checkpoint(sr / "model-1.pt")["config"]
    assert spec["kind"] == "SuperResolution" and spec["low_res_size"] == [8, 8] and spec["noise_levels"] == [0, 0.4]
    assert spec["sample_level"] == 0.2 and spec["diffusion"]["image_size"] == [16, 16]
    net = spec["diffusion"]["model"]
    assert net["cond_image_channels"] == 3 and net["cond_level"] and net["image_null"] and net["num_classes"] == 8

    out_png, cascade_file = tmp_path / "c" / "grid.png", tmp_path / "c" / "cascade.pt"
    argv = ["sample-cascade", str(base / "model-1.pt"), str(sr / "model-1.pt"), "--num", "4", "--steps", "3,2",
            "--guidance", "1,2", "--level", "0.1", "--class", "red disc", "--class", "blue square", "--seed", "3",
            "--threads", "1", "--save-stages", "--save-cascade", str(cascade_file), "--out", str(out_png)]  # fmt: skip
    assert main(argv) == 0
    assert pixels(out_png.with_name("grid-stage0.png")).shape == (2 + 2 * 10, 2 + 2 * 10, 3)
    assert pixels(out_png).shape == (2 + 2 * 18, 2 + 2 * 18, 3)
    again = tmp_path / "c" / "again.png"
    assert main(["sample-cascade", str(cascade_file), "--num", "4", "--class", "red disc", "--class", "blue square",
                 "--seed", "3", "--threads", "1", "--out", str(again)]) == 0  # fmt: skip
    assert np.array_equal(pixels(again), pixels(out_png))  # the file alone, with its stored per-stage options

    assert main(["train", *TINY, "--steps", "4", "--results", str(sr), "--resume", "auto"]) == 0
    assert "resumed at step 2 of 4" in capsys.readouterr().out
    assert load_checkpoint(sr / "model-2.pt")["config"]["kind"] == "SuperResolution"


@pytest.mark.parametrize("argv,message", [
    (["--super-resolution", "12:32"], r"low_res_size 12 must be smaller than the stage's image_size 32 and divide"),
    (["--super-resolution", "16:32", "--image-size", "64"], r"--image-size 64 contradicts --super-resolution 16:32"),
    (["--aug-level", "0.2"], r"--aug-level need --super-resolution LOW:HIGH"),
    (["--super-resolution", "8:16", "--aug-levels", "0.5,0.2"], r"noise_levels must satisfy 0 <= lo <= hi <= 1"),
    (["--super-resolution", "8:16", "--aug-level", "0.8"], r"augmentation level 0.8 is outside \[0, 0.5\]"),
    (["--super-resolution", "32:16"], r"argument --super-resolution: expected LOW:HIGH in pixels with LOW < HIGH"),
])  # fmt: skip
def test_bad_stage_options_are_one_line_errors(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main(["train", *TINY, "--results", str(tmp_path / "r"), *argv]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "r" / "model-1.pt").exists()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    stage_net = Unet(**SMALL, cond_image_channels=3, cond_level=True, image_null=True)
    models = {
        "base8": GaussianDiffusion(Unet(**SMALL), image_size=8, timesteps=10),
        "base16": GaussianDiffusion(Unet(**SMALL), image_size=16, timesteps=10),
        "sr": SuperResolution(GaussianDiffusion(stage_net, image_size=16, timesteps=10), low_res_size=8),
    }
    return {name: save_pipeline(model, folder / f"{name}.pt") for name, model in models.items()}


@pytest.mark.parametrize("names,extra,message", [
    (["sr", "sr"], [], r"sr\.pt holds a super-resolution stage; the first file must be the base model"),
    (["base8", "base16"], [], r"base16\.pt holds a GaussianDiffusion, not a super-resolution stage"),
    (["base16", "sr"], [], r"sizes do not chain: stage 1 \(super-resolution 8x8 -> 16x16\) takes 3-channel 8x8"),
    (["base8"], [], r"base8\.pt holds a GaussianDiffusion, not a cascade"),
    (["base8", "sr"], ["--level", "0.9"], r"augmentation level 0.9 is outside \[0, 0.5\]"),
    (["base8", "sr"], ["--steps", "1,2,3"], r"--steps takes one value or one per stage \(2\), got 3"),
    (["base8", "sr"], ["--level", "0.1,0.2"], r"--level takes one value or one per super-resolution stage \(1\)"),
    (["base8", "sr"], ["--class", "cat"], "no stage of this cascade takes class labels"),
])  # fmt: skip
def test_bad_cascades_are_one_line_errors(files, names, extra, message: str, tmp_path: Path, capsys) -> None:
    argv = ["sample-cascade", *(str(files[n]) for n in names), "--num", "1", "--steps", "1", *extra]
    out = tmp_path / "out.png"
    assert main([*argv, "--out", str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]) and not out.exists()
