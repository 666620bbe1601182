"""The checkpoints in a results folder, ``model-{milestone}.pt``: listing, choosing one to resume from, rotation.

* :func:`write_checkpoint` writes a Trainer's state as ``model-{milestone}.pt`` (never from non-finite weights),
  reads it back, then applies the retention policy; :func:`choose_resume_checkpoint` lets the main process pick
  the file to resume from and tells every process.
* :func:`find_resume_checkpoint` turns the Trainer's ``resume`` argument (None, "auto", a milestone, a path) into a
  loaded checkpoint. "auto" takes the newest *valid* checkpoint: a truncated or damaged file, or one whose weights
  hold NaN/inf, is named in a warning and the previous one is tried (CorruptCheckpointError is the only error
  that falls back: a file carrying pickled code, a newer format or another model's config stops the resume).
* :func:`prune_checkpoints` implements the retention policy (``keep_last``, ``keep_powers_of_two``): after a
  checkpoint was written and read back, the older ``model-{n}.pt`` files below it are deleted except the newest
  ``keep_last`` (the one just written included) and, with ``keep_powers_of_two``, milestones 1, 2, 4, 8, ...: a
  run of n milestones keeps at most keep_last + log2(n) + 1 files, spread over its whole history. Only files
  named exactly ``model-<integer>.pt`` are ever deleted, so other files in the folder (``model-best.pt``,
  samples, notes) are safe, and the file just written is never deleted.
* :func:`remove_stale_temporaries` deletes the ``.model-{n}.pt.*.tmp`` files a process killed while saving
  leaves behind (the checkpoint itself is never half-written: see checkpoint.save_checkpoint).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from ..checkpoint import (
    CheckpointError,
    CorruptCheckpointError,
    check_format,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint_file,
)
from .distributed import broadcast_value
from .guards import TrainingDivergedError, non_finite_entries

logger = logging.getLogger(__name__)

_CHECKPOINT_NAME = re.compile(r"model-(\d+)\.pt")
_TEMPORARY_NAME = re.compile(r"\.model-(\d+)\.pt\..+\.tmp")


def checkpoint_path(folder: str | os.PathLike[str], milestone: int) -> Path:
    """``folder/model-{milestone}.pt``."""
    return Path(folder) / f"model-{milestone}.pt"


def list_milestones(folder: str | os.PathLike[str]) -> list[int]:
    """Milestones of the files named exactly ``model-<integer>.pt`` in ``folder``, ascending ([] if none)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = (_CHECKPOINT_NAME.fullmatch(p.name) for p in root.iterdir() if p.is_file())
    return sorted(int(m.group(1)) for m in found if m)


def validate_checkpoint(checkpoint: dict[str, Any], source: str) -> None:
    """Raise CheckpointError if the layout is not ours or too new, CorruptCheckpointError if weights are not finite."""
    check_format(checkpoint, source)
    for key in ("model", "ema"):
        state = checkpoint.get(key)
        bad = non_finite_entries(state) if isinstance(state, dict) else []
        if bad:
            raise CorruptCheckpointError(
                f"{source} holds non-finite values (NaN or inf) in {key}: {', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}"
            )


def load_valid_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """load_checkpoint plus :func:`validate_checkpoint`."""
    checkpoint = load_checkpoint(path)
    validate_checkpoint(checkpoint, f"checkpoint {os.fspath(path)!r}")
    return checkpoint


