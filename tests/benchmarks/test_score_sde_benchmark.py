"""The score-SDE benchmark: its difference rule on made-up numbers, and a seconds-long end-to-end run (--quick).

The quality figures themselves are measured in benchmarks/, never asserted here.
"""

from __future__ import annotations

import math

from benchmarks import score_sde as bench
from benchmarks.harness import stats


def test_verdict_calls_a_difference_beyond_two_standard_errors_only() -> None:
    assert stats.verdict([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]) == "lower"  # Δ = −1, se = √(2·0.01/3) ≈ 0.08
    assert stats.verdict([2.0, 2.1, 1.9], [1.0, 1.1, 0.9]) == "higher"
    assert stats.verdict([1.0, 1.5, 0.5], [1.2, 1.7, 0.7]) == "no difference shown"  # Δ = −0.2, se ≈ 0.41
    assert stats.verdict([1.0], [2.0]) == "n/a"  # one seed: no spread, no call


def test_mean_se() -> None:
    mean, se = stats.mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and math.isclose(se, 1 / math.sqrt(3))


def test_cells_cover_every_process_and_the_vp_sweep() -> None:
    cfg = bench.ScoreConfig(seeds=(0, 1))
    cells = bench.cells(cfg)
    table_a = {(c.process, c.sampler) for c in cells if c.table == "A"}
    assert table_a == {(p, s) for p in bench.PROCESSES for s in ("dpmpp_2m", bench.NATIVE[p][0])}
    sweep = [c for c in cells if c.table == "B"]
    assert {c.process for c in sweep} == {"vp"} and {c.sampler for c in sweep} == {*bench.TABLE_B_SAMPLERS, "ode"}
    assert len(sweep) == 2 * (len(bench.TABLE_B_SAMPLERS) * len(bench.BUDGETS) + len(bench.TOLERANCES))


def test_quick_mode_runs_end_to_end(tmp_path, capsys) -> None:
    result = bench.main(["--quick", "--cache", str(tmp_path)])
    assert len(list(tmp_path.glob("digits-*.pt"))) == len(bench.PROCESSES), "each process's weights cached"
    assert all(r["fd"] >= 0 and r["nfe"] > 0 for r in result["results"])
    out = capsys.readouterr().out
    assert "Table A" in out and "Table B" in out and "adaptive ODE" in out
