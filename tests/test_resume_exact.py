"""The README's resume claims, one by one, in-process (issue 9): each test fails when the part it names is wrong.

1. Python's ``random`` and NumPy's global generator, drawn from by the model in the main process, continue
   exactly after a resume (rng.capture_rng_state / restore_rng_state).
2. The GradScaler's scale and growth tracker survive state_dict / load_state_dict and a checkpoint file.
3. DataLoader workers: a dataset that draws random numbers while reading its items resumes bit for bit with
   workers, and the items a run sees do not depend on num_workers (loader.TrainingItems reads every item under
   rng.seeded_rngs, seeded by its position in the data order).

"Exact" is bit-exact: every comparison is torch.equal on whole checkpoints (network, EMA, Adam, step, data position,
RNG states). With one thread (the isolated_accelerate fixture) the CPU kernels used here are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_resume_kill import assert_identical
from torch import Tensor, nn
from torch.utils.data import Dataset
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401

from denoising_diffusion.batch import split_batch
from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.data import ImageFolderDataset
from denoising_diffusion.training import Trainer

SIZE = 8


class TinyTrainable(nn.Module):
    """A trainable that is not a GaussianDiffusion (no sample(), no with_model()): a 1x1-conv denoiser whose loss
    draws its noise from torch and, with ``global_rngs``, scales it by draws from Python's ``random`` and NumPy's
    global generator. random.gauss and np.random.randn draw normals in pairs and cache the second one, so after
    an odd number of steps the saved states hold a cached normal too. Records every batch it is called with."""

    channels = 3
    image_size = (SIZE, SIZE)

    def __init__(self, global_rngs: bool = False) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.SiLU(), nn.Conv2d(8, 3, 1))
        self.global_rngs = global_rngs
        self.batches: list[Any] = []

    def forward(self, batch: Any) -> Tensor:
        self.batches.append(batch)
        images, _ = split_batch(batch)
        noise = torch.randn_like(images)
        if self.global_rngs:
            scale = (0.5 + random.random()) * (0.5 + float(np.random.rand()))
            shift = 0.1 * (random.gauss(0.0, 1.0) + float(np.random.randn()))
            noise = noise * scale + shift
        return (self.model(images + noise) - images).square().mean()


def random_images(n: int = 12, seed: int = 1) -> list[Tensor]:
    return list(torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)).unbind(0))


class RandomlyAugmented(Dataset):
    """Images changed on every read by draws from torch, Python's random and NumPy's global generator (random
    augmentation as a user writes it: with the global generators)."""

    def __init__(self) -> None:
        self.images = random_images(12, seed=2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        image = self.images[index] * (0.5 + 0.5 * torch.rand(()))
        image = image + 0.2 * random.random() - 0.2 * float(np.random.rand())
        return image.clamp(0.0, 1.0)


def write_noise_pngs(folder: Path, n: int = 8) -> Path:
    """n random RGB PNGs of SIZE x SIZE: no image is its own mirror image, so every flip changes the batch."""
    folder.mkdir(parents=True)
    pixels = np.random.default_rng(3).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


def scramble_global_rngs() -> None:
    """What another run (or a different process) would have left in the global generators."""
    random.seed(987)
    np.random.seed(987)
    torch.manual_seed(987)


def straight_and_resumed(make_model: Callable[[], nn.Module], data: Any, tmp_path: Path, *,
                         resumed_options: dict[str, Any] | None = None, **options: Any
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The final checkpoints of an uninterrupted 5-step run (checkpoints at steps 3 and 5) and of a new Trainer,
    built after scrambling the global RNGs and without a seed, that resumes from the step-3 checkpoint."""
    options = dict(train_num_steps=5, save_and_sample_every=3, num_samples=0, **options)
    straight = make_trainer(make_model(), data, tmp_path / "straight", **options)
    straight.train()
    scramble_global_rngs()
    resumed = make_trainer(make_model(), data, tmp_path / "resumed", **{**options, **(resumed_options or {})},
                           seed=None, resume=tmp_path / "straight" / "model-1.pt")
    assert resumed.step == 3
    resumed.train()
    final = load_checkpoint(tmp_path / "resumed" / "model-2.pt")
    assert final["step"] == 5
    assert_identical(resumed.trainable.model.state_dict(), straight.trainable.model.state_dict(), "weights")
    return load_checkpoint(tmp_path / "straight" / "model-2.pt"), final


