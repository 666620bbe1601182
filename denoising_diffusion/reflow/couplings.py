"""Couplings for reflow (Liu et al. 2023, "Flow Straight and Fast", Alg. 1, step 1): pairs (x_0, x_1) of a noise
draw x_1 ~ N(0, I) and the sample x_0 a trained model's deterministic ODE sampler makes from it, saved as a file and
read back as a training set.

File format (checkpoint.py's: written atomically, read with ``torch.load(weights_only=True)`` after a CRC check)::

    {"format_version": 2, "package_version": ..., "config": {"kind": "CouplingSet", "teacher": <teacher's spec>,
     "sampler": "heun", "steps": 25, "nfe": 49, "options": {...}, "guidance_scale": 1.0},
     "x0": (N, C, H, W) float32,      # the teacher's samples as images, in the public range ([0, 1] with
                                      #   auto_normalize), NOT clamped: the ODE's endpoint itself
     "x1": (N, C, H, W) float32,      # the noise they came from, scaled to N(0, I) (x_T / prior_std)
     "condition": {"classes": (N,), ...}}   # the teacher's per-pair conditions (empty for an unconditional one)

x_1 is divided by the teacher's prior_std so that a teacher with another prior (EDM's N(0, σ_max² I)) still gives
noise for the straight path's N(0, I) prior: a bijection of the noise, so the coupling is the same map.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._utils import eval_mode
from ..checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from ..conditioning import DATASET_KEYS, class_indices
from ..data.batch import IMAGE_KEY
from ..samplers import SamplerInfo
from ..sampling import runner_of

NOISE_KEY = "noise"
"""The batch entry (data/batch.py's dict form) that carries a pair's noise x_1 beside its image x_0."""
KIND = "CouplingSet"


@dataclass(frozen=True)
class CouplingSet:
    """N pairs (x_0, x_1): x1 (N, C, H, W) noise ~ N(0, I) (t = 1), x0 (N, C, H, W) the teacher's ODE sample from it
    (t = 0) as an image in the public range, unclamped; ``condition``: per-pair conditions the teacher sampled with
    (``classes`` (N,), ...); ``config``: the teacher's spec and how the pairs were made (the module docstring)."""

    x0: Tensor
    x1: Tensor
    condition: dict[str, Tensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x0.ndim != 4 or self.x0.shape != self.x1.shape:
            raise ValueError(
                f"a coupling set needs x0 and x1 of one shape (N, C, H, W), got {tuple(self.x0.shape)} and "
                f"{tuple(self.x1.shape)}"
            )
        for name, value in self.condition.items():
            if len(value) != len(self.x0):
                raise ValueError(f"condition {name!r} has {len(value)} entries for {len(self.x0)} pairs")

    def __len__(self) -> int:
        return len(self.x0)


def check_deterministic(info: SamplerInfo, options: Mapping[str, Any]) -> None:
    """ValueError unless ``info`` with its bound ``options`` maps noise to a sample deterministically: a coupling is
    the ODE's map x_1 -> x_0 (Liu et al. 2023, Alg. 1); DDIM counts at η = 0, Heun without churn."""
    stochastic = info.stochastic and not (info.name == "ddim" and options.get("eta", 0.0) == 0.0)
    if stochastic or options.get("s_churn", 0.0) > 0:
        raise ValueError(
            f"reflow couples each noise draw with the sample a deterministic ODE sampler makes from it; sampler "
            f"{info.name!r}{' with s_churn > 0' if not stochastic else ''} draws fresh noise: use 'heun', 'euler', "
            "'dpmpp_2m', 'ode' or 'ddim' with eta=0"
        )


@torch.no_grad()
def generate_couplings(
    teacher: Any,
    num_pairs: int,
    *,
    sampler: str = "heun",
    steps: int | None = None,
    spacing: str | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    classes: Any = None,
    condition: Mapping[str, Any] | None = None,
    guidance_scale: float = 1.0,
    teacher_spec: Mapping[str, Any] | None = None,
    **options: Any,
) -> CouplingSet:
    """``num_pairs`` couplings (x_0, x_1) of ``teacher`` (a GaussianDiffusion of any process, or its runner): x_1 from
    its prior (scaled to N(0, I)), x_0 = its deterministic ``sampler`` (with ``options``) from x_1 at ``steps``
    (default: the sampler's recommended count) and ``spacing``, ``batch_size`` pairs at a time, all noise from
    ``generator``.

    ``classes`` (N labels or names, or one) and ``condition`` (other conditions by name: per-pair tensors (N, ...));
    a class-conditional teacher without classes gets them drawn uniformly from ``generator``. ``guidance_scale``: the
    classifier-free guidance the pairs are made with (a reflowed student then learns the guided map).
    ``teacher_spec``: what the set records as its teacher (``pipeline.spec_of(teacher)``, as the command line does;
    None: the teacher's config). ValueError for a stochastic sampler (:func:`check_deterministic`) or a bad count."""
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 1:
        raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    runner = runner_of(teacher)
    info = runner.sampler_info(sampler)
    bound = info.bind(options, runner.sampler_defaults())
    check_deterministic(info, bound)
    steps = info.recommended_steps if steps is None else steps
    timesteps = runner.times(steps, spacing, info)
    per_pair = _per_pair(runner, {**(condition or {}), "classes": classes}, num_pairs, generator)
    x0s, x1s = [], []
    with eval_mode(runner.network), torch.inference_mode():
        for start in range(0, num_pairs, batch_size):
            n = min(batch_size, num_pairs - start)
            chunk: dict[str, Any] = {name: value[start : start + n] for name, value in per_pair.items()}
            denoiser = runner.sampling_denoiser(n, guidance_scale=guidance_scale, **chunk)
            x_T = runner.prior((n, *runner.shape), generator)
            x0 = info.fn(denoiser, x_T, runner.schedule, timesteps, generator=generator, **bound)
            x0s.append(runner.data.unnormalize(x0).float().cpu())
            x1s.append((x_T / runner.schedule.prior_std).float().cpu())
    nfe = None if info.adaptive else info.nfe(len(timesteps), bound)
    recorded = dict(getattr(teacher, "config", {})) if teacher_spec is None else dict(teacher_spec)
    config = {"kind": KIND, "teacher": recorded, "sampler": info.name, "steps": len(timesteps), "nfe": nfe,
              "spacing": spacing, "options": {k: _plain(v) for k, v in bound.items()},
              "guidance_scale": float(guidance_scale)}  # fmt: skip
    return CouplingSet(torch.cat(x0s), torch.cat(x1s), {k: v.cpu() for k, v in per_pair.items()}, config)


def _per_pair(runner: Any, condition: dict[str, Any], num: int, generator: torch.Generator | None) -> dict[str, Tensor]:
    """The condition as (num, ...) tensors on the network's device (class names resolved, a single class repeated);
    for a class-conditional network without classes, uniform draws from ``generator``. ValueError for a tensor with
    another number of entries than pairs."""
    if runner.condition_spec.num_classes is not None and condition.get("classes") is None:
        device = generator.device if generator is not None else runner.device
        condition["classes"] = torch.randint(
            runner.condition_spec.num_classes, (num,), generator=generator, device=device
        )
    out: dict[str, Tensor] = {}
    for name, value in condition.items():
        if value is None:
            continue
        tensor = torch.as_tensor(class_indices(value, runner.class_names) if name == "classes" else value)
        if tensor.ndim == 0:
            tensor = tensor.expand(num)
        if len(tensor) != num:
            raise ValueError(f"condition {name!r} has {len(tensor)} entries for {num} pairs (give one per pair)")
        out[name] = tensor.to(runner.device)
    return out


def _plain(value: Any) -> Any:
    """An option value as JSON (enums by value)."""
    return getattr(value, "value", value)


def save_couplings(couplings: CouplingSet, path: str | os.PathLike[str]) -> Path:
    """Write a coupling set to ``path`` atomically (the module docstring's format)."""
    entries = {"x0": couplings.x0.contiguous(), "x1": couplings.x1.contiguous(),
               "condition": {k: v.contiguous() for k, v in couplings.condition.items()}}  # fmt: skip
    return save_checkpoint(path, make_checkpoint(config={"kind": KIND, **couplings.config}, **entries))


def load_couplings(path: str | os.PathLike[str]) -> CouplingSet:
    """Read a coupling set written by :func:`save_couplings`; ValueError naming the file when it holds something
    else (a model checkpoint, say)."""
    payload = load_checkpoint(path)
    config = payload.get("config")
    if not (isinstance(config, dict) and config.get("kind") == KIND and {"x0", "x1"} <= payload.keys()):
        kind = config.get("kind") if isinstance(config, dict) else None
        raise ValueError(f"{os.fspath(path)!r} is not a coupling set (it holds a {kind or 'file of another kind'!r})")
    return CouplingSet(payload["x0"], payload["x1"], dict(payload.get("condition") or {}), dict(config))


class CouplingDataset(Dataset):
    """A coupling set as training items for the Trainer: ``{"image": x_0 (C, H, W), "noise": x_1 (C, H, W),
    **conditions}`` (classes under ``label``, the dataset key GaussianDiffusion reads them from), for
    :class:`~.rectified.RectifiedFlow`. Train with ``augment_horizontal_flip=False``: flipping x_0 alone would break
    the pairs."""

    def __init__(self, couplings: CouplingSet) -> None:
        self.couplings = couplings
        keys = {value: key for key, value in DATASET_KEYS.items()}
        self._keys = {name: keys.get(name, name) for name in couplings.condition}

    def __len__(self) -> int:
        return len(self.couplings)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        c = self.couplings
        item = {IMAGE_KEY: c.x0[index], NOISE_KEY: c.x1[index]}
        item.update({self._keys[name]: value[index] for name, value in c.condition.items()})
        return item


def describe_couplings(couplings: CouplingSet) -> str:
    """'512 pairs of heun, 25 steps (49 NFE)', for messages."""
    config = couplings.config
    cost = f" ({config['nfe']} NFE)" if isinstance(config.get("nfe"), int) else ""
    return f"{len(couplings)} pairs of {config.get('sampler')}, {config.get('steps')} steps{cost}"
