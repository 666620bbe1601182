"""Shared pieces of the Trainer tests: a tiny diffusion, a Trainer with fast settings, accelerate isolation.

Import ``isolated_accelerate`` into a test module to make it autouse there (pytest registers imported fixtures).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.training import Trainer

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "train_child.py"


def reset_accelerate() -> None:
    """accelerate keeps one process-wide state and refuses a second mixed-precision setting; tests need a fresh one."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def isolated_accelerate():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and stall when the CPU is shared)
    torch.manual_seed(0)
    reset_accelerate()
    yield
    torch.set_num_threads(threads)
    reset_accelerate()


def tiny_diffusion(dim: int = 8, channels: int = 3) -> GaussianDiffusion:
    unet = Unet(dim, dim_mults=(1, 2), channels=channels, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    return GaussianDiffusion(unet, image_size=8, timesteps=10)


def make_trainer(diffusion: GaussianDiffusion, data, results: Path, **kwargs) -> Trainer:
    options = dict(
        train_batch_size=4,
        train_num_steps=4,
        save_and_sample_every=2,
        num_samples=4,
        results_folder=results,
        num_workers=0,
        seed=0,
        ema_update_every=1,
    )
    options.update(kwargs)
    return Trainer(diffusion, data, **options)


def read_loss_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def child_env() -> dict[str, str]:
    """Environment for training subprocesses: the repository importable, one thread each, no GPU."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_child(args: list[str], timeout: float = 120, launcher: list[str] | None = None) -> None:
    """Run tests/train_child.py (optionally under a launcher) and fail with its output if it fails."""
    command = (launcher or [sys.executable]) + [str(CHILD), *args]
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
