"""The Trainer: trains a GaussianDiffusion on a folder of images (or any Dataset), with an EMA copy of the network.

accelerate owns devices, mixed precision, gradient accumulation and multi-process training (``accelerate launch``);
ema-pytorch keeps the EMA of ``diffusion.model`` (the network only: the schedule tables are derived buffers);
tqdm shows progress. Only the main process writes into ``results_folder``:

* ``model-{milestone}.pt``: a checkpoint (see denoising_diffusion.checkpoint) every ``save_and_sample_every``
  steps and at the end; milestone = ceil(step / save_and_sample_every);
* ``sample-{milestone}.png``: a grid of ``num_samples`` images from the EMA network, drawn from the same noise at
  every milestone so that grids are comparable;
* ``loss.csv``: step, loss, lr, grad_norm per optimizer step, appended to (never truncated), so a resumed run
  adds to the same file; steps after the loaded checkpoint are logged again.

Resuming is exact in a single process: the checkpoint holds the step, network, EMA, optimizer, gradient scaler,
the torch RNG state and the position in the (seeded) data order, so ``load(m)`` then ``train()`` takes the same
steps as the uninterrupted run (for datasets without random augmentation of their own).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast_object_list, set_seed
from ema_pytorch import EMA
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from denoising_diffusion.checkpoint import load_checkpoint, load_weights, make_checkpoint, save_checkpoint
from denoising_diffusion.data import (BuiltinShapes, ImageFolderDataset, InfiniteBatchSampler, OnBadImage,
                                      parse_on_bad_image)
from denoising_diffusion.viz import save_image_grid

logger = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float]], None]


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def collate_images(items: list[Any]) -> Tensor:
    """Stack dataset items into a batch (B, C, H, W). An item is a (C, H, W) tensor or a tuple/list whose first
    element is one (e.g. (image, label)); the rest is ignored."""
    images = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    if not all(isinstance(image, Tensor) and image.ndim == 3 for image in images):
        raise ValueError("dataset items must be (C, H, W) tensors in [0, 1], or tuples whose first element is one")
    return torch.stack(images).float()


def random_hflip(batch: Tensor) -> Tensor:
    """Flip each image of a (B, C, H, W) batch left-right with probability 1/2 (global torch RNG)."""
    flip = torch.rand(batch.shape[0]) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(batch.device), batch.flip(-1), batch)


def _resolve_mixed_precision(amp: bool, mixed_precision_type: str) -> str:
    """accelerate's mixed_precision for (amp, type): fp16 autocast does not run on CPU, so there it becomes bf16."""
    if not amp:
        return "no"
    if mixed_precision_type not in ("fp16", "bf16"):
        raise ValueError(f"mixed_precision_type must be 'fp16' or 'bf16', got {mixed_precision_type!r}")
    if mixed_precision_type == "fp16" and PartialState().device.type == "cpu":
        logger.info("amp on CPU: using bf16 autocast (fp16 autocast is not supported on CPU)")
        return "bf16"
    return mixed_precision_type


