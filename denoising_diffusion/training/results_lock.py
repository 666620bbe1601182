"""One run per results folder: an advisory lock held while a run writes into it.

Two runs started on the same folder used to both succeed: loss.csv held every step twice, interleaved, and the
checkpoints were whichever run saved last (issue 28). A run now holds ``flock`` on ``<folder>/.lock`` (created if
missing) while it writes; a second run finds it held and stops with :class:`ResultsFolderInUseError`, which names the
first run's process: its pid, host, command line and start time, written into the lock file by its holder.

The operating system drops a ``flock`` when its process exits, however it exits: a run killed with SIGKILL or by
the out-of-memory killer leaves the file behind but not the lock, so ``--resume auto`` after a crash is never
blocked. A clean release deletes the file (and the folder, if the lock created it and it is still empty), so a
failed start leaves nothing behind.

Within one process the lock is shared: a second Trainer on the same folder (a notebook re-running its cell after an
interrupt, or the command line, which holds the lock for the whole command around its Trainer) finds its own pid
in the file and goes on without taking it again. The lock is advisory: it keeps out other runs of this package,
not other programs. Where ``fcntl`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class ResultsFolderInUseError(RuntimeError):
    """Another process holds the results folder's lock; the message names that process."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a results folder: what the holder wrote into the lock file."""

    pid: int
    host: str
    command: str
    started: float  # seconds since the epoch

    @classmethod
    def this_process(cls) -> LockHolder:
        return cls(os.getpid(), socket.gethostname(), " ".join(sys.argv) or sys.executable, time.time())

    def describe(self) -> str:
        """'pid 123 on host, started 2026-12-07 16:04:05 (12 s ago): denoising-diffusion train ...'."""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return (
            f"pid {self.pid} on {self.host}, started {started} ({time.time() - self.started:.0f} s ago): {self.command}"
        )


def _read_holder(fd: int) -> LockHolder | None:
    """The holder recorded in an open lock file, or None when it is empty or not ours (being written, or damaged)."""
    try:
        text = os.pread(fd, 65536, 0).decode("utf-8", "replace")
        fields = json.loads(text)
        return LockHolder(int(fields["pid"]), str(fields["host"]), str(fields["command"]), float(fields["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a releasing holder deletes it; then it must be opened anew)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class ResultsLock:
    """The advisory lock on ``folder`` (module docstring). ``acquire`` before writing, ``release`` after; also a
    context manager.

    Args:
        folder: the results folder; created by ``acquire`` if missing.
        hint: how the user picks another folder, for the error message ("pass another --results" on the command
            line, "pass another results_folder" in Python).
    """

    def __init__(self, folder: str | os.PathLike[str], *, hint: str = "pass another results_folder") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.hint = hint
        self._fd: int | None = None  # the open, locked file while held by this object
        self._created_folder = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (False when it shares its own process's, or never acquired it)."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or share it when this process already holds it; raises ResultsFolderInUseError naming the
        process that holds it otherwise. Idempotent."""
        if self._fd is not None or fcntl is None:
            return
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if holder is not None and holder.pid == os.getpid():
                    return  # this process already writes here (module docstring)
                self._forget_folder()
                raise ResultsFolderInUseError(self._in_use_message(holder)) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its holder deleted on release: open the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(LockHolder.this_process().__dict__).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock back and delete the lock file (and the folder, if ``acquire`` created it and it is empty).
        Idempotent; a no-op when the lock was shared or never taken."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: nobody can lock this file after it is gone
        os.close(self._fd)
        self._fd = None
        self._forget_folder()

    def _forget_folder(self) -> None:
        """Remove the folder ``acquire`` created, if nothing was written into it."""
        if self._created_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass  # something was written there: keep it
            self._created_folder = False

    def _in_use_message(self, holder: LockHolder | None) -> str:
        who = holder.describe() if holder is not None else "a process that has not yet said which (just starting)"
        return (
            f"results folder {os.fspath(self.folder)!r} is in use by another run: {who}. Wait for it to end, or "
            f"{self.hint}; two runs in one folder would interleave their logs and overwrite each other's checkpoints"
        )

    def __enter__(self) -> ResultsLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
