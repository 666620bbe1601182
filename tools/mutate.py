"""Mutation testing of the maths modules, in minutes: does each plausible bug in tools/mutations.py fail its tests?

    python tools/mutate.py                      # every mutation; exit 1 below --threshold, 2 on any error
    python tools/mutate.py --list               # the mutations, without running anything
    python tools/mutate.py --only ddim-c-no-square,var-no-half
    python tools/mutate.py --threshold 0.95 --timeout 300

The working tree is copied once to a temporary directory (without .git, caches and results); each mutation is
applied there (its snippet must occur exactly once: a stale snippet is an error, never a silent skip), the module's
tests run with ``python -m pytest -x -q -p no:cacheprovider -n 0 <node ids>`` in the copy, and the file is restored.
A mutant is *caught* when pytest fails (exit 1, or 2 for an import/collection error), *survived* when it passes,
and an *error* when its snippet is stale, the run times out, or pytest reports a usage error or no tests.
Before the mutants, the union of all selections runs once on the unmutated copy and must pass (``--no-baseline``
skips it), so that a failing test cannot pass for a catch. Uses the standard library, pytest and pytest-xdist
(which pyproject's addopts name).
See tests/README.md for the latest run and why each survivor survives.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "*.egg-info",
    "build",
    "dist",
    "results",
    "*.pyc",
)
# -n 0: a mutant's few tests run serially (pyproject's addopts would start a pytest-xdist worker per core for each)
PYTEST = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-n", "0"]


def load_mutations(path: Path = ROOT / "tools" / "mutations.py") -> ModuleType:
    """tools/mutations.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_mutations", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is being built
    spec.loader.exec_module(module)
    return module


def occurrences(root: Path, mutation) -> int:
    """How often the mutation's snippet occurs in its file under root (0 when the file is missing)."""
    path = root / mutation.file
    return path.read_text(encoding="utf-8").count(mutation.original) if path.is_file() else 0


@dataclass
class Outcome:
    mutation: Any  # a tools/mutations.py Mutation (loaded from its file, so not importable here)
    result: str  # caught | survived | error
    seconds: float
    detail: str  # the first failing test, or what went wrong


def run_pytest(copy: Path, node_ids: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit code or None on timeout, combined output) of pytest on node_ids, run in the copy."""
    python_path = os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))
    env = dict(
        os.environ, PYTHONPATH=python_path, PYTHONDONTWRITEBYTECODE="1"
    )  # no stale .pyc: two mutants of a file may share its size and mtime
    proc = subprocess.Popen(
        [sys.executable, *PYTEST, *node_ids],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session this run started, and nothing else
        out, _ = proc.communicate()
        return None, out


def first_failure(output: str) -> str:
    """The first 'FAILED node' or 'ERROR node' line of pytest's short summary, shortened."""
    for line in output.splitlines():
        match = re.match(r"(FAILED|ERROR) (\S+)", line)
        if match:
            return match.group(2).replace("tests/", "").split(" - ")[0]
    return output.strip().splitlines()[-1] if output.strip() else ""


