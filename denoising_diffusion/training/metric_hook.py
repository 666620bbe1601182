"""A metric during training: every ``metric_every`` steps (and at the last step), the main process draws
``metric_num_samples`` images from the EMA network with a fixed seed (the run's data seed, as the sample grids:
every milestone scores the same initial noise, so the curve moves only with the model) and passes them to
``metric``, any callable images (N, C, H, W) in [0, 1] -> {name: value}, e.g.
``metrics.ImageMetric(real, extractor)`` for FID. The values go to results/metrics.csv, ``log_fn``, the trackers
and the log (INFO), beside the loss (log.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

MetricFn = Callable[[Tensor], Mapping[str, float]]


@dataclass(frozen=True)
class MetricHook:
    """When and on how many samples the Trainer computes ``metric``."""

    metric: MetricFn
    every: int
    num_samples: int

    def __post_init__(self) -> None:
        if not callable(self.metric):
            raise ValueError(f"metric must be a callable images -> {{name: value}}, got {self.metric!r}")
        for name, value in (("metric_every", self.every), ("metric_num_samples", self.num_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    def due(self, step: int, last_step: int) -> bool:
        return step % self.every == 0 or step == last_step

    def condition(self, num_classes: int | None) -> dict[str, Any]:
        """A class-conditional model samples every class in turn (balanced); others take no condition."""
        return {} if num_classes is None else {"classes": torch.arange(self.num_samples) % num_classes}

    def values(self, images: Tensor) -> dict[str, float]:
        """The metric of ``images``, as plain floats."""
        return {str(name): float(value) for name, value in self.metric(images).items()}
