"""The README's tables, generated from benchmarks/results/*.jsonl: the latest run of every benchmark (the peer
benchmark and its diagnostics: every cell), each under the command, machine and date it was measured with.

Usage:  python -m benchmarks.report                  # print the generated block
        python -m benchmarks.report --write-readme   # rewrite the block between the markers in benchmarks/README.md
        python -m benchmarks.report --check          # exit 1 when the README's block is not the generated one

A test (tests/benchmarks/test_report.py) runs ``--check``: a results file changed without regenerating the README
fails the suite.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import cascade_tables, digits_tables, peer_runs, records, speed_tables, tables

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- begin generated tables: python -m benchmarks.report --write-readme (do not edit by hand) -->"
END = "<!-- end generated tables -->"
Records = Sequence[dict[str, Any]]


def latest(renderer: Callable[[Records], str], mode: str | None = None) -> Callable[[Records], str]:
    """A section of the latest run only (of one ``mode``, when the file holds several kinds of run)."""

    def section(recs: Records) -> str:
        mine = [r for r in recs if r.get("mode") == mode]
        if not mine:
            return ""
        run = tables.runs(mine)[-1]
        return f"{tables.run_line(run[0])}\n\n{renderer(run)}"

    return section


def every_run(renderer: Callable[[Records], str]) -> Callable[[Records], str]:
    """A section of every record together, under what they were measured with: the commands that records carry (the
    ones written before 2026-12-07 do not; their commands are in docs/benchmark-history.md), the dates and CPUs."""

    def section(recs: Records) -> str:
        dates = sorted((r.get("date") or "")[:10] for r in recs if r.get("date"))
        cpus = ", ".join(dict.fromkeys(records.cpu_of(r) for r in recs))
        lines = [f"{len(recs)} records, {dates[0]} to {dates[-1]}; CPUs: {cpus}"]
        lines += [f"* `{c}`" for c in dict.fromkeys(r["command"] for r in recs if r.get("command"))]
        return "\n".join(lines) + "\n\n" + renderer(recs)

    return section


def variants(recs: Records) -> str:
    """sampler_variants' records, each network's own DDIM from peer_quality's record where it was not sampled again;
    one table per (data, budget, draws, CPU the networks trained on)."""
    peer = records.load(records.RESULTS / "peer_quality.jsonl")
    found = [{**r, "cpu": records.cpu_of(r)} for r in recs]
    networks = {(*(r[k] for k in peer_runs.NETWORK_FIELDS), r["x_T"], r["cpu"]): r for r in found}
    sampled = {key for key, r in networks.items() if r["variant"] == peer_runs.OWN_DDIM[r["library"]]}
    own = [peer_runs.own_ddim_record(peer, r) for key, r in networks.items() if key not in sampled]
    found += [r for r in own if r is not None]
    found.sort(key=lambda r: (r["library"], r["recipe"], r["variant"] != peer_runs.OWN_DDIM[r["library"]]))
    parts = []
    for (data, budget, draws, cpu), group in records.group(found, ("data", "budget_cpu_s", "draws", "cpu")).items():
        title = (
            f"**{data}**, {budget / peer_runs.CPU_SECONDS_PER_MINUTE:g} min, {draws} draws, networks trained on {cpu}"
        )
        parts.append(f"{title}\n\n" + tables.variants(group, peer_runs.OWN_DDIM.__getitem__))
    return "\n\n".join(parts)


# (results file, heading, what the section shows)
SECTIONS: list[tuple[str, str, Callable[[Records], str]]] = [
    ("compare_peers", "Speed and memory against the peers (`compare_peers.py`)", latest(speed_tables.compare_peers)),
    ("compare_peers", "Peak training memory, with gradient checkpointing (`compare_peers.py --memory-only`)",
     latest(speed_tables.memory, "memory")),
    ("optimizations", "The speed changes of issue 5 (`optimizations.py`)", latest(speed_tables.optimizations)),
    ("conv_floor", "The convolution floor of a training step (`conv_floor.py`)", latest(speed_tables.conv_floor)),
    ("growth", "Growth with image and batch size (`growth.py`)", latest(speed_tables.growth)),
    ("gpu", "On a GPU (`gpu.py`)", latest(speed_tables.gpu)),
    ("latent", "Latent against pixel-space diffusion (`latent.py`)", latest(speed_tables.latent)),
    ("quality_vs_cost", "Sample quality against network evaluations (`quality_vs_cost.py`)",
     latest(digits_tables.quality_vs_cost)),
    ("guidance_scale", "Classifier-free guidance (`guidance_scale.py`)", latest(digits_tables.guidance_scale)),
    ("classifier_guidance", "Classifier guidance beside classifier-free guidance (`classifier_guidance.py`)",
     latest(lambda run: digits_tables.classifier_guidance(run, detail=False))),
    ("edm", "EDM against the DDPM at equal training (`edm.py`)", latest(digits_tables.edm)),
    ("score_sde", "Score-based processes and SDE / ODE samplers (`score_sde.py`)", latest(digits_tables.score_sde)),
    ("flow", "Flow matching and the 2-rectified flow against DDPM and EDM (`flow.py`)", latest(digits_tables.flow)),
    ("peer_quality", "Sample quality per CPU-second against the peers (`peer_quality.py`, every cell of 2+ seeds)",
     every_run(tables.peer_quality_summary)),
    ("denoising_error", "Denoising error against the noise level (`denoising_error.py`)",
     every_run(digits_tables.denoising_error_ratios)),
    ("sampler_variants", "DDIM variants on kept networks (`sampler_variants.py`)", every_run(variants)),
    ("cascade", "A two-stage cascade on the shapes, 16 -> 32 (`cascade.py`)", latest(cascade_tables.cascade)),
]  # fmt: skip


def block(results: Path = records.RESULTS) -> str:
    """The generated block: one section per results file that has records, between the markers."""
    parts = [BEGIN]
    for name, heading, section in SECTIONS:
        recs = records.load(results / f"{name}.jsonl")
        body = section(recs) if recs else ""
        if body:
            parts.append(f"### {heading}\n\n{body}")
    parts.append(END)
    return "\n\n".join(parts)


def readme_with(text: str, generated: str) -> str:
    """``text`` with the part between the markers (markers included) replaced by ``generated``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{README}: the markers of the generated block are missing ({BEGIN!r} ... {END!r})")
    return text[:start] + generated + text[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write-readme", action="store_true", help="rewrite the generated block of benchmarks/README.md")
    p.add_argument("--check", action="store_true", help="exit 1 when the README's generated block is not current")
    p.add_argument("--readme", type=Path, default=README)
    args = p.parse_args(argv)
    generated = block()
    if not (args.write_readme or args.check):
        print(generated)
        return 0
    text = args.readme.read_text()
    updated = readme_with(text, generated)
    if args.check:
        if updated != text:
            print(f"{args.readme} is not current: run python -m benchmarks.report --write-readme", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
