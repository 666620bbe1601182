"""Sample quality per CPU-second against the peers, with the benchmark's own noise measured (issue 14).

Usage:  python benchmarks/peer_quality.py [--data digits shapes] [--minutes 1 4] [--seeds 0 1 2]
                                          [--libraries ours denoising-diffusion-pytorch diffusers]
                                          [--recipes default v ...] [--num-samples 1000] [--draws 2]
                                          [--x-t per_seed|shared]
                                          [--sample-steps 50] [--jobs 2] [--threads 1] [--keep-weights DIR]
                                          [--device cpu|cuda] [--bf16] [--compile] [--compile-backend inductor]
        python benchmarks/peer_quality.py --report            # the tables, from the results file alone
        python benchmarks/peer_quality.py --list-recipes
        python benchmarks/peer_quality.py --costs --data shapes --minutes 4 16 ...   # price a plan before running it

One loop trains every library (:func:`train`): AdamW at lr 2e-4 (weight decay 0.01, torch's default), batch 64 drawn
without replacement from a permutation seeded by the run's seed (the same data order for every library), the
network initialized from the same seed, an EMA of decay 0.995 updated every step (ema-pytorch's ``EMA``, with its
default warm-up: no averaging for 100 steps, then decay min(0.995, 1 − (1 + step)^(−2/3))). Training stops when
the run's process CPU time reaches the budget: ``--minutes M`` is M minutes of 2 cores, 120·M CPU-seconds,
whatever the thread count (``--device cuda`` budgets wall seconds instead, synchronized). Everything else is each
library's default (see _quality_libraries.py); ``--recipes`` changes ours only (RECIPES below).

Evaluation: ``--draws`` sets of ``--num-samples`` images per run, sampled from the EMA weights with DDIM (η = 0) at
``--sample-steps`` steps, each set from its own seed (:func:`sample_seed`: by default different for every training
seed and the same for every library), scored by the Fréchet
distance to held-out real images in the features of ``evaluation.train_classifier`` (trained once per data set on
the training split and cached). The real-vs-real floor (``--num-samples`` training images against the same held-out
set; mean ± sd over 20 subsets) is stored with every run. The rule for calling a difference (95% intervals over
seeds that do not overlap) and the statistics are in _quality_results.py.

Data: ``digits`` (scikit-learn's 8x8 digits, 1 channel, the seed-0 split of quality_vs_cost.py: 1297 training and 500
held-out images) and ``shapes`` (the built-in discs and squares, 3x32x32, 4096 training images from seed 0 and
1000 held-out from seed 1; 8 classes for the feature classifier). Networks: dim 32, dim_mults (1, 2).

Every finished run is appended to ``--results`` (default benchmarks/results/peer_quality.jsonl); a run already
there is skipped, so a second invocation only adds what is missing (``--report`` reads it without training).
``--keep-weights DIR`` keeps each trained network (:func:`weights_path`); an invocation that differs only in its
sampling (more ``--draws``, say) then samples the kept networks instead of training them again.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampler draws a progress bar; tqdm reads this at import

import torch
from ema_pytorch import EMA
from torch import Tensor, nn

from benchmarks import _quality_libraries as libs
from benchmarks import _quality_results as results
from denoising_diffusion.evaluation import (
    SmallImageClassifier,
    feature_reference,
    frechet_distance_to,
    real_floor,
    train_classifier,
)
from denoising_diffusion.training.ema import power_ema

CPU_SECONDS_PER_MINUTE = 120.0  # a minute of 2 cores
BATCH_SIZE = 64
LOOP_LR = 2e-4
LOOP_EMA_DECAY = 0.995
SAMPLE_SEED = 10_000
SEED_STRIDE = 1_000  # per-seed x_T: training seed s draws from SAMPLE_SEED + SEED_STRIDE·(s + 1) + draw
COMPILE_WARMUP_STEPS = 2  # steps that compile, run before the budget clock (train())
WEIGHTS_NAME = "{data}-{library}-{recipe}-seed{seed}-{budget:g}s-{device}{precision}.pt"  # weights_path()
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "peer_quality.jsonl"
DEFAULT_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "denoising_diffusion_bench"  # the feature classifiers

# Ours' recipes: overrides of Unet / GaussianDiffusion / sampling / EMA / loop. "default" is the library's defaults.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "v": {"diffusion": {"objective": "pred_v"}},
    "v_minsnr": {"diffusion": {"objective": "pred_v", "min_snr_loss_weight": True}},
    "v_sigmoid": {"diffusion": {"objective": "pred_v", "beta_schedule": "sigmoid"}},
    "x0": {"diffusion": {"objective": "pred_x0"}},
    "eps_minsnr": {"diffusion": {"min_snr_loss_weight": True}},
    "eps_linear": {"diffusion": {"beta_schedule": "linear"}},  # diffusers' schedule (DDPM: β from 1e-4 to 0.02)
    # Both halves of diffusers' 16-minute lead (benchmarks/README.md, "The schedule test and the sampler swap"): its
    # schedule, and its DDIM keeping the network's ε̂ under the clamp — the candidate recipe for the next 5 seeds.
    "eps_linear_keep_eps": {"diffusion": {"beta_schedule": "linear", "rederive_eps": False}},
    "sigmoid": {"diffusion": {"beta_schedule": "sigmoid"}},
    # Diagnostic: denoising-diffusion-pytorch's Unet inside our GaussianDiffusion with its recipe (below).
    "peer_unet_v_epsw_sigmoid": {
        "network": libs.LUCIDRAINS,
        "diffusion": {
            "objective": "pred_v",
            "beta_schedule": "sigmoid",
            "min_snr_loss_weight": True,
            "min_snr_gamma": 1e9,
        },
    },
    # Diagnostic: diffusers' UNet2DModel (its example's layout) inside our GaussianDiffusion with our defaults: is
    # its network why it leads at 16 minutes (benchmarks/README.md)?
    "peer_unet_diffusers": {"network": libs.DIFFUSERS},
    # denoising-diffusion-pytorch's recipe: v-prediction, sigmoid schedule, the v-loss weighted by SNR/(SNR+1) (its
    # ε-loss), which is min-SNR-γ with γ = ∞ (1e9 here: the config is JSON).
    "v_epsw_sigmoid": {
        "diffusion": {
            "objective": "pred_v",
            "beta_schedule": "sigmoid",
            "min_snr_loss_weight": True,
            "min_snr_gamma": 1e9,
        }
    },
    "edm": {"diffusion": {"process": "edm"}},
    "power_ema": {"ema": {"kind": "power", "sigma_rel": 0.05}},
    "power_ema_10": {"ema": {"kind": "power", "sigma_rel": 0.10}},
    "lr1e-3": {"lr": 1e-3, "warmup": 100},
    "lr5e-4": {"lr": 5e-4, "warmup": 100},
    "lr1e-3_no_warmup": {"lr": 1e-3},  # the CLI's built-in preset trains at 1e-3 without a warm-up
    "blocks1": {"unet": {"resnet_blocks": 1}},
    "no_attn": {"unet": {"attention": "none", "mid_attn": False}},
    "mid_attn_only": {"unet": {"attention": "none"}},
    "blocks1_no_attn": {"unet": {"resnet_blocks": 1, "attention": "none", "mid_attn": False}},
    "blocks1_no_attn_sigmoid": {
        "unet": {"resnet_blocks": 1, "attention": "none", "mid_attn": False},
        "diffusion": {"beta_schedule": "sigmoid"},
    },
    "blocks1_no_attn_lr1e-3": {
        "unet": {"resnet_blocks": 1, "attention": "none", "mid_attn": False},
        "lr": 1e-3,
        "warmup": 100,
    },
}


@dataclass(frozen=True)
class Job:
    data: str
    library: str
    recipe: str
    seed: int
    budget: float  # CPU-seconds (wall seconds on cuda)
    sample_steps: int
    num_samples: int
    draws: int
    threads: int
    device: str
    bf16: bool
    compile_backend: str | None
    noise: str = results.PER_SEED_NOISE  # the x_T protocol (sample_seed)
    keep_weights: str | None = None  # a folder for the EMA weights (weights_path); not part of the results key


@dataclass
class Dataset:
    """Training images, held-out images (both (N, C, H, W) in [0, 1]) and the training labels."""

    train: Tensor
    train_labels: Tensor
    heldout: Tensor

    @property
    def size(self) -> libs.NetworkSize:
        return libs.NetworkSize(32, (1, 2), self.train.shape[1], self.train.shape[-1])


def load_data(name: str, *, quick: bool = False) -> Dataset:
    """The benchmark's data sets (module docstring); ``quick``: a few images, for the test suite."""
    if name == "digits":
        from benchmarks.quality_vs_cost import load_digits_split

        train_x, train_y, held_x, _ = load_digits_split(0)
        data = Dataset(train_x, train_y, held_x)
    elif name == "shapes":
        from denoising_diffusion.data.shapes import BuiltinShapes

        train = BuiltinShapes(512 if quick else 4096, image_size=32, channels=3, seed=0)
        held = BuiltinShapes(128 if quick else 1000, image_size=32, channels=3, seed=1)
        data = Dataset(train.images, train.labels, held.images)
    else:
        raise ValueError(f"unknown data set {name!r}; known: digits, shapes")
    if quick:
        data = Dataset(data.train[:256], data.train_labels[:256], data.heldout[:128])
    return data


