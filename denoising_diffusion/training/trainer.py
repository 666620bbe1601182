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
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
from accelerate.utils import set_seed
from ema_pytorch import EMA, KarrasEMA
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.datasets import ImageFiles, OnBadImage, SkippedImage
from ..data.scan import check_folder_dataset
from . import checkpoints
from .compilation import compile_network
from .distributed import broadcast_value, make_accelerator, resolve_mixed_precision, use_cpu
from .ema import make_ema
from .guards import NonFiniteGuard, StepReport, TrainingDivergedError
from .loader import DataStream, as_training_dataset, check_dataset_classes, data_size, default_num_workers
from .log import LogWith, LossLog, Throughput, available_trackers, end_trackers, report_values, start_trackers
from .metric_hook import MetricFn, MetricHook
from .milestones import TrainerState
from .optimizer import make_adam
from .options import check_int, check_trainer_options
from .preview import SampleGrids
from .results_lock import ResultsLock
from .step import TrainingSteps
from .trainable import check_trainable, trainable_condition_spec
from .validation import ValidationHook, ValidationSet

__all__ = ["Trainer", "TrainingDivergedError"]

logger = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float]], None]


class Trainer(TrainingSteps, TrainerState, SampleGrids, ValidationHook):
    """Train ``diffusion`` on a folder of images or a Dataset.

    Args:
        diffusion: the model to train: a GaussianDiffusion, or any trainable (trainable.py: an nn.Module whose
            call maps a batch to a scalar loss, with ``.model``, ``.channels`` and ``.image_size``).
        folder_or_dataset: a folder read recursively by ImageFolderDataset at the model's image size and
            channel count, or a Dataset (any object with __len__ and __getitem__) whose items are (C, H, W)
            tensors in [0, 1], tuples starting with one ((image, label) pairs), or dicts with an 'image' entry;
            batches keep that structure (data/batch.py) and the model decides what to do with the rest. Or a
            stream (data.RecordStream: ShardStream, hf_dataset(..., streaming=True)): each process its own shards.
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
        results_folder: where model-*.pt, sample-*.png and loss.csv go; created if missing. The main process locks
            it from construction until ``train()`` ends: another process's Trainer on it raises
            ResultsFolderInUseError naming this one (results_lock.py).
        amp: mixed precision: ``mixed_precision_type`` on GPU, bf16 on CPU (fp16 autocast does not run there).
        mixed_precision_type: 'fp16' or 'bf16'.
        split_batches: see ``train_batch_size``.
        max_grad_norm: clip the global gradient norm to this; None: no clipping (the norm is still logged).
        num_workers: DataLoader worker processes; None: 0 for in-memory datasets (BuiltinShapes, TensorDataset,
            lists), else min(4, CPU count - 1).
        on_bad_image: 'error' or 'skip', for unreadable files in an image folder, all found by a header check
            before anything is written (data/scan.py): 'error' names them all in one UnreadableImageError.
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
        validation: held-out data (a folder, Dataset or stream, or a validation.Validation with its item count and
            seed): a loss at fixed t and ε at each milestone, logged to results/validation.csv (validation.py).
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
        validation: Any = None,
    ) -> None:
        self.train_batch_size = check_int("train_batch_size", train_batch_size)
        self.gradient_accumulate_every = check_int("gradient_accumulate_every", gradient_accumulate_every)
        self.train_num_steps = check_int("train_num_steps", train_num_steps)
        self.save_and_sample_every = check_int("save_and_sample_every", save_and_sample_every)
        self.num_samples = check_int("num_samples", num_samples, minimum=0)
        self.sample_guidance_scale = float(sample_guidance_scale)
        self.run_options = {  # saved in every checkpoint, so that a resumed command line can default to them
            "train_batch_size": train_batch_size, "gradient_accumulate_every": gradient_accumulate_every,
            "train_lr": train_lr, "train_num_steps": train_num_steps, "save_and_sample_every": save_and_sample_every,
            "num_samples": num_samples, "ema_decay": ema_decay, "ema_update_every": ema_update_every,
            "ema_sigma_rel": ema_sigma_rel,
        }  # fmt: skip
        self.keep_last = check_int("keep_last", keep_last, allow_none=True)
        self.keep_powers_of_two = bool(keep_powers_of_two)
        check_trainer_options(train_lr, ema_decay, max_grad_norm, resume)
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
        self.trainable: Any = cast(Any, diffusion)  # an nn.Module meeting trainable.Trainable; DDP may wrap it
        self.dataset = as_training_dataset(
            folder_or_dataset, self.trainable.channels, self.trainable.image_size, OnBadImage(on_bad_image)
        )
        unreadable = check_folder_dataset(self.dataset) if isinstance(self.dataset, ImageFiles) else ()
        num_classes = trainable_condition_spec(self.trainable).num_classes or getattr(diffusion, "num_classes", None)
        check_dataset_classes(self.dataset, num_classes)
        self.validation = None if validation is None else ValidationSet.build(
            validation, self.trainable, OnBadImage(on_bad_image), self.train_batch_size)  # fmt: skip
        num_workers = (
            default_num_workers(self.dataset)
            if num_workers is None
            else check_int("num_workers", num_workers, minimum=0)
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
        if compile:  # after the EMA's copy, which stays uncompiled
            compile_network(self.trainable.model, None if compile is True else compile)

        self.step = 0
        self.skipped_images: dict[str, str] = {}  # path -> reason for every file skipped so far (main process)
        self._new_skipped: list[SkippedImage] = []  # met by this process since the last optimizer step
        self.results_lock = ResultsLock(self.results_folder)  # held by the main process while it writes
        self._open_results_folder(resume, unreadable)
        logger.info(
            "training on %s, device %s, mixed precision %s, %d process(es), %d images per optimizer step",
            data_size(self.dataset),
            acc.device,
            mixed_precision,
            acc.num_processes,
            self.global_batch_size * self.gradient_accumulate_every,
        )

    def _open_results_folder(self, resume: Any, unreadable: Sequence[SkippedImage]) -> None:
        """Main process: take the folder's lock (results_lock.py), create it, remove the temporaries of an
        interrupted save, name the unreadable files the folder check found; every process: apply ``resume``. The
        lock is given back if this fails."""
        if self.accelerator.is_main_process:
            self.results_lock.acquire()
        try:
            if self.accelerator.is_main_process:
                self.results_folder.mkdir(parents=True, exist_ok=True)
                checkpoints.remove_stale_temporaries(self.results_folder)
                self._record_checked_files(unreadable)
            self._resume(resume)
        except BaseException:
            self.results_lock.release()
            raise

    @property
    def diffusion(self) -> nn.Module:
        """The model being trained (the tutorial's name for it; the same object as ``trainable``)."""
        return self.trainable

    # ----- the loop ---------------------------------------------------------------------------------------------

    def train(self) -> None:
        """Train until ``train_num_steps``, saving and sampling every ``save_and_sample_every`` steps and at the end.

        Raises TrainingDivergedError after ``max_bad_steps`` non-finite steps in a row (nothing is saved from them).
        """
        acc = self.accelerator
        main = acc.is_main_process
        if main:
            self.results_lock.acquire()  # again, when train() runs a second time
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
            self.results_lock.release()  # a no-op off the main process
        if main:
            self._summarize_skipped_images()
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
        self.validate()

    def _maybe_evaluate(self) -> None:
        """Main process, when due: the metric of metric_num_samples EMA samples, logged beside the loss."""
        hook = self.metric_hook
        if hook is None or not hook.due(self.step, self.train_num_steps):
            return
        if self.accelerator.is_main_process:
            num_classes = trainable_condition_spec(self.trainable).num_classes
            values = hook.values(self.sample(hook.num_samples, **hook.condition(num_classes)))
            report_values(self.accelerator, self.log_fn, self.results_folder / "metrics.csv", self.step, values)
        self.accelerator.wait_for_everyone()
