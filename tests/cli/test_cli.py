"""The command line, run in-process through main([...]) on tiny models, plus one real `python -m` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.cli import BUILTIN_PRESET, FOLDER_PRESET, build_parser, main, resolve_train_options
from denoising_diffusion.cli.presets import ema_decay_for
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.pipeline import save_pipeline
from denoising_diffusion.samplers import SAMPLERS
from tests.trainer_helpers import isolated_accelerate, reset_accelerate  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parents[2]
# A model small enough that a few steps, a checkpoint and 5-step sampling take a second or two.
TINY = [
    "--dim",
    "8",
    "--dim-mults",
    "1,2",
    "--timesteps",
    "20",
    "--sampling-timesteps",
    "5",
    "--batch-size",
    "4",
    "--steps",
    "4",
    "--save-every",
    "2",
    "--num-samples",
    "4",
]


def write_pngs(folder: Path, count: int = 5, size: tuple[int, int] = (20, 14)) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)).save(folder / f"img{i}.png")
    return folder


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected a message on stderr"
    return err[-1]


def test_train_on_builtin_data_then_sample_with_gif(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["train", *TINY, "--results", str(results), "--threads", "1"]) == 0
    names = sorted(p.name for p in results.iterdir())
    assert names == ["denoising.gif", "loss.csv", "model-1.pt", "model-2.pt", "sample-1.png", "sample-2.png"]
    out = capsys.readouterr().out
    assert str(results / "model-2.pt") in out and str(results / "denoising.gif") in out
    checkpoint = load_checkpoint(results / "model-2.pt")
    assert checkpoint["step"] == 4 and checkpoint["config"]["model"]["dim"] == 8
    assert checkpoint["config"]["image_size"] == [16, 16]  # the built-in preset's size
    with Image.open(results / "denoising.gif") as gif:
        assert gif.n_frames > 1  # 5 steps + the noise, minus frames Pillow merges

    png = tmp_path / "out" / "grid.png"
    code = main(
        [
            "sample",
            str(results / "model-2.pt"),
            "--num",
            "4",
            "--sampler",
            "ddim",
            "--steps",
            "3",
            "--eta",
            "0.5",
            "--out",
            str(png),
            "--gif",
            "--seed",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    with Image.open(png) as grid:
        assert grid.size == (2 + 2 * (16 + 2), 2 + 2 * (16 + 2))  # 2x2 grid of 16 px images, 2 px padding
    with Image.open(png.with_suffix(".gif")) as gif:
        assert gif.n_frames == 4  # x_T and three steps, every frame different
        assert gif.size == (2 + 2 * (64 + 2), 2 + 2 * (64 + 2))  # upscaled 4x to 64 px
    out = capsys.readouterr().out
    assert str(png) in out and str(png.with_suffix(".gif")) in out


def test_sample_is_reproducible_with_a_seed_and_ddpm_refuses_eta(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["train", *TINY, "--steps", "1", "--num-samples", "0", "--no-gif", "--results", str(results)]) == 0
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for path in (a, b):
        assert (
            main(
                [
                    "sample",
                    str(results / "model-1.pt"),
                    "--num",
                    "2",
                    "--sampler",
                    "ddpm",
                    "--steps",
                    "4",
                    "--seed",
                    "7",
                    "--no-ema",
                    "--out",
                    str(path),
                ]
            )
            == 0
        )
    assert a.read_bytes() == b.read_bytes()
    assert (
        main(
            [
                "sample",
                str(results / "model-1.pt"),
                "--sampler",
                "ddpm",
                "--eta",
                "0.5",
                "--out",
                str(tmp_path / "c.png"),
            ]
        )
        == 2
    )
    assert "sampler 'ddpm' takes no option 'eta' (its options: variance)" in error_line(capsys)
    assert not (tmp_path / "c.png").exists()
    assert (
        main(
            [
                "sample",
                str(results / "model-1.pt"),
                "--sampler",
                "ddim",
                "--eta",
                "lots",
                "--out",
                str(tmp_path / "c.png"),
            ]
        )
        == 2
    )
    assert "sampler option eta='lots'" in error_line(capsys)
    assert (
        main(
            [
                "sample",
                str(results / "model-1.pt"),
                "--num",
                "2",
                "--sampler",
                "ddpm",
                "--steps",
                "4",
                "--variance",
                "fixed_large",
                "--out",
                str(tmp_path / "d.png"),
            ]
        )
        == 0
    )


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of an untrained tiny model, written without the Trainer: enough to exercise `sample`."""
    torch.manual_seed(0)
    unet = Unet(8, dim_mults=(1, 2), channels=3, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=20, sampling_timesteps=4)
    return save_pipeline(diffusion, tmp_path_factory.mktemp("ckpt") / "model-1.pt")


