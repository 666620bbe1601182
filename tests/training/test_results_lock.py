"""One run per results folder (training/results_lock.py): a second process is refused with the first one named, a
killed holder never blocks the next run, a failed start gives the lock back, one process may share its own lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401

from denoising_diffusion.training.results_lock import LOCK_NAME, ResultsFolderInUseError, ResultsLock

LOCK_MODULE = Path(__file__).resolve().parents[2] / "denoising_diffusion" / "training" / "results_lock.py"
# A holder process that loads results_lock.py by path (no torch import: it starts in a fraction of a second), takes
# the lock on argv[1], says so, and waits to be killed.
HOLDER = (
    "import importlib.util, sys, time\n"
    f"spec = importlib.util.spec_from_file_location('results_lock', {str(LOCK_MODULE)!r})\n"
    "module = sys.modules['results_lock'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
    "module.ResultsLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


IMAGES = [torch.rand(3, 8, 8)] * 4


def start_holder(folder: Path) -> subprocess.Popen:
    """A child process holding the lock on ``folder`` (returns once it holds it)."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_a_second_process_is_refused_naming_the_first_and_nothing_is_written(tmp_path: Path) -> None:
    results = tmp_path / "r"
    results.mkdir()
    (results / "loss.csv").write_text("step,loss\n1,0.5\n")
    child = start_holder(results)
    try:
        with pytest.raises(ResultsFolderInUseError) as caught:
            make_trainer(tiny_diffusion(), IMAGES, results)
        message = str(caught.value)
        assert f"pid {child.pid} on " in message and "s ago): -c " in message  # its pid, start and command line
        assert "pass another results_folder" in message
        assert sorted(p.name for p in results.iterdir()) == [LOCK_NAME, "loss.csv"]  # nothing of ours written
        assert (results / "loss.csv").read_text() == "step,loss\n1,0.5\n"
    finally:
        kill(child)


def test_a_holder_killed_with_sigkill_leaves_no_lock(tmp_path: Path) -> None:
    """The kernel drops a flock with its process: the stale file left behind does not block the next run."""
    results = tmp_path / "r"
    kill(start_holder(results))
    assert (results / LOCK_NAME).exists()  # the stale file...
    trainer = make_trainer(tiny_diffusion(), IMAGES, results, resume="auto")
    assert trainer.results_lock.held  # ...is taken over
    trainer.train()
    assert not (results / LOCK_NAME).exists() and (results / "model-2.pt").exists()  # released after the run


def test_a_failed_start_gives_the_lock_back(tmp_path: Path) -> None:
    results = tmp_path / "r"
    results.mkdir()
    with pytest.raises(FileNotFoundError, match="model-7.pt"):
        make_trainer(tiny_diffusion(), IMAGES, results, resume=7)
    kill(start_holder(results))  # another process can take it at once (start_holder asserts it did)


def test_one_process_shares_its_own_lock(tmp_path: Path) -> None:
    """The command line holds the lock around its Trainer; a notebook makes a second Trainer on the same folder."""
    results = tmp_path / "r"
    with ResultsLock(results, hint="pass another --results") as outer:
        first = make_trainer(tiny_diffusion(), IMAGES, results)
        second = make_trainer(tiny_diffusion(), IMAGES, results)
        assert outer.held and not first.results_lock.held and not second.results_lock.held
        first.train()
        assert (results / LOCK_NAME).exists()  # the outer holder's lock outlives the Trainer's run
    assert not results.joinpath(LOCK_NAME).exists()


def test_the_lock_file_records_the_holder(tmp_path: Path) -> None:
    with ResultsLock(tmp_path / "r"):
        text = (tmp_path / "r" / LOCK_NAME).read_text()
    assert f'"pid": {os.getpid()}' in text and '"command"' in text and '"started"' in text
    assert not (tmp_path / "r").exists()  # created by the lock, empty, removed on release
