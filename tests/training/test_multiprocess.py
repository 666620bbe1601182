"""Two CPU processes (gloo) under ``accelerate launch`` and ``torchrun`` train exactly what one process trains.

tests/train_child.py's ``sharded`` job draws each image's timestep and noise from a generator seeded by the
image's index, so the loss of an image does not depend on which process computes it, and uses a network without
normalisation layers, so no gradient is rounding noise that Adam could amplify. One process with a global batch
of 8 and two processes with 4 each must then give the same weights up to float rounding (tolerance 1e-6, against
updates of about 1e-3 per step), the same logged loss and gradient norm, and disjoint shards whose union is the
single process's batches. Wrong sharding (both processes on the same half) moves the weights by about 8e-3, and
summed instead of averaged gradients double the logged gradient norm, so the assertions can fail.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch
from train_child import PlainNet
from trainer_helpers import read_loss_log, run_child

from denoising_diffusion.checkpoint import load_checkpoint

STEPS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher(name: str) -> list[str]:
    """The launch command, run with this interpreter (``python -m`` is what the ``torchrun`` and ``accelerate``
    scripts call)."""
    port = str(free_port())
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    # On a machine without a GPU, --multi_gpu still starts the processes (torch's elastic launcher); the Trainer
    # then asks accelerate for the CPU and gloo. (`--cpu` alone would start a single process.)
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        port,
    ]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("one")
    run_child(["sharded", "--results", str(results), "--steps", str(STEPS)])
    return results


@pytest.mark.parametrize("name", ["accelerate", "torchrun"])
def test_two_processes_train_what_one_process_trains(single_process: Path, tmp_path: Path, name: str) -> None:
    results = tmp_path / "two"
    run_child(["sharded", "--results", str(results), "--steps", str(STEPS)], launcher=launcher(name), timeout=180)

    one, two = load_checkpoint(single_process / "model-1.pt"), load_checkpoint(results / "model-1.pt")
    assert two["trainer"]["num_processes"] == 2 and len(two["trainer"]["rng"]) == 2
    for key, expected in one["model"].items():
        torch.testing.assert_close(two["model"][key], expected, rtol=0, atol=1e-6, msg=key)
    torch.manual_seed(0)
    initial = PlainNet(timesteps=10).state_dict()
    moved = max((one["model"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1000 * 1e-6  # training moved the weights far more than the tolerance

    rows_one, rows_two = read_loss_log(single_process / "loss.csv"), read_loss_log(results / "loss.csv")
    assert len(rows_two) == STEPS  # one writer: the main process
    for a, b in zip(rows_one, rows_two):
        assert a["step"] == b["step"]
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-5)  # averaged over both processes
        assert float(b["grad_norm"]) == pytest.approx(float(a["grad_norm"]), rel=1e-5)  # averaged, not summed

    seen = [json.loads((results / f"seen-{rank}.json").read_text())["seen"] for rank in (0, 1)]
    alone = json.loads((single_process / "seen-0.json").read_text())["seen"]
    per_micro_batch = 4  # global batch 8 split over 2 processes
    for i in range(len(alone) // 8):
        rank0, rank1 = seen[0][i * 4 : (i + 1) * 4], seen[1][i * 4 : (i + 1) * 4]
        assert rank0 + rank1 == alone[i * 8 : (i + 1) * 8], f"micro-batch {i}"
    assert len(seen[0]) == len(seen[1]) == len(alone) // 2 == STEPS * 2 * per_micro_batch
