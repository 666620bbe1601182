"""Work spread over worker processes: the digits benchmarks draw their sample sets (and train their models) in a pool
of spawned processes, one torch thread each (on a 2-core machine a second busy process makes 2-thread ops stall).
The numbers never depend on the number of workers: every job seeds its own generators."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any


def map_jobs(fn: Callable[..., Any], arguments: Sequence[tuple], jobs: int) -> Iterator[Any]:
    """``fn(*a)`` for every ``a`` in ``arguments``, here (``jobs`` = 1, in order) or in a pool of ``jobs`` spawned
    processes (in completion order); ``fn`` must be importable by name (a module-level function)."""
    if jobs == 1:
        yield from (fn(*a) for a in arguments)
        return
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(fn, *a) for a in arguments]):
            yield future.result()


_SHARED: dict[str, Any] = {}


def _share(shared: dict[str, Any]) -> None:
    _SHARED.clear()
    _SHARED.update(shared)


def _call(fn_and_job: tuple[Callable[[Any, dict[str, Any]], Any], Any]) -> Any:
    fn, job = fn_and_job
    return fn(job, _SHARED)


def map_shared(fn: Callable[[Any, dict[str, Any]], Any], jobs: Sequence[Any], shared: dict[str, Any],
               processes: int) -> Iterator[Any]:  # fmt: skip
    """``fn(job, shared)`` for every job, here (``processes`` <= 1, in order) or in a pool of spawned processes (in
    completion order), ``shared`` sent once to each worker rather than with every job (data sets, classifiers)."""
    if processes <= 1:
        _share(shared)
        yield from (fn(job, _SHARED) for job in jobs)
        return
    with multiprocessing.get_context("spawn").Pool(processes, initializer=_share, initargs=(shared,)) as pool:
        yield from pool.imap_unordered(_call, [(fn, job) for job in jobs])
