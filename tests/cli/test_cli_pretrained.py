"""The command line with shared models: `export`, every command reading a saved model's directory or a Hub repo id
through one resolver (pretrained.resolve_source), and what `sample` writes (grid, images, GIF). Offline: the repo
id comes from a pre-filled cache, the upload goes to a stand-in for HfApi."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load, load_file

from denoising_diffusion.cli import main
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.pipeline import save_pipeline
from denoising_diffusion.pretrained import CONFIG_NAME, WEIGHTS_NAME
from tests.cli.test_cli import error_line
from tests.hub_helpers import StandInApi, fill_cache, offline_cache, stand_in_hub


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return offline_cache(tmp_path, monkeypatch)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A pipeline file of a tiny model of 10 steps (fewer than the ODE's default 100)."""
    torch.manual_seed(0)
    network = Unet(dim=8, dim_mults=(1, 2), resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    with torch.no_grad():
        network.final_conv.weight.normal_(0, 0.1)  # a network that is not the identity's zero init
    model = GaussianDiffusion(network, image_size=8, timesteps=10, sampling_timesteps=3)
    return save_pipeline(model, tmp_path / "model-1.pt")


def sample(source: str | Path, out: Path, *extra: str) -> int:
    return main(["sample", str(source), "--num", "4", "--seed", "5", "--out", str(out), "--threads", "1", *extra])


def test_export_then_sample_the_directory_and_the_repo_id(
    checkpoint: Path,
    tmp_path: Path,
    offline_hub: Path,
    capsys,
) -> None:
    exported = tmp_path / "exported"
    assert main(["export", str(checkpoint), str(exported)]) == 0
    assert f"exported:   {exported} (GaussianDiffusion)" in capsys.readouterr().out
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert json.loads((exported / CONFIG_NAME).read_text())["spec"]["timesteps"] == 10
    fill_cache(offline_hub, "someone/tiny", exported)
    grids = {name: tmp_path / f"{name}.png" for name in ("checkpoint", "directory", "repo")}
    for name, source in [("checkpoint", checkpoint), ("directory", exported), ("repo", "someone/tiny")]:
        assert sample(source, grids[name]) == 0
    assert np.array_equal(pixels(grids["directory"]), pixels(grids["checkpoint"]))
    assert np.array_equal(pixels(grids["repo"]), pixels(grids["checkpoint"]))


def test_export_pushes_to_the_hub_stand_in(checkpoint: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    stand_in_hub(monkeypatch)
    assert main(["export", str(checkpoint), str(tmp_path / "e"), "--push-to-hub", "someone/tiny", "--private"]) == 0
    assert "uploaded:   https://huggingface.co/someone/tiny/commit/abc" in capsys.readouterr().out
    assert StandInApi.calls[1][1]["private"] is True
    uploaded, exported = load(StandInApi.uploaded[WEIGHTS_NAME]), load_file(tmp_path / "e" / WEIGHTS_NAME)
    assert uploaded.keys() == exported.keys() and all(torch.equal(uploaded[k], exported[k]) for k in exported)
    assert main(["export", str(checkpoint), str(tmp_path / "f"), "--push-to-hub", "tiny"]) == 2
    assert "repo_id must read namespace/name" in error_line(capsys)
    assert not (tmp_path / "f").exists()  # refused before writing


def test_a_repo_id_not_cached_offline_is_one_line(tmp_path: Path, offline_hub: Path, capsys) -> None:
    assert sample("someone/missing", tmp_path / "s.png") == 2
    line = error_line(capsys)
    assert "'someone/missing' is no local directory" in line and "HF_HUB_OFFLINE=1" in line
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "{dir}"],
        ["nll", "{dir}", "{images}"],
        ["img2img", "{dir}", "{image}", "--strength", "0.5"],
        ["inpaint", "{dir}", "{image}", "{image}"],
        ["eval", "{dir}", "{images}", "--num", "2"],
        ["sweep", "{dir}", "{images}", "--samplers", "ddim", "--nfe", "2"],
        ["export", "{dir}", "{out}"],
        ["train-classifier", "--diffusion", "{dir}", "--results", "{out}"],
        ["sample", "{checkpoint}", "--classifier", "{dir}"],
    ],
)  # fmt: skip
def test_every_command_reads_models_through_the_one_resolver(
    checkpoint: Path, tmp_path: Path, capsys, argv: list[str]
) -> None:
    """A directory that is not a saved model is refused by the resolver in each command, naming it."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(images / "a.png")
    values = {"dir": folder, "images": images, "image": images / "a.png", "out": tmp_path / "out",
              "checkpoint": checkpoint}  # fmt: skip
    assert main([part.format(**values) for part in argv]) == 2
    line = error_line(capsys)
    assert f"{str(folder)!r} is not a saved model: it has no config.json" in line
    assert not (tmp_path / "out").exists()


def test_nll_with_the_ode_on_a_model_of_fewer_than_100_steps(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """`nll --ode` failed on a model of T < 100 ("steps must be an integer in [1, 10]"): the default is capped at T."""
    exported = tmp_path / "exported"
    assert main(["export", str(checkpoint), str(exported)]) == 0
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(images / "a.png")
    assert main(["nll", str(exported), str(images), "--ode", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "ODE bits/dim:" in captured.out and "ODE, 10 steps" in captured.err


def test_sample_writes_the_grid_the_images_and_the_gif_as_asked(checkpoint: Path, tmp_path: Path, capsys) -> None:
    grid, images = tmp_path / "grid.png", tmp_path / "each"
    assert sample(checkpoint, grid) == 0
    assert sample(checkpoint, tmp_path / "no.png", "--no-grid", "--images", str(images), "--gif") == 0
    assert not (tmp_path / "no.png").exists() and (tmp_path / "no.gif").is_file()
    names = sorted(p.name for p in images.iterdir())
    assert names == [f"sample-{i:05d}.png" for i in range(4)]
    whole = pixels(grid)  # the grid holds the same four images: 2 x 2 of 8 px with 2 px padding
    for i, name in enumerate(names):
        row, col = divmod(i, 2)
        top, left = 2 + row * 10, 2 + col * 10
        assert np.array_equal(pixels(images / name), whole[top : top + 8, left : left + 8])
    assert f"images:     4 in {images} (sample-00000.png ... sample-00003.png)" in capsys.readouterr().out
    assert sample(checkpoint, tmp_path / "none.png", "--no-grid") == 2
    assert "--no-grid leaves nothing to write: add --images DIR or --gif" in error_line(capsys)
