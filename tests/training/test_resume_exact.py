"""The README's resume claims, one by one, in-process (issue 9): each test fails when the part it names is wrong.

1. Python's ``random`` and NumPy's global generator, drawn from by the model in the main process, continue
   exactly after a resume (rng.capture_rng_state / restore_rng_state).
2. The GradScaler's scale and growth tracker survive state_dict / load_state_dict and a checkpoint file.
3. DataLoader workers: a dataset that draws random numbers while reading its items resumes bit for bit with
   workers, and the items a run sees do not depend on num_workers (loader.TrainingItems reads every item under
   rng.seeded_rngs, seeded by its position in the data order).
4. The Trainer trains any trainable (trainable.py), not only a GaussianDiffusion; check_trainable names what an
   object lacks.
5. Batches keep their structure (batch.py): dicts and (image, label) tuples reach the model batched; an
   unconditional GaussianDiffusion warns once about what it drops; items of a wrong form fail at construction.

"Exact" is bit-exact: every comparison is torch.equal on whole checkpoints (network, EMA, Adam, step, data position,
RNG states). With one thread (the isolated_accelerate fixture) the CPU kernels used here are deterministic.
"""

from __future__ import annotations

import logging
import random
import re
import types
import warnings
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
from trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.data.batch import split_batch
from denoising_diffusion.data.datasets import ImageFolderDataset
from denoising_diffusion.training import Trainer
from denoising_diffusion.training.trainable import check_trainable

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


