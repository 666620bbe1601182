"""The validation loss (training/validation.py): at fixed t and ε, so the same weights give the same number at every
milestone and other weights another; logged beside the training loss; bad validation data stops before anything
is written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn
from trainer_helpers import isolated_accelerate, make_trainer, reset_accelerate, tiny_diffusion  # noqa: F401

from denoising_diffusion.checkpoint import load_checkpoint
from denoising_diffusion.data.batch import collate_batch
from denoising_diffusion.diffusion import GaussianDiffusion
from denoising_diffusion.nn.unet import Unet
from denoising_diffusion.training.validation import Validation, validation_loss


def logged(results: Path) -> dict[tuple[int, str], float]:
    with open(results / "validation.csv", newline="") as file:
        return {(int(row["step"]), row["name"]): float(row["value"]) for row in csv.DictReader(file)}


def test_same_weights_same_loss_other_weights_another(tmp_path: Path) -> None:
    """The loss logged at milestone 1 is recomputed exactly from that checkpoint's weights, later, after training
    moved the RNG on; milestone 2's weights give another number; validating leaves the training RNG alone."""
    torch.manual_seed(0)
    images = torch.rand(20, 3, 8, 8)
    seen: list[dict] = []
    trainer = make_trainer(tiny_diffusion(), list(images[:12]), tmp_path / "r", train_lr=1e-2, log_fn=seen.append,
                           validation=Validation(list(images[12:]), num_items=6, batch_size=4))  # fmt: skip
    trainer.train()
    values = logged(tmp_path / "r")
    assert values[(2, "val_loss")] != values[(4, "val_loss")]
    assert [row["val_loss"] for row in seen if "val_loss" in row] == pytest.approx(
        [values[(2, "val_loss")], values[(4, "val_loss")]], rel=1e-5
    )
    model = tiny_diffusion()
    model.model.load_state_dict(load_checkpoint(tmp_path / "r" / "model-1.pt")["model"])
    torch.rand(100)  # another global RNG state than at milestone 1
    state = torch.random.get_rng_state()
    again = validation_loss(model, trainer.validation.batches, trainer.validation.seed, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert again == pytest.approx(values[(2, "val_loss")], rel=1e-5, abs=0)  # the CSV keeps 6 digits
    first = trainer.validation_losses()["val_loss"]
    assert trainer.validation_losses()["val_loss"] == first and first == pytest.approx(values[(4, "val_loss")], 1e-5)


def test_the_noise_is_fixed_per_item_not_drawn_anew(tmp_path: Path) -> None:
    """Two calls with the same weights agree to the bit; another seed (other t and ε) gives another number."""
    model = tiny_diffusion()
    batches = [collate_batch(list(torch.rand(4, 3, 8, 8)))]
    first = validation_loss(model, batches, 0, torch.device("cpu"))
    assert validation_loss(model, batches, 0, torch.device("cpu")) == first
    assert validation_loss(model, batches, 1, torch.device("cpu")) != first


def test_each_batch_draws_its_own_t_and_noise() -> None:
    """Batch b's draws come from its own seed mixed_seed(seed, b): the same batch twice is the mean of two different
    losses, not the first one's again (one seed for every batch would repeat one batch's t and ε across the set)."""
    model = tiny_diffusion()
    batch = collate_batch(list(torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))))
    once = validation_loss(model, [batch], 0, torch.device("cpu"))
    twice = validation_loss(model, [batch, batch], 0, torch.device("cpu"))
    assert abs(twice - once) > 1e-3 * once


class PixelMean(nn.Module):
    """A stand-in model whose loss of a batch is the mean of its pixels; it records its mode at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return batch.mean()


def test_the_loss_is_the_mean_over_items_whatever_the_batch_sizes() -> None:
    """Items of constant value 0, 1, 2, 3 in batches of 3 and 1: the validation loss is the mean over the items, 1.5
    (the mean of the two batch means, 2, would weight the last item three times); computed in eval mode, the mode
    restored."""
    items = [torch.full((3, 2, 2), float(i)) for i in range(4)]
    model = PixelMean()
    loss = validation_loss(model, [collate_batch(items[:3]), collate_batch(items[3:])], 0, torch.device("cpu"))
    assert loss == pytest.approx(1.5, abs=1e-12)
    assert model.modes == [False, False] and model.training


def test_bad_validation_data_stops_before_anything_is_written(tmp_path: Path) -> None:
    unet = Unet(8, dim_mults=(1, 2), num_classes=3, resnet_block_groups=4)
    conditional = GaussianDiffusion(unet, image_size=8, timesteps=10)
    data = [(image, i % 3) for i, image in enumerate(torch.rand(8, 3, 8, 8))]
    with pytest.raises(ValueError, match="the model cannot compute a loss on the validation items: "):
        make_trainer(conditional, data, tmp_path / "r", validation=list(torch.rand(4, 3, 8, 8)))
    reset_accelerate()
    with pytest.raises(ValueError, match=r"the dataset's images have shape \(3, 16, 16\) .* expects \(3, 8, 8\)"):
        make_trainer(tiny_diffusion(), list(torch.rand(8, 3, 8, 8)), tmp_path / "r",
                     validation=list(torch.rand(4, 3, 16, 16)))  # fmt: skip
    with pytest.raises(ValueError, match="validation num_items must be an int >= 1, got 0"):
        Validation([], num_items=0)
    assert not (tmp_path / "r").exists()
