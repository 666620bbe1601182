"""The Trainer: trains a model (a GaussianDiffusion, or any trainable: see trainable.py) on a folder of images or
any Dataset, with an EMA copy of its network.

accelerate owns devices, mixed precision, gradient accumulation and multi-process training (``accelerate launch``,
``torchrun``; see distributed.py); ema-pytorch keeps the EMA of ``trainable.model`` (the network only: a
diffusion's schedule tables are derived buffers); tqdm shows the loss and images/s. Only the main process writes
into ``results_folder``:

* ``model-{milestone}.pt``: a checkpoint every ``save_and_sample_every`` steps and at the end; milestone =
  ceil(step / save_and_sample_every); the retention policy (``keep_last``, ``keep_powers_of_two``) bounds how
  many stay (checkpoints.py);
* ``sample-{milestone}.png``: a grid of ``num_samples`` images from the EMA network, drawn from the same noise at
  every milestone so that grids are comparable (models that can sample);
* ``loss.csv``: step, loss, lr, grad_norm, skipped per optimizer step, appended to (log.py);
* ``metrics.csv``: step, name, value of ``metric`` (e.g. FID) every ``metric_every`` steps (metric_hook.py).

The Trainer's whole state goes in and out through :meth:`Trainer.state_dict` and :meth:`Trainer.load_state_dict`:
step, network, EMA, optimizer, gradient scaler, the position in the (seeded) data order and every process's RNG
states. Resuming is exact: ``Trainer(..., resume="auto").train()`` takes the same steps as the uninterrupted run,
whatever the number of DataLoader workers (each item is read under RNGs seeded by its position, rng.py). There is
no learning-rate scheduler: the learning rate is constant. Steps with a non-finite loss or gradient norm are
skipped, and too many in a row stop training (guards.py). The whole story is in docs/training.md.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
from accelerate.utils import send_to_device, set_seed
from ema_pytorch import EMA, KarrasEMA
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..checkpoint import make_checkpoint
from ..conditioning import condition_spec_of
from ..data.batch import Batch, map_images
from ..data.datasets import OnBadImage, SkippedImage, random_hflip
from ..pipeline import checkpoint_spec, load_weights, spec_of
from ..viz import save_image_grid
from . import checkpoints
from .compilation import compile_network
from .distributed import broadcast_value, gather_values, make_accelerator, resolve_mixed_precision, use_cpu
from .ema import make_ema
from .guards import NonFiniteGuard, StepReport, TrainingDivergedError
from .loader import DataStream, as_training_dataset, check_dataset_classes, default_num_workers, fitting_images
from .log import LogWith, LossLog, Throughput, append_metrics, available_trackers, end_trackers, start_trackers
from .metric_hook import MetricFn, MetricHook
from .optimizer import load_optimizer_state, make_adam
from .preview import preview_condition, sample_in_chunks
from .rng import capture_rng_state, restore_rng_state
from .trainable import FIT_IMAGES, FitsData, Previewable, check_trainable

__all__ = ["Trainer", "TrainingDivergedError"]

logger = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float]], None]


def _check_int(name: str, value: Any, minimum: int = 1, allow_none: bool = False) -> Any:
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return value


def _check_options(train_lr: float, ema_decay: float, max_grad_norm: float | None, resume: Any) -> None:
    if not train_lr > 0:
        raise ValueError(f"train_lr must be > 0, got {train_lr!r}")
    if not 0.0 <= ema_decay <= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
    if resume is not None and (isinstance(resume, bool) or not isinstance(resume, (str, int, os.PathLike))):
        raise ValueError(f"resume must be None, 'auto', a milestone number or a checkpoint path, got {resume!r}")


class Trainer:
    """Train ``diffusion`` on a folder of images or a Dataset.

    Args:
        diffusion: the model to train: a GaussianDiffusion, or any trainable (trainable.py: an nn.Module whose
            call maps a batch to a scalar loss, with ``.model``, ``.channels`` and ``.image_size``).
        folder_or_dataset: a folder read recursively by ImageFolderDataset at the model's image size and
            channel count, or a Dataset (any object with __len__ and __getitem__) whose items are (C, H, W)
            tensors in [0, 1], tuples starting with one ((image, label) pairs), or dicts with an 'image' entry;
            batches keep that structure (data/batch.py) and the model decides what to do with the rest.
        train_batch_size: images per micro-batch over all processes when ``split_batches`` (each process gets
            1/num_processes of it), else per process. Images per optimizer step:
            ``global_batch_size * gradient_accumulate_every``.
        gradient_accumulate_every: micro-batches per optimizer step.
        augment_horizontal_flip: flip each training image left-right with probability 1/2.
        train_lr: Adam's learning rate (constant: there is no scheduler).
        train_num_steps: optimizer steps to train for, counted from 0 (a resumed run continues to this number;
            skipped steps count).
        ema_update_every, ema_decay: EMA update period (in optimizer steps) and decay β.
        ema_sigma_rel: instead of the constant decay, the power-function EMA of EDM2 (Karras et al. 2024) with this
            relative length (0.05-0.15 there), updated every step: it averages a fixed fraction of the run, so it
            suits any run length (training/ema.py). None: the constant decay.
        adam_betas: Adam's (β1, β2).
        save_and_sample_every: steps between checkpoints and sample grids.
        num_samples: images in each sample grid (0: no grids); a class-conditional model's grid has one class per
            row (at most 10 rows) and num_samples // rows images per row.
        sample_guidance_scale: the classifier-free guidance scale of those grids (1: the conditional model as it
            is, which needs no trained null branch); logged with each grid.
        results_folder: where model-*.pt, sample-*.png and loss.csv go; created if missing.
        amp: mixed precision: ``mixed_precision_type`` on GPU, bf16 on CPU (fp16 autocast does not run there).
        mixed_precision_type: 'fp16' or 'bf16'.
        split_batches: see ``train_batch_size``.
        max_grad_norm: clip the global gradient norm to this; None: no clipping (the norm is still logged).
        num_workers: DataLoader worker processes; None: 0 for in-memory datasets (BuiltinShapes, TensorDataset,
            lists), else min(4, CPU count - 1).
        on_bad_image: 'error' or 'skip', for unreadable files in a folder (see ImageFolderDataset).
        seed: seeds torch on every process (offset by the process index) and the data order; None: random.
        log_fn: called on the main process after every step with {"step", "loss", "lr", "grad_norm", "skipped"}.
        resume: None (start at step 0), 'auto' (the newest valid checkpoint in results_folder, falling back past
            damaged ones; step 0 if there is none), a milestone number, or a checkpoint path.
        keep_last: keep this many newest ``model-*.pt`` (None: keep every checkpoint).
        keep_powers_of_two: also keep milestones 1, 2, 4, 8, ...: sparse history over the whole run, so a run of n
            milestones keeps at most keep_last + log2(n) + 1 checkpoints.
        max_bad_steps: stop with TrainingDivergedError after this many non-finite steps in a row (None: never).
        log_with: accelerate trackers ('tensorboard', 'wandb', 'all', GeneralTracker instances or a list);
            trackers whose package is not installed are skipped with a warning.
        tracker_project_name: the project (run) name the trackers get.
        compile: compile the network with torch.compile (in place; checkpoints are unchanged): True, or a dict of
            torch.compile's keyword arguments, e.g. ``{"mode": "max-autotune"}``. Off by default: the first step
            then compiles for minutes, and on a CPU the gain was small (benchmarks/README.md); try it on a GPU.
        metric: computed on the main process every ``metric_every`` steps and at the end: a callable images
            (N, C, H, W) in [0, 1] -> {name: value} (e.g. ``metrics.ImageMetric(real, extractor)`` for FID), given
            ``metric_num_samples`` EMA samples drawn from the data seed (the same noise every time); logged to
            results/metrics.csv, ``log_fn``, the trackers and the log (INFO) (metric_hook.py). None: off.
        metric_every: steps between metric computations (None: save_and_sample_every).
        metric_num_samples: images the metric sees (default 1000; FID depends on it, so keep it fixed in a run).
    """

    def __init__(
        self,
        diffusion: nn.Module,
        folder_or_dataset: str | os.PathLike[str] | Dataset | Sequence[Tensor],
        *,
        train_batch_size: int = 16,
        gradient_accumulate_every: int = 1,
        augment_horizontal_flip: bool = True,
        train_lr: float = 1e-4,
        train_num_steps: int = 100_000,
        ema_update_every: int = 10,
        ema_decay: float = 0.995,
        ema_sigma_rel: float | None = None,
        adam_betas: tuple[float, float] = (0.9, 0.99),
        save_and_sample_every: int = 1000,
        num_samples: int = 25,
        sample_guidance_scale: float = 1.0,
        results_folder: str | os.PathLike[str] = "./results",
        amp: bool = False,
        mixed_precision_type: str = "fp16",
        split_batches: bool = True,
        max_grad_norm: float | None = 1.0,
        num_workers: int | None = None,
        on_bad_image: str = "error",
        seed: int | None = None,
        log_fn: LogFn | None = None,
        resume: str | int | os.PathLike[str] | None = None,
        keep_last: int | None = 3,
        keep_powers_of_two: bool = True,
        max_bad_steps: int | None = 10,
        log_with: LogWith = None,
        tracker_project_name: str = "denoising_diffusion",
        compile: bool | Mapping[str, Any] = False,
        metric: MetricFn | None = None,
        metric_every: int | None = None,
        metric_num_samples: int = 1000,
    ) -> None:
        self.train_batch_size = _check_int("train_batch_size", train_batch_size)
        self.gradient_accumulate_every = _check_int("gradient_accumulate_every", gradient_accumulate_every)
        self.train_num_steps = _check_int("train_num_steps", train_num_steps)
        self.save_and_sample_every = _check_int("save_and_sample_every", save_and_sample_every)
        self.num_samples = _check_int("num_samples", num_samples, minimum=0)
        self.sample_guidance_scale = float(sample_guidance_scale)
        self.keep_last = _check_int("keep_last", keep_last, allow_none=True)
        self.keep_powers_of_two = bool(keep_powers_of_two)
        _check_options(train_lr, ema_decay, max_grad_norm, resume)
        if not isinstance(compile, (bool, Mapping)):
            raise ValueError(f"compile must be True, False or a dict of torch.compile arguments, got {compile!r}")
        self.guard = NonFiniteGuard(max_bad_steps)
        self.max_grad_norm = max_grad_norm
        self.augment_horizontal_flip = bool(augment_horizontal_flip)
        self.log_fn = log_fn
        self.metric_hook = (
            None
            if metric is None
            else MetricHook(metric, save_and_sample_every if metric_every is None else metric_every, metric_num_samples)
        )
        self.results_folder = Path(results_folder)
        self.tracker_project_name = tracker_project_name

        # Everything that can fail on user input happens before anything is written or any device is touched.
        check_trainable(diffusion)
        self.trainable: Any = cast(
            Any, diffusion
        )  # an nn.Module meeting trainable.Trainable; self.model may wrap it (DDP)
        self.dataset = as_training_dataset(
            folder_or_dataset, self.trainable.channels, self.trainable.image_size, OnBadImage(on_bad_image)
        )
        num_classes = condition_spec_of(self.trainable.model).num_classes or getattr(diffusion, "num_classes", None)
        check_dataset_classes(self.dataset, num_classes)
        num_workers = (
            default_num_workers(self.dataset)
            if num_workers is None
            else _check_int("num_workers", num_workers, minimum=0)
        )

        cpu = use_cpu()
        mixed_precision = resolve_mixed_precision(amp, mixed_precision_type, cpu)
        self.accelerator = make_accelerator(
            mixed_precision,
            self.gradient_accumulate_every,
            cpu=cpu,
            log_with=available_trackers(log_with),
            project_dir=self.results_folder,
        )
        acc = self.accelerator
        self.global_batch_size = self.train_batch_size * (1 if split_batches else acc.num_processes)
        if self.global_batch_size % acc.num_processes:
            raise ValueError(
                f"train_batch_size ({train_batch_size}) must be divisible by the number of processes "
                f"({acc.num_processes}) when split_batches=True"
            )

        if seed is not None:
            set_seed(seed, device_specific=True)
        data_seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        self.data = DataStream(
            self.dataset,
            self.global_batch_size,
            shard=acc.process_index,
            data_seed=broadcast_value(acc, data_seed),  # one data order shared by every process
            num_shards=acc.num_processes,
            num_workers=num_workers,
            pin_memory=acc.device.type == "cuda",
        )

        opt = make_adam(diffusion.parameters(), lr=train_lr, betas=(adam_betas[0], adam_betas[1]))
        self.model, self.opt = acc.prepare(diffusion, opt)
        self.ema: EMA | KarrasEMA | None = None
        if acc.is_main_process:  # the only process that keeps an EMA and writes
            self.ema = make_ema(
                cast(nn.Module, diffusion.model),
                decay=ema_decay,
                update_every=ema_update_every,
                sigma_rel=ema_sigma_rel,
            ).to(acc.device)
            self.results_folder.mkdir(parents=True, exist_ok=True)
            checkpoints.remove_stale_temporaries(self.results_folder)
        if compile:  # after the EMA's copy, which stays uncompiled
            compile_network(self.trainable.model, None if compile is True else compile)

        self.step = 0
        self.skipped_images: dict[str, str] = {}  # path -> reason for every file skipped so far (main process)
        self._new_skipped: list[SkippedImage] = []  # met by this process since the last optimizer step
        self._resume(resume)
        logger.info(
            "training on %d images, device %s, mixed precision %s, %d process(es), %d images per optimizer step",
            len(self.dataset),
            acc.device,
            mixed_precision,
            acc.num_processes,
            self.global_batch_size * self.gradient_accumulate_every,
        )

    @property
    def diffusion(self) -> nn.Module:
        """The model being trained (the tutorial's name for it; the same object as ``trainable``)."""
        return self.trainable

    # ----- data -------------------------------------------------------------------------------------------------

    @property
    def data_seed(self) -> int:
        """The seed of the data order (and of each item's reading), the same on every process."""
        return self.data.data_seed

    @property
    def samples_seen(self) -> int:
        """Items consumed over all processes: the position in the data order."""
        return self.data.samples_seen

    def reset_data_stream(self) -> None:
        """Drop the batch iterator (stopping DataLoader workers); the next step restarts it at samples_seen."""
        self.data.reset()

    def _next_batch(self) -> Batch:
        batch, skipped = self.data.next()
        self._new_skipped.extend(skipped)
        if self.augment_horizontal_flip:
            batch = map_images(batch, random_hflip)
        return send_to_device(batch, self.accelerator.device, non_blocking=True)

    # ----- one optimizer step -----------------------------------------------------------------------------------

    def _train_step(self) -> tuple[float, float, bool, bool]:
        """One optimizer step over gradient_accumulate_every micro-batches.

        Returns (loss averaged over micro-batches and processes, gradient norm, whether the optimizer was called,
        whether the GradScaler found an overflow and so left the weights alone).
        """
        acc = self.accelerator
        acc.step = 0  # accelerate's micro-batch counter: the last of these micro-batches syncs, even after an error
        local_loss = torch.zeros((), device=acc.device)
        result = (math.nan, math.nan, False, False)
        for _ in range(self.gradient_accumulate_every):
            batch = self._next_batch()
            with acc.accumulate(self.model):
                loss = self.model(batch)
                acc.backward(loss)  # divides by gradient_accumulate_every
                local_loss += loss.detach().float() / self.gradient_accumulate_every
                if acc.sync_gradients:
                    result = self._optimizer_step(local_loss)
        return result

    def _optimizer_step(self, local_loss: Tensor) -> tuple[float, float, bool, bool]:
        """Average the loss over processes, clip, and step unless the guard says no (guards.py)."""
        acc = self.accelerator
        stats = torch.stack([local_loss, torch.tensor(float(len(self._new_skipped)), device=acc.device)])
        stats = acc.reduce(stats, reduction="sum") if acc.num_processes > 1 else stats
        loss, new_skipped = stats[0].item() / acc.num_processes, int(stats[1].item())
        if new_skipped:
            self._report_skipped_images()
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else math.inf
        norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)  # after DDP's all-reduce: same everywhere
        grad_norm = float(norm) if norm is not None else math.nan
        grad_finite = norm is None or math.isfinite(grad_norm)
        stepped = NonFiniteGuard.should_step(math.isfinite(loss), grad_finite, acc.scaler is not None)
        overflowed = False
        if stepped:
            scale = acc.scaler.get_scale() if acc.scaler is not None else None
            self.opt.step()  # accelerate runs the scaler's step and update
            # An overflow makes the scaler back off. (accelerate's optimizer_step_was_skipped misses it with the
            # fused Adam, which the scaler calls anyway, passing found_inf, so that the kernel skips the update.)
            overflowed = scale is not None and acc.scaler.get_scale() < scale
        elif acc.scaler is not None:
            acc.scaler.update()  # closes the scaler iteration clip_grad_norm_'s unscale_ opened
        self.opt.zero_grad()
        return loss, grad_norm, stepped, overflowed

    def _report_skipped_images(self) -> None:
        """Gather the files the processes skipped since the last step; the main process names each new one once."""
        found = gather_values(self.accelerator, [(s.path, s.reason) for s in self._new_skipped])
        self._new_skipped.clear()
        if not self.accelerator.is_main_process:
            return
        for path, reason in (item for per_process in found for item in per_process):
            if path not in self.skipped_images:
                self.skipped_images[path] = reason
                logger.warning(
                    "skipping unreadable image %s: %s (%d skipped so far)", path, reason, len(self.skipped_images)
                )

    # ----- the loop ---------------------------------------------------------------------------------------------

    def train(self) -> None:
        """Train until ``train_num_steps``, saving and sampling every ``save_and_sample_every`` steps and at the end.

        Raises TrainingDivergedError after ``max_bad_steps`` non-finite steps in a row (nothing is saved from them).
        """
        acc = self.accelerator
        main = acc.is_main_process
        start_trackers(
            acc,
            self.tracker_project_name,
            {
                "train_batch_size": self.train_batch_size,
                "global_batch_size": self.global_batch_size,
                "gradient_accumulate_every": self.gradient_accumulate_every,
                "train_lr": self.opt.param_groups[0]["lr"],
                "train_num_steps": self.train_num_steps,
                "num_processes": acc.num_processes,
            },
        )
        throughput = Throughput(self.global_batch_size * self.gradient_accumulate_every)
        try:
            with (
                LossLog(self.results_folder / "loss.csv") if main else nullcontext() as log,
                tqdm(initial=self.step, total=self.train_num_steps, disable=not main, dynamic_ncols=True) as bar,
            ):
                while self.step < self.train_num_steps:
                    self.model.train()
                    loss, grad_norm, stepped, overflowed = self._train_step()
                    self.step += 1
                    report = self.guard.record(
                        self.step,
                        loss=loss,
                        grad_norm=grad_norm,
                        has_scaler=acc.scaler is not None,
                        scaler_skipped=overflowed,
                    )
                    if main:
                        self._after_step(log, bar, throughput.tick(), loss, grad_norm, report)
                    self.guard.raise_if_diverged(self.step, loss=loss, grad_norm=grad_norm)
                    self._maybe_save(report)
                    self._maybe_evaluate()
        finally:
            self.reset_data_stream()
            end_trackers(acc)
        if main and self.skipped_images:
            names = sorted(self.skipped_images)
            more = f" and {len(names) - 10} more" if len(names) > 10 else ""
            logger.warning(
                "on_bad_image='skip': %d unreadable image file(s) were skipped (each replaced by the next "
                "readable one): %s%s",
                len(names),
                ", ".join(names[:10]),
                more,
            )
        acc.wait_for_everyone()

    def _after_step(
        self, log: LossLog | None, bar: Any, images_per_s: float, loss: float, grad_norm: float, report: StepReport
    ) -> None:
        """Main process: EMA update (good steps only), loss.csv row, log_fn, trackers, progress bar."""
        assert self.ema is not None and log is not None  # the main process holds both
        if not report.skipped:
            self.ema.update()
        lr = self.opt.param_groups[0]["lr"]
        row = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "skipped": int(report.skipped)}
        log.write(**row)
        if self.log_fn is not None:
            self.log_fn(row)
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=self.step)
        postfix = {"loss": f"{loss:.4f}", "img/s": f"{images_per_s:.1f}"}
        if self.guard.total_skipped:
            postfix["skipped"] = str(self.guard.total_skipped)
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

    def _maybe_save(self, report: StepReport) -> None:
        """At a milestone (and at the end) save and sample, unless this step was bad: no checkpoint from it."""
        if not (self.step % self.save_and_sample_every == 0 or self.step == self.train_num_steps):
            return
        milestone = self.milestone_of(self.step)
        if report.bad:  # every process agrees: the loss and the gradient norm were reduced over processes
            if self.accelerator.is_main_process:
                logger.warning(
                    "not writing %s at step %d: the step was non-finite (the previous checkpoint stays the newest)",
                    self.checkpoint_path(milestone).name,
                    self.step,
                )
            return
        self.accelerator.wait_for_everyone()
        self.save(milestone)
        self.save_samples(milestone)

    def _maybe_evaluate(self) -> None:
        """Main process, when due: the metric of metric_num_samples EMA samples, logged beside the loss."""
        hook = self.metric_hook
        if hook is None or not hook.due(self.step, self.train_num_steps):
            return
        if self.accelerator.is_main_process:
            num_classes = condition_spec_of(self.trainable.model).num_classes
            values = hook.values(self.sample(hook.num_samples, **hook.condition(num_classes)))
            append_metrics(self.results_folder / "metrics.csv", self.step, values)
            if self.log_fn is not None:
                self.log_fn({"step": self.step, **values})
            if self.accelerator.trackers:
                self.accelerator.log(values, step=self.step)
            logger.info("step %d: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        self.accelerator.wait_for_everyone()

    # ----- samples ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self, num_samples: int, *, seed: int | None = None, return_all_timesteps: bool = False, **condition: Any
    ) -> Tensor:
        """``num_samples`` images from the EMA network (main process only) -> (N, C, H, W) in [0, 1], or the
        trajectories (N, S + 1, C, H, W) with ``return_all_timesteps``; drawn train_batch_size at a time.
        ``condition``: what the model takes (``classes=``, ...) and ``guidance_scale=``, as for its ``sample``.

        Noise comes from its own generator (seed default: the data seed), so the training RNG is untouched.
        Raises RuntimeError off the main process and TypeError for a model that cannot sample.
        """
        if self.ema is None:
            raise RuntimeError("only the main process holds the EMA network")
        if not isinstance(self.trainable, Previewable):
            raise TypeError(f"{type(self.trainable).__name__} has no with_model()/sample(): nothing to sample from")
        device = self.accelerator.device
        ema_model = self.trainable.with_model(self.ema.ema_model).to(device)
        generator = torch.Generator(device=device).manual_seed(self.data_seed if seed is None else seed)
        return sample_in_chunks(
            ema_model,
            num_samples,
            self.train_batch_size,
            generator,
            condition,
            return_all_timesteps=return_all_timesteps,
        )

    def save_samples(self, milestone: int) -> Path | None:
        """Write results/sample-{milestone}.png, a grid of EMA samples (main process, models that can sample; None
        otherwise): num_samples images, or for a class-conditional model one class per row (preview.py), sampled
        with ``sample_guidance_scale``."""
        if not self.accelerator.is_main_process or self.num_samples == 0:
            return None
        if not isinstance(self.trainable, Previewable):
            return None
        condition, count, per_row = preview_condition(self.trainable, self.dataset, self.num_samples)
        if self.sample_guidance_scale != 1.0:
            condition["guidance_scale"] = self.sample_guidance_scale
        images = self.sample(count, **condition)
        path = save_image_grid(images, self.results_folder / f"sample-{milestone}.png", nrow=per_row)
        if "classes" in condition:
            logger.info("%s: one class per row, guidance scale %g", path.name, self.sample_guidance_scale)
        return path

    # ----- state and checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as a checkpoint (checkpoint.py's training layout): the spec, step,
        network, EMA, optimizer and gradient-scaler states, and ``"trainer"``: the data seed, the position in the
        data order (``samples_seen``) and the RNG states of every process, in process order.

        A collective: call it on every process (the RNG states are gathered). Only the main process's dict has
        the EMA state (the others keep no EMA).
        """
        acc = self.accelerator
        trainer = {
            **self.data.state_dict(),
            "rng": gather_values(acc, capture_rng_state()),
            "num_processes": acc.num_processes,
        }
        return make_checkpoint(
            config=spec_of(self.trainable),
            step=self.step,
            model=self.trainable.model.state_dict(),
            ema=self.ema.state_dict() if self.ema is not None else None,
            opt=self.opt.state_dict(),
            scaler=acc.scaler.state_dict() if acc.scaler is not None else None,
            trainer=trainer,
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (or a checkpoint file's contents): the network after checking
        that the model's spec matches (CheckpointError naming the fields otherwise), step, optimizer, scaler, EMA,
        data position and this process's RNG states. Call it on every process."""
        acc = self.accelerator
        load_weights(self.trainable, state, use_ema=False)
        self.step = int(state["step"])
        if state.get("opt") is not None:
            load_optimizer_state(self.opt, state["opt"])
        if acc.scaler is not None and state.get("scaler") is not None:
            acc.scaler.load_state_dict(state["scaler"])
        elif state.get("scaler") is not None:
            logger.warning(
                "the checkpoint holds a gradient-scaler state, which this run (without fp16 mixed "
                "precision on a GPU) does not use"
            )
        elif acc.scaler is not None:
            logger.warning(
                "the checkpoint holds no gradient-scaler state: this run's fp16 scaler starts from its initial scale"
            )
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                logger.warning("the checkpoint has no EMA state; the EMA restarts from the loaded weights")
                self.ema.copy_params_from_model_to_ema()
        trainer = state.get("trainer") or {}
        self.data.load_state_dict(
            {  # the iterator restarts at the restored position on the next step
                "data_seed": trainer.get("data_seed", self.data_seed),
                "samples_seen": trainer.get(
                    "samples_seen", self.step * self.gradient_accumulate_every * self.global_batch_size
                ),
            }
        )
        self._restore_rng(trainer.get("rng"))

    def _restore_rng(self, saved: Any) -> None:
        """Put back this process's RNG states (format-1 checkpoints hold one dict, newer ones a list per process)."""
        acc = self.accelerator
        states = [saved] if isinstance(saved, dict) else list(saved or [])
        if len(states) == acc.num_processes:
            restore_rng_state(states[acc.process_index])
        elif states and acc.is_main_process:
            logger.warning(
                "the checkpoint was written by %d process(es) and this run has %d: the data order "
                "continues exactly, but the random timesteps and noise restart from the seed instead of "
                "continuing",
                len(states),
                acc.num_processes,
            )

    def milestone_of(self, step: int) -> int:
        """The milestone a checkpoint at ``step`` is saved under: ceil(step / save_and_sample_every)."""
        return -(-step // self.save_and_sample_every)

    def checkpoint_path(self, milestone: int) -> Path:
        """``results_folder/model-{milestone}.pt``."""
        return checkpoints.checkpoint_path(self.results_folder, milestone)

    def save(self, milestone: int) -> Path | None:
        """Write results/model-{milestone}.pt atomically, read it back, then apply the retention policy. Call it on
        every process (each contributes its RNG states); returns the path on the main process, None elsewhere.
        Raises TrainingDivergedError instead of writing weights that hold NaN or inf."""
        state = self.state_dict()
        if not self.accelerator.is_main_process:
            return None
        return checkpoints.write_checkpoint(
            self.results_folder, milestone, state, keep_last=self.keep_last, keep_powers_of_two=self.keep_powers_of_two
        )

    def load(self, milestone: int) -> None:
        """Restore results/model-{milestone}.pt; see :meth:`resume_from`."""
        self.resume_from(self.checkpoint_path(milestone))

    def resume_from(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint file (see :meth:`load_state_dict`), so that ``train()`` continues from its step.
        Call it on every process. Raises CorruptCheckpointError naming a damaged file (no fallback: see
        ``resume='auto'`` for that)."""
        self.load_state_dict(checkpoints.load_valid_checkpoint(path))
        logger.info("resumed from %s at step %d", path, self.step)

    def _resume(self, resume: Any) -> None:
        """Apply the ``resume`` argument: the main process chooses the file, every process restores it."""
        found = checkpoints.choose_resume_checkpoint(self.accelerator, self.results_folder, resume)
        self._fit_data_statistics(None if found is None else found[1])
        if found is not None:
            self.load_state_dict(found[1])
            logger.info("resumed from %s at step %d", found[0], self.step)

    def _fit_data_statistics(self, checkpoint: Mapping[str, Any] | None) -> None:
        """Once, before the first step: a trainable that needs statistics of its data (trainable.FitsData: σ_max of
        a VE/NCSN diffusion) takes them from the checkpoint being resumed when it stores them, else computes them
        from up to FIT_IMAGES images of the dataset, the same ones on every process."""
        model = self.trainable
        if not isinstance(model, FitsData) or not model.needs_data_statistics:
            return
        if checkpoint is not None and model.restore_data_statistics(checkpoint_spec(checkpoint)):
            return
        images = fitting_images(self.dataset, self.data_seed, FIT_IMAGES)
        fitted = model.fit_data_statistics(images)
        logger.info("computed %s from %d training images", fitted, len(images))

    def latest_milestone(self) -> int | None:
        """The largest milestone with a model-{n}.pt in results_folder (valid or not), or None."""
        found = checkpoints.list_milestones(self.results_folder)
        return found[-1] if found else None
