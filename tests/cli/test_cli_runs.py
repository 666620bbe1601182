"""`denoising-diffusion train` as a newcomer meets it (issue 28): a seed repeats a run bit for bit, one run per results
folder (a crashed one never blocks the next), resuming needs no model option, defaults sized to the data, every
unreadable file named before anything is written, errors in one format, and the default thread count."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from PIL import Image

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.cli import build_parser, main, resolve_train_options
from denoising_diffusion.cli import threads as cli_threads
from denoising_diffusion.cli.presets import MAX_UPSCALE, SIZE_PRESETS, ema_decay_for
from denoising_diffusion.cli.run_cost import FIT_S, RunCost, describe_cost
from denoising_diffusion.training.ema import make_ema
from denoising_diffusion.training.results_lock import LOCK_NAME
from tests.trainer_helpers import child_env, isolated_accelerate, reset_accelerate  # noqa: F401 (autouse fixture)

MODEL = ["--dim", "8", "--dim-mults", "1,2", "--timesteps", "20", "--sampling-timesteps", "3"]
RECIPE = ["--batch-size", "4", "--steps", "4", "--save-every", "2", "--num-samples", "2", "--threads", "1"]


def write_images(folder: Path, count: int = 6, side: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (side + 2, side), (37 * i % 256, 200 - 25 * i, 90)).save(folder / f"img{i}.png")
    return folder


def weights_and_losses(results: Path) -> tuple[dict[str, torch.Tensor], list[dict[str, str]]]:
    checkpoint = load_checkpoint(results / "model-2.pt")
    with open(results / "loss.csv", newline="") as file:
        return {**checkpoint["model"], **checkpoint["ema"]}, list(csv.DictReader(file))


# ----- 1. a seed repeats the run ------------------------------------------------------------------------------------


def test_the_same_command_and_seed_give_bit_identical_weights_and_losses(tmp_path: Path, capsys) -> None:
    """A folder run without --seed prints the seed it drew; the same command with that seed repeats it exactly
    (network initialization, data order, noise), whatever the generators held before."""
    images = write_images(tmp_path / "images")
    first = ["train", str(images), *MODEL, *RECIPE, "--results", str(tmp_path / "a")]
    assert main(first) == 0
    seed = next(line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("seed "))
    torch.manual_seed(12345)  # whatever state the process is in
    reset_accelerate()
    assert main(["train", str(images), *MODEL, *RECIPE, "--results", str(tmp_path / "b"), "--seed", seed]) == 0
    weights_a, losses_a = weights_and_losses(tmp_path / "a")
    weights_b, losses_b = weights_and_losses(tmp_path / "b")
    assert losses_a == losses_b and len(losses_a) == 4
    assert weights_a.keys() == weights_b.keys() and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


# ----- 2. one run per results folder --------------------------------------------------------------------------------


def start_training(results: Path, tmp_path: Path) -> subprocess.Popen:
    """`python -m denoising_diffusion train` on the built-in data, long enough to be killed while it runs; returns
    once it has written a checkpoint."""
    argv = [sys.executable, "-m", "denoising_diffusion", "train", *MODEL, "--batch-size", "2", "--steps", "100000",
            "--save-every", "1", "--num-samples", "0", "--no-gif", "--threads", "1",
            "--results", str(results)]  # fmt: skip
    child = subprocess.Popen(argv, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(results.glob("model-*.pt")):
        assert child.poll() is None and time.monotonic() < deadline, "the training child did not start"
        time.sleep(0.2)
    return child


def test_a_second_run_on_a_folder_is_refused_and_a_killed_run_never_blocks_resuming(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    child = start_training(results, tmp_path)
    try:
        assert main(["train", *MODEL, *RECIPE, "--results", str(results)]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(f"denoising-diffusion: error: results folder '{results}' is in use by another run: pid")
        assert f"pid {child.pid} on " in line and "train --dim 8" in line and "pass another --results" in line
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert (results / LOCK_NAME).exists()  # left behind by the killed run, but no longer locked
    newest = max(int(p.stem.split("-")[1]) for p in results.glob("model-*.pt"))
    step = load_checkpoint(results / f"model-{newest}.pt")["step"]
    reset_accelerate()
    argv = ["train", "--resume", "auto", "--steps", str(step + 2), "--results", str(results), "--threads", "1"]
    assert main(argv) == 0  # no model option: the checkpoint's own config
    assert load_checkpoint(results / f"model-{step + 2}.pt")["config"]["model"]["dim"] == 8
    assert f"resumed at step {step}" in capsys.readouterr().out
    assert not (results / LOCK_NAME).exists()


# ----- 4. resume from the checkpoint's own config -------------------------------------------------------------------


def test_resume_needs_no_model_option_and_conflicts_are_one_error_in_option_names(tmp_path: Path, capsys) -> None:
    images = write_images(tmp_path / "images")
    results = tmp_path / "results"
    assert main(["train", str(images), *MODEL, "--image-size", "8", *RECIPE, "--results", str(results)]) == 0
    reset_accelerate()
    before = (results / "loss.csv").read_text()
    argv = ["train", str(images), "--resume", "auto", "--dim", "16", "--dim-mults", "1,2,4", "--timesteps", "20"]
    assert main([*argv, "--results", str(results)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(
        "denoising-diffusion: error: --dim: the checkpoint has 8, the command line says 16; --dim-mults: the "
        "checkpoint has 1,2, the command line says 1,2,4 (resuming "
    )
    assert ":;" not in line and "--timesteps" not in line.split("(resuming")[0]  # an agreeing option is no conflict
    assert (results / "loss.csv").read_text() == before  # nothing written
    reset_accelerate()
    assert main(["train", str(images), "--resume", "auto", "--steps", "6", "--results", str(results)]) == 0
    assert load_checkpoint(results / "model-3.pt")["step"] == 6


# ----- 3. defaults sized to the data and the machine ----------------------------------------------------------------


def test_a_folder_trains_at_its_images_size_with_that_sizes_preset(tmp_path: Path, capsys) -> None:
    """16-px images train at 16 px with the 16-px preset's network (not 128 px and dim 64), and the run says what
    it will cost on this CPU before it starts."""
    images = write_images(tmp_path / "images", side=16)
    results = tmp_path / "r"
    argv = ["train", str(images), "--batch-size", "2", "--steps", "2", "--save-every", "2", "--num-samples", "0"]
    assert main([*argv, "--threads", "1", "--results", str(results)]) == 0
    config = load_checkpoint(results / "model-1.pt")["config"]
    preset = SIZE_PRESETS[16]
    assert config["image_size"] == [16, 16] and config["model"]["dim"] == preset.dim
    assert tuple(config["model"]["dim_mults"]) == preset.dim_mults
    out = capsys.readouterr().out
    assert "at 16 px" in out and "s per step (measured)" in out and "per checkpoint" in out
    assert "first sample grid in ~" in out


def test_upscaling_beyond_the_limit_is_refused_unless_asked(tmp_path: Path, capsys) -> None:
    images = write_images(tmp_path / "images", side=16)
    assert main(["train", str(images), "--image-size", "64", "--results", str(tmp_path / "r")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--image-size 64 would upscale the images 4x" in line and "--allow-upscale" in line
    assert f"limit is {MAX_UPSCALE:g}x" in line and not (tmp_path / "r").exists()
    parser = build_parser()
    allowed = parser.parse_args(["train", str(images), "--image-size", "64", "--allow-upscale"])
    assert resolve_train_options(allowed, data_side=16).image_size == 64
    assert resolve_train_options(parser.parse_args(["train", "f"]), data_side=40).image_size == 32
    assert resolve_train_options(parser.parse_args(["train", "f"]), data_side=10).image_size == 8  # no upscaling


def test_a_long_cpu_run_is_told_what_makes_it_fit() -> None:
    """The issue's 128-px job: 25 s per step, 100,000 steps. The suggestion's --steps fits in FIT_S."""
    cost = RunCost(step_s=25.0, grid_s=60.0, peak_memory=9 * 2**30, checkpoint_bytes=572 * 2**20,
                   steps_left=100_000, save_every=1000, first_step=0)  # fmt: skip
    lines = describe_cost(cost, threads=2)
    assert "25 s per step" in lines[0] and "9.0 GiB" in lines[0] and "572 MiB per checkpoint" in lines[0]
    assert "first sample grid in ~7.0 h" in lines[1] and "in ~29 days" in lines[1]
    steps = int(lines[2].split("--steps ")[1].split()[0])
    assert steps * cost.step_s <= FIT_S < (steps + 2) * cost.step_s + cost.grid_s


def ema_age(decay: float, update_every: int, steps: int) -> float:
    """How many steps old, on average, the weights in the Trainer's EMA are after ``steps`` steps: the EMA of a
    parameter that equals the step number (ema-pytorch's own update rule, warm-up included)."""
    network = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(network, decay=decay, update_every=update_every, sigma_rel=None)
    for step in range(1, steps + 1):
        network.weight.data.fill_(float(step))
        ema.update()
    return steps - float(ema.ema_model.weight)


@pytest.mark.parametrize("steps", [300, 800, 5000])
def test_the_folder_ema_averages_the_recent_quarter_of_a_run(steps: int) -> None:
    """The grids of a short run come from recent weights: the folder EMA's average weight is at most a quarter of
    the run old (the old 0.995 every 10 steps averaged weights a third of a 300-step run old)."""
    opts = resolve_train_options(build_parser().parse_args(["train", "folder", "--steps", str(steps)]))
    assert opts.ema_decay == ema_decay_for(steps)
    assert ema_age(opts.ema_decay, opts.ema_update_every, steps) <= steps / 4
    if steps == 300:
        assert ema_age(0.995, 10, steps) > steps / 4


# ----- 6. bad files -------------------------------------------------------------------------------------------------


def test_two_bad_files_are_named_in_one_error_before_anything_is_written(tmp_path: Path, capsys) -> None:
    images = write_images(tmp_path / "images")
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    (images / "sub").mkdir()
    (images / "sub" / "empty.jpg").write_bytes(b"")
    results = tmp_path / "results"
    results.mkdir()
    assert main(["train", str(images), *MODEL, *RECIPE, "--results", str(results)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("denoising-diffusion: error: 2 of 8 image files under")
    assert "broken.png (" in line and "sub/empty.jpg (" in line and "--on-bad-image skip" in line
    assert list(results.iterdir()) == []  # no loss.csv, no lock file
    reset_accelerate()
    assert main(["train", str(images), *MODEL, *RECIPE, "--results", str(results), "--on-bad-image", "skip"]) == 0
    err = capsys.readouterr().err
    assert "warning: skipping unreadable image" in err and "2 unreadable image file(s) were skipped" in err


# ----- 5. messages --------------------------------------------------------------------------------------------------


def test_warnings_are_written_above_the_bar_not_onto_its_line(tmp_path: Path, capsys) -> None:
    images = write_images(tmp_path / "images")
    (images / "broken.png").write_bytes(b"")
    argv = ["train", str(images), *MODEL, *RECIPE, "--on-bad-image", "skip", "--results", str(tmp_path / "r")]
    assert main(argv) == 0
    lines = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n") if "were skipped" in line]
    assert lines and all(line.startswith("denoising-diffusion: warning: on_bad_image='skip'") for line in lines)


def test_a_multi_line_error_becomes_one_line_without_colon_semicolons() -> None:
    from denoising_diffusion.cli import _one_line

    assert _one_line(ValueError("no valid checkpoint:\n  a: bad\n  b: bad\nMove them")) == (
        "no valid checkpoint: a: bad; b: bad; Move them"
    )


# ----- 7. threads ---------------------------------------------------------------------------------------------------


def test_the_default_thread_count_leaves_busy_cores_alone(monkeypatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(cli_threads, "idle_cores", lambda look_s=0.1: 1.1)  # another process holds one of two
    assert cli_threads.default_threads() == 1
    monkeypatch.setattr(cli_threads, "idle_cores", lambda look_s=0.1: 1.9)
    assert cli_threads.default_threads() == 2
    monkeypatch.setattr(cli_threads, "idle_cores", lambda look_s=0.1: 0.2)
    assert cli_threads.default_threads() == 1  # never zero
    monkeypatch.setattr(cli_threads, "idle_cores", lambda look_s=0.1: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (os.cpu_count() or 1, 0.0, 0.0))
    assert cli_threads.default_threads() == 1  # the load average where /proc/stat is missing


def test_a_command_without_threads_uses_the_default(monkeypatch, tmp_path: Path) -> None:
    import denoising_diffusion.cli as cli

    seen: list[int] = []
    monkeypatch.setattr(cli, "default_threads", lambda: 1)
    monkeypatch.setattr(cli.torch, "set_num_threads", seen.append)
    main(["sample", str(tmp_path / "missing.pt")])  # fails after the threads are set
    assert seen[0] == 1


def test_the_cost_measurement_leaves_the_run_alone_and_times_two_steps_after_a_warm_up(monkeypatch) -> None:
    """measure_run_cost times a warm-up and two steps (one after a slow warm-up) of a copy: the model's weights and
    the global generator are as they were."""
    from denoising_diffusion.cli import run_cost
    from tests.trainer_helpers import tiny_diffusion

    diffusion, data = tiny_diffusion(), [torch.rand(3, 8, 8)] * 4
    before = {k: v.clone() for k, v in diffusion.state_dict().items()}
    rng = torch.get_rng_state()
    calls: list[int] = []
    real_step = run_cost._timed_steps

    def counting(model, dataset, batch_size):
        model.register_forward_pre_hook(lambda *_: calls.append(1))
        return real_step(model, dataset, batch_size)

    monkeypatch.setattr(run_cost, "_timed_steps", counting)
    cost = run_cost.measure_run_cost(diffusion, data, batch_size=2, num_samples=4,
                                     steps_left=10, save_every=5, start=0)  # fmt: skip
    assert len(calls) == 4 and cost.step_s > 0 and cost.grid_s > 0  # warm-up, two timed steps, a grid evaluation
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in diffusion.state_dict().items())
    clock = iter([0.0, 2 * run_cost.SLOW_STEP_S, 0.0, 1.0])  # a slow warm-up, then one timed step
    monkeypatch.setattr(run_cost.time, "perf_counter", lambda: next(clock))
    calls.clear()
    assert real_step(diffusion, data, 2) == 1.0


def test_no_cost_measurement_with_compile(monkeypatch, tmp_path: Path, capsys) -> None:
    import denoising_diffusion.cli.train as cli_train

    monkeypatch.setattr(cli_train, "measure_run_cost", lambda *a, **k: pytest.fail("measured a compiled run"))
    cli_train.print_cost(Namespace(compile=True), trainer=None, opts=None)  # type: ignore[arg-type]


def test_python_warnings_are_written_as_command_warnings(capsys) -> None:
    import warnings

    from denoising_diffusion.cli.progress import bar_safe_messages

    with bar_safe_messages():
        warnings.warn("the batch's labels are dropped", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "denoising-diffusion: warning: the batch's labels are dropped\n"


def test_an_error_from_a_dataloader_worker_shows_its_own_message_only() -> None:
    from denoising_diffusion.cli import _one_line
    from denoising_diffusion.data.image_files import UnreadableImageError

    worker = UnreadableImageError(
        "Caught UnreadableImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ndenoising_diffusion.data.image_files.UnreadableImageError: cannot read image '
        "file 'a.png': truncated"
    )
    assert _one_line(worker) == "cannot read image file 'a.png': truncated"
