"""The one training loop of the peer benchmark (peer_quality.py), the same for every library, and the measured cost
of its steps (``--costs``).

AdamW at lr 2e-4 (weight decay 0.01, torch's default), batch 64 drawn without replacement from a permutation seeded
by the run's seed (the same data order for every library), the network initialized from the same seed, an EMA of
decay 0.995 updated every step (ema-pytorch's ``EMA`` with its default warm-up: no averaging for 100 steps, then
decay min(0.995, 1 − (1 + step)^(−2/3))). Training stops when the run's process CPU time reaches the budget (on a GPU:
synchronized wall seconds). A recipe of ours may change the rate, add a linear warm-up, or use a power EMA.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ema_pytorch import EMA
from torch import Tensor, nn

from denoising_diffusion.training import power_ema

from . import contenders
from .peer_runs import Dataset, load_kept
from .recipes import RECIPES
from .records import cpu_model

BATCH_SIZE = 64
LOOP_LR = 2e-4
LOOP_EMA_DECAY = 0.995
COMPILE_WARMUP_STEPS = 2  # steps that compile, run before the budget clock (train())
COST_WARMUP_STEPS, COST_TRAIN_STEPS, COST_SAMPLE_STEPS = 3, 9, 4


def recipe_of(library: str, recipe: str) -> dict[str, Any]:
    """Ours' recipe by name; the peers always run their own defaults."""
    return RECIPES[recipe] if library == contenders.OURS else {}


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
    """A run's budget clock: process CPU seconds on the CPU, synchronized wall seconds on a GPU."""

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


def train(
    library: str, recipe: str, seed: int, data: Dataset, *, budget: float, sample_steps: int, device: str = "cpu",
    bf16: bool = False, compile_backend: str | None = None,
) -> tuple[nn.Module, contenders.Contender, dict[str, Any]]:  # fmt: skip
    """The loop (module docstring) for ``budget`` seconds. Returns the EMA copy, the contender and the run's figures.

    With ``compile_backend`` the first COMPILE_WARMUP_STEPS steps (which compile) run before the budget clock starts:
    they count as steps, and their seconds are recorded as ``compile_s`` instead of being charged to the budget, which
    at a GPU's pace they would dominate (on an H200, 2026-11-30: 39-44 s of compiling against 30-60 s budgets). Two,
    because diffusers' ``DDPMScheduler.add_noise`` moves its ``alphas_cumprod`` to the device in its first call, so
    the second call fails a guard and compiles again (seen with TORCH_LOGS=recompiles; another 35 s).
    """
    spec = recipe_of(library, recipe)
    torch.manual_seed(seed)
    contender = contenders.build(library, data.size, spec, sample_steps)
    contender.trainable.to(device)
    loss_fn = contender.loss if compile_backend is None else torch.compile(contender.loss, backend=compile_backend)
    lr, warmup = spec.get("lr", LOOP_LR), int(spec.get("warmup", 0))
    opt = torch.optim.AdamW(contender.trainable.parameters(), lr=lr)
    ema = make_ema(contender.ema_target, spec.get("ema", {}))
    train_x = data.train.to(device)
    order = batches(len(train_x), seed)

    def step(index: int) -> float:
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (index + 1) / warmup) if warmup else lr
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(train_x[next(order).to(device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update()
        return float(loss.detach())

    wall0, steps, loss_sum, compile_s = time.perf_counter(), 0, 0.0, 0.0
    if compile_backend is not None:
        warm = Clock(device)
        for steps in range(COMPILE_WARMUP_STEPS):
            loss_sum += step(steps)
        steps, compile_s = COMPILE_WARMUP_STEPS, warm.elapsed()
    clock, wall1 = Clock(device), time.perf_counter()
    while clock.elapsed() < budget:
        steps, loss_sum = steps + 1, loss_sum + step(steps)
    cpu, wall = clock.elapsed(), time.perf_counter() - wall1
    figures = {
        "steps": steps, "train_s": cpu, "train_wall_s": wall, "mean_loss": loss_sum / max(steps, 1),
        "compile_s": compile_s, "total_train_wall_s": time.perf_counter() - wall0,
    }  # fmt: skip
    return ema.ema_model, contender, figures


def trained(
    library: str, recipe: str, seed: int, data: Dataset, *, keep: Path | None, **options: Any
) -> tuple[nn.Module, contenders.Contender, dict[str, Any]]:
    """:func:`train`'s result (``options``: its keywords); with ``keep`` (peer_runs.kept_path), the kept network and
    figures when both files are there (the figures then carry ``weights_reused: True``), else trained and kept."""
    if keep is None:
        return train(library, recipe, seed, data, **options)
    figures_path = keep.with_suffix(".json")
    if keep.exists() and figures_path.exists():
        contender, network = load_kept(library, recipe, data, keep, options["sample_steps"], options["device"])
        return network, contender, {**json.loads(figures_path.read_text()), "weights_reused": True}
    ema_model, contender, figures = train(library, recipe, seed, data, **options)
    figures = {**figures, "cpu": cpu_model()}  # where it trained: peer_runs.kept_elsewhere reads it
    keep.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ema_model.state_dict(), keep)
    figures_path.write_text(json.dumps(figures) + "\n")
    return ema_model, contender, figures


@dataclass(frozen=True)
class Cost:
    """Measured CPU-seconds of one library on one data set: a training step (batch BATCH_SIZE) and one network
    evaluation of one image while sampling (the sampler's own loop, so its overhead is included)."""

    train_step_s: float
    image_step_s: float

    def sampling_s(self, draws: int, num_samples: int, sample_steps: int) -> float:
        """CPU-seconds of a run's sampling: draws x samples x steps image-steps."""
        return draws * num_samples * sample_steps * self.image_step_s


def measure_cost(data: Dataset, library: str, recipe: str, sample_images: int) -> Cost:
    """COST_WARMUP_STEPS untimed steps (a fresh process's first steps are slower: its allocator is still growing),
    then the median of COST_TRAIN_STEPS timed steps; sampling ``sample_images`` images (the run's own batch: per
    image, 500 images at 3x32x32 cost about twice what 16 do, as their activations leave the cache) at
    COST_SAMPLE_STEPS steps after a warm-up call. Process CPU time of this process (one thread: run it alone)."""
    torch.manual_seed(0)
    contender = contenders.build(library, data.size, recipe_of(library, recipe), COST_SAMPLE_STEPS)
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
