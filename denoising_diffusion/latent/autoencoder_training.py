"""Training a KL autoencoder with the Trainer: its loss, and milestone grids of inputs beside reconstructions.

:class:`AutoencoderTraining` is a trainable (training/trainable.py) around nn/autoencoder.py's network: called on a
batch of images it returns Rombach et al. 2022's first-stage objective without its perceptual and adversarial terms
(§3.1 and App. G), divided by the D = C·H·W values of an image::

    L_AE = (1/D) Σ |x̃ − D(z)|  +  β KL(q(z | x) ‖ N(0, I)) / D,     z ~ q(z | x),  x̃ = 2x − 1 ∈ [−1, 1]

with β = 10⁻⁶ by default, the weight of their kl-f4 and kl-f8 configurations (their loss is the same sum per sample,
not divided by D). β only keeps the latents from drifting to arbitrary scales; latent diffusion rescales them by
1/std anyway (diffusion.py). Everything the Trainer gives a diffusion comes with it: EMA, mixed precision,
checkpoints (the pipeline rebuilds it), exact resume, unreadable images named or skipped.

No perceptual (LPIPS) term, because it needs downloaded VGG weights, and no adversarial term, because a
discriminator needs its own optimizer and update rule, which the Trainer's single Adam does not have: reconstructions
are sharp in PSNR terms but blurrier in fine texture than Rombach et al.'s (docs/latent.md says what that costs).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .._utils import normalize_image_size
from ..data.batch import Batch, check_images, collate_batch, split_batch
from ..nn.autoencoder import check_divides, codec
from ..registry import PretrainedMixin, model_kind

KL_WEIGHT = 1e-6
"""β of the first-stage objective: Rombach et al. 2022's kl-f4 and kl-f8 configurations."""


@model_kind(parts=("model",))
class AutoencoderTraining(PretrainedMixin, nn.Module):
    """The trainable of an autoencoder: ``loss = training(images)`` (module docstring), ``.model`` the autoencoder.

    Args:
        model: the autoencoder (nn/autoencoder.py's Autoencoder, or any module with ``encode(x) -> posterior``
            having ``sample()`` and ``kl()``, ``decode(z)``, ``channels`` and ``factor``).
        image_size: int or (height, width) of the training images; multiples of the autoencoder's factor.
        kl_weight: β.
    """

    def __init__(self, model: nn.Module, *, image_size: int | Sequence[int], kl_weight: float = KL_WEIGHT) -> None:
        super().__init__()
        self.model = model
        self.channels = int(getattr(model, "channels", 3))
        self.image_size = normalize_image_size(image_size)
        check_divides(int(getattr(model, "factor", 1)), *self.image_size)
        if not (isinstance(kl_weight, (int, float)) and math.isfinite(kl_weight) and kl_weight >= 0):
            raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}")
        self.kl_weight = float(kl_weight)
        self.config: dict[str, Any] = {"image_size": list(self.image_size), "kl_weight": self.kl_weight}

    @property
    def autoencoder(self) -> nn.Module:
        return self.model

    def losses(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(reconstruction term (B,), KL term (B,)), both divided by D, for images (B, C, H, W) in [0, 1]."""
        check_images(images, (self.channels, *self.image_size))
        posterior = codec(self.model).encode(images)
        reconstruction = codec(self.model).decode(posterior.sample(generator))
        size = images[0].numel()
        l1 = (reconstruction - images).abs().flatten(1).sum(dim=1) * 2  # |x̃ − x̃̂| in [−1, 1] units: twice [0, 1]'s
        return l1 / size, posterior.kl().float() / size

    def forward(self, batch: Batch) -> Tensor:
        """L_AE (a scalar) of a batch: images (B, C, H, W) in [0, 1], or pairs/dicts whose other entries (labels)
        an autoencoder does not use."""
        images, _ = split_batch(batch)
        reconstruction, kl = self.losses(images)
        return (reconstruction + self.kl_weight * kl).mean()

    def with_model(self, model: nn.Module) -> AutoencoderTraining:
        """The same objective around another network (the Trainer's EMA copy)."""
        return AutoencoderTraining(model, image_size=self.image_size, kl_weight=self.kl_weight)

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """D(μ(x)) clamped to [0, 1]: the reconstruction through the posterior's mode, in eval mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            return codec(self.model).decode(codec(self.model).encode(images).mode()).clamp(0.0, 1.0)
        finally:
            self.model.train(was_training)

    def preview(self, dataset: Any, num_samples: int, *, generator: torch.Generator, chunk: int,
                **options: Any) -> tuple[Tensor, int]:  # fmt: skip
        """The milestone grid (training/trainable.DrawsPreviews): the first ⌈num_samples / 2⌉ training images, each
        followed by its reconstruction, pairs side by side; returns (images (2n, C, H, W) in [0, 1], images per
        row)."""
        pairs = max(1, math.ceil(num_samples / 2))
        device = next(self.model.parameters()).device
        shown = []
        for start in range(0, pairs, chunk):
            items = [dataset[i % len(dataset)] for i in range(start, min(pairs, start + chunk))]
            images = split_batch(collate_batch(items))[0].to(device)
            shown.append(torch.stack([images, self.reconstruct(images)], dim=1).flatten(0, 1).cpu())
        return torch.cat(shown), 2 * max(1, math.ceil(math.sqrt(pairs)))