def check_copy_imports_itself(copy: Path) -> None:
    """The copy's package, not the editable install, must be the one the tests import."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run(
        [sys.executable, "-c", "import denoising_diffusion; print(denoising_diffusion.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        sys.exit(f"mutate: the copy imports {out}, not its own package under {copy}: mutants would not be tested")


def union(selections: list[tuple[str, ...]]) -> list[str]:
    """Every node id of the selections once, a node dropped when its whole file is already selected."""
    ids = list(dict.fromkeys(node for selection in selections for node in selection))
    files = {node for node in ids if "::" not in node}
    return [node for node in ids if "::" not in node or node.split("::")[0] not in files]


def run_one(copy: Path, mutation, timeout: float) -> Outcome:
    path = copy / mutation.file
    original = path.read_text(encoding="utf-8")
    count = original.count(mutation.original)
    if count != 1:
        return Outcome(mutation, "error", 0.0, f"stale: snippet occurs {count} times in {mutation.file}")
    start = time.monotonic()
    try:
        path.write_text(original.replace(mutation.original, mutation.replacement), encoding="utf-8")
        code, output = run_pytest(copy, list(mutation.tests), timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    seconds = time.monotonic() - start
    if code is None:
        return Outcome(mutation, "error", seconds, f"timeout after {timeout:.0f} s")
    if code in (1, 2):
        return Outcome(mutation, "caught", seconds, first_failure(output))
    if code == 0:
        return Outcome(mutation, "survived", seconds, "")
    return Outcome(mutation, "error", seconds, f"pytest exit {code}: {first_failure(output)}")


def module_of(mutation) -> str:
    return mutation.file.removeprefix("denoising_diffusion/").removesuffix(".py")


def print_table(outcomes: list[Outcome]) -> None:
    print("\n| id | module | bug | result | s | caught by / detail |")
    print("| --- | --- | --- | --- | --- | --- |")
    for o in outcomes:
        m = o.mutation
        result = o.result + (" (equivalent)" if m.equivalent and o.result == "survived" else "")
        print(f"| {m.id} | {module_of(m)} | {m.bug} | {result} | {o.seconds:.0f} | {o.detail} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutation ids to run")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--threshold", type=float, default=0.9, help="minimum catch rate (default 0.9)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per pytest run (default 300)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated tests")
    args = parser.parse_args(argv)

    mutations = list(load_mutations().MUTATIONS)
    ids = [m.id for m in mutations]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        sys.exit(f"mutate: duplicate mutation ids {duplicates}")
    if args.only:
        wanted = [i.strip() for i in args.only.split(",") if i.strip()]
        unknown = sorted(set(wanted) - set(ids))
        if unknown:
            sys.exit(f"mutate: unknown mutation ids {unknown}; see --list")
        mutations = [m for m in mutations if m.id in wanted]
    if args.list:
        for m in mutations:
            mark = "  [equivalent]" if m.equivalent else ""
            print(f"{m.id:32} {module_of(m):22} {m.bug}{mark}")
        print(f"{len(mutations)} mutations")
        return 0

    stale = [m for m in mutations if occurrences(ROOT, m) != 1]
    for m in stale:
        print(
            f"mutate: STALE {m.id}: its snippet occurs {occurrences(ROOT, m)} times in {m.file} (must be once)",
            file=sys.stderr,
        )

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORED)
        check_copy_imports_itself(copy)
        if not args.no_baseline:
            nodes = union([m.tests for m in mutations])
            print(f"baseline: {len(nodes)} test selections on the unmutated copy ...", flush=True)
            t0 = time.monotonic()
            code, output = run_pytest(copy, nodes, args.timeout * 2)
            if code != 0:
                print(output[-4000:], file=sys.stderr)
                sys.exit(f"mutate: the unmutated tests do not pass (pytest exit {code}); fix them first")
            print(f"baseline passed in {time.monotonic() - t0:.0f} s", flush=True)
        outcomes = []
        for n, m in enumerate(mutations, 1):
            outcome = run_one(copy, m, args.timeout)
            outcomes.append(outcome)
            print(
                f"[{n:2}/{len(mutations)}] {m.id:32} {outcome.result:9} {outcome.seconds:5.0f} s  {outcome.detail}",
                flush=True,
            )

    print_table(outcomes)
    caught = sum(o.result == "caught" for o in outcomes)
    survived = [o for o in outcomes if o.result == "survived"]
    errors = [o for o in outcomes if o.result == "error"]
    rate = caught / len(outcomes) if outcomes else 1.0
    print(
        f"\n{caught}/{len(outcomes)} caught ({rate:.1%}); {len(survived)} survived "
        f"({sum(o.mutation.equivalent for o in survived)} known equivalent); {len(errors)} errors; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    if survived:
        print("survivors: " + ", ".join(o.mutation.id for o in survived))
    if errors:
        print("errors: " + ", ".join(f"{o.mutation.id} ({o.detail})" for o in errors))
        return 2
    if rate < args.threshold:
        print(f"catch rate {rate:.1%} is below the threshold {args.threshold:.0%}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
