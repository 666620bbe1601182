"""The KL autoencoder trained by the Trainer (latent/autoencoder_training.py): it learns to reconstruct, its milestone
grid shows inputs beside reconstructions, its checkpoint rebuilds, a resume is exact, and bad sizes are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from latent_helpers import SIZE, tiny_autoencoder
from PIL import Image
from trainer_helpers import isolated_accelerate, make_trainer  # noqa: F401 (autouse fixture)

from denoising_diffusion import BuiltinShapes, load_pipeline
from denoising_diffusion.latent import AutoencoderTraining
from denoising_diffusion.nn.autoencoder import Autoencoder

BOUND = 0.09
"""Mean absolute reconstruction error (pixels in [0, 1]) to beat after 150 steps of batch 8. Measured with the
Trainer: 0.070 with this test's seed, 0.080 with seed 1 (0.084 after 120 steps); the best image that ignores its
input (the per-pixel median) scores 0.11, so a decoder that does not use the latent cannot pass."""


def test_a_short_training_reconstructs_the_shapes_below_the_bound(tmp_path: Path) -> None:
    data = BuiltinShapes(256, SIZE)
    training = AutoencoderTraining(tiny_autoencoder(), image_size=SIZE)
    trainer = make_trainer(training, data, tmp_path / "r", train_batch_size=8, train_lr=3e-3, train_num_steps=150,
                           save_and_sample_every=150, num_samples=4)  # fmt: skip
    trainer.train()
    images = data.images
    median_error = float((images - images.median(dim=0).values).abs().mean())
    error = float((training.reconstruct(images) - images).abs().mean())
    assert error < BOUND < median_error - 0.01
    with Image.open(tmp_path / "r" / "sample-1.png") as grid:  # 2 inputs, each beside its reconstruction: one row
        assert grid.size == (4 * (SIZE + 2) + 2, SIZE + 4)
    rebuilt = load_pipeline(tmp_path / "r" / "model-1.pt")
    assert type(rebuilt) is AutoencoderTraining and rebuilt.kl_weight == training.kl_weight
    for name, tensor in trainer.ema.ema_model.state_dict().items():
        torch.testing.assert_close(rebuilt.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_a_resumed_run_takes_the_same_steps(tmp_path: Path) -> None:
    """The posterior draw comes from the torch RNG, which the Trainer restores: 2 + 2 steps equal 4 steps."""
    data = BuiltinShapes(32, SIZE)
    straight = AutoencoderTraining(tiny_autoencoder(), image_size=SIZE)
    make_trainer(straight, data, tmp_path / "a", num_samples=0).train()
    first = AutoencoderTraining(tiny_autoencoder(), image_size=SIZE)
    make_trainer(first, data, tmp_path / "b", train_num_steps=2, num_samples=0).train()
    resumed = AutoencoderTraining(tiny_autoencoder(seed=7), image_size=SIZE)
    make_trainer(resumed, data, tmp_path / "b", num_samples=0, resume="auto").train()
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_the_loss_is_the_mean_l1_in_minus_one_one_plus_the_scaled_kl() -> None:
    """L_AE = mean |x̃ − D(z)| + β KL / D, with the reconstruction drawn from the same z (same generator)."""
    training = AutoencoderTraining(tiny_autoencoder(), image_size=SIZE, kl_weight=0.5)
    images = BuiltinShapes(4, SIZE).images
    reconstruction, kl = training.losses(images, torch.Generator().manual_seed(0))
    posterior = training.model.encode(images)
    decoded = training.model.decode(posterior.sample(torch.Generator().manual_seed(0)))
    torch.testing.assert_close(reconstruction, ((decoded * 2 - 1) - (images * 2 - 1)).abs().mean(dim=(1, 2, 3)))
    torch.testing.assert_close(kl, posterior.kl() / images[0].numel())


@pytest.mark.parametrize("beta", [0.0, 0.25])
def test_the_training_loss_weights_the_kl_term_by_beta(beta: float) -> None:
    """forward() = mean over the batch of (reconstruction + β KL/D), both terms from the same draw of z (the global
    RNG seeded alike). The KL term per value is about 0.006 here, a thousand times the comparison's tolerance, so β
    ignored (the term weighted 1) cannot pass."""
    training = AutoencoderTraining(tiny_autoencoder(), image_size=SIZE, kl_weight=beta)
    images = BuiltinShapes(4, SIZE).images
    with torch.no_grad():
        torch.manual_seed(0)
        loss = training(images)
        torch.manual_seed(0)
        reconstruction, kl = training.losses(images)
    assert float(kl.mean()) > 1e-3
    torch.testing.assert_close(loss, (reconstruction + beta * kl).mean())


def test_bad_sizes_and_factors_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="factor must be a power of two"):
        Autoencoder(factor=3)
    with pytest.raises(ValueError, match=r"\(18, 18\) is not divisible by the autoencoder's downsampling factor 4"):
        AutoencoderTraining(tiny_autoencoder(), image_size=18)
    with pytest.raises(ValueError, match="not divisible by the autoencoder's downsampling factor 4; use multiples"):
        tiny_autoencoder().encode(torch.rand(1, 3, 18, 16))
    with pytest.raises(ValueError, match="dim_mults needs log2"):
        Autoencoder(factor=8, dim_mults=(1, 2))
    with pytest.raises(ValueError, match="kl_weight must be"):
        AutoencoderTraining(tiny_autoencoder(), image_size=SIZE, kl_weight=-1.0)