def feature_classifier(name: str, data: Dataset, cache: Path, *, quick: bool) -> SmallImageClassifier:
    """The data set's feature extractor, trained once (seed 0) and cached under ``cache``."""
    steps = 20 if quick else 1500
    path = cache / f"peer-quality-{name}-classifier-{steps}{'-quick' if quick else ''}.pt"
    classes = int(data.train_labels.max()) + 1
    if path.exists():
        net = SmallImageClassifier(data.train.shape[1], data.train.shape[-1], classes)
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    net = train_classifier(data.train, data.train_labels, steps=steps, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net


def batches(n: int, seed: int) -> Iterator[Tensor]:
    """Indices of batches of BATCH_SIZE, epoch after epoch, from permutations seeded by ``seed`` (drop last)."""
    gen = torch.Generator().manual_seed(seed)
    size = min(BATCH_SIZE, n)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - size + 1, size):
            yield perm[i : i + size]


def make_ema(target: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """The loop's EMA (constant decay, ema-pytorch defaults otherwise) or a recipe's power-function EMA."""
    kind = spec.get("kind", "constant")
    if kind == "constant":
        return EMA(target, beta=spec.get("beta", LOOP_EMA_DECAY), update_every=1, include_online_model=False)
    if kind == "power":
        return power_ema(target, sigma_rel=spec["sigma_rel"])
    raise ValueError(f"unknown EMA kind {kind!r}; known: constant, power")


class Clock:
    """The run's budget clock: process CPU seconds on the CPU, synchronized wall seconds on a GPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.start = self.now()

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def elapsed(self) -> float:
        return self.now() - self.start


def train(job: Job, data: Dataset) -> tuple[nn.Module, libs.Contender, dict[str, Any]]:
    """The one loop (module docstring). Returns the EMA copy, the contender and the run's training figures.

    With ``--compile`` the first COMPILE_WARMUP_STEPS steps (which compile) run before the budget clock starts: they
    count as steps, and their seconds are recorded as ``compile_s`` instead of being charged to the budget, which at
    a GPU's pace they would dominate (on an H200, 2026-11-30: 39-44 s of compiling against 30-60 s budgets). Two,
    because diffusers' ``DDPMScheduler.add_noise`` moves its ``alphas_cumprod`` to the device in its first call, so
    the second call fails a guard and compiles again (seen with TORCH_LOGS=recompiles; another 35 s).
    """
    recipe = RECIPES[job.recipe] if job.library == libs.OURS else {}
    torch.manual_seed(job.seed)
    contender = libs.build(job.library, data.size, recipe, job.sample_steps)
    contender.trainable.to(job.device)
    loss_fn = contender.loss
    if job.compile_backend is not None:
        loss_fn = torch.compile(loss_fn, backend=job.compile_backend)
    lr, warmup = recipe.get("lr", LOOP_LR), int(recipe.get("warmup", 0))
    opt = torch.optim.AdamW(contender.trainable.parameters(), lr=lr)
    ema = make_ema(contender.ema_target, recipe.get("ema", {}))
    train_x = data.train.to(job.device)
    order = batches(len(train_x), job.seed)

    def step(index: int) -> float:
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (index + 1) / warmup) if warmup else lr
        with torch.autocast(torch.device(job.device).type, dtype=torch.bfloat16, enabled=job.bf16):
            loss = loss_fn(train_x[next(order).to(job.device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update()
        return float(loss.detach())

    wall0, steps, loss_sum, compile_s = time.perf_counter(), 0, 0.0, 0.0
    if job.compile_backend is not None:
        warm = Clock(job.device)
        for steps in range(COMPILE_WARMUP_STEPS):
            loss_sum += step(steps)
        steps, compile_s = COMPILE_WARMUP_STEPS, warm.elapsed()
    clock, wall1 = Clock(job.device), time.perf_counter()
    while clock.elapsed() < job.budget:
        steps, loss_sum = steps + 1, loss_sum + step(steps)
    cpu, wall = clock.elapsed(), time.perf_counter() - wall1
    figures = {
        "steps": steps, "train_s": cpu, "train_wall_s": wall, "mean_loss": loss_sum / max(steps, 1),
        "compile_s": compile_s, "total_train_wall_s": time.perf_counter() - wall0,
    }  # fmt: skip
    return ema.ema_model, contender, figures


def weights_path(job: Job) -> Path:
    """Where ``--keep-weights`` puts a run's EMA state dict (its training figures beside it, ``.json``): one file per
    trained network (data, library, recipe, seed, budget, device, bf16), so a later invocation with more
    ``--draws``, another ``--num-samples`` or ``--sample-steps`` samples the same network instead of retraining it."""
    assert job.keep_weights is not None
    name = WEIGHTS_NAME.format(
        data=job.data, library=job.library, recipe=job.recipe, seed=job.seed, budget=job.budget, device=job.device,
        precision="-bf16" if job.bf16 else "",
    )  # fmt: skip
    return Path(job.keep_weights) / name


def trained(job: Job, data: Dataset) -> tuple[nn.Module, libs.Contender, dict[str, Any]]:
    """:func:`train`'s result; with ``--keep-weights``, the kept network and figures when both files are there
    (the figures then carry ``weights_reused: True``), else trained and kept."""
    if job.keep_weights is None:
        return train(job, data)
    path, figures_path = weights_path(job), weights_path(job).with_suffix(".json")
    if path.exists() and figures_path.exists():
        contender, network = load_kept(job.library, job.recipe, data, path, job.sample_steps, job.device)
        return network, contender, {**json.loads(figures_path.read_text()), "weights_reused": True}
    ema_model, contender, figures = train(job, data)
    figures = {**figures, "cpu": results.cpu_model()}  # where it trained: kept_elsewhere() reads it
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ema_model.state_dict(), path)
    figures_path.write_text(json.dumps(figures) + "\n")
    return ema_model, contender, figures


def trained_on(path: Path) -> str:
    """The CPU a kept network (``path``, its .pt) trained on, from the figures beside it (:func:`trained`); figures
    without ``cpu`` are the first Xeon's (LEGACY_CPU)."""
    figures = path.with_suffix(".json")
    return results.cpu_of(json.loads(figures.read_text()) if figures.exists() else {})


def kept_elsewhere(job: Job) -> str | None:
    """Why ``job``'s kept network may not stand for a run on this machine, or None: a network kept from a CPU budget
    on another CPU had that CPU's number of steps (figures without ``cpu`` are the first Xeon's, LEGACY_CPU)."""
    path = weights_path(job) if job.keep_weights is not None else None
    if job.device != "cpu" or path is None or not path.with_suffix(".json").exists():
        return None
    kept_on, here = trained_on(path), results.cpu_model()
    if kept_on == here:
        return None
    return (f"--keep-weights: {path} was trained on {kept_on}, and this machine's CPU "
            f"is {here}; a CPU-second budget buys each CPU its own steps, so keep this machine's "
            "networks in another folder")  # fmt: skip


def load_kept(library: str, recipe: str, data: Dataset, path: Path, sample_steps: int,
              device: str = "cpu") -> tuple[libs.Contender, nn.Module]:  # fmt: skip
    """A freshly built contender (sampling at ``sample_steps``) and its averaged network, the weights kept at
    ``path`` loaded into it (``--keep-weights``; denoising_error.py reads them too)."""
    spec = RECIPES[recipe] if library == libs.OURS else {}
    contender = libs.build(library, data.size, spec, sample_steps)
    contender.ema_target.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return contender, contender.ema_target.to(device).eval()


def sample_seed(job: Job, draw: int) -> int:
    """The seed of the generator a draw's x_T (and any sampling noise) comes from. It never depends on the library,
    so for one training seed every library starts from the same x_T (paired comparisons). ``per_seed`` (the default
    since 2026-12-01): each training seed has its own x_T sets, so an x_T set's luck is part of the seed spread
    instead of a fixed bias shared by all runs; ``shared``: the same sets SAMPLE_SEED + draw for every run."""
    return x_t_seed(job.seed, draw, job.noise)


def x_t_seed(seed: int, draw: int, noise: str) -> int:
    """:func:`sample_seed` of training seed ``seed``'s draw under the x_T protocol ``noise`` (sampler_variants.py
    samples kept networks from the same sets)."""
    if noise == results.PER_SEED_NOISE:
        return SAMPLE_SEED + SEED_STRIDE * (seed + 1) + draw
    return SAMPLE_SEED + draw


def evaluate(job: Job, ema_model: nn.Module, contender: libs.Contender, reference: Any) -> list[float]:
    """Fréchet distance of each of the job's draws (generator seeds: :func:`sample_seed`) to the reference."""
    distances = []
    for draw in range(job.draws):
        gen = torch.Generator(job.device).manual_seed(sample_seed(job, draw))  # on the device: samplers draw there
        with torch.autocast(torch.device(job.device).type, dtype=torch.bfloat16, enabled=job.bf16):
            images = contender.sample(ema_model, job.num_samples, gen)
        distances.append(frechet_distance_to(reference, images.float().cpu().clamp(0, 1)))
    return distances


def run_job(job: Job, data: Dataset, classifier: SmallImageClassifier, floor: tuple[float, float]) -> dict[str, Any]:
    """Train and evaluate one job in this process; returns its results record."""
    torch.set_num_threads(job.threads)
    start = time.perf_counter()
    ema_model, contender, figures = trained(job, data)
    sample_cpu = time.process_time()
    distances = evaluate(job, ema_model, contender, feature_reference(classifier, data.heldout))
    record = {
        **_job_record(job), "bf16": job.bf16, "compile": job.compile_backend, "threads": job.threads,
        "fd": distances, "floor_mean": floor[0], "floor_sd": floor[1],
        "parameters": contender.num_parameters, "sample_cpu_s": time.process_time() - sample_cpu,
        "wall_s": time.perf_counter() - start, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_share": figures["train_s"] / max(figures["train_wall_s"], 1e-9) / job.threads,
        **figures, **provenance(),
    }  # fmt: skip
    return record


def provenance() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch": torch.__version__,
    }  # fmt: skip


