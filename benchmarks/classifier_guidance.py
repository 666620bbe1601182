"""Classifier guidance on the digits beside classifier-free guidance: class accuracy and Frechet distance against
the guidance scale.

Usage:  python benchmarks/classifier_guidance.py [--cache DIR] [--seeds 0 1 2] [--sample-draws 2] [--per-class 50]
                                                 [--threads 1] [--jobs 1] [--quick]

Needs scikit-learn (the ``test`` and ``bench`` extras) for its bundled 8x8 digits (no download). Issue 11 asks for
an unconditional model guided by a noise-aware classifier (Dhariwal & Nichol 2021, §4) at scales 0, 1, 3 and 10,
beside the class-conditional model of issue 10 under classifier-free guidance (Ho & Salimans 2021), over at least
three seeds. Both are measured here, in one run, with the same data, evaluation classifier, sampler, steps, labels
and sample sizes as benchmarks/guidance_scale.py:

1. data, evaluation classifier, floors: guidance_scale's ``prepare`` (quality_vs_cost's split, 1297 training and
   500 held-out digits; ``evaluation.train_classifier`` on the training split, seed 0; its 64 penultimate
   features are the feature space; the random and the class-balanced real floors at N = 500);
2. per training seed k (default 0, 1, 2), the classifier-guided system:
   * an unconditional ``Unet`` of guidance_scale's size without ``num_classes`` (this is quality_vs_cost's
     network) in ``GaussianDiffusion(image_size=8, timesteps=1000)`` (ε-prediction, cosine schedule), trained with
     quality_vs_cost's loop and seed k. For k equal to the split seed it is quality_vs_cost's own model and
     shares its cache file; other seeds are cached as ``digits-uncond-*.pt``;
   * one guiding classifier per diffusion seed: ``NoiseAwareClassifier.for_diffusion(EncoderClassifier(32,
     dim_mults=(1, 2)), diffusion)`` (the same schedule; the encoder half of the same Unet with an attention pool,
     as Dhariwal & Nichol's classifier is the downsampling trunk of their Unet), trained with cross-entropy on x_t
     at uniform t over the training split, with quality_vs_cost's optimizer recipe (Adam, warm-up + cosine decay,
     clipping, EMA), initialized and batched from seed 1000 + k; cached as ``digits-guide-*.pt``;
3. per training seed k, the classifier-free-guided system: guidance_scale's class-conditional model of seed k,
   loaded from its cache (``digits-cfg-*.pt``, trained if absent) and sampled by guidance_scale's own code;
4. per system, seed, scale s in SCALES and sample draw: 50 images of each class (N = 500), DPM-Solver++(2M) at
   25 steps; ``sample(classes=labels, classifier=guide, classifier_scale=s)`` for the unconditional model,
   ``sample(classes=labels, guidance_scale=s)`` for the conditional one. A draw's sample seed is the same at
   every scale (paired scales) and differs between systems, seeds and draws (the systems' samples share no
   noise, so their comparison is unpaired);
5. scores of each sample set: (a) accuracy of the evaluation classifier on the images against the labels asked
   for; (b) the Frechet distance of the 500 images to the 500 held-out digits in its feature space. For the
   guided system also (c) the guide's own accuracy on the final samples (at t = 0): far above (a) would mean the
   guidance found features only the guide sees (adversarial directions), not digits.

SCALES = 0, 1, 2, 3, 5, 10 for both systems: issue 11's 0, 1, 3, 10 for classifier guidance, issue 10's 0, 1, 2, 3,
5 for classifier-free guidance, each also run at the other's scales. In both the guided score is ∇ log p(x_t) +
s ∇ log p(y | x_t), with the class posterior from the guide or, for classifier-free guidance, implied by the two
branches: so s = 0 is an unconditional model in both, s = 1 the conditional model (exactly, were the guide the
true posterior and both networks exact), and equal s aim at the same distribution p(x) p(y | x)^s.

**The evaluation classifier is not the guide.** The accuracy would be circular if the network that judges the
samples were the one that steered them (classifier guidance at large s can raise a classifier's confidence with
changes no other classifier sees). The two differ in architecture (a 2-convolution CNN with a 64-unit layer on
clean images, against a time-conditioned ResNet encoder with attention pooling), in their inputs (clean images with
±1-pixel shifts, against x_t at every noise level), and in initialization and batches (the evaluator's seed-0
generator, against the global RNG seeded by 1000 + k). They share the 1297 training digits (neither sees the 500
held-out ones): with a 1797-image data set there is no third split to spare, and the diffusion models learn from
the same images.

Per system and scale it prints mean ± sd over the training seeds (each seed's value the mean over its draws) and
the sample noise: the sd of one draw between draws of the same model, pooled over the models.

**The comparisons, and how a difference is called (fixed before any measurement).** The two systems are
different models with no shared noise, so each comparison between them is unpaired: for per-seed values a_1..a_n
(classifier guidance) and b_1..b_m (classifier-free), Δ = mean a − mean b with standard error
se = √(sd_a²/n + sd_b²/m).

* **R1, at the same scale** s ∈ SCALES, for the accuracy and for the distance: "CG higher" if Δ − 2 se > 0,
  "CG lower" if Δ + 2 se < 0, else "no difference shown".
* **R2, does classifier guidance reach the conditional model's accuracy?** Δ(s) = A_CG(s) − A_CFG(1) (the
  classifier-free model at s = 1: the conditional model as trained, issue 10's reference) with a margin δ = 0.01
  (5 of 500 images; the evaluator itself errs on 1.4% of real digits): at s it **reaches** when Δ − 2 se ≥ −δ,
  **falls short** when Δ + 2 se < −δ, else **undecided**. The headline is the smallest s at which it reaches (or
  that it reaches at none).
* **R3, at what distance cost?** At that smallest s, F_CG(s) − F_CFG(1), called as in R1, and the ratio of means.

Two standard errors is the project's convention (quality_vs_cost, guidance_scale). With 3 + 3 seeds it is a loose
check (the Welch t test it approximates has about 2-4 degrees of freedom), and reading the smallest of six scales
in R2 loosens it further: "no difference shown" and "undecided" mean that the seeds cannot tell, not that there is
no difference. Distances are plug-in values, floor included, as in guidance_scale; the excess over the balanced
floor is printed for reading.

``--quick`` runs a seconds-long configuration (tiny networks, 2 seeds, 2 images per class), the test suite's smoke
test; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from benchmarks import guidance_scale as cfg_bench
from benchmarks import quality_vs_cost as qvc
from benchmarks._timing import machine_line
from benchmarks.guidance_scale import NUM_CLASSES, _mean_sd, _pooled_sd, per_class_accuracy, sample_labels
from denoising_diffusion import GaussianDiffusion
from denoising_diffusion.evaluation import SmallImageClassifier, classifier_accuracy, frechet_distance_to
from denoising_diffusion.nn import EncoderClassifier
from denoising_diffusion.noise_aware_classifier import NoiseAwareClassifier

SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0)
REFERENCE_SCALE = 1.0  # the classifier-free model's unguided conditional samples: R2's and R3's reference
ACCURACY_MARGIN = 0.01  # R2's δ
GUIDE_SEED_OFFSET = 1000  # the guide of diffusion seed k is initialized and batched from seed 1000 + k
GUIDE_CHECK_TIMES = (0, 250, 500, 750)  # noise levels at which the guide's held-out accuracy is printed
CG, CFG = "classifier guidance", "classifier-free"


@dataclass(frozen=True)
class ClassifierGuidanceConfig:
    """Everything that decides the numbers. The diffusion fields are guidance_scale's (and quality_vs_cost's), so
    that the classifier-free models are the cached ones of issue 10; the guide's fields are this script's."""

    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2)
    attn_heads: int = 2
    attn_dim_head: int = 16
    train_steps: int = 2500
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    guide_dim: int = 32  # EncoderClassifier: the encoder half of the diffusion's Unet
    guide_dim_mults: tuple[int, ...] = (1, 2)
    guide_steps: int = 2000
    guide_batch_size: int = 128
    guide_lr: float = 1e-3
    classifier_steps: int = 1500  # the evaluation classifier (guidance_scale's)
    per_class: int = 50
    scales: tuple[float, ...] = SCALES
    sampler: str = "dpmpp_2m"
    steps: int = 25
    seeds: tuple[int, ...] = (0, 1, 2)
    sample_draws: int = 2
    data_seed: int = 0

    @property
    def num_samples(self) -> int:
        return NUM_CLASSES * self.per_class

    def diffusion_config(self, seed: int) -> qvc.BenchConfig:
        """quality_vs_cost's configuration of the unconditional model of training seed ``seed``."""
        return qvc.BenchConfig(
            dim=self.dim,
            dim_mults=self.dim_mults,
            attn_heads=self.attn_heads,
            attn_dim_head=self.attn_dim_head,
            train_steps=self.train_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            ema_decay=self.ema_decay,
            classifier_steps=self.classifier_steps,
            seed=seed,
        )

    def guidance_config(self) -> cfg_bench.GuidanceConfig:
        """guidance_scale's configuration of the classifier-free system (its model fields are this config's, and
        cond_drop_prob its default 0.2), at this script's scales, seeds, draws and sample sizes."""
        return cfg_bench.GuidanceConfig(
            dim=self.dim,
            dim_mults=self.dim_mults,
            attn_heads=self.attn_heads,
            attn_dim_head=self.attn_dim_head,
            train_steps=self.train_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            ema_decay=self.ema_decay,
            classifier_steps=self.classifier_steps,
            per_class=self.per_class,
            scales=self.scales,
            sampler=self.sampler,
            steps=self.steps,
            seeds=self.seeds,
            sample_draws=self.sample_draws,
            data_seed=self.data_seed,
        )

    def key(self, what: str, seed: int) -> str:
        """Cache key of the unconditional model (``what='uncond'``) or the guide (``'guide'``) of seed ``seed``."""
        fields = {k: v for k, v in asdict(self).items() if k in _KEY_FIELDS[what]}
        fields.update(what=what, seed=seed, data_seed=self.data_seed, weights_version=_WEIGHTS_VERSION)
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


