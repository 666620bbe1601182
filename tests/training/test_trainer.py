"""End-to-end tests of the Trainer on tiny models: files written, exact resume, amp on CPU, datasets, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from accelerate.tracking import GeneralTracker, get_available_trackers
from test_data import write_mixed_folder
from torch.utils.data import TensorDataset
from trainer_helpers import isolated_accelerate, make_trainer, read_loss_log, tiny_diffusion  # noqa: F401

from denoising_diffusion.checkpoint import CheckpointError, load_checkpoint
from denoising_diffusion.training import Trainer


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_mixed_folder(tmp_path / "images")


def test_training_writes_checkpoints_samples_and_loss_log(image_folder: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("keep me")
    trainer = make_trainer(tiny_diffusion(), image_folder, results, train_num_steps=5)
    trainer.train()
    names = sorted(p.name for p in results.iterdir())
    # milestones at steps 2 and 4, and the end (step 5) as milestone ceil(5 / 2) = 3
    assert names == [
        "loss.csv",
        "model-1.pt",
        "model-2.pt",
        "model-3.pt",
        "notes.txt",
        "sample-1.png",
        "sample-2.png",
        "sample-3.png",
    ]
    assert (results / "notes.txt").read_text() == "keep me"
    rows = read_loss_log(results / "loss.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(float(r["loss"]) > 0 and float(r["grad_norm"]) > 0 and float(r["lr"]) == 1e-4 for r in rows)
    assert load_checkpoint(results / "model-3.pt")["step"] == 5
    assert trainer.latest_milestone() == 3


def assert_same_tensors(a, b, where: str = "") -> None:
    """Recursive exact equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_load_restores_state_and_resumes_exactly(image_folder: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    uninterrupted = make_trainer(tiny_diffusion(), image_folder, results, gradient_accumulate_every=2)
    uninterrupted.train()  # steps 1..4, checkpoints at steps 2 (milestone 1) and 4 (milestone 2)
    final = {k: v.clone() for k, v in uninterrupted.diffusion.model.state_dict().items()}
    saved = load_checkpoint(results / "model-1.pt")

    torch.manual_seed(123)  # a different initialisation, overwritten by load
    resumed = make_trainer(tiny_diffusion(), image_folder, results, gradient_accumulate_every=2, seed=None)
    resumed.load(1)
    assert resumed.step == 2
    assert_same_tensors(resumed.diffusion.model.state_dict(), saved["model"], "model")
    assert_same_tensors(resumed.ema.state_dict(), saved["ema"], "ema")
    assert_same_tensors(resumed.opt.state_dict(), saved["opt"], "opt")

    resumed.train()  # steps 3..4: same data, same noise, same updates as the uninterrupted run
    assert resumed.step == 4
    assert_same_tensors(resumed.diffusion.model.state_dict(), final, "final model")
    assert_same_tensors(resumed.ema.state_dict(), load_checkpoint(results / "model-2.pt")["ema"], "final ema")
    steps = [int(r["step"]) for r in read_loss_log(results / "loss.csv")]
    assert steps == [1, 2, 3, 4, 3, 4]  # appended, not truncated


def test_load_into_a_different_model_names_the_fields(image_folder: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    make_trainer(tiny_diffusion(dim=8), image_folder, results, train_num_steps=2, num_samples=0).train()
    other = make_trainer(tiny_diffusion(dim=16), image_folder, results)
    with pytest.raises(CheckpointError, match=r"model\.dim: checkpoint has 8, this model has 16"):
        other.load(1)


def test_amp_on_cpu_trains_in_bf16(image_folder: Path, tmp_path: Path) -> None:
    trainer = make_trainer(
        tiny_diffusion(), image_folder, tmp_path / "results", amp=True, train_num_steps=2, num_samples=2
    )
    assert trainer.accelerator.mixed_precision == "bf16"
    trainer.train()
    losses = [float(r["loss"]) for r in read_loss_log(tmp_path / "results" / "loss.csv")]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert (tmp_path / "results" / "sample-1.png").exists()


def test_dataset_objects_are_accepted(tmp_path: Path) -> None:
    images = torch.rand(10, 1, 8, 8)
    dataset = TensorDataset(images, torch.zeros(10))  # items are (image, label) tuples
    trainer = make_trainer(tiny_diffusion(channels=1), dataset, tmp_path / "results", train_num_steps=2)
    with pytest.warns(UserWarning, match=r"element \[1\] \(a \(4,\) torch.float32 tensor\) is dropped"):
        trainer.train()
    assert (tmp_path / "results" / "model-1.pt").exists() and (tmp_path / "results" / "sample-1.png").exists()


def test_dataloader_workers_and_gradient_accumulation(image_folder: Path, tmp_path: Path) -> None:
    trainer = make_trainer(
        tiny_diffusion(),
        image_folder,
        tmp_path / "results",
        num_workers=1,
        gradient_accumulate_every=3,
        train_num_steps=2,
        num_samples=0,
    )
    trainer.train()
    assert trainer.step == 2 and trainer.samples_seen == 2 * 3 * 4
    trainer.train_num_steps = 3  # training further continues at the same place in the data order
    trainer.train()
    assert trainer.step == 3 and [p.name for p in sorted((tmp_path / "results").glob("model-*.pt"))] == [
        "model-1.pt",
        "model-2.pt",
    ]


def test_a_plain_list_of_images_is_accepted(tmp_path: Path) -> None:
    images = list(torch.rand(6, 3, 8, 8).unbind(0))
    make_trainer(tiny_diffusion(), images, tmp_path / "results", train_num_steps=1, num_samples=0).train()
    assert (tmp_path / "results" / "model-1.pt").exists()


def test_dataset_with_the_wrong_image_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(3, 16, 16\).*\(3, 8, 8\)"):
        make_trainer(tiny_diffusion(), TensorDataset(torch.rand(4, 3, 16, 16)), tmp_path / "results")
    with pytest.raises(ValueError, match="folder path or a torch Dataset"):
        make_trainer(tiny_diffusion(), 42, tmp_path / "results")


def test_empty_folder_fails_in_the_constructor_and_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    results = tmp_path / "results"
    results.mkdir()
    (results / "model-1.pt").write_bytes(b"an older run")
    with pytest.raises(ValueError, match="no images found in .*empty"):
        make_trainer(tiny_diffusion(), empty, results)
    assert [p.name for p in results.iterdir()] == ["model-1.pt"]
    assert (results / "model-1.pt").read_bytes() == b"an older run"


def test_invalid_options_are_value_errors(image_folder: Path, tmp_path: Path) -> None:
    for bad in [
        dict(train_batch_size=0),
        dict(gradient_accumulate_every=0),
        dict(train_lr=0.0),
        dict(ema_decay=1.5),
        dict(max_grad_norm=-1.0),
        dict(on_bad_image="maybe"),
        dict(amp=True, mixed_precision_type="fp8"),
        dict(compile="yes"),
    ]:
        with pytest.raises(ValueError):
            make_trainer(tiny_diffusion(), image_folder, tmp_path / "results", **bad)
    assert not (tmp_path / "results").exists()


def test_tutorial_call_constructs(image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(
        tiny_diffusion(),
        image_folder,
        train_batch_size=32,
        train_lr=8e-5,
        train_num_steps=700000,
        gradient_accumulate_every=2,
        ema_decay=0.995,
        amp=True,
    )
    assert trainer.train_num_steps == 700000 and (tmp_path / "results").is_dir()
    assert trainer.accelerator.gradient_accumulation_steps == 2


def test_a_second_mixed_precision_setting_in_one_process_is_a_clear_error(image_folder: Path, tmp_path: Path) -> None:
    make_trainer(tiny_diffusion(), image_folder, tmp_path / "a", amp=False)
    with pytest.raises(ValueError, match="one mixed-precision setting per process"):
        make_trainer(tiny_diffusion(), image_folder, tmp_path / "b", amp=True)


def test_loss_log_columns_progress_bar_and_log_fn(tmp_path: Path, capsys) -> None:
    rows = []
    images = list(torch.rand(8, 3, 8, 8).unbind(0))
    make_trainer(tiny_diffusion(), images, tmp_path / "r", train_num_steps=3, num_samples=0, log_fn=rows.append).train()
    with open(tmp_path / "r" / "loss.csv") as file:
        assert file.readline().strip() == "step,loss,lr,grad_norm,skipped"
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["skipped"] == 0 for r in rows)
    assert set(rows[0]) == {"step", "loss", "lr", "grad_norm", "skipped"}
    bar = capsys.readouterr().err
    assert "loss=" in bar and "img/s=" in bar and "3/3" in bar


def test_a_loss_log_from_before_the_skipped_column_is_migrated(tmp_path: Path) -> None:
    results = tmp_path / "r"
    results.mkdir()
    (results / "loss.csv").write_text("step,loss,lr,grad_norm\n1,0.5,0.0001,0.9\n2,0.4,0.0001,0.8\n")
    images = list(torch.rand(8, 3, 8, 8).unbind(0))
    make_trainer(tiny_diffusion(), images, results, train_num_steps=1, num_samples=0).train()
    rows = read_loss_log(results / "loss.csv")
    assert [(r["step"], r["loss"], r["skipped"]) for r in rows[:2]] == [("1", "0.5", "0"), ("2", "0.4", "0")]
    assert rows[2]["step"] == "1" and None not in rows[2]  # the new row has exactly the header's columns


def test_a_loss_log_with_a_foreign_header_is_moved_aside(tmp_path: Path, caplog) -> None:
    results = tmp_path / "r"
    results.mkdir()
    (results / "loss.csv").write_text("epoch,accuracy\n1,0.9\n")
    images = list(torch.rand(8, 3, 8, 8).unbind(0))
    with caplog.at_level(logging.WARNING):
        make_trainer(tiny_diffusion(), images, results, train_num_steps=1, num_samples=0).train()
    assert (results / "loss-1.csv.bak").read_text() == "epoch,accuracy\n1,0.9\n"
    assert [r["step"] for r in read_loss_log(results / "loss.csv")] == ["1"]
    assert any("unknown header" in r.getMessage() for r in caplog.records)


class Recorder(GeneralTracker):
    """An accelerate tracker that keeps what it is given (accelerate accepts GeneralTracker instances)."""

    name = "recorder"
    requires_logging_directory = False

    def __init__(self) -> None:
        super().__init__()
        self.config, self.logged, self.finished = None, [], False

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict) -> None:
        self.config = values

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logged.append((step, values))

    def finish(self) -> None:
        self.finished = True


def test_trackers_receive_every_step_and_missing_ones_are_skipped(tmp_path: Path, caplog) -> None:
    recorder = Recorder()
    images = list(torch.rand(8, 3, 8, 8).unbind(0))
    with caplog.at_level(logging.WARNING):
        trainer = make_trainer(
            tiny_diffusion(),
            images,
            tmp_path / "r",
            train_num_steps=2,
            num_samples=0,
            log_with=[recorder, "tensorboard"],
            tracker_project_name="tiny-run",
        )
        trainer.train()
    assert recorder.config["train_num_steps"] == 2 and recorder.config["global_batch_size"] == 4
    assert [step for step, _ in recorder.logged] == [1, 2]
    assert set(recorder.logged[0][1]) == {"loss", "lr", "grad_norm", "skipped"} and recorder.finished
    if "tensorboard" not in {str(t) for t in get_available_trackers()}:
        assert any("'tensorboard' is not installed" in r.getMessage() for r in caplog.records)
    else:
        assert list((tmp_path / "r" / "tiny-run").rglob("events.out.tfevents.*"))


def test_an_unknown_tracker_name_is_a_value_error_before_anything_is_written(tmp_path: Path) -> None:
    images = list(torch.rand(8, 3, 8, 8).unbind(0))
    with pytest.raises(ValueError, match="tensorbord"):
        make_trainer(tiny_diffusion(), images, tmp_path / "r", log_with="tensorbord")
    assert not (tmp_path / "r").exists()
