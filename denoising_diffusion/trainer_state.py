"""A Trainer's state in and out of checkpoints: what is saved, how a resume is chosen, how it is restored.

Besides the network, EMA, optimizer and gradient scaler (checkpoint.make_checkpoint), a Trainer checkpoint has a
``"trainer"`` entry of plain values::

    {"data_seed": int, "samples_seen": int,          # the position in the data order
     "rng": [rng.capture_rng_state() per process],  # every RNG of every process, in process order
     "num_processes": int}

Every process contributes its RNG states (a gather) and only the main process writes. On resume the main process
chooses the file (milestones.find_resume_checkpoint: 'auto' falls back past damaged files), tells the others,
and every process restores from it; each takes back its own RNG states when the number of processes is the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from denoising_diffusion import milestones
from denoising_diffusion.checkpoint import load_weights, make_checkpoint, save_checkpoint, verify_checkpoint_file
from denoising_diffusion.guards import TrainingDivergedError, non_finite_entries
from denoising_diffusion.processes import broadcast_value, gather_values
from denoising_diffusion.rng import capture_rng_state, restore_rng_state
from denoising_diffusion.speed import load_optimizer_state

if TYPE_CHECKING:
    from denoising_diffusion.trainer import Trainer

logger = logging.getLogger(__name__)


def save_trainer(trainer: Trainer, milestone: int) -> Path | None:
    """Write ``trainer``'s checkpoint ``model-{milestone}.pt`` (main process), verify it, then apply keep_last.

    Every process must call it. Raises TrainingDivergedError instead of writing weights that hold NaN or inf.
    """
    acc = trainer.accelerator
    rng_states = gather_values(acc, capture_rng_state())
    if not acc.is_main_process:
        return None
    path = trainer.checkpoint_path(milestone)
    bad = non_finite_entries(trainer.diffusion.model.state_dict())
    bad += [f"ema.{name}" for name in non_finite_entries(trainer.ema.state_dict())]
    if bad:
        raise TrainingDivergedError(f"refusing to write {os.fspath(path)!r}: the weights hold NaN or inf in "
                                    f"{', '.join(bad[:5])}; the earlier checkpoints are left as they are")
    state = {"data_seed": trainer.data_seed, "samples_seen": trainer.samples_seen, "rng": rng_states,
             "num_processes": acc.num_processes}
    payload = make_checkpoint(
        trainer.diffusion, step=trainer.step, ema=trainer.ema.state_dict(), opt=trainer.opt.state_dict(),
        scaler=acc.scaler.state_dict() if acc.scaler is not None else None, trainer=state,
    )
    save_checkpoint(path, payload)
    verify_checkpoint_file(path)  # read back before any older checkpoint may be deleted
    milestones.prune_checkpoints(trainer.results_folder, trainer.keep_last, milestone)
    return path


def resume_trainer(trainer: Trainer, resume: Any) -> None:
    """Apply the Trainer's ``resume`` argument: the main process chooses the file, every process restores it."""
    acc = trainer.accelerator
    found = None
    chosen: tuple[str | None, str | None] = (None, None)  # (path, error) as the main process saw them
    if acc.is_main_process:
        try:
            found = milestones.find_resume_checkpoint(trainer.results_folder, resume)
        except Exception as err:
            broadcast_value(acc, (None, f"{type(err).__name__}: {err}"))  # the others must not wait forever
            raise
        chosen = (os.fspath(found[0]) if found is not None else None, None)
    path, error = broadcast_value(acc, chosen)
    if error is not None:
        raise RuntimeError(f"the main process could not resume: {error}")
    if path is None:
        if acc.is_main_process:
            milestones.warn_about_newer_checkpoints(trainer.results_folder, None)
        if resume == "auto":
            logger.info("resume='auto': no checkpoint in %s, starting from step 0", trainer.results_folder)
        return
    checkpoint = found[1] if found is not None else milestones.load_valid_checkpoint(path)
    restore_trainer(trainer, Path(path), checkpoint)
    if acc.is_main_process:
        milestones.warn_about_newer_checkpoints(trainer.results_folder, milestones.milestone_of_path(Path(path)))


def restore_trainer(trainer: Trainer, path: Path, checkpoint: dict[str, Any]) -> None:
    """Load a validated checkpoint into ``trainer``: weights (after the config check), step, optimizer, scaler,
    EMA, data position and this process's RNG states."""
    acc = trainer.accelerator
    load_weights(trainer.diffusion, checkpoint, use_ema=False)
    trainer.step = int(checkpoint["step"])
    if checkpoint.get("opt") is not None:
        load_optimizer_state(trainer.opt, checkpoint["opt"])
    if acc.scaler is not None and checkpoint.get("scaler") is not None:
        acc.scaler.load_state_dict(checkpoint["scaler"])
    if trainer.ema is not None:
        if checkpoint.get("ema") is not None:
            trainer.ema.load_state_dict(checkpoint["ema"])
        else:
            logger.warning("checkpoint %s has no EMA state; the EMA restarts from the loaded weights", path)
            trainer.ema.copy_params_from_model_to_ema()
    state = checkpoint.get("trainer") or {}
    trainer.data_seed = int(state.get("data_seed", trainer.data_seed))
    default_seen = trainer.step * trainer.gradient_accumulate_every * trainer.global_batch_size
    trainer.samples_seen = int(state.get("samples_seen", default_seen))
    _restore_rng(trainer, state.get("rng"), path)
    trainer.reset_data_stream()  # rebuilt at the restored position on the next step
    logger.info("resumed from %s at step %d", path, trainer.step)


def _restore_rng(trainer: Trainer, saved: Any, path: Path) -> None:
    """Put back this process's RNG states (older checkpoints hold one dict, newer ones a list per process)."""
    acc = trainer.accelerator
    states = [saved] if isinstance(saved, dict) else list(saved or [])
    if len(states) == acc.num_processes:
        restore_rng_state(states[acc.process_index])
    elif states and acc.is_main_process:
        logger.warning("%s was written by %d process(es) and this run has %d: the data order continues exactly, "
                       "but the random timesteps and noise restart from the seed instead of continuing", path,
                       len(states), acc.num_processes)
