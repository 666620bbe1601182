"""The k-rectified flow: a flow model trained on the straight interpolations of a coupling (Liu et al. 2023, "Flow
Straight and Fast", Alg. 1, step 2: x_t = (1 − t) x_0 + t x_1, target x_1 − x_0, with x_1 the noise of a pair and
x_0 the sample a teacher's ODE made from it).

:class:`RectifiedFlow` is a GaussianDiffusion on the straight path ('flow') whose training batches may carry their
own noise: a dict batch ``{"image": x_0, "noise": x_1, ...}`` (couplings.CouplingDataset) trains with that x_1 in
place of fresh noise; any other batch trains as flow matching does (independent noise). It is a registered model
kind, so its checkpoints rebuild from the file alone and sample, evaluate and reflow again like any
GaussianDiffusion (the 3-rectified flow is the reflow of a 2-rectified one).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..conditioning import batch_condition
from ..data.batch import Batch, check_images, describe_extras, split_batch
from ..diffusion import GaussianDiffusion
from ..registry import model_kind
from .couplings import NOISE_KEY

STUDENT_KEPT = ("image_size", "timesteps", "loss_type", "clip_denoised", "rederive_eps", "auto_normalize",
                "class_names")  # fmt: skip
"""The options a student of a teacher of another process keeps (the rest are the flow process's defaults)."""


@model_kind(parts=("model",))
class RectifiedFlow(GaussianDiffusion):
    """GaussianDiffusion on the straight path (``process='flow'``; every argument as GaussianDiffusion's) that trains on
    couplings: called on ``{"image": x_0 (B, C, H, W) in [0, 1], "noise": x_1 (B, C, H, W), **conditions}`` its loss
    is the flow-matching loss at x_t = (1 − t) x_0 + t x_1 with the target x_1 − x_0 (objective 'pred_velocity';
    another objective regresses its own target of the same pair), t from the model's training-time distribution.
    ValueError for another process (the straight interpolation is what makes the reflowed flow straight)."""

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if self.process != "flow":
            raise ValueError(
                f"a RectifiedFlow trains the straight interpolation (1 − t) x_0 + t x_1 of its pairs: it needs "
                f"process='flow', got {self.process!r}"
            )

    def forward(self, batch: Batch, **condition: Any) -> Tensor:
        """The loss of a coupled batch (the class docstring), or GaussianDiffusion's of any other batch."""
        if not (isinstance(batch, Mapping) and NOISE_KEY in batch):
            return super().forward(batch, **condition)
        images, extras = split_batch({key: value for key, value in batch.items() if key != NOISE_KEY})
        noise = batch[NOISE_KEY]
        check_images(images, (self.channels, *self.image_size))
        if not isinstance(noise, Tensor) or noise.shape != images.shape:
            got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(f"a coupled batch's noise must have its images' shape {tuple(images.shape)}, got {got}")
        from_batch, dropped = batch_condition(extras, self.condition_spec)
        if dropped:
            raise ValueError(f"this RectifiedFlow takes {self.condition_spec.describe()}; the coupled batch's "
                             f"{describe_extras(dropped)} has no place")  # fmt: skip
        t = self.loss.times.sample(self.schedule, images.shape[0], images.device)
        return self.p_losses(self.normalize(images), t, noise.to(images.dtype), **from_batch, **condition).mean()


def student_of(teacher: GaussianDiffusion, network: nn.Module | None = None, **overrides: Any) -> RectifiedFlow:
    """The next rectified flow of ``teacher`` (Liu et al. 2023, Alg. 1): a RectifiedFlow around ``network`` (None: a
    copy of the teacher's, weights included, as Liu et al. initialise reflow from the previous flow; give a freshly
    built one to start from scratch) with the teacher's config when the teacher is a straight flow; for a teacher
    of another process, a 'flow' model that keeps its image size, data range and classes (:data:`STUDENT_KEPT`) with
    the flow defaults otherwise (objective 'pred_velocity'); ``overrides``: other GaussianDiffusion arguments (e.g.
    ``sampling_timesteps=1``, the one Euler step a rectified flow is for)."""
    config = dict(teacher.config)
    if teacher.process != "flow":
        config = {key: config[key] for key in STUDENT_KEPT if key in config}
        config.update(process="flow")
    config.update(overrides)
    return RectifiedFlow(copy.deepcopy(teacher.model) if network is None else network, **config).to(teacher.device)