_WORKER: dict[str, Any] = {}


def _worker_init(datasets: dict[str, Dataset], classifiers: dict[str, dict[str, Tensor]], floors: dict) -> None:
    _WORKER.update(datasets=datasets, classifiers=classifiers, floors=floors)


def _worker_run(job: Job) -> dict[str, Any]:
    torch.set_num_threads(job.threads)
    data = _WORKER["datasets"][job.data]
    net = SmallImageClassifier(data.train.shape[1], data.train.shape[-1], int(data.train_labels.max()) + 1)
    net.load_state_dict(_WORKER["classifiers"][job.data])
    return run_job(job, data, net.eval(), _WORKER["floors"][(job.data, job.num_samples)])


def run(jobs: list[Job], datasets: dict[str, Dataset], classifiers: dict[str, SmallImageClassifier],
        floors: dict[tuple[str, int], tuple[float, float]], processes: int, path: Path) -> None:  # fmt: skip
    """Run the jobs on ``processes`` worker processes, appending each record to ``path`` as it finishes."""
    states = {name: copy.deepcopy(net.state_dict()) for name, net in classifiers.items()}
    if processes <= 1:
        _worker_init(datasets, states, floors)
        finished: Iterator[dict[str, Any]] = map(_worker_run, jobs)
        _collect(finished, path, len(jobs))
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes, initializer=_worker_init, initargs=(datasets, states, floors)) as pool:
        _collect(pool.imap_unordered(_worker_run, jobs), path, len(jobs))


