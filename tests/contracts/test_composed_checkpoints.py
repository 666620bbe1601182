"""A training checkpoint stores the whole trainable (issue 29, part 5): a composed model with a frozen part rebuilds
from the file alone, frozen weights included; format-2 checkpoints (the network only) still load and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from trainer_helpers import isolated_accelerate, make_trainer, tiny_diffusion  # noqa: F401 (autouse fixture)

from denoising_diffusion import (
    CheckpointError,
    GaussianDiffusion,
    load_checkpoint,
    load_pipeline,
    model_kind,
    save_checkpoint,
)


@model_kind(parts=("diffusion",))
class Recoloured(nn.Module):
    """A trainable made of a diffusion and a frozen 1x1 colour map applied to the images first: the frozen map's
    weights are random and never trained, so only the checkpoint can give them back."""

    def __init__(self, diffusion: GaussianDiffusion, seed: int = 0) -> None:
        super().__init__()
        self.diffusion = diffusion
        self.recolour = nn.Conv2d(diffusion.channels, diffusion.channels, 1)
        self.recolour.requires_grad_(False)
        self.channels, self.image_size = diffusion.channels, diffusion.image_size
        self.config: dict[str, Any] = {"seed": seed}

    @property
    def model(self) -> nn.Module:
        return self.diffusion.model

    def forward(self, images: Tensor) -> Tensor:
        return self.diffusion(torch.sigmoid(self.recolour(images)))


def images() -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, 8, 8, generator=g) for _ in range(8)]


def test_a_frozen_part_is_in_the_checkpoint_and_rebuilds_from_the_file_alone(tmp_path: Path) -> None:
    trainable = Recoloured(tiny_diffusion())
    make_trainer(trainable, images(), tmp_path / "r", train_num_steps=2, num_samples=0).train()
    checkpoint = load_checkpoint(tmp_path / "r" / "model-1.pt")
    assert checkpoint["network_path"] == "diffusion.model"
    assert set(checkpoint["parts"]) == {"recolour.weight", "recolour.bias"}
    assert not any(key.startswith("diffusion.model.") for key in checkpoint["parts"])  # the network once, in 'model'
    rebuilt = load_pipeline(tmp_path / "r" / "model-1.pt", use_ema=False)
    assert type(rebuilt) is Recoloured
    torch.testing.assert_close(rebuilt.recolour.weight, trainable.recolour.weight, rtol=0, atol=0)
    for name, tensor in rebuilt.model.state_dict().items():
        torch.testing.assert_close(tensor, trainable.model.state_dict()[name], rtol=0, atol=0)
    # a resume restores the frozen part too, into a model built with other random weights
    torch.manual_seed(123)
    other = Recoloured(tiny_diffusion())
    assert not torch.equal(other.recolour.weight, trainable.recolour.weight)
    resumed = make_trainer(other, images(), tmp_path / "r", train_num_steps=4, num_samples=0, resume="auto")
    assert resumed.step == 2
    torch.testing.assert_close(other.recolour.weight, trainable.recolour.weight, rtol=0, atol=0)
    # a checkpoint that lacks one of the parts is refused, naming it (never loaded with the part's fresh weights)
    del checkpoint["parts"]["recolour.bias"]
    save_checkpoint(tmp_path / "lacking.pt", checkpoint)
    with pytest.raises(CheckpointError, match=r"missing \['recolour.bias'\]"):
        load_pipeline(tmp_path / "lacking.pt", use_ema=False)


def test_a_format_2_checkpoint_loads_and_resumes(tmp_path: Path) -> None:
    diffusion = tiny_diffusion()
    make_trainer(diffusion, images(), tmp_path / "r", train_num_steps=2, num_samples=0).train()
    path = tmp_path / "r" / "model-1.pt"
    old = {k: v for k, v in load_checkpoint(path).items() if k not in ("parts", "network_path")}
    save_checkpoint(path, {**old, "format_version": 2})
    loaded = load_pipeline(path, use_ema=False)
    for name, tensor in loaded.model.state_dict().items():
        torch.testing.assert_close(tensor, diffusion.model.state_dict()[name], rtol=0, atol=0)
    resumed = make_trainer(tiny_diffusion(), images(), tmp_path / "r", train_num_steps=4, num_samples=0, resume="auto")
    assert resumed.step == 2


@model_kind(parts=("diffusion",))
class FramedPreview(Recoloured):
    """A trainable that draws its own milestone grid and says it takes no condition of its network's own."""

    calls: list[int] = []

    def with_model(self, network: nn.Module) -> FramedPreview:
        other = FramedPreview(self.diffusion.with_model(network))
        return other

    def sample(self, batch_size: int = 16, **options: Any) -> Tensor:
        return self.diffusion.sample(batch_size, **options)

    def preview(self, dataset: Any, num_samples: int, *, generator: torch.Generator, chunk: int, **options: Any):
        FramedPreview.calls.append(num_samples)
        return torch.zeros(num_samples, 3, 8, 8), 2


def test_the_trainer_asks_the_trainable_to_draw_its_grid(tmp_path: Path) -> None:
    FramedPreview.calls.clear()
    make_trainer(FramedPreview(tiny_diffusion()), images(), tmp_path / "r", train_num_steps=2, num_samples=4).train()
    assert FramedPreview.calls == [4] and (tmp_path / "r" / "sample-1.png").exists()
