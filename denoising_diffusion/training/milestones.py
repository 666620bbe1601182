"""The Trainer's state and its checkpoints: everything a resumed run needs, in and out (``state_dict``,
``load_state_dict``), the milestone files (``save``, ``load``, ``resume_from``), and what happens once before the
first step (the ``resume`` argument, the data statistics a model fits). The file layout and retention policy are
checkpoints.py's; the format is checkpoint.py's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from ema_pytorch import EMA, KarrasEMA

from ..checkpoint import make_checkpoint
from ..pipeline import checkpoint_spec, load_weights, spec_of, trainable_parts
from . import checkpoints
from .distributed import gather_values
from .loader import DataStream, fitting_images
from .optimizer import load_optimizer_state
from .rng import capture_rng_state, restore_rng_state
from .trainable import FIT_IMAGES, FitsData

logger = logging.getLogger(__name__)


class TrainerState:
    """State, checkpoints and resuming (a mixin of Trainer, which sets these attributes)."""

    accelerator: Accelerator
    trainable: Any
    data: DataStream
    opt: Any
    ema: EMA | KarrasEMA | None
    dataset: Any
    step: int
    results_folder: Path
    save_and_sample_every: int
    gradient_accumulate_every: int
    global_batch_size: int
    keep_last: int | None
    keep_powers_of_two: bool
    run_options: dict[str, Any]

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as a checkpoint (checkpoint.py's training layout): the spec, step,
        network, the trainable's other parts (frozen ones included), EMA, optimizer and gradient-scaler states, and
        ``"trainer"``: the data seed, the position in the data order (``samples_seen``), the RNG states of every
        process, in process order, and ``"options"``: the run's batch size, learning rate, steps, milestones and EMA
        (``run_options``; what a resumed command line defaults to).

        A collective: call it on every process (the RNG states are gathered). Only the main process's dict has
        the EMA state (the others keep no EMA).
        """
        acc = self.accelerator
        trainer = {
            **self.data.state_dict(),
            "rng": gather_values(acc, capture_rng_state()),
            "num_processes": acc.num_processes,
            "options": dict(self.run_options),
        }
        network_path, parts = trainable_parts(self.trainable)
        return make_checkpoint(
            config=spec_of(self.trainable),
            step=self.step,
            model=self.trainable.model.state_dict(),
            network_path=network_path,
            parts=parts,
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
                "data_seed": trainer.get("data_seed", self.data.data_seed),
                "samples_seen": trainer.get(
                    "samples_seen", self.step * self.gradient_accumulate_every * self.global_batch_size
                ),
                "stream_positions": trainer.get("stream_positions"),  # a stream's, per process (loader.py)
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
        images = fitting_images(self.dataset, self.data.data_seed, FIT_IMAGES)
        fitted = model.fit_data_statistics(images)
        logger.info("computed %s from %d training images", fitted, len(images))

    def latest_milestone(self) -> int | None:
        """The largest milestone with a model-{n}.pt in results_folder (valid or not), or None."""
        found = checkpoints.list_milestones(self.results_folder)
        return found[-1] if found else None
