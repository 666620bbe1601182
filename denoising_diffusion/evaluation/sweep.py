"""Generating an evaluation set, and sweeping samplers against network evaluations (NFE).

:func:`generate` draws N images from a model in batches with one seeded generator and reports the network
evaluations the sampler used per batch (for an adaptive solver, read from ``StepRecord.nfe``; otherwise
``SamplerInfo.nfe``; classifier-free guidance's conditional and unconditional halves are one batched call, counted
once). :func:`sweep` scores every (sampler, NFE) pair against one real feature set: for a fixed-step sampler the NFE
is turned into the largest step count whose evaluations do not exceed it (Heun: 2·steps − 1), so the row reports the
NFE actually used; an adaptive solver ('ode') chooses its own steps, so it is run once per tolerance (rtol = atol =
tol) and reported with the mean NFE it took. Every row starts from the same seed (common random numbers), so the
differences between rows are not sampling noise of the initial noise alone.

:func:`format_table` prints the rows; :func:`plot_sweep` draws metric against NFE, one line per sampler (matplotlib,
drawn on a Figure of its own: no global pyplot state).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._utils import call_each, chunk_sizes
from ..denoiser import Callback, StepRecord
from ..samplers import SAMPLERS, SamplerInfo, SamplerName
from .frechet import FeatureExtractor, extract_features
from .metrics import (
    DEFAULT_OPTIONS,
    MetricOptions,
    RealFeatures,
    Scores,
    check_counts,
    extractor_device,
    score_features,
)


@dataclass(frozen=True)
class Generated:
    """Generated images (N, C, H, W) in [0, 1] on the CPU, and the mean network evaluations per batch."""

    images: Tensor
    nfe: float


def _classes_for(diffusion: Any, num: int) -> Tensor | None:
    """For a class-conditional model: the classes 0, 1, ..., K−1 cycled over ``num`` images (balanced)."""
    num_classes = getattr(getattr(diffusion, "condition_spec", None), "num_classes", None)
    return None if num_classes is None else torch.arange(num) % num_classes


def generate(
    diffusion: Any,
    num: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    callback: Callback | None = None,
    **options: Any,
) -> Generated:
    """``num`` samples of ``diffusion`` (``diffusion.sample`` ``batch_size`` at a time, all noise from one generator
    seeded with ``seed``); ``options``: sampler options, guidance, a condition; ``callback``: every sampler step's
    StepRecord (a progress bar). A class-conditional model without ``classes`` gets the classes cycled (balanced)."""
    info = diffusion.sampler_info(sampler)
    generator = torch.Generator(device=diffusion.device).manual_seed(seed)
    classes = options.pop("classes", None)
    classes = _classes_for(diffusion, num) if classes is None else classes
    images, meter, start = [], NfeMeter(), 0
    for n in chunk_sizes(num, batch_size):
        part = classes[start : start + n] if isinstance(classes, Tensor) else classes
        given = {} if part is None else {"classes": part}
        batch = diffusion.sample(batch_size=n, sampler=info.name, steps=steps, generator=generator,
                                 callback=call_each(meter, callback), **given,
                                 **options)  # fmt: skip
        images.append(batch.cpu())
        start += n
    return Generated(torch.cat(images), meter.per_call(diffusion, info, steps, options))


class NfeMeter:
    """A sampler callback that counts network evaluations per ``diffusion.sample`` call.

    A call's records start at ``index`` 0; an adaptive solver's (or a corrector's) ``StepRecord.nfe`` is the count so
    far in that call, so the call's count is its largest. Samplers whose count is fixed by the steps report None
    there and are counted by ``SamplerInfo.nfe`` (:meth:`per_call`)."""

    def __init__(self) -> None:
        self.calls: list[int] = []  # the counted evaluations of each call seen, in order

    def __call__(self, record: StepRecord) -> None:
        if record.index == 0 or not self.calls:
            self.calls.append(0)
        if record.nfe is not None:
            self.calls[-1] = max(self.calls[-1], record.nfe)

    def per_call(self, diffusion: Any, info: SamplerInfo, steps: int | None, options: Mapping[str, Any]) -> float:
        """Mean network evaluations per call (per image of a batch): counted for an adaptive sampler, else
        ``info.nfe`` at ``steps`` (the model's ``sampling_timesteps`` when None)."""
        if info.adaptive and any(self.calls):
            return sum(self.calls) / len(self.calls)
        return float(_fixed_nfe(diffusion, info, steps, options))


def _fixed_nfe(diffusion: Any, info: SamplerInfo, steps: int | None, options: Mapping[str, Any]) -> int:
    return info.nfe(diffusion.sampling_timesteps if steps is None else steps, options)


# ----- the sweep ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPoint:
    """One row: the sampler, the steps it ran, the NFE it used, the tolerance (adaptive solvers), the scores."""

    sampler: str
    steps: int
    nfe: float
    tolerance: float | None
    scores: Scores


def steps_for_nfe(info: SamplerInfo, nfe: int) -> int:
    """The most steps whose network evaluations do not exceed ``nfe`` (at the sampler's default options)."""
    steps = (nfe - info.extra_evals) // info.evals_per_step
    if steps < 1:
        raise ValueError(
            f"sampler {info.name!r} needs at least {info.evals_per_step + info.extra_evals} network evaluations "
            f"(one step), got nfe={nfe}"
        )
    return steps


def check_samplers(diffusion: Any, samplers: Sequence[str]) -> list[SamplerInfo]:
    """The registry entries of ``samplers``; ValueError listing the known ones for an unknown name, and naming the
    process for a sampler that cannot run on this model."""
    if not samplers:
        raise ValueError("samplers: give at least one sampler name")
    infos = [SAMPLERS[SamplerName(name)] for name in samplers]  # unknown: "unknown sampler 'x'; allowed values: ..."
    for info in infos:
        if not info.serves(diffusion.schedule):
            process = getattr(diffusion, "config", {}).get("process", "ddpm")
            raise ValueError(
                f"sampler {info.name!r} needs a continuous-time process (vp, subvp, ve); this model's is {process!r}"
            )
    return infos


def sweep(
    diffusion: Any,
    real: RealFeatures,
    extractor: FeatureExtractor,
    samplers: Sequence[str],
    nfes: Sequence[int],
    *,
    num: int,
    tolerances: Sequence[float] = (1e-3,),
    batch_size: int = 64,
    seed: int = 0,
    options: MetricOptions = DEFAULT_OPTIONS,
    feature_batch_size: int = 256,
    callback: Callback | None = None,
    **sample_options: Any,
) -> list[SweepPoint]:
    """Score ``num`` samples of ``diffusion`` for every sampler x NFE (fixed-step samplers) or sampler x tolerance
    (adaptive ones) against ``real`` (features taken by ``extractor``). ``sample_options``: guidance, condition;
    ``callback``: every sampler step of every run (a progress bar)."""
    infos = check_samplers(diffusion, samplers)
    if not nfes or min(nfes) < 1:
        raise ValueError(f"nfe: give one or more positive network-evaluation counts, got {list(nfes)}")
    check_counts(options.metrics, real.num_images, num, options.neighbours)
    runs: list[tuple[SamplerInfo, int, float | None]] = []
    for info in infos:
        if info.adaptive:
            runs += [(info, info.recommended_steps, float(tol)) for tol in tolerances]
        else:
            runs += [(info, steps_for_nfe(info, nfe), None) for nfe in nfes]
    points = []
    for info, steps, tol in runs:
        extra = {} if tol is None else {"rtol": tol, "atol": tol}
        made = generate(diffusion, num, batch_size=batch_size, seed=seed, sampler=info.name, steps=steps,
                        callback=callback, **extra, **sample_options)  # fmt: skip
        features = extract_features(
            extractor, made.images.to(extractor_device(extractor)), batch_size=feature_batch_size
        )
        points.append(SweepPoint(info.name, steps, made.nfe, tol, score_features(real, features, options)))
    return points


# ----- reporting ----------------------------------------------------------------------------------------------------

_COLUMNS = (("fid", "FID"), ("kid", "KID"), ("precision", "precision"), ("recall", "recall"))


def _cell(scores: Scores, name: str) -> str | None:
    if name == "kid":
        return None if scores.kid_mean is None else f"{scores.kid_mean:.4g} ± {scores.kid_sd:.2g}"
    value = getattr(scores, name)
    return None if value is None else f"{value:.4g}"


def format_table(points: Sequence[SweepPoint]) -> str:
    """A plain-text table: one row per sampler x NFE (or tolerance), one column per computed metric."""
    metrics = [(n, title) for n, title in _COLUMNS if points and _cell(points[0].scores, n) is not None]
    header = ["sampler", "steps", "NFE", "tolerance", *[title for _, title in metrics]]
    rows = [
        [p.sampler, str(p.steps), f"{p.nfe:g}", "-" if p.tolerance is None else f"{p.tolerance:g}",
         *[_cell(p.scores, n) or "-" for n, _ in metrics]]
        for p in points
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def plot_sweep(points: Sequence[SweepPoint], path: str | os.PathLike[str]) -> Path:
    """Each computed metric against NFE (log axis), one line per sampler; written to ``path`` (PNG, PDF, SVG...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [(n, t) for n, t in _COLUMNS if points and _cell(points[0].scores, n) is not None]
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (name, title) in zip(axes, metrics):
        for sampler in dict.fromkeys(p.sampler for p in points):
            mine = sorted((p for p in points if p.sampler == sampler), key=lambda p: p.nfe)
            values = [p.scores.kid_mean if name == "kid" else getattr(p.scores, name) for p in mine]
            ax.plot([p.nfe for p in mine], values, marker="o", label=sampler)
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_title(f"{title} (N = {points[0].scores.num_generated})")
    axes[0].legend()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