def straight_and_resumed(
    make_model: Callable[[], nn.Module],
    data: Any,
    tmp_path: Path,
    *,
    resumed_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The final checkpoints of an uninterrupted 5-step run (checkpoints at steps 3 and 5) and of a new Trainer,
    built after scrambling the global RNGs and without a seed, that resumes from the step-3 checkpoint."""
    options = dict(train_num_steps=5, save_and_sample_every=3, num_samples=0, **options)
    straight = make_trainer(make_model(), data, tmp_path / "straight", **options)
    straight.train()
    scramble_global_rngs()
    resumed = make_trainer(
        make_model(),
        data,
        tmp_path / "resumed",
        **{**options, **(resumed_options or {})},
        seed=None,
        resume=tmp_path / "straight" / "model-1.pt",
    )
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


def test_a_scaler_state_without_a_scaler_and_a_scaler_without_state_are_named(tmp_path: Path, caplog) -> None:
    data, options = random_images(), {"train_num_steps": 2, "save_and_sample_every": 2, "num_samples": 0}
    trained = make_trainer(TinyTrainable(), data, tmp_path / "r", **options)
    attach_grad_scaler(trained)
    trained.train()
    with caplog.at_level(logging.WARNING):
        make_trainer(TinyTrainable(), data, tmp_path / "r", **options).load(1)  # a run without a scaler
    assert "holds a gradient-scaler state, which this run" in caplog.text
    plain = make_trainer(TinyTrainable(), data, tmp_path / "plain", **options)
    plain.train()
    caplog.clear()
    with_scaler = make_trainer(TinyTrainable(), data, tmp_path / "plain", **options)
    attach_grad_scaler(with_scaler)
    with caplog.at_level(logging.WARNING):
        with_scaler.load(1)
    assert "holds no gradient-scaler state: this run's fp16 scaler starts" in caplog.text


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
        trainer = make_trainer(
            TinyTrainable(),
            data,
            tmp_path / f"workers-{workers}",
            num_workers=workers,
            num_samples=0,
            gradient_accumulate_every=2,
        )
        trainer.train()
        finals.append(load_checkpoint(tmp_path / f"workers-{workers}" / "model-2.pt"))
    assert_identical(finals[1], finals[0])


@RANDOM_DATASETS
def test_a_run_with_workers_resumes_exactly_without_them(make_dataset, tmp_path: Path) -> None:
    expected, resumed = straight_and_resumed(
        TinyTrainable, make_dataset(tmp_path), tmp_path, num_workers=2, resumed_options={"num_workers": 0}
    )
    assert_identical(resumed, expected)


# ----- 4. Any trainable -------------------------------------------------------------------------------------------


def test_a_custom_trainable_trains_with_ema_and_checkpoints_but_writes_no_samples(tmp_path: Path) -> None:
    results = tmp_path / "r"
    model = TinyTrainable()
    initial = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer = make_trainer(model, random_images(), results, num_samples=4)  # 4 steps, a checkpoint every 2
    trainer.ema.update_after_step = 0  # average from the second step on (ema-pytorch copies for 100 steps first)
    trainer.train()
    assert sorted(p.name for p in results.iterdir()) == ["loss.csv", "model-1.pt", "model-2.pt"]
    checkpoint = load_checkpoint(results / "model-2.pt")
    assert checkpoint["config"]["kind"] == "TinyTrainable" and checkpoint["step"] == 4
    assert int(checkpoint["ema"]["step"]) == 4  # one EMA update per step (ema_update_every=1)
    ema_weights = trainer.ema.ema_model.state_dict()
    for name, value in checkpoint["model"].items():
        assert not torch.equal(value, initial[name]), name  # it trained
        assert not torch.equal(ema_weights[name], value), name  # and the EMA averages: neither the weights
        assert not torch.equal(ema_weights[name], initial[name]), name  # nor where they started
        assert torch.equal(checkpoint["ema"][f"ema_model.{name}"], ema_weights[name]), name
    with pytest.raises(TypeError, match="TinyTrainable has no with_model"):
        trainer.sample(4)

    resumed = make_trainer(TinyTrainable(), random_images(), results, num_samples=4, train_num_steps=6, resume="auto")
    assert resumed.step == 4
    assert_identical(resumed.ema.state_dict(), checkpoint["ema"], "ema")
    resumed.train()
    assert load_checkpoint(results / "model-3.pt")["step"] == 6
    assert not list(results.glob("sample-*"))


class NoNetwork(nn.Module):
    channels, image_size = 3, (SIZE, SIZE)


class NoChannels(nn.Module):
    image_size = (SIZE, SIZE)

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Conv2d(3, 3, 1)


class NoImageSize(NoChannels):
    channels = 3
    image_size = None


def not_a_module() -> Any:
    return types.SimpleNamespace(model=nn.Conv2d(3, 3, 1), channels=3, image_size=(SIZE, SIZE))


@pytest.mark.parametrize(
    "make, missing",
    [
        (NoNetwork, "no .model network"),
        (NoChannels, "no int .channels"),
        (NoImageSize, r"no .image_size \(height, width\)"),
        (not_a_module, "it is a SimpleNamespace, not a torch.nn.Module"),
    ],
)
def test_check_trainable_names_what_is_missing(make, missing: str, tmp_path: Path) -> None:
    obj = make()
    with pytest.raises(ValueError, match=missing):
        check_trainable(obj)
    with pytest.raises(ValueError, match=f"cannot be trained: .*{missing}"):
        Trainer(obj, random_images(), results_folder=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    check_trainable(TinyTrainable())  # the complete one passes


# ----- 5. Batch structure -----------------------------------------------------------------------------------------


def labelled_images() -> list[tuple[Tensor, int]]:
    """(image, label) with the label written into the image (every pixel = label / 16), to check the pairing."""
    return [(torch.full((3, SIZE, SIZE), label / 16), label) for label in range(12)]


def as_dicts(pairs: list[tuple[Tensor, int]]) -> list[dict[str, Any]]:
    return [{"image": image, "label": label} for image, label in pairs]


def as_tuples(pairs: list[tuple[Tensor, int]]) -> list[tuple[Tensor, int]]:
    return pairs


@pytest.mark.parametrize("form", [as_dicts, as_tuples])
def test_dicts_and_tuples_reach_the_model_batched(form, tmp_path: Path) -> None:
    model = TinyTrainable()
    make_trainer(model, form(labelled_images()), tmp_path / "r", train_num_steps=3, num_samples=0).train()
    assert len(model.batches) == 3
    seen = []
    for batch in model.batches:
        if form is as_dicts:
            assert isinstance(batch, dict) and batch.keys() == {"image", "label"}
            images, labels = batch["image"], batch["label"]
        else:
            assert isinstance(batch, list) and len(batch) == 2
            images, labels = batch
        assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and labels.shape == (4,)
        assert torch.equal(labels, (images[:, 0, 0, 0] * 16).round().long())  # each label with its own image
        assert torch.equal(images, labels.float().div(16).view(4, 1, 1, 1).expand_as(images))
        seen += labels.tolist()
    assert sorted(seen) == list(range(12))  # one epoch of 12 in 3 batches of 4: each item once


DROPPED = [
    (as_tuples, r"element \[1\] \(a \(4,\) torch.int64 tensor\)"),
    (as_dicts, r"entry 'label' \(a \(4,\) torch.int64 tensor\)"),
]


@pytest.mark.parametrize("form, named", DROPPED)
def test_gaussian_diffusion_warns_that_it_drops_the_labels(form, named: str, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_diffusion(), form(labelled_images()), tmp_path / "r", train_num_steps=1, num_samples=0)
    with pytest.warns(UserWarning, match=f"takes no condition, so the batch's {named} is dropped"):
        trainer.train()


@pytest.mark.parametrize("form, named", DROPPED)
def test_the_dropped_labels_warning_comes_once_even_when_every_warning_is_shown(
    form, named: str, tmp_path: Path
) -> None:
    trainer = make_trainer(tiny_diffusion(), form(labelled_images()), tmp_path / "r", train_num_steps=3, num_samples=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the model itself warns once, not the warnings filter
        trainer.train()
    dropped = [w for w in caught if "is dropped" in str(w.message)]
    assert len(dropped) == 1 and dropped[0].category is UserWarning and re.search(named, str(dropped[0].message))


@pytest.mark.parametrize(
    "items, says",
    [
        (["abc", "def"], "items must be .*dicts with an 'image' entry; got a str$"),
        ([{"picture": torch.rand(3, SIZE, SIZE)}], r"items must be .*; got a dict with the keys \['picture'\]"),
        (
            [(torch.rand(3, SIZE, SIZE, SIZE), 1)],
            r"items must be .*; got a tuple whose first element is a \(3, 8, 8, 8\)",
        ),
    ],
)
def test_items_of_a_wrong_form_fail_at_construction_before_anything_is_written(
    items, says: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=says):
        make_trainer(TinyTrainable(), items, tmp_path / "r")
    assert not (tmp_path / "r").exists()
