"""Results files: one JSON line per finished run or table row, appended and never rewritten, each saying what was
run (``command``), where (``machine``, ``cpu``), when (``date``), on which code (``commit``, ``torch``) and from which
``seed``. The files live in benchmarks/results/ (one per script); the README's tables are generated from them
(tables.py, ``python -m benchmarks.report``). A record transcribed from an older README table says so in ``source``.

The CPU is part of a result's identity: a budget of CPU-seconds buys each CPU its own number of steps (on 2026-12-02
a 2-core AMD EPYC made 5300 steps of the digits network in 1920 CPU-s where the 2-core Xeon of every earlier record
made 12400), and virtual machines report generic model names, so :func:`cpu_model` adds family, model and stepping.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"
LEGACY_CPU = "Intel Xeon (before records named the CPU)"  # records written before the field: all from that Xeon
TRANSCRIBED = "transcribed from README"  # the ``source`` of a record copied from a README table of its time


def cpu_model(cpuinfo: str | None = None) -> str:
    """This machine's CPU: /proc/cpuinfo's "model name" with its family, model and stepping (``cpuinfo``: that
    file's text, read when None), else platform.processor(), else "unknown".

    A virtual machine's model name can be generic: two 2-core "AMD EPYC" machines of the peer benchmark bought 1438
    and about 1075 steps of the same network in 480 CPU-s (2026-12-01 and 12-02), so the name alone does not
    identify a CPU-second's worth of steps."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if not name:
        return platform.processor() or "unknown"
    numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model", "stepping") if fields.get(key)]
    return f"{name} ({', '.join(numbers)})" if numbers else name


def cpu_of(record: dict[str, Any]) -> str:
    """The record's ``cpu`` field, else LEGACY_CPU."""
    return record.get("cpu") or LEGACY_CPU


def command(script: str, argv: Sequence[str] | None) -> str:
    """The command line that ran ``script`` (benchmarks/<script>.py) with ``argv`` (None: this process's)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["PYTHONPATH=. python", f"benchmarks/{script}.py", *(shlex.quote(a) for a in args)])


def header(script: str, argv: Sequence[str] | None, **fields: Any) -> dict[str, Any]:
    """The fields every new record starts with (module docstring), plus ``fields`` (a seed, a setting)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "benchmark": script,
        "command": command(script, argv),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "cpu": cpu_model(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "torch": torch.__version__,
        **fields,
    }


def destination(results: Path | None, script: str, *, quick: bool) -> Path | None:
    """Where a run's records go: ``results`` when given, else benchmarks/results/<script>.jsonl, except that a
    ``--quick`` run (the test suite's) records nothing unless given a file."""
    if results is not None:
        return results
    return None if quick else RESULTS / f"{script}.jsonl"


def load(path: Path) -> list[dict[str, Any]]:
    """All records of the results file (none if it does not exist); a malformed line is an error naming it."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON line ({err})") from None
    return records


def append(path: Path | None, *records: dict[str, Any]) -> None:
    """Append records as JSON lines (flushed and fsynced: a crash loses at most the line being written); nothing
    when ``path`` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def group(records: Sequence[dict[str, Any]], fields: Sequence[str]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """The records by the values of ``fields``, in first-seen order."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(tuple(r.get(f) for f in fields), []).append(r)
    return out
