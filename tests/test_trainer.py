"""End-to-end tests of the Trainer on tiny models: files written, exact resume, amp on CPU, datasets, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from test_data import write_mixed_folder
from torch.utils.data import TensorDataset

from denoising_diffusion.checkpoint import CheckpointError, load_checkpoint
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.trainer import Trainer


def _reset_accelerate() -> None:
    # accelerate keeps one process-wide state and refuses a second mixed-precision setting; tests need a fresh one.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def _isolated():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and stall when the CPU is shared)
    torch.manual_seed(0)
    _reset_accelerate()
    yield
    torch.set_num_threads(threads)
    _reset_accelerate()


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_mixed_folder(tmp_path / "images")


def tiny_diffusion(dim: int = 8, channels: int = 3) -> GaussianDiffusion:
    unet = Unet(dim, dim_mults=(1, 2), channels=channels, resnet_block_groups=4, attn_heads=2, attn_dim_head=8)
    return GaussianDiffusion(unet, image_size=8, timesteps=10)


def make_trainer(diffusion: GaussianDiffusion, data, results: Path, **kwargs) -> Trainer:
    options = dict(train_batch_size=4, train_num_steps=4, save_and_sample_every=2, num_samples=4,
                   results_folder=results, num_workers=0, seed=0, ema_update_every=1)
    options.update(kwargs)
    return Trainer(diffusion, data, **options)


def read_loss_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_training_writes_checkpoints_samples_and_loss_log(image_folder: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("keep me")
    trainer = make_trainer(tiny_diffusion(), image_folder, results, train_num_steps=5)
    trainer.train()
    names = sorted(p.name for p in results.iterdir())
    # milestones at steps 2 and 4, and the end (step 5) as milestone ceil(5 / 2) = 3
    assert names == ["loss.csv", "model-1.pt", "model-2.pt", "model-3.pt", "notes.txt", "sample-1.png",
                     "sample-2.png", "sample-3.png"]
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
    trainer = make_trainer(tiny_diffusion(), image_folder, tmp_path / "results", amp=True, train_num_steps=2,
                           num_samples=2)
    assert trainer.accelerator.mixed_precision == "bf16"
    trainer.train()
    losses = [float(r["loss"]) for r in read_loss_log(tmp_path / "results" / "loss.csv")]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert (tmp_path / "results" / "sample-1.png").exists()


def test_dataset_objects_are_accepted(tmp_path: Path) -> None:
    images = torch.rand(10, 1, 8, 8)
    dataset = TensorDataset(images, torch.zeros(10))  # items are (image, label) tuples
    trainer = make_trainer(tiny_diffusion(channels=1), dataset, tmp_path / "results", train_num_steps=2)
    trainer.train()
    assert (tmp_path / "results" / "model-1.pt").exists() and (tmp_path / "results" / "sample-1.png").exists()


def test_dataloader_workers_and_gradient_accumulation(image_folder: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_diffusion(), image_folder, tmp_path / "results", num_workers=1,
                           gradient_accumulate_every=3, train_num_steps=2, num_samples=0)
    trainer.train()
    assert trainer.step == 2 and trainer.samples_seen == 2 * 3 * 4
    trainer.train_num_steps = 3  # training further continues at the same place in the data order
    trainer.train()
    assert trainer.step == 3 and [p.name for p in sorted((tmp_path / "results").glob("model-*.pt"))] == [
        "model-1.pt", "model-2.pt"]


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
    for bad in [dict(train_batch_size=0), dict(gradient_accumulate_every=0), dict(train_lr=0.0),
                dict(ema_decay=1.5), dict(max_grad_norm=-1.0), dict(on_bad_image="maybe"),
                dict(amp=True, mixed_precision_type="fp8")]:
        with pytest.raises(ValueError):
            make_trainer(tiny_diffusion(), image_folder, tmp_path / "results", **bad)
    assert not (tmp_path / "results").exists()


def test_tutorial_call_constructs(image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(tiny_diffusion(), image_folder, train_batch_size=32, train_lr=8e-5, train_num_steps=700000,
                      gradient_accumulate_every=2, ema_decay=0.995, amp=True)
    assert trainer.train_num_steps == 700000 and (tmp_path / "results").is_dir()
    assert trainer.accelerator.gradient_accumulation_steps == 2


def test_a_second_mixed_precision_setting_in_one_process_is_a_clear_error(image_folder: Path, tmp_path: Path) -> None:
    make_trainer(tiny_diffusion(), image_folder, tmp_path / "a", amp=False)
    with pytest.raises(ValueError, match="one mixed-precision setting per process"):
        make_trainer(tiny_diffusion(), image_folder, tmp_path / "b", amp=True)
