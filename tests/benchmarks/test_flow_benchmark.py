"""The flow benchmark (benchmarks/flow.py): its rule and target on made-up numbers, its NFE budgets, its table from
fresh (per-seed) and transcribed (mean ± sd) records, and a seconds-long end-to-end run (--quick) that appends one
record per cell. The quality figures themselves are measured in benchmarks/, never asserted here."""

from __future__ import annotations

import json
import math

from benchmarks import flow as bench
from benchmarks.harness import digits_tables, records, stats


def test_the_rule_calls_a_difference_beyond_two_standard_errors_of_the_difference() -> None:
    assert stats.summary_verdict((1.0, 0.1, 3), (2.0, 0.1, 3)) == "lower"  # Δ = 1 > 2·√(0.02/3) ≈ 0.16
    assert stats.summary_verdict((1.5, 0.5, 3), (1.0, 0.5, 3)) == "no difference shown"  # 0.5 < 2·√(0.5/3) ≈ 0.82
    assert stats.summary_verdict((1.0, math.nan, 1), (2.0, math.nan, 1)) == "n/a"
    # the same call as the rule on the per-seed values behind those summaries
    a, b = [1.0, 1.1, 0.9], [2.0, 2.1, 1.9]
    assert stats.summary_verdict((*stats.mean_sd(a), 3), (*stats.mean_sd(b), 3)) == stats.verdict(a, b) == "lower"


def summaries(ours: float, theirs: float, sd: float = 0.1) -> dict:
    table = {(bench.STUDENT, "euler", n): (ours, sd, 3) for n in bench.TARGET_NFE}
    table.update({("ddpm", s, n): (theirs, sd, 3) for s in bench.SAMPLER_NAMES for n in bench.TARGET_NFE})
    return table


def test_the_target_needs_every_comparison_won() -> None:
    assert digits_tables.flow_target(summaries(1.0, 5.0))[0] == "met"
    assert digits_tables.flow_target(summaries(5.0, 1.0))[0] == "not met"
    assert digits_tables.flow_target(summaries(1.0, 1.05))[0] == "undecided"
    assert len(digits_tables.flow_target(summaries(1.0, 5.0))[1]) == 3 * len(bench.TARGET_NFE) == 9
    missing = {k: v for k, v in summaries(1.0, 5.0).items() if k != (bench.STUDENT, "euler", 4)}
    assert digits_tables.flow_target(missing)[0] == "undecided"


def test_heun_gets_the_most_steps_that_fit_the_budget() -> None:
    cells = bench.cells(bench.Config(seeds=1))
    assert [c.steps for c in cells if c.table == "ddpm" and c.sampler == "heun"] == [1, 1, 2, 4, 10]  # 1, 1, 3, 7, 19
    assert [c.steps for c in cells if c.table == "ddpm" and c.sampler == "euler"] == list(bench.NFE)
    assert {(c.table, c.process) for c in cells} == {*((p, p) for p in bench.PROCESSES), (bench.STUDENT, "flow")}


def record(model: str, sampler: str, nfe: int, fd: list[float], *, transcribed: bool) -> dict:
    common = {"command": "c", "date": "2026-12-07", "seed": [0, 1, 2], "model": model, "sampler": sampler, "nfe": nfe,
              "nfe_used": nfe, "floor": [15.0, 2.0], "config": vars(bench.Config())}  # fmt: skip
    if transcribed:
        return {**common, "source": records.TRANSCRIBED, "fd": list(stats.mean_sd(fd)), "fd_per_seed": None}
    return {**common, "fd_per_seed": fd}


def test_the_table_reads_transcribed_and_per_seed_records_alike() -> None:
    cells = [(bench.STUDENT, "euler", [30.0, 31.0, 29.0])] + [("ddpm", s, [400.0, 410.0, 390.0]) for s in
                                                              bench.SAMPLER_NAMES]  # fmt: skip
    texts = []
    for transcribed in (False, True):
        run = [record(m, s, n, fd, transcribed=transcribed) for m, s, fd in cells for n in bench.TARGET_NFE]
        assert digits_tables.flow_cell(run[0]) == (30.0, 1.0, 3)
        texts.append(digits_tables.flow(run))
    fresh, copied = texts
    assert fresh.replace("in the records", "not recorded") == copied
    assert "| 2-rectified flow | euler | 30.00 ± 1.00 |" in texts[0] and "met (9 of 9 lower)" in texts[0]


def test_quick_mode_runs_end_to_end_and_appends_one_record_per_cell(tmp_path, capsys) -> None:
    results = tmp_path / "flow.jsonl"
    result = bench.main(["--quick", "--cache", str(tmp_path / "cache"), "--results", str(results)])
    assert result["status"] in ("met", "not met", "undecided")
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    cfg = bench.QUICK
    assert len(lines) == (len(bench.PROCESSES) + 1) * len(bench.SAMPLER_NAMES) * len(cfg.nfe)
    assert {(r["model"], r["sampler"], r["nfe"]) for r in lines} == {
        (m, s, n) for m in (*bench.PROCESSES, bench.STUDENT) for s in bench.SAMPLER_NAMES for n in cfg.nfe
    }
    for r in lines:
        assert {"benchmark", "command", "machine", "cpu", "date", "commit", "seed"} <= set(r), r
        assert r["seed"] == list(range(cfg.seeds)) and len(r["fd_per_seed"]) == cfg.seeds
        assert all(v >= 0 for v in r["fd_per_seed"]) and "source" not in r
    out = capsys.readouterr().out
    assert "| 2-rectified flow | euler |" in out and "real vs real (floor)" in out and "target" in out
    assert digits_tables.flow(lines, detail=True) in out, "the script prints the table the README is made from"
    assert records.destination(None, "flow", quick=True) is None, "--quick records only when given a file"