_DIFFUSION_FIELDS = ("dim", "dim_mults", "attn_heads", "attn_dim_head", "train_steps", "batch_size", "lr", "ema_decay")
_KEY_FIELDS = {
    "uncond": _DIFFUSION_FIELDS,
    "guide": ("guide_dim", "guide_dim_mults", "attn_heads", "attn_dim_head", "guide_steps", "guide_batch_size",
              "guide_lr", "ema_decay"),
}  # fmt: skip
_WEIGHTS_VERSION = 1  # bump when the code changes the weights a configuration trains to
QUICK = ClassifierGuidanceConfig(
    dim=8,
    train_steps=20,
    batch_size=32,
    guide_dim=8,
    guide_steps=20,
    guide_batch_size=32,
    classifier_steps=20,
    per_class=2,
    steps=4,
    seeds=(0, 1),
    sample_draws=2,
)


# ----- the classifier-guided system -----------------------------------------------------------------------------


def unconditional_model(
    cfg: ClassifierGuidanceConfig, seed: int, images: Tensor, cache: Path
) -> tuple[GaussianDiffusion, float | None]:
    """The EMA unconditional model of training seed ``seed`` (quality_vs_cost's network, loop and seeding), from
    ``cache`` or freshly trained and saved; also the training time (None when loaded). For ``seed ==
    cfg.data_seed`` it is quality_vs_cost's own model (whose split seed is its training seed) and uses its cache
    file; other seeds have their own, since quality_vs_cost's key would name a model of another split."""
    bench = cfg.diffusion_config(seed)
    if seed == cfg.data_seed:
        return qvc.trained_diffusion(bench, images, cache)
    path = cache / f"digits-uncond-{cfg.key('uncond', seed)}.pt"
    torch.manual_seed(seed)  # the Unet's initialization, then the training noise (as quality_vs_cost)
    diffusion = qvc.build_diffusion(bench)
    if path.exists():
        diffusion.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        return diffusion, None
    start = time.perf_counter()
    ema = qvc.train_diffusion(diffusion, images, bench)
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ema.state_dict(), "config": asdict(cfg), "seed": seed, "train_seconds": seconds}, path)
    diffusion.model.load_state_dict(ema.state_dict())
    return diffusion, seconds


