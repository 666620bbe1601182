"""A super-resolution stage of a cascade (Ho et al. 2021, "Cascaded Diffusion Models", §3; Saharia et al. 2022,
Imagen, §2.5): a diffusion model of high-resolution images x (B, C, H, W) conditioned on their low-resolution
version y (B, C, h, w), p(x | y), made of the same parts as any GaussianDiffusion.

Training, per image of an ordinary folder (docs/cascade.md):

    y = D(x)                     the antialiased downsample to low_res_size (resize.py)
    z_0 = normalize(U(y))        bicubic upsample to the stage's grid, in the model's space [−1, 1]
    z_s = α_s z_0 + σ_s ε, s ~ U[s_lo, s_hi]    conditioning augmentation (augmentation.py), blurred first with
                                                ``blur_sigma``
    loss = GaussianDiffusion(x, cond_image=z_s, cond_level=s, [classes=...])

so the network sees z_s concatenated to x_t and s beside the time. Sampling takes y (from the stage before, or
from data) and one level s (``sample_level`` by default), and runs any sampler of the stage's diffusion with
(z_s, s) bound. With a network built with ``image_null`` (and classes, if any), classifier-free guidance works on
the stage's own conditions: the unconditional branch drops the low-resolution image (and the class) for the
network's learned null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._utils import chunk_sizes, module_device
from ..conditioning import BatchSplitter, ConditionSpec, batch_condition
from ..data.batch import Batch, check_images, collate_batch, split_batch
from ..diffusion import GaussianDiffusion
from ..registry import PretrainedMixin, model_kind
from ..samplers import SamplerInfo
from .augmentation import Augmentation
from .resize import downsample, super_resolution_sizes, upsample

SAMPLE_LEVEL = 0.1
"""The default augmentation level at sampling: a little noise (σ_s = sin(0.05π) ≈ 0.16), enough to hide small
artefacts of the stage before, within the default training range [0, 0.5]."""


@model_kind(parts=("diffusion",))
class SuperResolution(PretrainedMixin, nn.Module):
    """A super-resolution stage: p(x | y) for x at the diffusion's image_size and y at ``low_res_size``.

    Args:
        diffusion: a GaussianDiffusion at the high resolution whose network takes the upsampled low-resolution
            image and the augmentation level: ``Unet(..., cond_image_channels=C, cond_level=True)``, plus
            ``image_null=True`` for guidance on the image and ``num_classes=K`` for class labels.
        low_res_size: (h, w) of the low-resolution input, or an int; it must divide image_size.
        noise_levels: (s_lo, s_hi) ⊂ [0, 1], the training range of the augmentation level (augmentation.py).
        sample_level: the level sampling uses when none is given; within noise_levels.
        blur_sigma: (b_lo, b_hi) pixels of CDM's training blur, or None (none).
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        *,
        low_res_size: int | Sequence[int],
        noise_levels: Sequence[float] = (0.0, 0.5),
        sample_level: float = SAMPLE_LEVEL,
        blur_sigma: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.diffusion = diffusion
        self.channels, self.image_size = diffusion.channels, diffusion.image_size
        self.low_res_size = super_resolution_sizes(low_res_size, self.image_size)
        spec = diffusion.condition_spec
        if spec.cond_image_channels != self.channels or not spec.cond_level:
            raise ValueError(
                "a super-resolution stage's network must take the upsampled low-resolution image and the "
                f"augmentation level: build it with cond_image_channels={self.channels}, cond_level=True (and "
                f"image_null=True for guidance on the image); this one takes {spec.describe()}"
            )
        self.condition_spec = ConditionSpec(num_classes=spec.num_classes, context_dim=spec.context_dim)
        self.augmentation = Augmentation(noise_levels, blur_sigma)
        self.sample_level = self.augmentation.check_level(sample_level)
        self.config: dict[str, Any] = {
            "low_res_size": list(self.low_res_size), "noise_levels": list(self.augmentation.noise_levels),
            "sample_level": self.sample_level,
            "blur_sigma": None if self.augmentation.blur_sigma is None else list(self.augmentation.blur_sigma),
        }  # fmt: skip
        self._split = BatchSplitter("this super-resolution stage")  # forward() names dropped batch entries once

    # ----- what the Trainer and the cascade ask of it ---------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The trained network (the diffusion's): what the EMA averages and a checkpoint's weights are."""
        return self.diffusion.model

    @property
    def device(self) -> torch.device:
        return module_device(self.diffusion.model)

    @property
    def class_names(self) -> list[str] | None:
        return self.diffusion.class_names

    @property
    def sampling_timesteps(self) -> int:
        return self.diffusion.sampling_timesteps

    def sampler_info(self, name: str | None) -> SamplerInfo:
        """The registry entry for ``name`` (None: the diffusion's default sampler)."""
        return self.diffusion.sampler_info(name)

    def with_model(self, model: nn.Module) -> SuperResolution:
        """The same stage around another network (the EMA copy)."""
        return SuperResolution(self.diffusion.with_model(model), **self.config)

    # ----- the low-resolution input ---------------------------------------------------------------------------------

    def low_res_of(self, images: Tensor) -> Tensor:
        """y = D(x): the low-resolution version (B, C, h, w) of images (B, C, H, W), antialiased."""
        return downsample(images, self.low_res_size)

    def upsampled(self, low_res: Tensor) -> Tensor:
        """z_0 = normalize(U(y)) (B, C, H, W): the low-resolution images upsampled, in the model's space."""
        return self.diffusion.normalize(upsample(low_res, self.image_size))

    def check_low_res(self, low_res: Any, batch_size: int | None = None) -> Tensor:
        """``low_res`` as a (B, C, h, w) tensor on the stage's device; ValueError naming the shape it must have."""
        if low_res is None:
            raise ValueError(
                "a super-resolution stage samples from low-resolution images: pass low_res= (B, C, h, w) in [0, 1] "
                f"with (C, h, w) = ({self.channels}, {self.low_res_size[0]}, {self.low_res_size[1]})"
            )
        shape = (self.channels, *self.low_res_size)
        if not isinstance(low_res, Tensor) or low_res.ndim != 4 or tuple(low_res.shape[1:]) != shape:
            got = tuple(low_res.shape) if isinstance(low_res, Tensor) else type(low_res).__name__
            raise ValueError(f"low_res must have shape (B, {shape[0]}, {shape[1]}, {shape[2]}), got {got}")
        if batch_size is not None and batch_size != low_res.shape[0]:
            raise ValueError(f"batch_size {batch_size} differs from the {low_res.shape[0]} low-resolution images")
        return low_res.to(self.device, torch.float32)

    # ----- training -------------------------------------------------------------------------------------------------

    def forward(self, batch: Batch, **condition: Any) -> Tensor:
        """The training loss (a scalar) for high-resolution images (B, C, H, W) in [0, 1], or (image, label) pairs
        and dicts (data/batch.py): the low-resolution input made from each image, augmented, then the diffusion's
        loss with it as ``cond_image`` and its level as ``cond_level`` (module docstring)."""
        images, from_batch = self._split(batch, self.condition_spec)
        check_images(images, (self.channels, *self.image_size))
        z_s, level = self.augmentation.training_input(self.upsampled(self.low_res_of(images)))
        return self.diffusion(images, cond_image=z_s, cond_level=level, **{**from_batch, **condition})

    # ----- sampling -------------------------------------------------------------------------------------------------

    def sample(
        self, batch_size: int | None = None, *, low_res: Tensor | None = None, level: float | None = None,
        generator: torch.Generator | None = None, **options: Any,
    ) -> Tensor:  # fmt: skip
        """High-resolution images (B, C, H, W) in [0, 1] given ``low_res`` (B, C, h, w) in [0, 1], with the
        low-resolution input augmented at ``level`` (None: ``sample_level``; it must lie in ``noise_levels``), its
        noise drawn from ``generator`` before the sampler's. ``options`` go to GaussianDiffusion.sample: sampler,
        steps, spacing, classes, guidance_scale (on the classes and the image), return_all_timesteps, callback,
        the sampler's own options."""
        low = self.check_low_res(low_res, batch_size)
        with torch.no_grad():
            z_0 = self.upsampled(low)
        z_s, s = self.augmentation.sampling_input(z_0, self.sample_level if level is None else level, generator)
        return self.diffusion.sample(len(low), cond_image=z_s, cond_level=s, generator=generator, **options)

    def preview(
        self, dataset: Any, num_samples: int, *, generator: torch.Generator, chunk: int, **options: Any
    ) -> tuple[Tensor, int]:
        """A milestone grid (trainable.DrawsPreviews): for the first ⌈num_samples / 3⌉ items of ``dataset``, one
        row each of the low-resolution input (shown at the stage's size, nearest), the stage's output at
        ``sample_level`` and the original image. Returns (images (3·N, C, H, W) in [0, 1], 3)."""
        if not len(dataset):
            raise ValueError("a super-resolution stage previews from its dataset's images, and the dataset is empty")
        count = max(1, -(-num_samples // 3))
        images, extras = split_batch(collate_batch([dataset[i % len(dataset)] for i in range(count)]))
        condition = batch_condition(extras, self.condition_spec)[0]
        low = self.low_res_of(images.to(self.device))
        outputs, start = [], 0
        for n in chunk_sizes(count, chunk):
            part = {name: value[start : start + n] for name, value in condition.items()}
            outputs.append(self.sample(low_res=low[start : start + n], generator=generator, **part, **options).cpu())
            start += n
        shown = nn.functional.interpolate(low.cpu(), size=self.image_size, mode="nearest").clamp(0.0, 1.0)
        return torch.stack([shown, torch.cat(outputs), images.cpu()], dim=1).flatten(0, 1), 3