def _make_accelerator(mixed_precision: str, gradient_accumulate_every: int) -> Accelerator:
    try:
        return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulate_every)
    except ValueError as err:
        if "already been initialized" not in str(err):
            raise
        raise ValueError(
            f"accelerate allows one mixed-precision setting per process, and this process already uses another one "
            f"than {mixed_precision!r} (an earlier Trainer or Accelerator). Use the same amp setting, or a new "
            "process"
        ) from err


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": list(cuda)}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Train ``diffusion`` on a folder of images or a Dataset.

    Args:
        diffusion: a GaussianDiffusion (anything with ``.model``, ``.image_size``, ``.channels``, ``.config``,
            ``with_model`` and ``sample`` whose forward(images in [0, 1]) returns a scalar loss).
        folder_or_dataset: a folder read recursively by ImageFolderDataset at the diffusion's image size and
            channel count, or a Dataset (any object with __len__ and __getitem__) whose items are (C, H, W)
            tensors in [0, 1] (or tuples starting with one).
        train_batch_size: images per optimizer micro-step, over all processes when ``split_batches`` (else per
            process).
        gradient_accumulate_every: micro-batches per optimizer step.
        augment_horizontal_flip: flip each training image left-right with probability 1/2.
        train_lr: Adam's learning rate (constant).
        train_num_steps: optimizer steps to train for, counted from 0 (a resumed run continues to this number).
        ema_update_every, ema_decay: EMA update period (in optimizer steps) and decay β.
        adam_betas: Adam's (β1, β2).
        save_and_sample_every: steps between checkpoints and sample grids.
        num_samples: images in each sample grid (0: no grids).
        results_folder: where model-*.pt, sample-*.png and loss.csv go; created if missing.
        amp: mixed precision: ``mixed_precision_type`` on GPU, bf16 on CPU (fp16 autocast does not run there).
        mixed_precision_type: 'fp16' or 'bf16'.
        split_batches: see ``train_batch_size``.
        max_grad_norm: clip the global gradient norm to this; None: no clipping (the norm is still logged).
        num_workers: DataLoader worker processes; None: 0 for in-memory datasets (BuiltinShapes, TensorDataset,
            lists), else min(4, CPU count - 1).
        on_bad_image: 'error' or 'skip', for unreadable files in a folder (see ImageFolderDataset).
        seed: seeds torch on every process (offset by the process index) and the data order; None: random.
        log_fn: called on the main process after every step with {"step", "loss", "lr", "grad_norm"}.
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
        adam_betas: tuple[float, float] = (0.9, 0.99),
        save_and_sample_every: int = 1000,
        num_samples: int = 25,
        results_folder: str | os.PathLike[str] = "./results",
        amp: bool = False,
        mixed_precision_type: str = "fp16",
        split_batches: bool = True,
        max_grad_norm: float | None = 1.0,
        num_workers: int | None = None,
        on_bad_image: str = "error",
        seed: int | None = None,
        log_fn: LogFn | None = None,
    ) -> None:
        self.train_batch_size = _check_int("train_batch_size", train_batch_size)
        self.gradient_accumulate_every = _check_int("gradient_accumulate_every", gradient_accumulate_every)
        self.train_num_steps = _check_int("train_num_steps", train_num_steps)
        self.save_and_sample_every = _check_int("save_and_sample_every", save_and_sample_every)
        self.num_samples = _check_int("num_samples", num_samples, minimum=0)
        if not train_lr > 0:
            raise ValueError(f"train_lr must be > 0, got {train_lr!r}")
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        self.max_grad_norm = max_grad_norm
        self.augment_horizontal_flip = bool(augment_horizontal_flip)
        self.log_fn = log_fn
        self.results_folder = Path(results_folder)

        # Everything that can fail on user input happens before anything is written or any device is touched.
        self.dataset = self._build_dataset(diffusion, folder_or_dataset, parse_on_bad_image(on_bad_image))
        self.num_workers = self._default_workers(self.dataset) if num_workers is None else _check_int(
            "num_workers", num_workers, minimum=0)

        mixed_precision = _resolve_mixed_precision(amp, mixed_precision_type)
        self.accelerator = _make_accelerator(mixed_precision, self.gradient_accumulate_every)
        acc = self.accelerator
        self.global_batch_size = self.train_batch_size * (1 if split_batches else acc.num_processes)
        if self.global_batch_size % acc.num_processes:
            raise ValueError(f"train_batch_size ({train_batch_size}) must be divisible by the number of processes "
                             f"({acc.num_processes}) when split_batches=True")

        if seed is not None:
            set_seed(seed, device_specific=True)
        data_seed = [int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())]
        self.data_seed: int = broadcast_object_list(data_seed)[0]  # one data order shared by every process

        self.diffusion = diffusion  # unwrapped; self.model may be a DDP wrapper around it
        opt = torch.optim.Adam(diffusion.parameters(), lr=train_lr, betas=tuple(adam_betas))
        self.model, self.opt = acc.prepare(diffusion, opt)
        self.ema: EMA | None = None
        if acc.is_main_process:
            self.ema = EMA(diffusion.model, beta=ema_decay, update_every=ema_update_every,
                           include_online_model=False).to(acc.device)
            self.results_folder.mkdir(parents=True, exist_ok=True)

        self.step = 0
        self.samples_seen = 0  # data indices consumed, over all processes: the position in the data order
        self._batches: Iterator[Tensor] | None = None
        logger.info("training on %d images, device %s, mixed precision %s, %d process(es)", len(self.dataset),
                    acc.device, mixed_precision, acc.num_processes)

    # ----- setup ------------------------------------------------------------------------------------------------

    @staticmethod
    def _build_dataset(diffusion: nn.Module, source: Any, on_bad_image: OnBadImage) -> Dataset:
        expected = (int(diffusion.channels), *diffusion.image_size)
        if isinstance(source, (str, os.PathLike)):
            return ImageFolderDataset(source, diffusion.image_size, channels=expected[0], on_bad_image=on_bad_image)
        if not (isinstance(source, Dataset) or (hasattr(source, "__getitem__") and hasattr(source, "__len__"))):
            raise ValueError("folder_or_dataset must be a folder path or a torch Dataset (or a sequence of images), "
                             f"got {type(source).__name__}")
        if len(source) == 0:  # type: ignore[arg-type]
            raise ValueError("the dataset is empty")
        first = collate_images([source[0]])[0]
        if tuple(first.shape) != expected:
            raise ValueError(f"the dataset's images have shape {tuple(first.shape)} (C, H, W) but the diffusion "
                             f"model expects {expected} (its channels and image_size)")
        return source

    @staticmethod
    def _default_workers(dataset: Dataset) -> int:
        if isinstance(dataset, (BuiltinShapes, TensorDataset, list, tuple)):
            return 0  # already in memory: worker processes would only add start-up and copying
        return min(4, max(0, (os.cpu_count() or 1) - 1))

    def _make_batches(self) -> Iterator[Tensor]:
        """Endless per-process micro-batches (B / processes, C, H, W) on the CPU, starting at samples_seen."""
        acc = self.accelerator
        sampler = InfiniteBatchSampler(len(self.dataset), self.global_batch_size, seed=self.data_seed,
                                       start_index=self.samples_seen, shard=acc.process_index,
                                       num_shards=acc.num_processes)
        loader = DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                            collate_fn=collate_images, pin_memory=acc.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.data_seed))  # leaves the global RNG alone
        return iter(loader)

    # ----- training ---------------------------------------------------------------------------------------------

    def _next_batch(self) -> Tensor:
        if self._batches is None:
            self._batches = self._make_batches()
        batch = next(self._batches)
        self.samples_seen += self.global_batch_size
        if self.augment_horizontal_flip:
            batch = random_hflip(batch)
        return batch.to(self.accelerator.device, non_blocking=True)

    def _train_step(self) -> tuple[float, float]:
        """One optimizer step over gradient_accumulate_every micro-batches -> (mean loss, gradient norm)."""
        acc = self.accelerator
        total_loss, grad_norm = 0.0, float("nan")
        max_norm = self.max_grad_norm if self.max_grad_norm is not None else float("inf")
        for _ in range(self.gradient_accumulate_every):
            batch = self._next_batch()
            with acc.accumulate(self.model):
                loss = self.model(batch)
                acc.backward(loss)  # divides by gradient_accumulate_every
                total_loss += loss.item() / self.gradient_accumulate_every
                if acc.sync_gradients:
                    norm = acc.clip_grad_norm_(self.model.parameters(), max_norm)
                    grad_norm = float(norm) if norm is not None else grad_norm
                self.opt.step()  # accelerate skips these until the last micro-batch
                self.opt.zero_grad()
        return total_loss, grad_norm

    @contextmanager
    def _loss_log(self) -> Iterator[Callable[[list[Any]], None]]:
        """Append rows to results/loss.csv (header only when the file is new); a no-op off the main process."""
        if not self.accelerator.is_main_process:
            yield lambda row: None
            return
        path = self.results_folder / "loss.csv"
        is_new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as file:
            writer = csv.writer(file)
            if is_new:
                writer.writerow(["step", "loss", "lr", "grad_norm"])

            def write(row: list[Any]) -> None:
                writer.writerow(row)
                file.flush()

            yield write

    def milestone_of(self, step: int) -> int:
        """The milestone a checkpoint at ``step`` is saved under: ceil(step / save_and_sample_every)."""
        return -(-step // self.save_and_sample_every)

    def train(self) -> None:
        """Train until ``train_num_steps``, saving and sampling every ``save_and_sample_every`` steps and at the end."""
        acc = self.accelerator
        main = acc.is_main_process
        with self._loss_log() as write_row, tqdm(initial=self.step, total=self.train_num_steps, disable=not main,
                                                 dynamic_ncols=True) as bar:
            while self.step < self.train_num_steps:
                self.model.train()
                loss, grad_norm = self._train_step()
                self.step += 1
                if main:
                    self.ema.update()
                    lr = self.opt.param_groups[0]["lr"]
                    write_row([self.step, f"{loss:.6g}", f"{lr:.6g}", f"{grad_norm:.6g}"])
                    if self.log_fn is not None:
                        self.log_fn({"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm})
                    bar.set_description(f"loss: {loss:.4f}")
                    bar.update(1)
                if self.step % self.save_and_sample_every == 0 or self.step == self.train_num_steps:
                    acc.wait_for_everyone()
                    milestone = self.milestone_of(self.step)
                    self.save(milestone)
                    self.save_samples(milestone)
        self._batches = None  # stops DataLoader workers; a later train() restarts at samples_seen
        acc.wait_for_everyone()

    # ----- samples and checkpoints ------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, num_samples: int, *, seed: int | None = None) -> Tensor:
        """``num_samples`` images from the EMA network (main process only) -> (N, C, H, W) in [0, 1].

        Noise comes from its own generator (seed default: the data seed), so the training RNG is untouched.
        """
        if self.ema is None:
            raise RuntimeError("only the main process holds the EMA network")
        device = self.accelerator.device
        ema_diffusion = self.diffusion.with_model(self.ema.ema_model).to(device)
        generator = torch.Generator(device=device).manual_seed(self.data_seed if seed is None else seed)
        sizes = [self.train_batch_size] * (num_samples // self.train_batch_size)
        sizes += [num_samples % self.train_batch_size] if num_samples % self.train_batch_size else []
        images = [ema_diffusion.sample(batch_size=n, generator=generator) for n in sizes]
        return torch.cat(images).cpu()

    def save_samples(self, milestone: int) -> Path | None:
        """Write results/sample-{milestone}.png, a grid of num_samples EMA samples (main process; None elsewhere)."""
        if not self.accelerator.is_main_process or self.num_samples == 0:
            return None
        images = self.sample(self.num_samples)
        return save_image_grid(images, self.results_folder / f"sample-{milestone}.png",
                               nrow=math.ceil(math.sqrt(self.num_samples)))

    def checkpoint_path(self, milestone: int) -> Path:
        return self.results_folder / f"model-{milestone}.pt"

    def save(self, milestone: int) -> Path | None:
        """Write results/model-{milestone}.pt atomically (main process only; returns None elsewhere)."""
        acc = self.accelerator
        if not acc.is_main_process:
            return None
        payload = make_checkpoint(
            self.diffusion, step=self.step, ema=self.ema.state_dict(), opt=self.opt.state_dict(),
            scaler=acc.scaler.state_dict() if acc.scaler is not None else None,
            trainer={"data_seed": self.data_seed, "samples_seen": self.samples_seen, "rng": _rng_state()},
        )
        return save_checkpoint(self.checkpoint_path(milestone), payload)

    def load(self, milestone: int) -> None:
        """Restore results/model-{milestone}.pt; see :meth:`resume_from`."""
        self.resume_from(self.checkpoint_path(milestone))

    def resume_from(self, path: str | os.PathLike[str]) -> None:
        """Restore step, network, EMA, optimizer, gradient scaler, data position and (in a single process) the RNG
        from a checkpoint, so that ``train()`` continues from the saved step. Raises CheckpointError naming the
        config fields that differ when the checkpoint was written for another model."""
        acc = self.accelerator
        checkpoint = load_checkpoint(path)
        load_weights(self.diffusion, checkpoint, use_ema=False)
        self.step = int(checkpoint["step"])
        if checkpoint.get("opt") is not None:
            self.opt.load_state_dict(checkpoint["opt"])
        if acc.scaler is not None and checkpoint.get("scaler") is not None:
            acc.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None:
            if checkpoint.get("ema") is not None:
                self.ema.load_state_dict(checkpoint["ema"])
            else:
                logger.warning("checkpoint %s has no EMA state; the EMA restarts from the loaded weights", path)
                self.ema.copy_params_from_model_to_ema()
        state = checkpoint.get("trainer") or {}
        self.data_seed = int(state.get("data_seed", self.data_seed))
        default_seen = self.step * self.gradient_accumulate_every * self.global_batch_size
        self.samples_seen = int(state.get("samples_seen", default_seen))
        if "rng" in state and acc.num_processes == 1:
            _set_rng_state(state["rng"])
        self._batches = None  # rebuilt at the restored position on the next step
        logger.info("resumed from %s at step %d", path, self.step)

    def latest_milestone(self) -> int | None:
        """The largest milestone with a model-*.pt in results_folder, or None."""
        milestones = [int(p.stem.split("-", 1)[1]) for p in self.results_folder.glob("model-*.pt")
                      if p.stem.split("-", 1)[1].isdigit()]
        return max(milestones, default=None)
