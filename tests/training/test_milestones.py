"""Checkpoints in the results folder: resume='auto' and its fallback past damaged files, keep_last, leftovers."""

from __future__ import annotations

import logging
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401

from denoising_diffusion.checkpoint import CheckpointError, CorruptCheckpointError, load_checkpoint, save_checkpoint
from denoising_diffusion.training import checkpoints as milestones


class Foreign:
    """A custom class: a checkpoint holding one carries pickled code."""


@pytest.fixture
def images() -> list[torch.Tensor]:
    return list(torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)).unbind(0))


@pytest.fixture
def trained(images, tmp_path: Path) -> Path:
    """A results folder with model-1.pt .. model-3.pt (steps 2, 4, 6)."""
    results = tmp_path / "results"
    make_trainer(tiny_diffusion(), images, results, train_num_steps=6, num_samples=0).train()
    return results


def tensor_data_offset(path: Path) -> int:
    """The file offset of a byte in the middle of the largest tensor's data (not in a header or its padding,
    which no CRC covers): from the record's local header, whose name and extra fields precede the data."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.compress_size)
    with open(path, "rb") as file:
        file.seek(record.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", file.read(4))
    return record.header_offset + 30 + name_length + extra_length + record.compress_size // 2


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif how == "bitflip":  # inside the tensor data: only the zip records' CRC-32 notices
        flipped = bytearray(data)
        flipped[tensor_data_offset(path)] ^= 0x01
        path.write_bytes(bytes(flipped))
    elif how == "nan":
        checkpoint = load_checkpoint(path)
        next(iter(checkpoint["model"].values())).fill_(float("nan"))
        save_checkpoint(path, checkpoint)


@pytest.mark.parametrize("how", ["truncate", "empty", "garbage", "bitflip", "nan"])
def test_auto_resume_falls_back_past_a_damaged_newest_checkpoint(trained: Path, images, how: str, caplog) -> None:
    damage(trained / "model-3.pt", how)
    with caplog.at_level(logging.WARNING):
        trainer = make_trainer(tiny_diffusion(), images, trained, train_num_steps=6, resume="auto")
    assert trainer.step == 4  # model-2.pt
    assert any("model-3.pt" in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records)
    saved = load_checkpoint(trained / "model-2.pt")
    for name, tensor in trainer.diffusion.model.state_dict().items():
        assert torch.equal(tensor, saved["model"][name]), name


def test_a_damaged_checkpoint_is_named_and_an_explicit_one_never_falls_back(trained: Path, images) -> None:
    damage(trained / "model-2.pt", "truncate")
    with pytest.raises(CorruptCheckpointError, match="model-2.pt.*truncated or corrupt"):
        make_trainer(tiny_diffusion(), images, trained, resume=2)
    with pytest.raises(CorruptCheckpointError, match="model-2.pt"):
        make_trainer(tiny_diffusion(), images, trained, resume=trained / "model-2.pt")


def test_auto_resume_with_only_damaged_checkpoints_is_an_error_listing_them(trained: Path, images) -> None:
    for milestone in (1, 2, 3):
        damage(trained / f"model-{milestone}.pt", "garbage")
    with pytest.raises(CorruptCheckpointError, match=r"no valid checkpoint(.|\n)*model-3.pt(.|\n)*model-1.pt"):
        make_trainer(tiny_diffusion(), images, trained, resume="auto")


def test_auto_resume_does_not_skip_a_checkpoint_carrying_code_or_of_another_model(trained: Path, images) -> None:
    torch.save({"format_version": 1, "evil": Foreign()}, trained / "model-4.pt")
    with pytest.raises(CheckpointError, match="model-4.pt.*pickled Python object"):
        make_trainer(tiny_diffusion(), images, trained, resume="auto")
    (trained / "model-4.pt").unlink()
    with pytest.raises(CheckpointError, match=r"model\.dim: checkpoint has 8, this model has 16"):
        make_trainer(tiny_diffusion(dim=16), images, trained, resume="auto")


def test_resume_arguments(trained: Path, images, tmp_path: Path, caplog) -> None:
    assert make_trainer(tiny_diffusion(), images, trained, resume=1).step == 2
    assert make_trainer(tiny_diffusion(), images, trained, resume=str(trained / "model-2.pt")).step == 4
    assert make_trainer(tiny_diffusion(), images, tmp_path / "empty", resume="auto").step == 0
    with pytest.raises(FileNotFoundError, match=r"resume=7: there is no .*model-7.pt.*present: 1, 2, 3"):
        make_trainer(tiny_diffusion(), images, trained, resume=7)
    for bad in (True, 2.5, ["auto"]):
        with pytest.raises(ValueError, match="resume must be None, 'auto'"):
            make_trainer(tiny_diffusion(), images, trained, resume=bad)
    with caplog.at_level(logging.WARNING):
        assert make_trainer(tiny_diffusion(), images, trained).step == 0  # resume=None: a fresh start, with a word
    assert any(
        "model-1.pt, model-2.pt, model-3.pt" in r.getMessage() and "resume='auto'" in r.getMessage()
        for r in caplog.records
    )


def test_keep_last_deletes_only_the_oldest_own_checkpoints(images, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    keep = ["model-best.pt", "model-3.pt.bak", "notes.txt", "my-model-1.pt"]
    for name in keep:
        (results / name).write_text("not ours")
    trainer = make_trainer(
        tiny_diffusion(), images, results, train_num_steps=9, num_samples=0, keep_last=2, keep_powers_of_two=False
    )
    trainer.train()  # milestones 1..5 (steps 2, 4, 6, 8 and the end, 9)
    assert sorted(p.name for p in results.glob("*.pt")) == [
        "model-4.pt",
        "model-5.pt",
        "model-best.pt",
        "my-model-1.pt",
    ]
    assert all((results / name).read_text() == "not ours" for name in keep)
    assert load_checkpoint(results / "model-5.pt")["step"] == 9


def test_keep_last_never_deletes_the_last_good_checkpoint_when_a_save_fails(
    images, tmp_path: Path, monkeypatch
) -> None:
    results = tmp_path / "results"
    trainer = make_trainer(tiny_diffusion(), images, results, train_num_steps=2, num_samples=0, keep_last=1)
    trainer.train()

    def disk_full(obj, file) -> None:
        file.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    trainer.train_num_steps = 4
    with pytest.raises(OSError, match="No space left"):
        trainer.train()
    monkeypatch.undo()
    assert sorted(p.name for p in results.iterdir()) == ["loss.csv", "model-1.pt"]  # no temporary file either
    assert load_checkpoint(results / "model-1.pt")["step"] == 2


def test_leftovers_of_an_interrupted_save_are_removed(images, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    stale = results / ".model-3.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = results / ".other.tmp"
    other.write_bytes(b"not ours")
    make_trainer(tiny_diffusion(), images, results)
    assert not stale.exists() and other.exists()


def test_prune_checkpoints_arithmetic(tmp_path: Path) -> None:
    for milestone in (1, 2, 3, 5, 9):
        (tmp_path / f"model-{milestone}.pt").write_bytes(b"x")
    deleted = milestones.prune_checkpoints(tmp_path, keep_last=2, written=5)
    assert [p.name for p in deleted] == ["model-1.pt", "model-2.pt"]
    assert milestones.list_milestones(tmp_path) == [3, 5, 9]  # newer files (an abandoned branch) are not touched
    assert milestones.prune_checkpoints(tmp_path, keep_last=None, written=9) == []


def test_the_default_retention_keeps_the_newest_three_and_the_powers_of_two(images, tmp_path: Path) -> None:
    """The Trainer's defaults (keep_last=3, keep_powers_of_two=True) over 12 milestones keep 1, 2, 4, 8 and the
    newest three, 10-12: 7 files where keeping all would be 12 (and log2(n) + 3 for n milestones in general)."""
    results = tmp_path / "results"
    trainer = make_trainer(
        tiny_diffusion(), images, results, train_num_steps=12, save_and_sample_every=1, num_samples=0
    )
    trainer.train()
    assert milestones.list_milestones(results) == [1, 2, 4, 8, 10, 11, 12]


def test_retention_arithmetic_bounds_the_disk_of_a_long_run(tmp_path: Path) -> None:
    """The tutorial's run: 700 milestones of ~570 MB. Pruning after each save, as the Trainer does, leaves the
    powers of two up to 512 and the newest three: 13 files (~7 GB) instead of 700 (~400 GB)."""
    for milestone in range(1, 701):
        (tmp_path / f"model-{milestone}.pt").write_bytes(b"")
        milestones.prune_checkpoints(tmp_path, keep_last=3, written=milestone, keep_powers_of_two=True)
    assert milestones.list_milestones(tmp_path) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 698, 699, 700]
    for milestone in range(701, 705):
        (tmp_path / f"model-{milestone}.pt").write_bytes(b"")
    assert milestones.prune_checkpoints(tmp_path, keep_last=None, written=704, keep_powers_of_two=True) == []
    assert len(milestones.list_milestones(tmp_path)) == 17  # keep_last=None keeps everything
    milestones.prune_checkpoints(tmp_path, keep_last=6, written=700, keep_powers_of_two=False)
    # The six newest up to 700 stay; files above it (an abandoned branch) are not pruned here.
    assert milestones.list_milestones(tmp_path) == [128, 256, 512, 698, 699, 700, 701, 702, 703, 704]
