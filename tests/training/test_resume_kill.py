"""Exact resume after SIGKILL: a run killed mid-training and resumed ends bit for bit where an uninterrupted one does.

Three real processes (tests/train_child.py): A trains 16 steps straight; B trains the same run slowly and is
killed with SIGKILL once its step-4 checkpoint exists, while it keeps training; C resumes B's folder with
resume='auto' and finishes. The final checkpoints of A and C must be equal in every tensor and value: network,
EMA, Adam state, step, data position and every RNG state. All kernels used on the CPU here are deterministic
with one thread per process, so no tolerance is needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from test_data import write_mixed_folder
from trainer_helpers import CHILD, child_env, run_child

from denoising_diffusion.checkpoint import load_checkpoint

STEPS, SAVE_EVERY = 16, 4  # 4 milestones; gradient accumulation 2, batch 4 (see train_child.folder_trainer)


def assert_identical(a, b, where: str = "checkpoint") -> None:
    """Exact equality of nested dicts/lists/tuples of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def start_child(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(CHILD), *args], env=child_env(), stdout=out, stderr=subprocess.STDOUT
        )


def kill_after_checkpoint(process: subprocess.Popen, checkpoint: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert process.poll() is None, "the run ended before writing its first checkpoint"
        assert time.monotonic() < deadline, f"no {checkpoint.name} after {timeout} s"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"


def test_sigkill_then_resume_auto_matches_the_uninterrupted_run_bit_for_bit(tmp_path: Path) -> None:
    data = write_mixed_folder(tmp_path / "images")
    common = ["folder", "--data", str(data), "--steps", str(STEPS), "--save-every", str(SAVE_EVERY)]
    straight = start_child([*common, "--results", str(tmp_path / "straight")], tmp_path / "straight.log")
    killed = tmp_path / "killed"
    # 0.25 s per step after the checkpoint at step 4 leaves seconds to kill it before it ends
    victim = start_child([*common, "--results", str(killed), "--sleep", "0.25"], tmp_path / "killed.log")
    try:
        kill_after_checkpoint(victim, killed / "model-1.pt")
    finally:
        victim.kill()
    assert not (killed / f"model-{STEPS // SAVE_EVERY}.pt").exists()  # it really was killed mid-run

    run_child([*common, "--results", str(killed), "--resume", "auto"])
    assert straight.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    final = f"model-{STEPS // SAVE_EVERY}.pt"
    expected, resumed = load_checkpoint(tmp_path / "straight" / final), load_checkpoint(killed / final)
    assert resumed["step"] == STEPS
    assert_identical(resumed, expected)
    steps = [int(line.split(",")[0]) for line in (killed / "loss.csv").read_text().splitlines()[1:]]
    assert steps[-1] == STEPS and set(steps) == set(range(1, STEPS + 1))  # appended across the kill
