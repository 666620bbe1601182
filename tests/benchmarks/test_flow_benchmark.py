"""The flow benchmark (benchmarks/flow.py): its rule on made-up numbers, its NFE budgets, and a seconds-long
end-to-end run (--quick). The quality figures themselves are measured in benchmarks/, never asserted here."""

from __future__ import annotations

from benchmarks import flow as bench


def test_the_rule_calls_a_difference_beyond_two_standard_errors_of_the_difference() -> None:
    assert bench.differs((1.0, 0.1, 3), (2.0, 0.1, 3))  # Δ = 1 > 2·√(0.02/3) ≈ 0.16
    assert not bench.differs((1.0, 0.5, 3), (1.5, 0.5, 3))  # Δ = 0.5 < 2·√(0.5/3) ≈ 0.82


def test_the_verdict_needs_every_comparison_won() -> None:
    def stats(ours: float, theirs: float) -> dict:
        table = {("2-rectified flow", "euler", n): (ours, 0.1, 3) for n in bench.TARGET_NFE}
        table.update({("ddpm", s, n): (theirs, 0.1, 3) for s in bench.SAMPLER_NAMES for n in bench.TARGET_NFE})
        return table

    assert bench.verdict(stats(1.0, 5.0))[0] == "met"
    assert bench.verdict(stats(5.0, 1.0))[0] == "not met"
    assert bench.verdict(stats(1.0, 1.05))[0] == "undecided"
    assert len(bench.verdict(stats(1.0, 5.0))[1]) == 3 * len(bench.TARGET_NFE)


def test_heun_gets_the_most_steps_that_fit_the_budget() -> None:
    assert [bench.steps_for("heun", n) for n in bench.NFE] == [1, 1, 2, 4, 10]  # 2·steps − 1 NFE: 1, 1, 3, 7, 19
    assert [bench.steps_for("euler", n) for n in bench.NFE] == list(bench.NFE)


def test_quick_mode_runs_end_to_end(capsys) -> None:
    result = bench.main(["--quick"])
    assert result["status"] in ("met", "not met", "undecided")
    assert all(v[0] >= 0 for v in result["stats"].values())
    out = capsys.readouterr().out
    assert "| 2-rectified flow | euler |" in out and "real vs real (floor)" in out and "target" in out
