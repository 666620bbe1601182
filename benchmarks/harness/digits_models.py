"""The small diffusion models the digits benchmarks train, their one training loop, their cache, and how their
sample sets are drawn.

Every model is the same Unet (:class:`DigitsNet`: dim 32, dim_mults (1, 2), 2 attention heads of 16, since at 8x8
attention was most of an evaluation's cost) in ``GaussianDiffusion(image_size=8)`` with ε-prediction and the
process's defaults, unconditional, class-conditional (classifier-free guidance) or of another process; trained by
:func:`train_ema` (Adam, 100-step linear warm-up then cosine decay to 10%, gradient clipping at 1, an EMA whose decay
starts short) with the global RNG seeded by the training seed. The EMA weights are cached under ``--cache`` (outside
the repository) keyed by everything that decides them, so a rerun only samples, and two benchmarks that train the
same model share its file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from denoising_diffusion import SAMPLERS, EncoderClassifier, GaussianDiffusion, NoiseAwareClassifier, Unet
from denoising_diffusion.evaluation import FeatureReference, frechet_distance_to
from denoising_diffusion.samplers import SamplerInfo

from .digits import NUM_CLASSES, sample_labels

WEIGHTS_VERSION = 2  # bump when the code changes the weights a configuration trains to (2: seeded Unet init)
SAMPLE_SEED = 10_000  # a process model of training seed k draws its sample sets from SAMPLE_SEED + k


@dataclass(frozen=True)
class DigitsNet:
    """The network and process of a digits model (with its :class:`Recipe`, all that decides its weights)."""

    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2)
    attn_heads: int = 2
    attn_dim_head: int = 16
    num_classes: int | None = None  # class-conditional when set, its labels dropped with cond_drop_prob
    cond_drop_prob: float = 0.0
    process: str = "ddpm"
    ncsn_levels: int = 100  # the timesteps of an ncsn process (every other process: 1000)

    @property
    def kind(self) -> str:
        """The cache file's prefix: 'diffusion' (unconditional DDPM), 'cfg' (class-conditional) or the process."""
        return "cfg" if self.num_classes else "diffusion" if self.process == "ddpm" else self.process

    def build(self) -> GaussianDiffusion:
        conditional = (
            {"num_classes": self.num_classes, "cond_drop_prob": self.cond_drop_prob} if self.num_classes else {}
        )
        model = Unet(self.dim, dim_mults=self.dim_mults, channels=1, resnet_block_groups=min(8, self.dim),
                     attn_heads=self.attn_heads, attn_dim_head=self.attn_dim_head, **conditional)  # fmt: skip
        if self.process == "ddpm":
            return GaussianDiffusion(model, image_size=8, timesteps=1000)
        timesteps = self.ncsn_levels if self.process == "ncsn" else 1000
        return GaussianDiffusion(model, image_size=8, timesteps=timesteps, process=self.process)


@dataclass(frozen=True)
class Recipe:
    """The training loop's settings (:func:`train_ema`)."""

    train_steps: int = 2500
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999


