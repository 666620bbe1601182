"""The harness's bookkeeping: the timing guard, the results files' header and destination, the statistics."""

from __future__ import annotations

import math
import time

import pytest

from benchmarks.harness import records, stats, timing


def test_an_iteration_without_its_cpu_share_is_redone_then_kept_and_counted() -> None:
    """A call that sleeps uses no CPU: the guard redoes it (up to ``retries``) and says it is still starved."""
    calls = []
    wall, redone, starved = timing.guarded_call(lambda: calls.append(time.sleep(0.01)), threads=1, retries=2)
    assert (len(calls), redone, starved) == (3, 2, True) and wall >= 0.01
    assert timing.guarded_call(lambda: time.sleep(0.01), threads=0)[1:] == (0, False)  # threads 0: guard off


def test_alternating_medians_warm_up_untimed_and_take_the_median() -> None:
    calls: list[str] = []
    result = timing.alternating_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                        repeats=3, threads=0, warmup=1)  # fmt: skip
    assert calls == ["a", "b", "a", "b", "a", "b", "a", "b"]  # warm-up of each, then alternated
    assert set(result) == {"a", "b"} and all(t.median_s >= 0 for t in result.values())
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        timing.alternating_medians({"a": lambda: None}, repeats=0, threads=0)


def test_a_record_says_what_ran_where_and_when() -> None:
    header = records.header("growth", ["--quick", "--sizes", "8,16"], seed=0)
    assert header["command"] == "PYTHONPATH=. python benchmarks/growth.py --quick --sizes 8,16"
    assert header["cpu"] == records.cpu_model() and header["machine"] and header["date"] and header["seed"] == 0
    assert records.header("growth", ["a b"])["command"].endswith("growth.py 'a b'")  # quoted as a shell would


def test_a_quick_run_records_only_when_given_a_file(tmp_path) -> None:
    assert records.destination(None, "growth", quick=True) is None
    assert records.destination(None, "growth", quick=False) == records.RESULTS / "growth.jsonl"
    assert records.destination(tmp_path / "r.jsonl", "growth", quick=True) == tmp_path / "r.jsonl"
    records.append(None, {"a": 1})  # no file: nothing happens
    records.append(tmp_path / "r.jsonl", {"a": 1}, {"a": 2})
    records.append(tmp_path / "r.jsonl", {"a": 3})  # appended, never rewritten
    assert records.load(tmp_path / "r.jsonl") == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_the_two_standard_error_rule_and_its_pieces() -> None:
    assert stats.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and math.isnan(stats.mean_sd([1.0])[1])
    assert stats.pooled_sd([[1.0, 3.0], [2.0, 4.0, 6.0]]) == pytest.approx(math.sqrt((2.0 + 8.0) / 3))
    assert math.isnan(stats.pooled_sd([[1.0], [2.0]]))
    diff, se = stats.unpaired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert (
        diff == 2.0 and se == pytest.approx(1 / math.sqrt(3)) and stats.verdict([1.0, 2.0, 3.0], [0.0] * 3) == "higher"
    )
    assert stats.t95(2) == 4.303 and stats.t95(100) == 1.96