def build_guide(cfg: ClassifierGuidanceConfig, diffusion: GaussianDiffusion) -> NoiseAwareClassifier:
    network = EncoderClassifier(
        cfg.guide_dim,
        num_classes=NUM_CLASSES,
        channels=1,
        dim_mults=cfg.guide_dim_mults,
        resnet_block_groups=min(8, cfg.guide_dim),
        attn_heads=cfg.attn_heads,
        attn_dim_head=cfg.attn_dim_head,
    )
    return NoiseAwareClassifier.for_diffusion(network, diffusion)


def train_guide(
    guide: NoiseAwareClassifier, images: Tensor, labels: Tensor, cfg: ClassifierGuidanceConfig
) -> nn.Module:
    """Adam on the guide's cross-entropy over x_t at uniform t (NoiseAwareClassifier's loss), with
    quality_vs_cost's recipe (warm-up and cosine decay, clipping at 1, EMA); returns the EMA copy. Batches and
    noise come from the global RNG, which :func:`trained_guide` seeds."""
    ema = copy.deepcopy(guide).eval().requires_grad_(False)
    opt = torch.optim.Adam(guide.parameters(), lr=cfg.guide_lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: qvc._lr_factor(s, cfg.guide_steps))
    guide.train()
    for step in range(cfg.guide_steps):
        idx = torch.randint(0, len(images), (cfg.guide_batch_size,))
        loss = guide((images[idx], labels[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(guide.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), guide.parameters()):
                e.lerp_(p, 1 - decay)
    return ema


def trained_guide(
    cfg: ClassifierGuidanceConfig, seed: int, diffusion: GaussianDiffusion, images: Tensor, labels: Tensor, cache: Path
) -> tuple[NoiseAwareClassifier, float | None]:
    """The EMA guide of diffusion seed ``seed`` on ``diffusion``'s schedule, from ``cache`` or freshly trained
    (initialization and batches from seed GUIDE_SEED_OFFSET + seed); also the training time (None when loaded)."""
    path = cache / f"digits-guide-{cfg.key('guide', seed)}.pt"
    torch.manual_seed(GUIDE_SEED_OFFSET + seed)
    guide = build_guide(cfg, diffusion)
    if path.exists():
        guide.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        return guide.eval(), None
    start = time.perf_counter()
    ema = train_guide(guide, images, labels, cfg)
    seconds = time.perf_counter() - start
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"model": ema.state_dict(), "config": asdict(cfg), "seed": seed, "train_seconds": seconds}, path)
    guide.load_state_dict(ema.state_dict())
    return guide.eval(), seconds


