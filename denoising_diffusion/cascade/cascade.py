"""A cascade (Ho et al. 2021, "Cascaded Diffusion Models", §3): a base model at low resolution followed by
super-resolution stages, sampled in order, each stage conditioned on the output of the one before,

    x^(0) ~ p_0(x^(0) [| y]),   x^(k) ~ p_k(x^(k) | x^(k−1) [, y]),   k = 1, ..., K

(y: class labels, given to every stage that takes them). Each stage keeps its own sampler, steps, augmentation level
and guidance (:data:`SAMPLING_KEYS`), stored as defaults in the cascade's config and overridable per call. A cascade
is one composed model: ``save_pipeline(cascade, path)`` writes every stage's network into one file and
``load_pipeline(path)`` rebuilds it from that file alone; :meth:`Cascade.from_checkpoints` assembles one from the
stages' own training checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..pipeline import load_pipeline
from ..registry import PretrainedMixin, model_kind
from ..samplers import sampler_options
from .stage import SuperResolution

SAMPLING_KEYS = ("sampler", "steps", "spacing", "guidance_scale", "guidance_rescale", "level")
"""A stage's sampling options (besides its sampler's own, e.g. eta): ``level`` is a super-resolution stage's
augmentation level."""

Options = Mapping[str, Any]


def _describe(index: int, stage: Any) -> str:
    """'stage 0 (the base, 16x16)' or 'stage 1 (super-resolution 16x16 -> 32x32)'."""
    size = "x".join(map(str, stage.image_size))
    if isinstance(stage, SuperResolution):
        return f"stage {index} (super-resolution {'x'.join(map(str, stage.low_res_size))} -> {size})"
    return f"stage {index} (the base, {size})"


def check_chain(stages: Sequence[Any]) -> None:
    """ValueError unless ``stages`` is a base model followed by super-resolution stages whose sizes chain: each
    stage's low_res_size is the image_size of the stage before, with the same channels; classes agree."""
    if len(stages) < 2:
        raise ValueError(f"a cascade needs a base model and at least one super-resolution stage, got {len(stages)}")
    base = stages[0]
    if isinstance(base, SuperResolution) or not all(hasattr(base, a) for a in ("sample", "image_size", "channels")):
        raise ValueError(f"stage 0 must be a base model that samples on its own (a GaussianDiffusion), got a "
                         f"{type(base).__name__}")  # fmt: skip
    for index, (before, stage) in enumerate(zip(stages, stages[1:]), start=1):
        if not isinstance(stage, SuperResolution):
            raise ValueError(f"stage {index} must be a super-resolution stage, got a {type(stage).__name__}")
        if stage.low_res_size != tuple(before.image_size) or stage.channels != before.channels:
            raise ValueError(
                f"the stages' sizes do not chain: {_describe(index, stage)} takes {stage.channels}-channel "
                f"{'x'.join(map(str, stage.low_res_size))} images, but {_describe(index - 1, before)} makes "
                f"{before.channels}-channel {'x'.join(map(str, before.image_size))} ones"
            )
    takes = {i: stage.condition_spec for i, stage in enumerate(stages) if stage.condition_spec.num_classes}
    names = {i: stage.class_names for i, stage in enumerate(stages) if stage.class_names is not None}
    if len({spec.num_classes for spec in takes.values()}) > 1 or len({tuple(n) for n in names.values()}) > 1:
        found = ", ".join(f"stage {i}: {spec.num_classes} classes {names.get(i) or ''}" for i, spec in takes.items())
        raise ValueError(f"the stages that take classes must take the same ones, got {found}")


def check_stage_options(stages: Sequence[Any], options: Sequence[Options | None] | None, what: str) -> list[dict]:
    """``options`` (one mapping or None per stage, or None) as a list of dicts; ValueError for a wrong count, an
    unknown key, or a level given to the base."""
    if options is None:
        return [{} for _ in stages]
    if isinstance(options, Mapping) or len(options) != len(stages):
        raise ValueError(f"{what} must be a list with one dict of options per stage ({len(stages)})")
    allowed = set(SAMPLING_KEYS) | set(sampler_options())
    checked = []
    for index, (stage, given) in enumerate(zip(stages, options)):
        given = dict(given or {})
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise ValueError(f"{what}[{index}]: unknown option {', '.join(map(repr, unknown))}; options are "
                             f"{', '.join(sorted(allowed))}")  # fmt: skip
        if given.get("level") is not None and not isinstance(stage, SuperResolution):
            raise ValueError(f"{what}[{index}]: {_describe(index, stage)} takes no augmentation level")
        if given.get("level") is not None:
            stage.augmentation.check_level(given["level"])
        checked.append(given)
    return checked


