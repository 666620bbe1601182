"""Which weights a checkpoint is validated on before anything trusts it. A training checkpoint holds two sets of
weights, the online network and its EMA, and the EMA is what sampling, the metric and load_pipeline use by default:
both must be finite before a checkpoint is written, and before a resume takes it (test_milestones.py poisons the
online weights; here the EMA). A checkpoint is also read back (its zip records' CRC-32) before older ones are
deleted, so a damaged write never costs the last good checkpoint."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401 (autouse fixture)

from denoising_diffusion import CorruptCheckpointError, TrainingDivergedError, load_checkpoint, save_checkpoint
from denoising_diffusion.training import checkpoints as milestones


@pytest.fixture
def images() -> list[torch.Tensor]:
    return list(torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)).unbind(0))


@pytest.fixture
def trained(images, tmp_path: Path) -> Path:
    """A results folder with model-1.pt .. model-3.pt (steps 2, 4, 6)."""
    results = tmp_path / "results"
    make_trainer(tiny_diffusion(), images, results, train_num_steps=6, num_samples=0).train()
    return results


def poison_ema(path: Path) -> None:
    checkpoint = load_checkpoint(path)
    floats = [name for name, t in checkpoint["ema"].items() if torch.is_floating_point(t) and t.numel() > 1]
    checkpoint["ema"][floats[len(floats) // 2]].view(-1)[0] = math.nan  # one weight of one layer
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if torch.is_floating_point(t))
    save_checkpoint(path, checkpoint)


def test_auto_resume_falls_back_past_nan_in_the_ema_weights(trained: Path, images, caplog) -> None:
    poison_ema(trained / "model-3.pt")
    with caplog.at_level(logging.WARNING):
        trainer = make_trainer(tiny_diffusion(), images, trained, train_num_steps=6, resume="auto")
    assert trainer.step == 4  # model-2.pt
    assert any("model-3.pt" in r.getMessage() and "in ema" in r.getMessage() for r in caplog.records)
    assert all(torch.isfinite(p).all() for p in trainer.ema.ema_model.parameters())


def test_an_explicit_resume_from_nan_ema_weights_is_refused(trained: Path, images) -> None:
    poison_ema(trained / "model-2.pt")
    with pytest.raises(CorruptCheckpointError, match=r"model-2.pt.*non-finite values \(NaN or inf\) in ema"):
        make_trainer(tiny_diffusion(), images, trained, resume=2)


def test_no_checkpoint_is_written_from_nan_ema_weights(images, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_diffusion(), images, tmp_path / "r", num_samples=0)
    with torch.no_grad():
        next(trainer.ema.ema_model.parameters()).view(-1)[0] = math.nan
    with pytest.raises(TrainingDivergedError, match=r"refusing to write .*model-7.pt.*NaN or inf in ema\."):
        trainer.save(7)
    assert not (tmp_path / "r" / "model-7.pt").exists()


def test_a_damaged_write_is_caught_before_older_checkpoints_are_deleted(images, tmp_path: Path, monkeypatch) -> None:
    """keep_last=1 would delete model-1.pt once model-2.pt is safely written; a model-2.pt that comes out of the
    write truncated (a full disk, a failing drive) must stop training with the file named, model-1.pt kept."""
    results = tmp_path / "results"
    real_save = milestones.save_checkpoint

    def save_then_truncate(path, payload):
        written = real_save(path, payload)
        if Path(path).name == "model-2.pt":
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
        return written

    monkeypatch.setattr(milestones, "save_checkpoint", save_then_truncate)
    trainer = make_trainer(tiny_diffusion(), images, results, train_num_steps=4, num_samples=0, keep_last=1,
                           keep_powers_of_two=False)  # fmt: skip
    with pytest.raises(CorruptCheckpointError, match="model-2.pt"):
        trainer.train()
    assert load_checkpoint(results / "model-1.pt")["step"] == 2


def test_a_resume_takes_the_online_weights_and_the_ema_each_from_its_own_entry(images, tmp_path: Path) -> None:
    """With the power EMA (which averages from the first step) the two sets differ after a few steps; a resumed
    Trainer must train on from the checkpoint's online weights, not from its EMA, and keep averaging from its EMA.
    (ema-pytorch's constant-decay EMA copies the online weights for its first 100 steps, which hides a swap.)"""
    results = tmp_path / "results"
    make_trainer(tiny_diffusion(), images, results, train_num_steps=4, num_samples=0, ema_sigma_rel=0.05).train()
    saved = load_checkpoint(results / "model-2.pt")
    trainer = make_trainer(tiny_diffusion(), images, results, train_num_steps=4, num_samples=0, ema_sigma_rel=0.05,
                           resume=2)  # fmt: skip
    online = trainer.diffusion.model.state_dict()
    ema = trainer.ema.ema_model.state_dict()
    differ = [name for name in online if not torch.equal(saved["model"][name], ema[name])]
    assert differ, "the EMA never moved away from the online weights: the test would not see a swap"
    for name, tensor in online.items():
        assert torch.equal(tensor, saved["model"][name]), name
    for key, tensor in trainer.ema.state_dict().items():
        if isinstance(tensor, torch.Tensor) and key in saved["ema"]:
            assert torch.equal(tensor, saved["ema"][key]), key