def _collect(finished: Iterator[dict[str, Any]], path: Path, total: int) -> None:
    for i, record in enumerate(finished, 1):
        results.append(path, record)
        fd = ", ".join(f"{d:.3f}" for d in record["fd"])
        print(
            f"[{i}/{total}] {record['data']} {record['library']}/{record['recipe']} seed {record['seed']} "
            f"budget {record['budget_cpu_s']:.0f}: {record['steps']} steps, fd [{fd}], "
            f"cpu share {record['cpu_share']:.2f}, wall {record['wall_s']:.0f} s",
            flush=True,
        )


COST_WARMUP_STEPS, COST_TRAIN_STEPS, COST_SAMPLE_STEPS = 3, 9, 4


@dataclass(frozen=True)
class Cost:
    """Measured CPU-seconds of one library on one data set: a training step (batch BATCH_SIZE) and one network
    evaluation of one image while sampling (the sampler's own loop, so its overhead is included)."""

    train_step_s: float
    image_step_s: float

    def sampling_s(self, job: Job) -> float:
        """CPU-seconds of the job's sampling: draws x samples x steps image-steps."""
        return job.draws * job.num_samples * job.sample_steps * self.image_step_s

    def run_s(self, job: Job) -> float:
        """CPU-seconds of the job: its training budget plus its sampling."""
        return job.budget + self.sampling_s(job)