# ----- 1. Python's and NumPy's RNG states -----------------------------------------------------------------------


def test_a_model_drawing_from_random_and_numpy_resumes_exactly(tmp_path: Path) -> None:
    expected, resumed = straight_and_resumed(lambda: TinyTrainable(global_rngs=True), random_images(), tmp_path)
    assert_identical(resumed, expected)
    saved = load_checkpoint(tmp_path / "straight" / "model-1.pt")["trainer"]["rng"][0]  # the one resumed from
    assert saved["python"]["gauss"] is not None and saved["numpy"]["has_gauss"] == 1  # 3 normals: one is cached


# ----- 2. The GradScaler ------------------------------------------------------------------------------------------


def attach_grad_scaler(trainer: Trainer) -> torch.amp.GradScaler:
    """A GradScaler for the CPU, as accelerate makes one for fp16 on a GPU (none here; see test_guards). Scaling by
    powers of two keeps fp32's arithmetic; growth_interval=3 makes the scale grow during a short run."""
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=3)
    trainer.accelerator.scaler = scaler
    trainer.opt.__init__(trainer.opt.optimizer, device_placement=False, scaler=scaler)  # step through the scaler
    return scaler


def test_the_grad_scaler_state_is_saved_and_restored(tmp_path: Path) -> None:
    data, options = random_images(), {"train_num_steps": 4, "save_and_sample_every": 4, "num_samples": 0}
    trained = make_trainer(TinyTrainable(), data, tmp_path / "r", **options)
    attach_grad_scaler(trained)
    trained.train()
    saved = trained.accelerator.scaler.state_dict()
    assert (saved["scale"], saved["_growth_tracker"]) == (8.0, 1)  # grew once after 3 good steps, then 1 more
    state = trained.state_dict()
    assert state["scaler"] == saved
    assert load_checkpoint(tmp_path / "r" / "model-1.pt")["scaler"] == saved

    restored = make_trainer(TinyTrainable(), data, tmp_path / "other", **options)
    scaler = attach_grad_scaler(restored)
    assert scaler.state_dict() != saved
    restored.load_state_dict(state)
    assert scaler.state_dict() == saved

    from_file = make_trainer(TinyTrainable(), data, tmp_path / "r", **options)
    scaler = attach_grad_scaler(from_file)
    from_file.load(1)
    assert scaler.state_dict() == saved and from_file.step == 4


# ----- 3. DataLoader workers --------------------------------------------------------------------------------------


def randomly_augmented(tmp_path: Path) -> Dataset:
    return RandomlyAugmented()


def flipped_folder(tmp_path: Path) -> Dataset:
    return ImageFolderDataset(write_noise_pngs(tmp_path / "images"), SIZE, augment_horizontal_flip=True)


RANDOM_DATASETS = pytest.mark.parametrize("make_dataset", [randomly_augmented, flipped_folder])


@RANDOM_DATASETS
def test_random_augmentation_in_workers_resumes_exactly(make_dataset, tmp_path: Path) -> None:
    # resumed after 3 batches: an odd number, so with 2 workers the resumed run's first batch goes to the worker
    # that read the straight run's even batches (a worker's own RNG streams cannot stand in for the seeding)
    expected, resumed = straight_and_resumed(TinyTrainable, make_dataset(tmp_path), tmp_path, num_workers=2)
    assert_identical(resumed, expected)


@RANDOM_DATASETS
def test_the_items_a_run_sees_do_not_depend_on_num_workers(make_dataset, tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    finals = []
    for workers in (0, 2):
        torch.manual_seed(0)  # the same initial weights
        trainer = make_trainer(TinyTrainable(), data, tmp_path / f"workers-{workers}", num_workers=workers,
                               num_samples=0, gradient_accumulate_every=2)
        trainer.train()
        finals.append(load_checkpoint(tmp_path / f"workers-{workers}" / "model-2.pt"))
    assert_identical(finals[1], finals[0])


@RANDOM_DATASETS
def test_a_run_with_workers_resumes_exactly_without_them(make_dataset, tmp_path: Path) -> None:
    expected, resumed = straight_and_resumed(TinyTrainable, make_dataset(tmp_path), tmp_path, num_workers=2,
                                             resumed_options={"num_workers": 0})
    assert_identical(resumed, expected)
