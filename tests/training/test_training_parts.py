"""The training/ split's own contracts, each by what it means (issue 29, part 8: the mutation list re-derived after the
re-housing found these unguarded): an optimizer step clips the gradient before Adam and logs the loss averaged over
its micro-batches (step.py); a milestone grid has one class per row and each chunk samples its own slice of the
condition, from the EMA network and the seed asked (preview.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from trainer_helpers import isolated_accelerate, make_trainer, read_loss_log, tiny_diffusion  # noqa: F401 (autouse)

from denoising_diffusion.conditioning import ConditionSpec
from denoising_diffusion.training.preview import preview_condition, sample_in_chunks


class Quadratic(nn.Module):
    """A trainable whose loss is 50 w² of its one weight w (1 at the start), whatever the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(1, 1, bias=False)
        nn.init.ones_(self.model.weight)
        self.channels, self.image_size = 1, (2, 2)

    def forward(self, batch: Any) -> Tensor:
        return 50 * self.model.weight.sum() ** 2


def test_the_gradient_is_clipped_before_adam_and_the_log_holds_the_mean_loss(tmp_path: Path) -> None:
    """With the gradient 100 w clipped to max_grad_norm = 1, Adam (Kingma & Ba 2015, Alg. 1) sees a gradient of
    constant size and moves w by exactly lr per step: w_k = 1 − 0.1 k. Over two micro-batches per step the log holds
    the loss 50 w² (their mean, not their sum) and the gradient norm 100 w before clipping."""
    trainable = Quadratic()
    data = [torch.rand(1, 2, 2) for _ in range(8)]
    trainer = make_trainer(trainable, data, tmp_path / "r", train_num_steps=3, gradient_accumulate_every=2,
                           train_lr=0.1, max_grad_norm=1.0, num_samples=0, save_and_sample_every=10)  # fmt: skip
    trainer.train()
    w = [1 - 0.1 * k for k in range(4)]
    assert float(trainable.model.weight.detach()) == pytest.approx(w[3], abs=1e-6)
    rows = read_loss_log(tmp_path / "r" / "loss.csv")
    assert [float(row["loss"]) for row in rows] == pytest.approx([50 * v**2 for v in w[:3]], rel=1e-5)
    assert [float(row["grad_norm"]) for row in rows] == pytest.approx([100 * v for v in w[:3]], rel=1e-5)


class Conditional:
    """What preview_condition reads of a class-conditional trainable."""

    condition_spec = ConditionSpec(num_classes=3)


def test_a_class_conditional_grid_has_one_class_per_row() -> None:
    condition, count, per_row = preview_condition(Conditional(), [], 7)
    assert (count, per_row) == (6, 2)
    assert condition["classes"].tolist() == [0, 0, 1, 1, 2, 2]


class EchoesClasses:
    """A 'model' whose samples are its class labels, one image per label."""

    def sample(self, batch_size: int, *, generator: torch.Generator, classes: Tensor) -> Tensor:
        assert len(classes) == batch_size
        return classes.float().view(-1, 1, 1, 1)


def test_each_chunk_of_a_grid_samples_its_own_slice_of_the_condition() -> None:
    images = sample_in_chunks(EchoesClasses(), 5, 2, torch.Generator(), {"classes": torch.arange(5)})
    assert images.flatten().tolist() == [0, 1, 2, 3, 4]


def test_the_trainer_samples_the_ema_network_from_the_seed_asked(tmp_path: Path) -> None:
    """Trainer.sample draws from the EMA copy (here EDM2's power EMA, which averages from the first step) with a
    generator seeded by ``seed``."""
    diffusion = tiny_diffusion()
    g = torch.Generator().manual_seed(0)
    data = [torch.rand(3, 8, 8, generator=g) for _ in range(8)]
    trainer = make_trainer(diffusion, data, tmp_path / "r", train_num_steps=2, num_samples=0, ema_sigma_rel=0.1)
    trainer.train()
    assert trainer.ema is not None
    assert any(not torch.equal(a, b) for a, b in zip(diffusion.model.parameters(), trainer.ema.ema_model.parameters()))
    ema = diffusion.with_model(trainer.ema.ema_model)
    expected = ema.sample(2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(trainer.sample(2, seed=5), expected)
    assert not torch.equal(trainer.sample(2, seed=6), expected)