def measure_cost(data: Dataset, library: str, recipe: str, sample_images: int) -> Cost:
    """COST_WARMUP_STEPS untimed steps (a fresh process's first steps are slower: its allocator is still growing),
    then the median of COST_TRAIN_STEPS timed steps; sampling ``sample_images`` images (the run's
    own batch: per image, 500 images at 3x32x32 cost about twice what 16 do, as their activations leave the cache)
    at COST_SAMPLE_STEPS steps after a warm-up call. Process CPU time of this process (one thread: run it alone)."""
    recipe_spec = RECIPES[recipe] if library == libs.OURS else {}
    torch.manual_seed(0)
    contender = libs.build(library, data.size, recipe_spec, COST_SAMPLE_STEPS)
    opt = torch.optim.AdamW(contender.trainable.parameters(), lr=LOOP_LR)
    order = batches(len(data.train), 0)
    times = []
    for _ in range(COST_WARMUP_STEPS + COST_TRAIN_STEPS):
        start = time.process_time()
        loss = contender.loss(data.train[next(order)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.process_time() - start)
    gen = torch.Generator().manual_seed(0)
    contender.sample(contender.ema_target, 2, gen)  # warm-up
    start = time.process_time()
    contender.sample(contender.ema_target, sample_images, gen)
    image_step = (time.process_time() - start) / (sample_images * COST_SAMPLE_STEPS)
    timed = sorted(times[COST_WARMUP_STEPS:])
    return Cost(timed[len(timed) // 2], image_step)


def costs(jobs: list[Job], datasets: dict[str, Dataset], processes: int) -> str:
    """A table of measured costs per (data, library, recipe), the training steps each budget buys, and the CPU and
    wall time the jobs would take (wall = CPU / ``processes``, as runs go side by side on one core each)."""
    measured: dict[tuple[str, str, str, int], Cost] = {}
    for job in jobs:
        key = (job.data, job.library, job.recipe, job.num_samples)
        if key not in measured:
            measured[key] = measure_cost(datasets[job.data], job.library, job.recipe, job.num_samples)
    lines = [
        "| data | library / recipe | train step (CPU-s) | image-step (CPU-ms) | budget (CPU-s) | steps in budget | "
        "sampling (CPU-min) | run (CPU-min) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    total = 0.0
    for job, seeds in Counter(replace(j, seed=0) for j in jobs).items():  # one row per job, seeds counted
        c = measured[job.data, job.library, job.recipe, job.num_samples]
        total += seeds * c.run_s(job)
        lines.append(
            f"| {job.data} | {job.library}/{job.recipe} | {c.train_step_s:.4g} | {1000 * c.image_step_s:.3g} | "
            f"{job.budget:g} | {job.budget / c.train_step_s:.0f} | {c.sampling_s(job) / 60:.1f} | "
            f"{c.run_s(job) / 60:.1f} |"
        )
    lines.append(
        f"\n{len(jobs)} runs: about {total / 3600:.1f} CPU-hours, {total / processes / 3600:.1f} h of wall time on "
        f"{processes} worker(s) (sampling: {jobs[0].draws} draws of {jobs[0].num_samples} samples at "
        f"{jobs[0].sample_steps} steps)"
    )
    return "\n".join(lines)


NOISE_WORDS = {
    results.SHARED_NOISE: "shared by all libraries",
    results.OWN_NOISE: "denoising-diffusion-pytorch's own (before the shared-noise fix)",
    results.PER_SEED_NOISE: "drawn per training seed, shared by all libraries",
}


def report(records: list[dict[str, Any]]) -> str:
    """Markdown tables, one per (data, budget, sampling setting, device, CPU), rows per library/recipe."""
    lines: list[str] = []
    setting = ("data", "budget_cpu_s", "sample_steps", "num_samples", "draws", "device", "x_T", "cpu")
    records = [{**r, "x_T": results.noise_of(r), "cpu": results.cpu_of(r)} for r in records]
    for key, group in sorted(results.group(records, setting).items(), key=lambda kv: str(kv[0])):
        data, budget, steps, n, draws, device, noise, cpu = key
        cells = {k: results.cell(v) for k, v in results.group(group, ("library", "recipe")).items()}
        floor = group[0]["floor_mean"], group[0]["floor_sd"]
        lines += [
            f"\n**{data}**, budget {budget:.0f} CPU-s ({budget / CPU_SECONDS_PER_MINUTE:g} min of 2 cores), "
            f"DDIM {steps} steps, {draws} draws of {n} samples, {device} ({cpu}), x_T {NOISE_WORDS[noise]}; "
            f"real-vs-real floor {floor[0]:.4f} ± {floor[1]:.4f}\n",
            "| library / recipe | seeds | steps | FD mean ± sd | 95% interval | sampling sd | vs lucidrains | "
            "vs diffusers | ≤ ½ lucidrains | vs ours / default |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |",
        ]
        peer = {lib: cells.get((lib, "default")) for lib in (libs.LUCIDRAINS, libs.DIFFUSERS)}
        ours_default = cells.get((libs.OURS, "default"))
        for (library, recipe), c in sorted(cells.items(), key=lambda kv: kv[1].mean):
            lo, hi = c.interval
            vs = [results.compare(c, p) if p is not None and library == libs.OURS else "" for p in peer.values()]
            half = peer[libs.LUCIDRAINS]
            met = ""
            if half is not None and library == libs.OURS:
                met = "met" if results.compare(c, half, scale=0.5) == "lower" else "not shown"
            name = library if library != libs.OURS else f"ours / {recipe}"
            lever = ""  # a recipe of ours against ours' default: the lever's verdict by the same rule
            if ours_default is not None and library == libs.OURS and recipe != "default":
                lever = results.compare(c, ours_default)
            lines.append(
                f"| {name} | {c.n} | {c.steps:.0f} | {c.mean:.4f} ± {c.sd:.4f} | [{lo:.4f}, {hi:.4f}] | "
                f"{c.sampling_sd:.4f} | {vs[0]} | {vs[1]} | {met} | {lever} |"
            )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", default=["digits"], choices=["digits", "shapes"])
    p.add_argument("--minutes", nargs="+", type=float, default=[1.0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--libraries", nargs="+", default=list(libs.LIBRARIES), choices=list(libs.LIBRARIES))
    p.add_argument("--recipes", nargs="+", default=["default"], help="ours' recipes (--list-recipes)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument(
        "--x-t", dest="noise", default=results.PER_SEED_NOISE, choices=[results.PER_SEED_NOISE, results.SHARED_NOISE],
        help="x_T sets per training seed (default) or the same sets for every run (sample_seed)",
    )  # fmt: skip
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--jobs", type=int, default=2, help="worker processes (runs in parallel)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training and sampling")
    p.add_argument("--compile", action="store_true", help="torch.compile the training loss")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument(
        "--keep-weights", type=Path, default=None, metavar="DIR",
        help="keep each run's EMA weights and training figures in DIR (weights_path) and sample kept ones instead of "
        "retraining: a later run with more --draws reuses them",
    )  # fmt: skip
    p.add_argument("--report", action="store_true", help="print the tables from --results and exit")
    p.add_argument("--list-recipes", action="store_true")
    p.add_argument(
        "--costs", action="store_true",
        help="measure each library's step costs on the chosen data and price the planned runs (all of them, "
        "recorded or not), then exit: run it on an idle machine",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a seconds-long run on a few images (the test suite)")
    args = p.parse_args(argv)
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    if not 1 <= args.draws <= SEED_STRIDE:
        p.error(f"--draws {args.draws}: must be 1 to {SEED_STRIDE} (the draws of one seed must not reach the next's)")
    return args


def plan(args: argparse.Namespace) -> list[Job]:
    """Every (data, budget, library, recipe, seed) job of the command line, cheapest budget first."""
    jobs = []
    for minutes in sorted(args.minutes):
        for data in args.data:
            for seed in args.seeds:
                for library in args.libraries:
                    for recipe in args.recipes if library == libs.OURS else ["default"]:
                        jobs.append(
                            Job(data, library, recipe, seed, minutes * CPU_SECONDS_PER_MINUTE, args.sample_steps,
                                args.num_samples, args.draws, args.threads, args.device, args.bf16,
                                args.compile_backend if args.compile else None, args.noise,
                                str(args.keep_weights) if args.keep_weights else None)
                        )  # fmt: skip
    return list(dict.fromkeys(jobs))


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.list_recipes:
        for name, recipe in RECIPES.items():
            print(f"{name}: {recipe}")
        return
    if args.report:
        print(report(results.load(args.results)))
        return
    if args.costs:
        torch.set_num_threads(args.threads)
        jobs = plan(args)
        print(costs(jobs, {name: load_data(name, quick=args.quick) for name in {j.data for j in jobs}}, args.jobs))
        return
    done = {results.run_key(r) for r in results.load(args.results)}
    jobs = [j for j in plan(args) if results.run_key(_job_record(j)) not in done]
    elsewhere = [why for why in map(kept_elsewhere, jobs) if why]
    if elsewhere:
        raise SystemExit(f"peer_quality.py: error: {elsewhere[0]}")
    print(f"{len(jobs)} runs to do ({len(plan(args)) - len(jobs)} already in {args.results})", flush=True)
    if not jobs:
        return
    datasets = {name: load_data(name, quick=args.quick) for name in {j.data for j in jobs}}
    classifiers = {name: feature_classifier(name, d, args.cache, quick=args.quick) for name, d in datasets.items()}
    floors = {}
    for name, n in {(j.data, j.num_samples) for j in jobs}:
        reference = feature_reference(classifiers[name], datasets[name].heldout)
        f = real_floor(reference, datasets[name].train, num_samples=min(n, len(datasets[name].train)), seed=0)
        floors[(name, n)] = (f.mean, f.sd)
    run(jobs, datasets, classifiers, floors, args.jobs, args.results)
    print(report([r for r in results.load(args.results) if r["data"] in datasets]))


def _job_record(job: Job) -> dict[str, Any]:
    """The job's identifying fields (its results key, _quality_results.run_key), the start of its record."""
    return {
        "data": job.data, "library": job.library, "recipe": job.recipe, "seed": job.seed, "budget_cpu_s": job.budget,
        "sample_steps": job.sample_steps, "num_samples": job.num_samples, "draws": job.draws, "device": job.device,
        "x_T": job.noise, "cpu": results.cpu_model(),
    }  # fmt: skip


if __name__ == "__main__":
    main()
