"""The cascade benchmark: its rule on made-up numbers, and a seconds-long end-to-end run (--quick) with its record.

The quality figures themselves are measured in benchmarks/, never asserted here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import cascade as bench
from benchmarks.harness import cascade_tables, stats


def test_the_rule_calls_paired_differences_at_two_standard_errors() -> None:
    lower = stats.paired_call([10.0, 20.0, 30.0], [12.0, 22.5, 31.5])  # differences −2, −2.5, −1.5
    assert lower["call"] == "lower" and lower["diff"] == pytest.approx(-2.0)
    assert lower["se"] == pytest.approx(0.5 / 3**0.5)
    assert stats.paired_call([3.0, 1.0, 2.0], [1.0, 2.0, 3.0])["call"] == "no difference shown"  # +2, −1, −1
    assert stats.paired_call([5.0, 6.0, 7.0], [1.0, 1.5, 2.5])["call"] == "higher"
    assert stats.paired_call([1.0], [2.0])["call"] == "n/a"


def test_quick_run_records_every_measure(tmp_path: Path, capsys) -> None:
    results = tmp_path / "cascade.jsonl"
    record = bench.main(["--quick", "--results", str(results), "--note", "test", "--save", str(tmp_path)])
    saved = json.loads(results.read_text().splitlines()[-1])
    assert saved["benchmark"] == "cascade" and saved["seeds"] == [0, 1] and saved["machine_note"] == "test"
    levels = bench.QUICK.levels
    assert set(saved["fd"]) == {"stage", "single", *(f"cascade@{s:g}" for s in levels)}
    assert all(len(v) == 2 for v in saved["fd"].values()) and len(saved["psnr_stage"]) == 2
    assert set(saved["levels_vs_0"]) == {f"{s:g}" for s in levels} and saved["cpu_s"] > 0
    for seed in ("0", "1"):  # the single model trained for the cascade's CPU time, at least
        spent = saved["train_cpu_s"][seed]
        assert spent["single"] >= spent["base"] + spent["stage"]
    assert (tmp_path / "stage-seed0.pt").exists() and (tmp_path / "base-seed1.pt").exists()
    assert cascade_tables.cascade([saved]) in capsys.readouterr().out and record["fd_bicubic"] >= 0
