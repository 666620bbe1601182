"""Training: the Trainer and everything only it uses (DESIGN.md, Layout).

trainer.py (the Trainer: its construction and loop) with its parts step.py (one optimizer step), milestones.py
(state_dict/load_state_dict, saving and resuming) and preview.py (sample grids); options.py (argument checks),
results_lock.py (one run per results folder), trainable.py (the contract a trained model meets), loader.py (the
resumable, sharded data stream), checkpoints.py (the model-*.pt files of a results folder: writing, choosing one
to resume from, retention), guards.py (non-finite steps), rng.py (RNG capture and per-item seeding),
distributed.py (accelerate set-up and collectives), ema.py, optimizer.py, compilation.py, log.py (loss.csv,
trackers), metric_hook.py, streamed.py (reading a stream's shards), validation.py (the validation loss).
Nothing outside this package imports it except the package root's re-exports and the CLI.
"""

from .compilation import compile_network
from .ema import power_ema
from .guards import TrainingDivergedError
from .optimizer import make_adam
from .results_lock import ResultsFolderInUseError
from .trainable import FitsData, Previewable, Trainable
from .trainer import Trainer
from .validation import Validation

__all__ = [
    "FitsData",
    "Previewable",
    "ResultsFolderInUseError",
    "Trainable",
    "Trainer",
    "TrainingDivergedError",
    "Validation",
    "compile_network",
    "make_adam",
    "power_ema",
]