@model_kind(parts=("stages",))
class Cascade(PretrainedMixin, nn.Module):
    """A base model and super-resolution stages, sampled end to end (module docstring).

    Args:
        stages: the base model (a GaussianDiffusion), then SuperResolution stages whose low_res_size is the
            image_size of the stage before.
        sampling: per stage, its default sampling options (:data:`SAMPLING_KEYS` and its sampler's own), or None.
    """

    def __init__(self, stages: Sequence[nn.Module], sampling: Sequence[Options | None] | None = None) -> None:
        super().__init__()
        check_chain(stages)
        self.stages = nn.ModuleList(stages)
        self.sampling = check_stage_options(stages, sampling, "sampling")
        self.config: dict[str, Any] = {"sampling": [dict(options) for options in self.sampling]}
        last = self.stage_list[-1]
        self.channels, self.image_size = last.channels, tuple(last.image_size)

    @property
    def stage_list(self) -> list[Any]:
        """The stages as a list, the base first."""
        return list(self.stages)

    @classmethod
    def from_checkpoints(
        cls, paths: Sequence[str | os.PathLike[str]], *, use_ema: bool = True, device: str | torch.device = "cpu",
        sampling: Sequence[Options | None] | None = None,
    ) -> Cascade:  # fmt: skip
        """The cascade of the models in ``paths`` (training checkpoints or pipeline files), the base first: each
        rebuilt from its file alone (EMA weights with ``use_ema``). ValueError naming the file whose model is not
        what its place asks for (a base, then super-resolution stages) or whose sizes do not chain."""
        if len(paths) < 2:
            raise ValueError("a cascade needs a base model and at least one super-resolution stage: give 2+ files")
        models = [load_pipeline(path, use_ema=use_ema, device=device) for path in paths]
        for index, (path, model) in enumerate(zip(paths, models)):
            if index == 0 and isinstance(model, SuperResolution):
                raise ValueError(f"{os.fspath(path)} holds a super-resolution stage; the first file must be the base "
                                 "model (trained with train, without --super-resolution)")  # fmt: skip
            if index > 0 and not isinstance(model, SuperResolution):
                raise ValueError(f"{os.fspath(path)} holds a {type(model).__name__}, not a super-resolution stage "
                                 "(train one with train --super-resolution LOW:HIGH)")  # fmt: skip
        return cls(models, sampling).to(device).eval()

    def takes_classes(self) -> bool:
        """Whether some stage takes class labels."""
        return any(stage.condition_spec.num_classes for stage in self.stage_list)

    def sample(
        self, batch_size: int = 16, *, classes: Any = None, generator: torch.Generator | None = None,
        stages: Sequence[Options | None] | None = None, return_stages: bool = False,
    ) -> Tensor | list[Tensor]:  # fmt: skip
        """``batch_size`` images (B, C, H, W) in [0, 1] at the last stage's size, sampled stage after stage; with
        ``return_stages`` every stage's output, the base's first. ``classes`` (labels or class names) reach every
        stage that takes them; ``stages`` (one dict or None per stage) override the stored sampling options.
        One ``generator`` draws all the noise, in order, so a seed gives the same images."""
        if classes is not None and not self.takes_classes():
            raise ValueError("classes were given, but no stage of this cascade takes class labels")
        given = check_stage_options(self.stage_list, stages, "stages")
        outputs: list[Tensor] = []
        for index, stage in enumerate(self.stage_list):
            options = {**self.sampling[index], **{k: v for k, v in given[index].items() if v is not None}}
            if stage.condition_spec.num_classes:
                options["classes"] = classes
            if index == 0:
                outputs.append(stage.sample(batch_size, generator=generator, **options))
            else:
                outputs.append(stage.sample(low_res=outputs[-1], generator=generator, **options))
        return outputs if return_stages else outputs[-1]
