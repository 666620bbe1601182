"""What a training run reports: results/loss.csv, optional experiment trackers, and the progress bar's numbers.

* ``loss.csv`` has the columns :data:`LOSS_LOG_COLUMNS` (step, loss, lr, grad_norm, skipped), one row per
  optimizer step, and is only ever appended to, so a resumed run continues the same file (the steps replayed
  after the checkpoint appear again: when a step occurs twice, its last row is the one that counts). A file
  written before the ``skipped`` column existed is migrated once, in place and atomically: its rows get
  skipped = 0. A file with any other header is moved aside to ``loss-<n>.csv.bak`` with a warning.
* Trackers: ``log_with`` is handed to accelerate (tensorboard, wandb, ..., or GeneralTracker instances). Named
  trackers whose package is not installed are dropped with one warning instead of an error, so the same script
  runs everywhere; neither package is a dependency of this one.
* ``metrics.csv`` has the columns :data:`METRIC_LOG_COLUMNS` (step, name, value): one row per metric each time the
  Trainer computes its ``metric`` (e.g. FID every ``metric_every`` steps), appended to like loss.csv
  (:func:`append_metrics`). Long format, so any metric names fit without changing a header. ``validation.csv``
  (validation.py) has the same columns; :func:`report_values` writes both and hands the values on.
* :class:`Throughput` turns step times into the images/s the progress bar shows (over all processes).
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger(__name__)

LOSS_LOG_COLUMNS: tuple[str, ...] = ("step", "loss", "lr", "grad_norm", "skipped")
METRIC_LOG_COLUMNS: tuple[str, ...] = ("step", "name", "value")
LogWith = Any  # a tracker name, a GeneralTracker, or a list of them (see accelerate.Accelerator(log_with=...))


class LossLog:
    """Appends one row per optimizer step to ``path`` (a CSV file with the header :data:`LOSS_LOG_COLUMNS`).

    Use as a context manager; every row is flushed, so a killed run loses at most the row being written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None
        self._writer: Any = None

    def __enter__(self) -> LossLog:
        is_new = prepare_loss_log(self.path)
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)
        if is_new:
            self._writer.writerow(LOSS_LOG_COLUMNS)
        return self

    def write(self, *, step: int, loss: float, lr: float, grad_norm: float, skipped: bool) -> None:
        """Append one row (floats with 6 significant digits; skipped as 0/1)."""
        if self._writer is None or self._file is None:
            raise RuntimeError("LossLog.write outside its 'with' block")
        self._writer.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{grad_norm:.6g}", int(skipped)])
        self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None


def append_metrics(path: str | os.PathLike[str], step: int, values: Mapping[str, float]) -> None:
    """Append one row (step, name, value) per metric to the CSV file ``path`` (header written when it is new)."""
    path = Path(path)
    is_new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as file:
        writer = csv.writer(file)
        if is_new:
            writer.writerow(METRIC_LOG_COLUMNS)
        writer.writerows([step, name, f"{value:.6g}"] for name, value in values.items())


def report_values(
    accelerator: Any, log_fn: Any, path: str | os.PathLike[str], step: int, values: Mapping[str, float]
) -> None:
    """Main process: ``values`` (a metric, the validation losses) at ``step`` into the CSV ``path`` (append_metrics),
    ``log_fn`` (with the step), the trackers, and the log (INFO)."""
    append_metrics(path, step, values)
    if log_fn is not None:
        log_fn({"step": step, **values})
    if accelerator.trackers:
        accelerator.log(dict(values), step=step)
    logger.info("step %d: %s", step, ", ".join(f"{k} {v:.5g}" for k, v in values.items()))


def prepare_loss_log(path: Path) -> bool:
    """Make ``path`` ready for appending rows of LOSS_LOG_COLUMNS; True if a header must be written first."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, newline="") as file:
        header = next(csv.reader(file), [])
    if tuple(header) == LOSS_LOG_COLUMNS:
        return False
    if tuple(header) == LOSS_LOG_COLUMNS[: len(header)] and header:
        _migrate(path, len(header))
        return False
    backup = _free_backup_name(path)
    path.rename(backup)
    logger.warning("%s has an unknown header %s; moved it to %s and starting a new log", path, header, backup.name)
    return True


def _migrate(path: Path, old_width: int) -> None:
    """Rewrite a log with the first ``old_width`` columns to all columns (new ones 0), via a temporary file."""
    with open(path, newline="") as file:
        rows = list(csv.reader(file))[1:]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(LOSS_LOG_COLUMNS)
            padding = ["0"] * (len(LOSS_LOG_COLUMNS) - old_width)
            writer.writerows(row + padding if row else row for row in rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info(
        "%s: added the column(s) %s (0 for the %d earlier rows)",
        path,
        ", ".join(LOSS_LOG_COLUMNS[old_width:]),
        len(rows),
    )


def _free_backup_name(path: Path) -> Path:
    n = 1
    while (candidate := path.with_name(f"{path.stem}-{n}.csv.bak")).exists():
        n += 1
    return candidate


def available_trackers(log_with: LogWith) -> list[Any]:
    """``log_with`` as a list, without the named trackers whose package is not installed (one warning each).

    'all' and GeneralTracker instances pass through; an unknown name is left for accelerate to reject.
    """
    if log_with is None:
        return []
    from accelerate.tracking import get_available_trackers  # imported here: accelerate imports trackers lazily

    wanted: Sequence[Any] = log_with if isinstance(log_with, (list, tuple)) else [log_with]
    installed = {str(t) for t in get_available_trackers()}
    kept = []
    for tracker in wanted:
        name = str(getattr(tracker, "value", tracker)) if isinstance(tracker, str) else None
        if name is not None and name != "all" and _is_known_tracker(name) and name not in installed:
            logger.warning("log_with: %r is not installed, so the run is not logged to it (pip install %s)", name, name)
            continue
        kept.append(tracker)
    return kept


def start_trackers(accelerator: Any, project_name: str, config: dict[str, Any]) -> None:
    """Start the accelerator's trackers (if it has any and they are not running) with the run's settings."""
    if accelerator.log_with and not accelerator.trackers:
        accelerator.init_trackers(project_name, config=config)


def end_trackers(accelerator: Any) -> None:
    """Finish the running trackers; a later :func:`start_trackers` starts them again."""
    if accelerator.trackers:
        accelerator.end_training()
        accelerator.trackers = []


def _is_known_tracker(name: str) -> bool:
    from accelerate.utils import LoggerType

    return name in {str(t.value) for t in LoggerType}


class Throughput:
    """Images per second over the last ``window`` optimizer steps (all processes together)."""

    def __init__(self, images_per_step: int, window: int = 20) -> None:
        self.images_per_step = images_per_step
        self._durations: deque[float] = deque(maxlen=window)
        self._last = time.perf_counter()

    def tick(self) -> float:
        """Call once per optimizer step; returns images/s over the recent steps."""
        now = time.perf_counter()
        self._durations.append(max(now - self._last, 1e-9))
        self._last = now
        return self.images_per_step * len(self._durations) / sum(self._durations)
