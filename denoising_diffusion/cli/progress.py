"""Progress bars and messages on stderr: every command that can run for more than a few seconds shows what it is
doing, and nothing else ever writes onto a bar's line.

* :class:`SamplingBar` is a sampler callback (StepRecord, DESIGN.md "Samplers"): one tqdm bar over every reverse step
  a command runs (all batches, all samplers of a sweep), labelled with the sampler and steps, its postfix the
  network evaluations so far per image (NFE). Commands chain it with their own callbacks (_utils.call_each).
* :func:`bar_safe_messages` routes log records and Python warnings through ``tqdm.write`` while a command runs, as
  ``denoising-diffusion: warning: <message>`` lines above the bar instead of on it.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

from ..denoiser import StepRecord
from .args import PROG


class SamplingBar:
    """A tqdm bar on stderr advanced once per sampler step (a ``callback``); ``total`` steps, or None when unknown
    (an adaptive solver). Its postfix: the sampler run (batch) it is in, the step, and the network evaluations per
    image so far (from ``StepRecord.nfe``, else ``evaluations_per_step`` per step; 0: not shown)."""

    def __init__(self, label: str, total: int | None, evaluations_per_step: int = 1) -> None:
        self.bar = tqdm(total=total, desc=label, unit="step", file=sys.stderr, dynamic_ncols=True)
        self.evaluations_per_step = evaluations_per_step
        self._calls = 0  # sampler calls seen (a call's records start at index 0)

    def __call__(self, record: StepRecord) -> None:
        self._calls += record.index == 0
        nfe = record.nfe if record.nfe is not None else (record.index + 1) * self.evaluations_per_step
        shown = f", NFE {nfe}" if nfe else ""  # 0: not known here (a sweep mixes samplers)
        self.bar.set_postfix_str(f"run {self._calls}, step {record.index + 1}{shown}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> SamplingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sampling_bar(
    command: str, diffusion: Any, sampler: str | None, steps: int | None, spacing: str | None, calls: int
) -> SamplingBar:
    """The bar of ``calls`` sampler runs of ``diffusion`` with ``sampler`` (None: the model's) at ``steps`` (None: its
    sampling_timesteps), labelled 'sample: ddim, 50 steps'; no total for an adaptive solver."""
    info = diffusion.sampler_info(sampler)
    count = len(diffusion.runner.times(steps, spacing, info))
    total = None if info.adaptive else count * calls
    return SamplingBar(f"{command}: {info.name}, {count} steps", total, info.evals_per_step)


class _BarSafeHandler(logging.Handler):
    """Writes each record with tqdm.write (on stderr, above any bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's contract: a handler reports its own failures
            self.handleError(record)


def _show_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    logging.getLogger("py.warnings").warning("%s", message)


@contextmanager
def bar_safe_messages() -> Iterator[None]:
    """While the block runs: log records (WARNING and above, the root logger's level) and warnings are written as
    ``denoising-diffusion: <level>: <message>`` with tqdm.write; the previous handlers and showwarning come back
    after."""
    handler = _BarSafeHandler()
    handler.setFormatter(_CommandFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = show
        root.removeHandler(handler)


class _CommandFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