def _sample_nfe_line(checkpoint: Path, tmp_path: Path, capsys, *options: str) -> str:
    """Run ``sample`` on 3 images in batches of 2 into tmp_path/s.png; its ``sampler:`` line."""
    argv = [
        "sample",
        str(checkpoint),
        "--num",
        "3",
        "--batch-size",
        "2",
        "--seed",
        "0",
        "--out",
        str(tmp_path / "s.png"),
    ]
    assert main([*argv, *options]) == 0
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("sampler:"))


@pytest.mark.parametrize("sampler", [name.value for name, info in SAMPLERS.items() if not info.needs_sde])  # DDPM ckpt
def test_every_registered_sampler_runs_from_the_command_line(
    untrained_checkpoint: Path, tmp_path: Path, capsys, sampler: str
) -> None:
    line = _sample_nfe_line(untrained_checkpoint, tmp_path, capsys, "--sampler", sampler, "--steps", "3")
    assert line.startswith(f"sampler:    {sampler}, NFE ")
    with Image.open(tmp_path / "s.png") as grid:
        assert grid.size == (2 + 2 * (8 + 2), 2 + 2 * (8 + 2))  # 3 images in a 2x2 grid (ceil(sqrt(3)) per row)


def test_sample_prints_the_network_evaluations_per_image(untrained_checkpoint: Path, tmp_path: Path, capsys) -> None:
    """Fixed-step samplers: the registry's count (Heun: 2·steps − 1); the adaptive 'ode': counted from the solver's
    StepRecord.nfe, the mean over the two batches, more than its two output points."""
    assert _sample_nfe_line(untrained_checkpoint, tmp_path, capsys, "--sampler", "ddim", "--steps", "3") == (
        "sampler:    ddim, NFE 3 per image"
    )
    assert _sample_nfe_line(untrained_checkpoint, tmp_path, capsys, "--sampler", "heun", "--steps", "3").endswith(
        "NFE 5 per image"
    )
    torch.manual_seed(0)
    unet = Unet(8, dim_mults=(1, 2), channels=3, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    vp = save_pipeline(GaussianDiffusion(unet, image_size=8, process="vp"), tmp_path / "vp.pt")
    line = _sample_nfe_line(vp, tmp_path, capsys, "--sampler", "ode", "--steps", "2", "--rtol", "0.5", "--atol", "0.5")
    assert line.startswith("sampler:    ode, NFE ") and float(line.split()[3]) > 2


def test_the_nfe_meter_counts_each_sample_call_from_its_first_step() -> None:
    from denoising_diffusion.denoiser import StepRecord
    from denoising_diffusion.evaluation.sweep import NfeMeter

    meter, x = NfeMeter(), torch.zeros(1)
    for index, nfe in [(0, 3), (1, 7), (0, 4), (1, 6), (2, 9)]:  # two calls of an adaptive solver
        meter(StepRecord(index=index, t=0.5, x_t=x, x_next=x, pred_x0=x, nfe=nfe))
    assert meter.calls == [7, 9]


def test_train_on_a_folder_and_resume_latest(tmp_path: Path, capsys) -> None:
    images = write_pngs(tmp_path / "images")
    results = tmp_path / "results"
    common = [str(images), "--image-size", "8", "--channels", "1", *TINY, "--results", str(results), "--seed", "0"]
    assert main(["train", *common, "--resume", "latest"]) == 0  # nothing to resume yet: a fresh start
    assert "starting from step 0" in capsys.readouterr().out
    names = sorted(p.name for p in results.iterdir())
    assert names == ["loss.csv", "model-1.pt", "model-2.pt", "sample-1.png", "sample-2.png"]  # no GIF by default
    config = load_checkpoint(results / "model-2.pt")["config"]
    assert config["model"]["channels"] == 1 and config["image_size"] == [8, 8]
    assert config["beta_schedule"] == FOLDER_PRESET.beta_schedule

    reset_accelerate()
    assert (
        main(["train", *common, "--steps", "6", "--resume", "latest", "--keep-last", "2", "--no-keep-powers-of-two"])
        == 0
    )
    assert "at step 4" in capsys.readouterr().out
    assert load_checkpoint(results / "model-3.pt")["step"] == 6
    assert sorted(p.name for p in results.glob("model-*.pt")) == ["model-2.pt", "model-3.pt"]  # --keep-last 2

    assert main(["nll", str(results / "model-3.pt"), str(images), "--num", "3", "--ode", "--ode-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "images:         3" in out and "VLB bits/dim:" in out and "ODE bits/dim:" in out


def test_defaults_follow_the_data_source_and_options_override_them() -> None:
    parser = build_parser()
    sized = {p: replace(p, ema_decay=ema_decay_for(p.steps)) for p in (BUILTIN_PRESET, FOLDER_PRESET)}
    assert resolve_train_options(parser.parse_args(["train"])) == sized[BUILTIN_PRESET]
    assert sized[BUILTIN_PRESET].ema_decay == 0.995  # the demo's measured recipe
    assert resolve_train_options(parser.parse_args(["train", "folder"])) == sized[FOLDER_PRESET]
    opts = resolve_train_options(parser.parse_args(["train", "folder", "--dim-mults", "1,2", "--lr", "3e-4"]))
    assert opts.dim_mults == (1, 2) and opts.lr == 3e-4 and opts.dim == FOLDER_PRESET.dim
    short_chain = resolve_train_options(parser.parse_args(["train", "--timesteps", "20"]))
    assert short_chain.sampling_timesteps == 20  # the built-in preset's 50 capped at T


@pytest.mark.parametrize(
    "argv, clip, rederive",
    [([], True, True), (["--no-rederive-eps"], True, False), (["--no-clip-denoised"], False, True)],
)
def test_clamp_options_reach_the_model_and_its_config(argv: list[str], clip: bool, rederive: bool) -> None:
    """--clip-denoised / --rederive-eps build GaussianDiffusion(clip_denoised=..., rederive_eps=...), whose config
    (so the checkpoint) keeps them; left out, the library's defaults (True, True)."""
    from denoising_diffusion.cli.train import build_diffusion

    opts = resolve_train_options(build_parser().parse_args(["train", "--dim", "8", "--dim-mults", "1,2", *argv]))
    diffusion = build_diffusion(opts)
    assert (diffusion.clip_denoised, diffusion.rederive_eps) == (clip, rederive)
    assert (diffusion.config["clip_denoised"], diffusion.config["rederive_eps"]) == (clip, rederive)


@pytest.mark.parametrize("argv, expected", [([], False), (["--compile"], True)])
def test_compile_flag_reaches_the_trainer(argv: list[str], expected: bool, monkeypatch, tmp_path: Path) -> None:
    import denoising_diffusion.cli.train as cli_train

    seen: dict = {}

    class Stop(Exception):
        pass

    def fake_trainer(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(cli_train, "Trainer", fake_trainer)
    with pytest.raises(Stop):
        main(["train", "--steps", "1", "--results", str(tmp_path / "r"), *argv])
    assert seen["compile"] is expected


@pytest.mark.parametrize(
    "make_folder, expected",
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "no images found in"),
    ],
)
def test_bad_folders_fail_cleanly_and_leave_results_alone(tmp_path: Path, capsys, make_folder, expected) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "model-1.pt").write_bytes(b"an older run")
    folder = make_folder(tmp_path)
    assert main(["train", str(folder), "--results", str(results)]) == 2
    line = error_line(capsys)
    assert line.startswith("denoising-diffusion: error: ") and expected in line and folder.name in line
    assert [p.name for p in results.iterdir()] == ["model-1.pt"]
    assert (results / "model-1.pt").read_bytes() == b"an older run"


def test_an_unreadable_image_is_named_on_one_line(tmp_path: Path, capsys) -> None:
    images = write_pngs(tmp_path / "images", count=3)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    # Found by the up-front header check (before any DataLoader worker, whose errors carry its traceback).
    assert main(["train", str(images), "--image-size", "8", *TINY, "--results", str(tmp_path / "results")]) == 2
    line = error_line(capsys)
    assert line.startswith("denoising-diffusion: error: 1 of 4 image files under") and "broken.png (" in line
    assert "Traceback" not in line


def test_bad_checkpoints_and_model_options_are_one_line_errors(tmp_path: Path, capsys) -> None:
    corrupt = tmp_path / "model-1.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert main(["sample", str(corrupt), "--out", str(tmp_path / "s.png")]) == 2
    assert "corrupt" in error_line(capsys)
    assert main(["sample", str(tmp_path / "nope.pt")]) == 2
    line = error_line(capsys)
    assert "checkpoint file not found" in line and "nope.pt" in line
    assert main(["train", "--dim", "8", "--image-size", "10", "--results", str(tmp_path / "r")]) == 2
    assert "not divisible by 4" in error_line(capsys)
    assert main(["train", "--resume", "3", *TINY, "--results", str(tmp_path / "r2")]) == 2
    assert "model-3.pt" in error_line(capsys)
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["sample", "x.pt", "--sampler", "nope"], "invalid choice: 'nope'"),
        (["train", "--objective", "pred_eps"], "invalid choice: 'pred_eps'"),
        (["train", "--dim-mults", "1,two"], "comma-separated positive integers"),
        (["train", "--steps", "0"], "expected an integer >= 1, got 0"),
        (["train", "--resume", "0"], "milestones start at 1"),
        (["train", "--max-bad-steps", "-1"], "expected an integer >= 1"),
        ([], "required: COMMAND"),
    ],
)
def test_invalid_arguments_exit_2_naming_the_argument(argv: list[str], expected: str, capsys) -> None:
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def test_samplers_lists_the_registry(capsys) -> None:
    assert main(["samplers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [name.value for name in SAMPLERS]
    assert {"ddpm", "ddim"} <= {line.split()[0] for line in lines}
    assert all(len(line.split()) > 2 for line in lines)  # each has a description


def test_module_entry_point_runs() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "denoising_diffusion", "samplers"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ddpm" in done.stdout and "ddim" in done.stdout


def test_class_conditional_train_and_sample_by_name_index_and_rows(tmp_path: Path, capsys) -> None:
    """--class-cond labels the folder's sub-folders; sample asks by name (even a name like '1'), by index, or shows
    one class per row; unknown names, out-of-range indices and mixing both are one-line errors."""
    for name in ("red", "1", "blue"):
        write_pngs(tmp_path / "images" / name, count=3)
    results = tmp_path / "results"
    common = [str(tmp_path / "images"), "--image-size", "8", *TINY, "--results", str(results), "--no-gif"]
    assert main(["train", *common, "--class-cond", "--sample-guidance", "2"]) == 0
    spec = load_checkpoint(results / "model-2.pt")["config"]
    assert spec["class_names"] == ["1", "blue", "red"] and spec["model"]["num_classes"] == 3
    assert spec["model"]["cond_drop_prob"] == 0.1
    checkpoint = str(results / "model-2.pt")
    for extra, size in [
        (["--class", "1", "--class", "red", "--num", "4"], (2 + 2 * 10, 2 + 2 * 10)),
        (["--class-index", "2", "--num", "3", "--guidance", "3"], (2 + 2 * 10, 2 + 2 * 10)),
        (["--num", "6"], (2 + 2 * 10, 2 + 3 * 10)),
    ]:  # 3 classes in rows of 6 // 3 = 2
        out = tmp_path / "s.png"
        assert main(["sample", checkpoint, *extra, "--steps", "2", "--out", str(out)]) == 0
        with Image.open(out) as grid:
            assert grid.size == size, extra
    for extra, message in [
        (["--class", "green"], "unknown class 'green'; known classes: '1', 'blue', 'red'"),
        (["--class-index", "3"], r"class label 3 is outside [0, 3)"),
        (["--class", "red", "--class-index", "0"], "not both"),
    ]:
        assert main(["sample", checkpoint, *extra, "--out", str(tmp_path / "x.png")]) == 2
        assert message in error_line(capsys)
    unconditional = tmp_path / "plain"
    assert (
        main(["train", *TINY, "--results", str(unconditional), "--steps", "1", "--no-gif", "--num-samples", "0"]) == 0
    )
    assert (
        main(["sample", str(unconditional / "model-1.pt"), "--class-index", "0", "--out", str(tmp_path / "y.png")]) == 2
    )
    assert "takes no condition, so it cannot be given 'classes'" in error_line(capsys)


def test_class_conditional_demo_on_the_built_in_shapes(tmp_path: Path) -> None:
    results = tmp_path / "results"
    assert main(["train", *TINY, "--class-cond", "--results", str(results), "--steps", "2", "--gif"]) == 0
    spec = load_checkpoint(results / "model-1.pt")["config"]
    assert spec["model"]["num_classes"] == 8 and spec["class_names"][:2] == ["red disc", "green disc"]
    with Image.open(results / "sample-1.png") as grid:  # 8 classes, one per row, num_samples 4 // 8 -> 1 column
        assert grid.size == (2 + 1 * 18, 2 + 8 * 18)
    assert (results / "denoising.gif").exists()


def test_train_a_classifier_for_a_diffusion_and_guide_sampling_with_it(tmp_path: Path, capsys) -> None:
    """train-classifier takes the schedule and size from --diffusion, writes checkpoints like train, and sample
    --classifier guides towards --class (names from the classifier); the flags' misuses are one-line errors."""
    plain = tmp_path / "plain"
    assert main(["train", *TINY, "--image-size", "8", "--steps", "1", "--num-samples", "0", "--no-gif",
                 "--results", str(plain)]) == 0  # fmt: skip
    clf_dir = tmp_path / "clf"
    assert main(["train-classifier", "--diffusion", str(plain / "model-1.pt"), "--dim", "8", "--dim-mults", "1,2",
                 "--steps", "4", "--save-every", "2", "--results", str(clf_dir), "--seed", "0"]) == 0  # fmt: skip
    spec = load_checkpoint(clf_dir / "model-2.pt")["config"]
    assert spec["kind"] == "NoiseAwareClassifier" and spec["timesteps"] == 20 and spec["image_size"] == [8, 8]
    assert spec["model"]["num_classes"] == 8 and spec["class_names"][0] == "red disc"
    out = tmp_path / "guided.png"
    guided = ["--classifier", str(clf_dir / "model-2.pt"), "--class", "blue square", "--classifier-scale", "4"]
    assert main(["sample", str(plain / "model-1.pt"), *guided, "--num", "2", "--steps", "2", "--out", str(out)]) == 0
    assert out.exists()
    for extra, message in [(["--classifier-scale", "3"], "--classifier-scale needs --classifier CKPT"),
                           (["--classifier", str(clf_dir / "model-2.pt"), "--class", "purple"],
                            "unknown class 'purple'; known classes: 'red disc'"),
                           (["--classifier", str(plain / "model-1.pt")], "not a noise-aware classifier")]:  # fmt: skip
        assert main(["sample", str(plain / "model-1.pt"), *extra, "--out", str(tmp_path / "x.png")]) == 2
        assert message in error_line(capsys)
    other = tmp_path / "other"
    assert main(["train", *TINY, "--image-size", "8", "--timesteps", "10", "--sampling-timesteps", "2", "--steps", "1",
                 "--num-samples", "0", "--no-gif", "--results", str(other)]) == 0  # fmt: skip
    assert main(["sample", str(other / "model-1.pt"), "--classifier", str(clf_dir / "model-2.pt"), "--class-index",
                 "0", "--out", str(tmp_path / "x.png")]) == 2  # fmt: skip
    assert "its noise schedule (20 steps, 'cosine') is not the diffusion's (10 steps" in error_line(capsys)
