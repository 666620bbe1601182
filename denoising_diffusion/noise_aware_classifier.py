"""The noise-aware classifier f(y | x_t) that classifier guidance needs (Dhariwal & Nichol 2021, §4.1): a
time-conditioned network trained with cross-entropy on noisy images x_t ~ q(x_t | x_0) of a diffusion's own noise
schedule, so that it can judge the images a sampler holds at every step.

:class:`NoiseAwareClassifier` wraps a network (nn/encoder_classifier.py's EncoderClassifier, or any module mapping
(x_t, t) to logits) with that schedule. It is a trainable (training/trainable.py): the Trainer trains it on
(image, label) pairs, labelled folders or dicts with a ``label`` entry, with everything it gives a diffusion (EMA,
mixed precision, checkpoints, exact resume, bad-image handling), and the pipeline registry rebuilds it from a
checkpoint. ``GaussianDiffusion.sample(classes=y, classifier=clf, classifier_scale=s)`` guides with it
(guidance.classifier_guidance).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import normalize_image_size
from .data.batch import Batch, split_batch
from .losses.times import UniformTimes
from .processes import NoiseSchedule, q_sample
from .registry import PretrainedMixin, model_kind


@model_kind(parts=("model",))
class NoiseAwareClassifier(PretrainedMixin, nn.Module):
    """A classifier of noisy images x_t on a diffusion's schedule.

    Args:
        model: the network, (x_t (B, C, H, W), t (B,)) -> logits (B, K); it must expose ``channels`` and
            ``num_classes`` (EncoderClassifier does).
        image_size: int or (height, width).
        timesteps, beta_schedule: the noise schedule, as GaussianDiffusion's (the classifier must be trained on the
            schedule of the diffusion it guides: ``for_diffusion`` copies it, and guidance checks it).
        auto_normalize: images are [0, 1] in and mapped to [−1, 1], as GaussianDiffusion does.
        class_names: the names of the K classes, in index order (stored in the checkpoint).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        image_size: int | Sequence[int],
        timesteps: int = 1000,
        beta_schedule: str | Tensor | Sequence[float] = "cosine",
        auto_normalize: bool = True,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.channels = int(getattr(model, "channels", 3))
        self.num_classes = int(getattr(model, "num_classes", 0))
        if self.num_classes < 1:
            raise ValueError("the classifier network must expose num_classes (the number of logits it returns)")
        self.image_size = normalize_image_size(image_size)
        check = getattr(model, "check_image_size", None)
        if check is not None:
            check(*self.image_size)
        self.schedule = NoiseSchedule.from_name(beta_schedule, timesteps)
        self.num_timesteps = self.schedule.num_timesteps
        self.auto_normalize = bool(auto_normalize)
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for {self.num_classes} classes")
        schedule_config = beta_schedule if isinstance(beta_schedule, str) else self.schedule.betas.tolist()
        self.config: dict[str, Any] = {
            "image_size": list(self.image_size),
            "timesteps": self.num_timesteps,
            "beta_schedule": schedule_config,
            "auto_normalize": self.auto_normalize,
        }
        if self.class_names is not None:
            self.config["class_names"] = list(self.class_names)

    @classmethod
    def for_diffusion(
        cls, model: nn.Module, diffusion: Any, class_names: Sequence[str] | None = None
    ) -> NoiseAwareClassifier:
        """A classifier on ``diffusion``'s image size, schedule and data range (and class names, by default)."""
        config = diffusion.config
        names = class_names if class_names is not None else getattr(diffusion, "class_names", None)
        return cls(
            model,
            image_size=config["image_size"],
            timesteps=config["timesteps"],
            beta_schedule=config["beta_schedule"],
            auto_normalize=config["auto_normalize"],
            class_names=names,
        )

    def logits(self, x_t: Tensor, t: Tensor) -> Tensor:
        """The network's logits (B, K) for x_t (B, C, H, W) in the model's space at time indices t (B,)."""
        return self.model(x_t, t)

    def log_prob(self, x_t: Tensor, t: Tensor, classes: Tensor) -> Tensor:
        """log f(y | x_t) (B,) for labels ``classes`` (B,) int64."""
        return F.log_softmax(self.logits(x_t, t).float(), dim=-1).gather(1, classes[:, None])[:, 0]

    def forward(self, batch: Batch) -> Tensor:
        """The training loss (a scalar): cross-entropy of the labels from f(· | x_t) at uniform t, x_t ~ q(x_t | x_0).

        ``batch``: (images in [0, 1], labels) pairs or a dict with ``image`` and ``label`` (data/batch.py).
        """
        images, extras = split_batch(batch)
        labels = extras.get("[1]", extras.get("label"))
        if labels is None:
            raise ValueError(
                "a classifier trains on labelled batches: (image, label) pairs, a labelled folder, or "
                "dicts with a 'label' entry"
            )
        labels = torch.as_tensor(labels, device=images.device).long()
        x_0 = images * 2 - 1 if self.auto_normalize else images
        t = UniformTimes().sample(self.schedule, x_0.shape[0], x_0.device)
        x_t = q_sample(self.schedule, x_0, t, torch.randn_like(x_0))
        return F.cross_entropy(self.logits(x_t, t), labels)

    def check_matches(self, diffusion: Any) -> None:
        """Raise ValueError when this classifier cannot guide ``diffusion``: another noise schedule, image size or
        channel count, or another number of classes than a class-conditional diffusion's."""
        problems = []
        schedule = diffusion.schedule
        if not isinstance(schedule, NoiseSchedule):
            problems.append(
                f"it was trained on a discrete ddpm schedule, and the diffusion's process is "
                f"{getattr(schedule, 'name', type(schedule).__name__)!r}"
            )
        elif self.num_timesteps != schedule.num_timesteps or not torch.allclose(
            self.schedule.betas, schedule.betas, rtol=1e-6, atol=1e-9
        ):
            problems.append(
                f"its noise schedule ({self.num_timesteps} steps, {self.config['beta_schedule']!r}) is "
                f"not the diffusion's ({schedule.num_timesteps} steps of other betas)"
            )
        if (self.channels, *self.image_size) != (diffusion.channels, *diffusion.image_size):
            problems.append(
                f"it classifies {(self.channels, *self.image_size)} images, the diffusion makes "
                f"{(diffusion.channels, *diffusion.image_size)}"
            )
        k = getattr(getattr(diffusion, "condition_spec", None), "num_classes", None)
        if k is not None and k != self.num_classes:
            problems.append(f"it has {self.num_classes} classes, the diffusion {k}")
        if problems:
            raise ValueError("this classifier cannot guide this diffusion model: " + "; ".join(problems))