def lr_factor(step: int, total: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 10% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


def warmup_ema_decay(step: int, decay: float) -> float:
    """The EMA's decay at optimizer step ``step`` (0-based): min(decay, (1 + step) / (10 + step)), a short memory
    early while the weights move fast, so that a short run's average does not keep a share decay^steps of the
    random initialization (0.995^400 = 13 %)."""
    return min(decay, (1 + step) / (10 + step))


def train_ema(
    trainable: nn.Module, averaged: nn.Module, batch_loss: Callable[[Tensor], Tensor], n: int, recipe: Recipe
) -> nn.Module:
    """Adam on ``batch_loss(indices)`` over batches of indices into n items drawn with replacement from the global
    RNG; returns the EMA copy of ``averaged`` (a part of ``trainable``, or all of it)."""
    ema = copy.deepcopy(averaged).eval().requires_grad_(False)
    opt = torch.optim.Adam(trainable.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, recipe.train_steps))
    for step in range(recipe.train_steps):
        loss = batch_loss(torch.randint(0, n, (recipe.batch_size,)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(trainable.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = warmup_ema_decay(step, recipe.ema_decay)
        with torch.no_grad():
            for e, p in zip(ema.parameters(), averaged.parameters()):
                e.lerp_(p, 1 - decay)
    return ema


def cache_key(**fields: Any) -> str:
    """A short hash of everything that decides a cached model's weights."""
    return hashlib.sha1(
        json.dumps({**fields, "weights_version": WEIGHTS_VERSION}, sort_keys=True).encode()
    ).hexdigest()[:12]


def cached(
    path: Path, seed: int, build: Callable[[], nn.Module], train: Callable[[nn.Module], nn.Module],
    target: Callable[[nn.Module], nn.Module] = lambda m: m,
) -> tuple[nn.Module, dict[str, float] | None]:  # fmt: skip
    """``build()`` with the global RNG seeded by ``seed`` (its initialization), then the EMA weights of ``target``
    (the module or a part of it) from ``path``, or trained by ``train`` (its noise from the same seeded RNG) and
    saved there. Returns the module in eval mode and the training's wall and CPU seconds (None when loaded)."""
    torch.manual_seed(seed)
    module = build()
    if path.exists():
        target(module).load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        return module.eval(), None
    wall, cpu = time.perf_counter(), time.process_time()
    ema = train(module)
    seconds = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ema.state_dict(), "seed": seed, **seconds}, path)
    target(module).load_state_dict(ema.state_dict())
    return module.eval(), seconds


def trained(
    net: DigitsNet, recipe: Recipe, seed: int, images: Tensor, cache: Path, labels: Tensor | None = None
) -> tuple[GaussianDiffusion, dict[str, float] | None]:
    """The EMA model of ``net`` trained by ``recipe`` from training seed ``seed`` on ``images`` (with ``labels`` when
    class-conditional); a ve or ncsn model fits σ_max to the images first (Song & Ermon 2020, technique 1)."""
    path = cache / f"digits-{net.kind}-{cache_key(**asdict(net), **asdict(recipe), seed=seed)}.pt"

    def build() -> GaussianDiffusion:
        diffusion = net.build()
        if net.process in ("ve", "ncsn"):
            diffusion.fit_data_statistics(images)
        return diffusion

    def loss(diffusion: GaussianDiffusion) -> Callable[[Tensor], Tensor]:
        return lambda idx: diffusion(images[idx]) if labels is None else diffusion(images[idx], classes=labels[idx])

    def train(diffusion: nn.Module) -> nn.Module:
        return train_ema(diffusion, diffusion.model, loss(diffusion), len(images), recipe)

    model, seconds = cached(path, seed, build, train, target=lambda d: d.model)
    return model, seconds  # type: ignore[return-value]


def trained_guide(
    dim: int, dim_mults: tuple[int, ...], recipe: Recipe, seed: int, diffusion: GaussianDiffusion, images: Tensor,
    labels: Tensor, cache: Path,
) -> tuple[NoiseAwareClassifier, dict[str, float] | None]:  # fmt: skip
    """A noise-aware classifier for classifier guidance (Dhariwal & Nichol 2021): ``EncoderClassifier(dim, dim_mults)``
    (the encoder half of the digits Unet with an attention pool) on ``diffusion``'s schedule, trained by the digits
    loop on its cross-entropy over x_t at uniform t, initialized and batched from ``seed``; cached like the models."""
    net = DigitsNet(dim=dim, dim_mults=dim_mults)
    key = cache_key(what="guide", dim=dim, dim_mults=dim_mults, **asdict(recipe), seed=seed)

    def build() -> NoiseAwareClassifier:
        encoder = EncoderClassifier(dim, num_classes=NUM_CLASSES, channels=1, dim_mults=dim_mults,
                                    resnet_block_groups=min(8, dim), attn_heads=net.attn_heads,
                                    attn_dim_head=net.attn_dim_head)  # fmt: skip
        return NoiseAwareClassifier.for_diffusion(encoder, diffusion)

    def train(guide: nn.Module) -> nn.Module:
        return train_ema(guide, guide, lambda idx: guide((images[idx], labels[idx])), len(images), recipe)

    guide, seconds = cached(cache / f"digits-guide-{key}.pt", seed, build, train)
    return guide, seconds  # type: ignore[return-value]


def sample_in_chunks(
    diffusion: GaussianDiffusion, n: int, generator: torch.Generator, *, labels: Tensor | None = None,
    chunk: int = 250, **options: Any,
) -> Tensor:  # fmt: skip
    """``n`` images (N, 1, 8, 8) in [0, 1] drawn ``chunk`` at a time (faster on a CPU), all noise from ``generator``;
    with ``labels`` (N,), each chunk asks for its labels."""
    parts = []
    for i in range(0, n, chunk):
        classes = {} if labels is None else {"classes": labels[i : i + chunk]}
        parts.append(diffusion.sample(min(chunk, n - i), generator=generator, **classes, **options))
    return torch.cat(parts)


def hashed_seed(text: str) -> int:
    """A sample seed named by ``text``: different texts give unrelated generators."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:7], "big")


def cfg_sample_seed(seed: int, draw: int) -> int:
    """The sample seed of draw ``draw`` of the class-conditional model of training seed ``seed``: the same at every
    guidance scale (paired scales), different for every (model, draw). Models must not share x_T: deterministic
    samplers map one x_T to similar images under similar models, so shared noise would be common to all seeds and
    missing from their spread (guidance_scale's first run shared it; docs/benchmark-history.md)."""
    return hashed_seed(f"sample {seed} {draw}")


def class_sets(
    diffusion: GaussianDiffusion, per_class: int, scales: tuple[float, ...], draws: int,
    seed_of: Callable[[int], int], scale_option: str, **options: Any,
) -> dict[tuple[float, int], tuple[Tensor, Tensor]]:  # fmt: skip
    """{(scale, draw): (images, labels)}: ``per_class`` images of each class per set, guided at each scale
    (``scale_option``: the sample() argument that takes it); draw d's noise from ``seed_of(d)`` at every scale."""
    labels = sample_labels(per_class)
    return {
        (s, d): (sample_in_chunks(diffusion, len(labels), torch.Generator().manual_seed(seed_of(d)), labels=labels,
                                  **{scale_option: s}, **options), labels)
        for d in range(draws) for s in scales
    }  # fmt: skip


def classifier_free_run(
    net: DigitsNet, recipe: Recipe, seed: int, images: Tensor, labels: Tensor, cache: Path, *, per_class: int,
    scales: tuple[float, ...], draws: int, threads: int = 1, **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """Train (or load) the class-conditional model of training seed ``seed`` and draw every (scale, draw) set with
    classifier-free guidance (``options``: sampler, steps, guidance_rescale): {seed, train_seconds (wall, None when
    loaded), sample_seconds, samples}."""
    torch.set_num_threads(threads)  # a pool worker starts with torch's default
    diffusion, seconds = trained(net, recipe, seed, images, cache, labels)
    start = time.perf_counter()
    samples = class_sets(diffusion, per_class, scales, draws, lambda d: cfg_sample_seed(seed, d), "guidance_scale",
                         **options)  # fmt: skip
    return {"seed": seed, "train_seconds": seconds and seconds["wall_s"], "sample_seconds": time.perf_counter() - start,
            "samples": samples}  # fmt: skip


def steps_for_budget(info: SamplerInfo, nfe: int, num_timesteps: int) -> int | None:
    """The most timesteps of a sampler (its SamplerInfo) whose network evaluations fit in ``nfe`` (Heun: 2·steps − 1),
    or None if none fit."""
    steps = min((nfe + info.evals_per_step - 1) // info.evals_per_step, num_timesteps)
    while steps >= 1 and info.nfe(steps) > nfe:
        steps -= 1
    return steps if steps >= 1 else None


def scored_sample(
    diffusion: GaussianDiffusion, sampler: str, steps: int, options: dict[str, Any], num: int, seed: int,
    reference: FeatureReference,
) -> dict[str, float]:  # fmt: skip
    """``num`` samples of ``sampler`` at ``steps`` (noise from SAMPLE_SEED + seed) scored by their Fréchet distance;
    also the network evaluations used (counted for adaptive samplers; Heun's last step is one) and CPU seconds."""
    generator = torch.Generator().manual_seed(SAMPLE_SEED + seed)
    info, nfe = SAMPLERS[sampler], [0]

    def count(record: Any) -> None:
        nfe[0] = record.nfe if record.nfe is not None else nfe[0] + info.evals_per_step

    start = time.process_time()
    images = diffusion.sample(num, sampler=sampler, steps=steps, generator=generator, callback=count, **options)
    used = nfe[0] if info.adaptive else info.nfe(steps, options)
    return {"fd": frechet_distance_to(reference, images), "nfe": used, "cpu_seconds": time.process_time() - start}
