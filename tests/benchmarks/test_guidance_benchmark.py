"""The guidance-scale benchmark: its decision rule on made-up numbers, and a seconds-long end-to-end run (--quick).

The quality figures themselves are measured in benchmarks/, never asserted here.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from benchmarks import guidance_scale as bench  # noqa: E402  (after the skip: the module needs scikit-learn to run)
from benchmarks.harness import digits, records  # noqa: E402
from benchmarks.harness.digits_models import cfg_sample_seed  # noqa: E402


def test_sample_labels_are_balanced_in_every_chunk() -> None:
    labels = digits.sample_labels(50)
    assert torch.bincount(labels).tolist() == [50] * 10
    assert all(torch.bincount(labels[i : i + 250]).tolist() == [25] * 10 for i in (0, 250))


def test_sample_seeds_differ_between_models_and_draws() -> None:
    seeds = {cfg_sample_seed(k, d) for k in range(5) for d in range(5)}
    assert len(seeds) == 25 and cfg_sample_seed(1, 0) == cfg_sample_seed(1, 0)


def test_scale_verdict_is_judged_at_two_standard_errors_of_paired_differences() -> None:
    # accuracy 0.97 ± 0.01 (se 0.01/√3), distances 20 at the reference: D = 25 − 30 = −5, no spread
    met = bench.scale_verdict([0.96, 0.97, 0.98], [25.0, 25.0, 25.0], [20.0, 20.0, 20.0])
    assert met["status"] == "met" and met["diff"] == pytest.approx(-5.0) and met["diff_se"] == pytest.approx(0.0)
    assert met["accuracy_se"] == pytest.approx(0.01 / 3**0.5)
    # paired per seed: models whose distances spread by ±15 but whose D = F − 1.5 F_ref is −5 for each are met
    paired = bench.scale_verdict([0.97, 0.97, 0.97], [10.0, 25.0, 40.0], [10.0, 20.0, 30.0])
    assert paired["diff"] == pytest.approx(-5.0) and paired["diff_se"] == pytest.approx(0.0)
    assert paired["status"] == "met"
    # accuracy 0.95 ± 0.03: its lower bound is below 0.95 and its upper bound above: undecided
    assert bench.scale_verdict([0.92, 0.95, 0.98], [20.0] * 3, [20.0] * 3)["status"] == "undecided"
    assert bench.scale_verdict([0.90, 0.91, 0.92], [20.0] * 3, [20.0] * 3)["status"] == "not met"  # accuracy
    assert bench.scale_verdict([0.99] * 3, [31.0, 32.0, 33.0], [20.0] * 3)["status"] == "not met"  # distance
    assert bench.scale_verdict([0.99], [20.0], [20.0])["status"] == "undecided"  # one seed: no error estimate
    with pytest.raises(ValueError, match="one accuracy and two distances per seed"):
        bench.scale_verdict([0.99, 0.99], [20.0], [20.0, 20.0])


def test_overall_verdict_needs_one_met_scale_or_all_not_met() -> None:
    assert bench.overall_verdict(["not met", "met", "undecided"]) == "met"
    assert bench.overall_verdict(["not met", "not met"]) == "not met"
    assert bench.overall_verdict(["not met", "undecided"]) == "undecided"


def test_quick_mode_runs_end_to_end_and_reloads_the_same_numbers(tmp_path, capsys) -> None:
    path = tmp_path / "guidance_scale.jsonl"
    result = bench.main(["--quick", "--threads", "1", "--cache", str(tmp_path), "--results", str(path)])
    assert len(list(tmp_path.glob("digits-cfg-*.pt"))) == 2, "one cached model per training seed"
    (record,) = records.load(path)  # the run's summary, from which its table (and the README's) is rendered
    assert record["verdict"] == result["verdict"] and set(record["summary"]) == {f"{s:g}" for s in bench.SCALES}
    assert set(result["summary"]) == set(bench.SCALES) and result["verdict"] in ("met", "not met", "undecided")
    assert len(result["cells"]) == 2 * len(bench.SCALES) * 2  # seeds x scales x draws
    assert all(0 <= acc <= 1 and fd >= 0 for acc, fd, _ in result["cells"].values())
    assert result["summary"][1.0]["ratio"][0] == pytest.approx(1.0)
    assert all(t is not None for t, _ in result["seconds"].values())
    out = capsys.readouterr().out
    assert "| scale | accuracy | Frechet distance |" in out and "class-balanced" in out and "target:" in out
    again = bench.main(["--quick", "--threads", "1", "--cache", str(tmp_path)])
    assert all(t is None for t, _ in again["seconds"].values())  # loaded from the cache
    assert again["per_seed"] == result["per_seed"]  # and sampled identically


def test_bad_options_are_refused() -> None:
    for option in ("--jobs", "--threads", "--train-steps", "--sample-draws"):
        with pytest.raises(ValueError, match="must be >= 1"):
            bench.main(["--quick", option, "0"])
    with pytest.raises(ValueError, match="seeds distinct"):
        bench.main(["--quick", "--seeds", "1", "1"])
    with pytest.raises(ValueError, match="smallest class"):
        bench.main(["--quick", "--per-class", "500"])