def newest_valid_checkpoint(folder: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``folder`` that loads and validates, or None when the folder holds none.

    Damaged files are named in a warning and skipped; raises CorruptCheckpointError listing every file when none
    of them is usable (rather than silently starting over and overwriting them).
    """
    milestones = list_milestones(folder)
    problems: list[str] = []
    for milestone in reversed(milestones):
        path = checkpoint_path(folder, milestone)
        try:
            checkpoint = load_valid_checkpoint(path)
        except CorruptCheckpointError as err:
            problems.append(str(err))
            logger.warning("%s; falling back to the previous checkpoint", err)
            continue
        if problems:
            logger.warning(
                "resuming from %s, the newest valid checkpoint (%d newer file(s) skipped)", path, len(problems)
            )
        return path, checkpoint
    if problems:
        raise CorruptCheckpointError(
            f"no valid checkpoint in {os.fspath(folder)!r} to resume from:\n  "
            + "\n  ".join(problems)
            + "\nMove these files away to start over, or pass resume=None to overwrite them"
        )
    return None


def find_resume_checkpoint(folder: str | os.PathLike[str], resume: Any) -> tuple[Path, dict[str, Any]] | None:
    """Resolve the Trainer's ``resume`` argument to (path, loaded checkpoint), or None to start from step 0.

    ``resume``: None (start fresh), "auto" (the newest valid checkpoint in ``folder``; None if there is none), an
    int milestone (``folder/model-{milestone}.pt``), or the path of a checkpoint file. An explicitly named file is
    never replaced by another one: if it is damaged, CorruptCheckpointError names it.
    """
    if resume is None:
        return None
    if isinstance(resume, str) and resume == "auto":
        return newest_valid_checkpoint(folder)
    if isinstance(resume, bool) or not isinstance(resume, (int, str, os.PathLike)):
        raise ValueError(f"resume must be None, 'auto', a milestone number or a checkpoint path, got {resume!r}")
    if isinstance(resume, int):
        path = checkpoint_path(folder, resume)
        if not path.is_file():
            present = ", ".join(map(str, list_milestones(folder))) or "none"
            raise FileNotFoundError(f"resume={resume}: there is no {os.fspath(path)!r} (milestones present: {present})")
    else:
        path = Path(resume)
    return path, load_valid_checkpoint(path)


def warn_about_newer_checkpoints(folder: str | os.PathLike[str], resumed_milestone: int | None) -> None:
    """Say when checkpoints newer than the resumed one exist: training overwrites them as it reaches them."""
    newer = [m for m in list_milestones(folder) if resumed_milestone is None or m > resumed_milestone]
    if not newer:
        return
    names = ", ".join(f"model-{m}.pt" for m in newer)
    if resumed_milestone is None:
        logger.warning(
            "%s already holds %s; this run starts from step 0 and overwrites them as it reaches their "
            "milestones (pass resume='auto' to continue from the newest instead)",
            folder,
            names,
        )
    else:
        logger.warning(
            "%s holds checkpoints newer than the one resumed from (%s); training overwrites them as it "
            "reaches them, and until then resume='auto' would pick them",
            folder,
            names,
        )


def milestone_of_path(path: Path) -> int | None:
    """The milestone of a file named ``model-<integer>.pt``, else None."""
    match = _CHECKPOINT_NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


def is_power_of_two(milestone: int) -> bool:
    """1, 2, 4, 8, ...: the milestones ``keep_powers_of_two`` keeps."""
    return milestone >= 1 and milestone & (milestone - 1) == 0


def prune_checkpoints(
    folder: str | os.PathLike[str], keep_last: int | None, written: int, keep_powers_of_two: bool = False
) -> list[Path]:
    """Delete the ``model-{n}.pt`` with n < ``written`` that the retention policy does not keep; returns them.

    Kept: the newest ``keep_last`` checkpoints up to ``written`` (``written`` included), and with
    ``keep_powers_of_two`` every milestone that is a power of two. ``keep_last=None`` keeps everything.

    Call this only after ``model-{written}.pt`` was written and read back, so that the folder always keeps at least
    one good checkpoint. Files above ``written`` (left by an abandoned branch of the run) are not touched here.
    """
    if keep_last is None:
        return []
    older = [m for m in list_milestones(folder) if m < written]
    newest = set(older[max(0, len(older) - (keep_last - 1)) :]) if keep_last > 1 else set()
    excess = [m for m in older if m not in newest and not (keep_powers_of_two and is_power_of_two(m))]
    deleted = []
    for milestone in excess:
        path = checkpoint_path(folder, milestone)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        deleted.append(path)
    if deleted:
        logger.info(
            "keep_last=%d%s: deleted %s",
            keep_last,
            " (and powers of two)" if keep_powers_of_two else "",
            ", ".join(p.name for p in deleted),
        )
    return deleted


def write_checkpoint(
    folder: str | os.PathLike[str],
    milestone: int,
    state: dict[str, Any],
    *,
    keep_last: int | None,
    keep_powers_of_two: bool,
) -> Path:
    """Write ``state`` (a Trainer's state_dict) as ``folder/model-{milestone}.pt`` atomically, read it back, then
    apply the retention policy (:func:`prune_checkpoints`); returns the path.

    Raises TrainingDivergedError, writing nothing, when the network or EMA weights hold NaN or inf.
    """
    path = checkpoint_path(folder, milestone)
    bad = non_finite_entries(state["model"]) + [f"ema.{n}" for n in non_finite_entries(state.get("ema") or {})]
    if bad:
        raise TrainingDivergedError(
            f"refusing to write {os.fspath(path)!r}: the weights hold NaN or inf in "
            f"{', '.join(bad[:5])}; the earlier checkpoints are left as they are"
        )
    save_checkpoint(path, state)
    verify_checkpoint_file(path)  # read back before any older checkpoint may be deleted
    prune_checkpoints(folder, keep_last, milestone, keep_powers_of_two)
    return path


def choose_resume_checkpoint(
    accelerator: Accelerator, folder: str | os.PathLike[str], resume: Any
) -> tuple[Path, dict[str, Any]] | None:
    """The Trainer's ``resume`` argument on every process: the main process resolves it
    (:func:`find_resume_checkpoint`) and broadcasts the path, every process loads that file. None: start at step 0.

    An error on the main process is raised there and reported to the others (so they do not wait forever).
    """
    main = accelerator.is_main_process
    found = None
    chosen: tuple[str | None, str | None] = (None, None)  # (path, error) as the main process saw them
    if main:
        try:
            found = find_resume_checkpoint(folder, resume)
        except Exception as err:
            broadcast_value(accelerator, (None, f"{type(err).__name__}: {err}"))
            raise
        chosen = (os.fspath(found[0]) if found is not None else None, None)
    path, error = broadcast_value(accelerator, chosen)
    if error is not None:
        raise RuntimeError(f"the main process could not resume: {error}")
    if path is None:
        if main:
            warn_about_newer_checkpoints(folder, None)
        if resume == "auto":
            logger.info("resume='auto': no checkpoint in %s, starting from step 0", folder)
        return None
    if main:
        warn_about_newer_checkpoints(folder, milestone_of_path(Path(path)))
    return Path(path), found[1] if found is not None else load_valid_checkpoint(path)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.model-{n}.pt.*.tmp`` files, the leftovers of a save interrupted by a crash; returns them."""
    root = Path(folder)
    if not root.is_dir():
        return []
    stale = [p for p in root.iterdir() if p.is_file() and _TEMPORARY_NAME.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info(
            "removed %d temporary file(s) left by an interrupted checkpoint save: %s",
            len(stale),
            ", ".join(p.name for p in stale),
        )
    return stale


__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "checkpoint_path",
    "find_resume_checkpoint",
    "is_power_of_two",
    "list_milestones",
    "load_valid_checkpoint",
    "milestone_of_path",
    "newest_valid_checkpoint",
    "prune_checkpoints",
    "remove_stale_temporaries",
    "validate_checkpoint",
    "warn_about_newer_checkpoints",
    "write_checkpoint",
    "choose_resume_checkpoint",
]