def guide_accuracy(guide: NoiseAwareClassifier, images: Tensor, labels: Tensor, t: int, seed: int = 0) -> float:
    """The guide's accuracy on images (N, 1, 8, 8) in [0, 1] noised to x_t ~ q(x_t | x_0) (t = 0: almost clean)."""
    x_0 = images * 2 - 1
    tt = torch.full((len(labels),), t, dtype=torch.long)
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(seed))
    x_t = guide.sqrt_alphas_cumprod[t] * x_0 + guide.sqrt_one_minus_alphas_cumprod[t] * noise
    with torch.inference_mode():
        return float((guide.logits(x_t, tt).argmax(1) == labels).double().mean())


def final_guide_accuracy(guide: NoiseAwareClassifier, images: Tensor, labels: Tensor) -> float:
    """The guide's accuracy on generated images as they are (x_0, at t = 0, no noise added)."""
    with torch.inference_mode():
        logits = guide.logits(images * 2 - 1, torch.zeros(len(labels), dtype=torch.long))
    return float((logits.argmax(1) == labels).double().mean())


def cg_sample_seed(seed: int, draw: int) -> int:
    """The sample seed of draw ``draw`` of the classifier-guided system of seed ``seed``: the same at every scale,
    different from every other (system, seed, draw), guidance_scale's included."""
    return int.from_bytes(hashlib.sha1(f"classifier guidance sample {seed} {draw}".encode()).digest()[:7], "big")


def generate(
    diffusion: GaussianDiffusion,
    guide: NoiseAwareClassifier,
    cfg: ClassifierGuidanceConfig,
    scale: float,
    seed: int,
    draw: int,
    chunk: int = 250,
) -> tuple[Tensor, Tensor]:
    """(images (N, 1, 8, 8) in [0, 1], labels (N,)): the unconditional model guided towards the labels by
    ``guide`` at ``scale``; all noise from one generator seeded by ``cg_sample_seed(seed, draw)``."""
    labels = sample_labels(cfg.per_class)
    generator = torch.Generator().manual_seed(cg_sample_seed(seed, draw))
    parts = [
        diffusion.sample(
            len(labels[i : i + chunk]),
            sampler=cfg.sampler,
            steps=cfg.steps,
            generator=generator,
            classes=labels[i : i + chunk],
            classifier=guide,
            classifier_scale=scale,
        )
        for i in range(0, len(labels), chunk)
    ]
    return torch.cat(parts), labels


def run_cg_seed(
    cfg: ClassifierGuidanceConfig, seed: int, images: Tensor, labels: Tensor, held: tuple[Tensor, Tensor], cache: Path,
    threads: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Train (or load) the unconditional model and the guide of seed ``seed``, and draw every (scale, draw) set."""
    torch.set_num_threads(threads)  # a pool worker starts with torch's default
    diffusion, train_seconds = unconditional_model(cfg, seed, images, cache)
    guide, guide_seconds = trained_guide(cfg, seed, diffusion, images, labels, cache)
    start = time.perf_counter()
    samples = {(s, d): generate(diffusion, guide, cfg, s, seed, d) for d in range(cfg.sample_draws) for s in cfg.scales}
    return {
        "system": CG,
        "seed": seed,
        "train_seconds": train_seconds,
        "guide_seconds": guide_seconds,
        "sample_seconds": time.perf_counter() - start,
        "samples": samples,
        "guide_self": {key: final_guide_accuracy(guide, *pair) for key, pair in samples.items()},
        "guide_heldout": {t: guide_accuracy(guide, *held, t, seed=t) for t in GUIDE_CHECK_TIMES},
    }


def run_cfg_seed(cfg: ClassifierGuidanceConfig, seed: int, images: Tensor, labels: Tensor, cache: Path,
                 threads: int = 1) -> dict[str, Any]:  # fmt: skip
    """guidance_scale's run of seed ``seed`` (its cached model, its sampling), at this script's scales."""
    run = cfg_bench.run_seed(cfg.guidance_config(), seed, images, labels, cache, threads)
    return {**run, "system": CFG, "guide_seconds": None}


def _run(task: tuple) -> dict[str, Any]:
    kind, *arguments = task
    return run_cg_seed(*arguments) if kind == CG else run_cfg_seed(*arguments)


def _map(tasks: list[tuple], jobs: int) -> Iterator[dict[str, Any]]:
    """The tasks, here or in a pool of ``jobs`` spawned processes, in completion order."""
    if jobs == 1:
        yield from (_run(t) for t in tasks)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(_run, t) for t in tasks]):
            yield future.result()


# ----- scores and the comparisons -------------------------------------------------------------------------------


def unpaired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Δ = mean a − mean b and its standard error √(sd_a²/n_a + sd_b²/n_b) (nan with fewer than 2 values on
    either side)."""
    (ma, sa), (mb, sb) = _mean_sd(a), _mean_sd(b)
    return ma - mb, math.sqrt(sa**2 / len(a) + sb**2 / len(b))


def call_difference(diff: float, se: float) -> str:
    """R1's call: 'CG higher' if diff − 2 se > 0, 'CG lower' if diff + 2 se < 0, else 'no difference shown'."""
    if diff - 2 * se > 0:
        return "CG higher"
    return "CG lower" if diff + 2 * se < 0 else "no difference shown"


def call_reach(diff: float, se: float, margin: float = ACCURACY_MARGIN) -> str:
    """R2's call on Δ = A_CG(s) − A_CFG(1): 'reaches' if Δ − 2 se ≥ −margin, 'falls short' if Δ + 2 se < −margin,
    else 'undecided' (also with a nan se)."""
    if diff - 2 * se >= -margin:
        return "reaches"
    return "falls short" if diff + 2 * se < -margin else "undecided"


def score(
    runs: list[dict[str, Any]], classifier: SmallImageClassifier, reference: Any, cfg: ClassifierGuidanceConfig
) -> dict[str, Any]:
    """Every sample set's scores, per-seed means over draws, per-(system, scale) summaries and the comparisons."""
    cells: dict[tuple[str, int, float, int], tuple[float, float, Tensor]] = {}
    for run in runs:
        for (scale, draw), (images, labels) in run["samples"].items():
            cells[run["system"], run["seed"], scale, draw] = (
                classifier_accuracy(classifier, images, labels),
                frechet_distance_to(reference, images),
                per_class_accuracy(classifier, images, labels),
            )
    seeds, draws = sorted(cfg.seeds), range(cfg.sample_draws)
    guide_runs = {run["seed"]: run for run in runs if run["system"] == CG}

    def per_seed(system: str, scale: float, index: int) -> list[float]:
        return [_mean_sd([float(cells[system, k, scale, d][index]) for d in draws])[0] for k in seeds]

    summary: dict[tuple[str, float], dict[str, Any]] = {}
    for system in (CG, CFG):
        for s in cfg.scales:
            summary[system, s] = {
                "acc": _mean_sd(per_seed(system, s, 0)),
                "fd": _mean_sd(per_seed(system, s, 1)),
                "noise_acc": _pooled_sd([[cells[system, k, s, d][0] for d in draws] for k in seeds]),
                "noise_fd": _pooled_sd([[cells[system, k, s, d][1] for d in draws] for k in seeds]),
                "per_class": torch.stack([cells[system, k, s, d][2] for k in seeds for d in draws]).mean(0),
            }
        for s in cfg.scales if system == CG else ():
            selfs = [_mean_sd([guide_runs[k]["guide_self"][s, d] for d in draws])[0] for k in seeds]
            summary[system, s]["guide_self"] = _mean_sd(selfs)
    reference_acc, reference_fd = per_seed(CFG, REFERENCE_SCALE, 0), per_seed(CFG, REFERENCE_SCALE, 1)
    comparisons: dict[float, dict[str, Any]] = {}
    for s in cfg.scales:
        acc, fd = unpaired(per_seed(CG, s, 0), per_seed(CFG, s, 0)), unpaired(per_seed(CG, s, 1), per_seed(CFG, s, 1))
        reach = unpaired(per_seed(CG, s, 0), reference_acc)
        cost = unpaired(per_seed(CG, s, 1), reference_fd)
        comparisons[s] = {
            "acc": (*acc, call_difference(*acc)),
            "fd": (*fd, call_difference(*fd)),
            "reach": (*reach, call_reach(*reach)),
            "cost": (*cost, call_difference(*cost)),
            "cost_ratio": _mean_sd(per_seed(CG, s, 1))[0] / _mean_sd(reference_fd)[0],
        }
    reached = [s for s in sorted(cfg.scales) if comparisons[s]["reach"][2] == "reaches"]
    heldout = {t: _mean_sd([guide_runs[k]["guide_heldout"][t] for k in seeds]) for t in GUIDE_CHECK_TIMES}
    return {
        "cells": cells,
        "summary": summary,
        "comparisons": comparisons,
        "first_reached": reached[0] if reached else None,
        "guide_heldout": heldout,
    }


# ----- command line ---------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "denoising_diffusion_bench",
        help="folder for the trained models' weights, shared with quality_vs_cost and guidance_scale "
        "(default: %(default)s)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    p.add_argument("--sample-draws", type=int, default=None, help="sample sets per model (default 2)")
    p.add_argument("--per-class", type=int, default=None, help="generated images per class and set (default 50)")
    p.add_argument("--sampler", default=None, help="the sampler of both systems (default dpmpp_2m)")
    p.add_argument("--steps", type=int, default=None, help="its steps (default 25)")
    p.add_argument("--scales", type=float, nargs="+", default=None, help="guidance scales (default 0 1 2 3 5 10)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="processes, one system and seed each at a time (default 1)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke configuration")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> ClassifierGuidanceConfig:
    cfg = QUICK if args.quick else ClassifierGuidanceConfig()
    overrides = {
        "seeds": None if args.seeds is None else tuple(args.seeds),
        "sample_draws": args.sample_draws,
        "per_class": args.per_class,
        "sampler": args.sampler,
        "steps": args.steps,
        "scales": None if args.scales is None else tuple(args.scales),
    }
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if min(args.jobs, args.threads, cfg.sample_draws, cfg.per_class) < 1:
        raise ValueError(
            "--jobs, --threads, --sample-draws and --per-class must be >= 1, got "
            f"{args.jobs}, {args.threads}, {cfg.sample_draws} and {cfg.per_class}"
        )
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"--seeds must be distinct, got {list(cfg.seeds)}")
    return cfg


def _pm(mean_sd: tuple[float, float], digits: int = 2) -> str:
    return f"{mean_sd[0]:.{digits}f} ± {mean_sd[1]:.{digits}f}"


def report(result: dict[str, Any], setup: dict[str, Any], cfg: ClassifierGuidanceConfig) -> None:
    """Print the per-system table, the comparisons, every sample set, per-class accuracies and the headline."""
    summary, comparisons, balanced = result["summary"], result["comparisons"], setup["balanced_floor"]
    n = len(cfg.seeds)
    print(
        f"\n{cfg.num_samples} samples per set ({cfg.per_class} per class) vs {qvc.NUM_HELDOUT} held-out digits; "
        f"{cfg.sampler}, {cfg.steps} steps; {n} training seeds {list(cfg.seeds)} x {cfg.sample_draws} sample draws "
        f"per system\n{machine_line()}\n"
    )
    heldout = ", ".join(f"t = {t}: {_pm(v, 3)}" for t, v in result["guide_heldout"].items())
    print(f"guides' held-out accuracy on x_t (mean ± sd over seeds): {heldout}\n")
    print(
        "| scale | CG accuracy | CG Frechet distance | CG FD − balanced floor | CG sample noise: acc, FD "
        "| guide's own accuracy on its samples | CFG accuracy | CFG Frechet distance | CFG FD − balanced floor "
        "| CFG sample noise: acc, FD |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in cfg.scales:
        cg, cf = summary[CG, s], summary[CFG, s]
        cells = []
        for row in (cg, cf):
            excess = (row["fd"][0] - balanced.mean, row["fd"][1])
            cells.append(
                f"{_pm(row['acc'], 3)} | {_pm(row['fd'])} | {_pm(excess)} | "
                f"{row['noise_acc']:.3f}, {row['noise_fd']:.2f}"
            )
        print(f"| {s:g} | {cells[0]} | {_pm(cg['guide_self'], 3)} | {cells[1]} |")
    print(
        f"\nmean ± sd over the {n} training seeds of each seed's mean over {cfg.sample_draws} draws; sample noise: "
        "the within-model sd of a single draw\n"
        f"real held-out digits: evaluator accuracy {setup['accuracy']:.3f}; floor (N = {cfg.num_samples}) random "
        f"training subsets {setup['floor'].mean:.2f} ± {setup['floor'].sd:.2f}, class-balanced "
        f"{balanced.mean:.2f} ± {balanced.sd:.2f} (mean ± sd over {cfg_bench.FLOOR_DRAWS} subsets)\n"
    )
    print(
        "| scale | R1 accuracy CG − CFG (± se) | R1 FD CG − CFG (± se) | R2 accuracy CG − CFG(s=1) (± se) "
        "| R3 FD CG − CFG(s=1) (± se), ratio |"
    )
    print("| ---: | ---: | ---: | ---: | ---: |")
    for s in cfg.scales:
        c = comparisons[s]
        (a, ase, acall), (f, fse, fcall) = c["acc"], c["fd"]
        (r, rse, rcall), (d, dse, dcall) = c["reach"], c["cost"]
        print(
            f"| {s:g} | {a:+.3f} ± {ase:.3f}: {acall} | {f:+.2f} ± {fse:.2f}: {fcall} | {r:+.3f} ± {rse:.3f}: "
            f"{rcall} | {d:+.2f} ± {dse:.2f}: {dcall}, {c['cost_ratio']:.2f}x |"
        )
    print("\nevery sample set: accuracy / Frechet distance\n")
    print("| system | seed | draw | " + " | ".join(f"s = {s:g}" for s in cfg.scales) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(cfg.scales))
    for system in (CG, CFG):
        for k in sorted(cfg.seeds):
            for d in range(cfg.sample_draws):
                row = [result["cells"][system, k, s, d] for s in cfg.scales]
                print(f"| {system} | {k} | {d} | " + " | ".join(f"{c[0]:.3f} / {c[1]:.2f}" for c in row) + " |")
    print("\nper-class accuracy (mean over seeds and draws)\n")
    print("| system | scale | " + " | ".join(str(c) for c in range(NUM_CLASSES)) + " |")
    print("| --- | ---: |" + " ---: |" * NUM_CLASSES)
    for system in (CG, CFG):
        for s in cfg.scales:
            values = summary[system, s]["per_class"].tolist()
            print(f"| {system} | {s:g} | " + " | ".join(f"{a:.2f}" for a in values) + " |")
    first = result["first_reached"]
    if first is None:
        print("\nR2: classifier guidance reaches the conditional model's accuracy at none of the scales")
    else:
        d, dse, dcall = comparisons[first]["cost"]
        print(
            f"\nR2: classifier guidance first reaches the conditional model's accuracy (within {ACCURACY_MARGIN} at "
            f"2 se) at s = {first:g}; R3: its distance there is {d:+.2f} ± {dse:.2f} (se) from the conditional "
            f"model's ({comparisons[first]['cost_ratio']:.2f}x): {dcall}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``score``'s dict plus evaluator accuracy, floors and per-run wall times."""
    args = parse(argv)
    cfg = config_from(args)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    setup = cfg_bench.prepare(cfg.guidance_config())
    (train_x, train_y), held = setup["train"], qvc.load_digits_split(cfg.data_seed)[2:]
    tasks: list[tuple] = [(CG, cfg, k, train_x, train_y, held, args.cache, args.threads) for k in cfg.seeds]
    tasks += [(CFG, cfg, k, train_x, train_y, args.cache, args.threads) for k in cfg.seeds]
    runs, seconds = [], {}
    for run in _map(tasks, args.jobs):
        runs.append(run)
        times = (run["train_seconds"], run["guide_seconds"], run["sample_seconds"])
        seconds[run["system"], run["seed"]] = times
        trained = "loaded" if times[0] is None else f"trained in {times[0]:.0f} s"
        guide = "" if run["system"] == CFG else ", guide " + ("loaded" if times[1] is None else f"{times[1]:.0f} s")
        print(f"{run['system']}, seed {run['seed']}: {trained}{guide}, sampled in {times[2]:.0f} s", flush=True)
    result = score(runs, setup["classifier"], setup["reference"], cfg)
    report(result, setup, cfg)
    print(f"\nwall time: {time.perf_counter() - start:.0f} s")
    result.update(
        accuracy=setup["accuracy"], floor=setup["floor"], balanced_floor=setup["balanced_floor"], seconds=seconds
    )
    return result


if __name__ == "__main__":
    main()
