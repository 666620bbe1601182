"""The classifier-guidance benchmark: its comparison rules on made-up numbers, and a seconds-long end-to-end run
(--quick). The quality figures themselves are measured in benchmarks/, never asserted here."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("sklearn")

from benchmarks import classifier_guidance as bench  # noqa: E402  (after the skip: the module needs scikit-learn)
from benchmarks import guidance_scale, quality_vs_cost  # noqa: E402
from benchmarks.harness import stats  # noqa: E402
from benchmarks.harness.digits_models import cfg_sample_seed  # noqa: E402


def test_unpaired_difference_and_its_standard_error() -> None:
    diff, se = stats.unpaired([0.9, 1.0, 1.1], [0.5, 0.5, 0.5])
    assert diff == pytest.approx(0.5) and se == pytest.approx(0.1 / math.sqrt(3))
    diff, se = stats.unpaired([1.0, 3.0], [0.0, 2.0, 4.0])  # sd 1.414 over 2, sd 2 over 3
    assert diff == pytest.approx(0.0) and se == pytest.approx(math.sqrt(2 / 2 + 4 / 3))
    assert math.isnan(stats.unpaired([1.0], [0.0, 1.0])[1])  # one seed: no error estimate


def test_differences_are_called_at_two_standard_errors() -> None:
    assert bench.call_difference(0.5, 0.2) == "CG higher"
    assert bench.call_difference(-0.5, 0.2) == "CG lower"
    assert bench.call_difference(0.3, 0.2) == "no difference shown"  # 0.3 − 0.4 < 0
    assert bench.call_difference(0.5, math.nan) == "no difference shown"


def test_reaching_the_conditional_accuracy_allows_the_margin_at_two_standard_errors() -> None:
    assert bench.call_reach(0.0, 0.004) == "reaches"  # −0.008 ≥ −0.01
    assert bench.call_reach(-0.005, 0.002) == "reaches"  # −0.009 ≥ −0.01
    assert bench.call_reach(-0.005, 0.004) == "undecided"  # lower bound −0.013, upper bound +0.003
    assert bench.call_reach(-0.05, 0.01) == "falls short"  # upper bound −0.03 < −0.01
    assert bench.call_reach(0.0, math.nan) == "undecided"


def test_sample_seeds_differ_from_each_other_and_from_the_classifier_free_ones() -> None:
    ours = {bench.cg_sample_seed(k, d) for k in range(4) for d in range(4)}
    theirs = {cfg_sample_seed(k, d) for k in range(4) for d in range(4)}
    assert len(ours) == 16 and not ours & theirs


def test_the_models_match_the_earlier_benchmarks_configurations() -> None:
    """The classifier-free system is guidance_scale's model and the unconditional one quality_vs_cost's: the same
    network and recipe, so the same cache files (harness/digits_models.trained keys a model by them and its seed)."""
    cfg = bench.ClassifierGuidanceConfig()
    assert (cfg.conditional, cfg.recipe) == (
        guidance_scale.GuidanceConfig().net,
        guidance_scale.GuidanceConfig().recipe,
    )
    assert (cfg.unconditional, cfg.recipe) == (quality_vs_cost.BenchConfig().net, quality_vs_cost.BenchConfig().recipe)


def test_quick_mode_runs_end_to_end_and_reloads_the_same_numbers(tmp_path, capsys) -> None:
    result = bench.main(["--quick", "--threads", "1", "--cache", str(tmp_path)])
    names = sorted(p.name.rsplit("-", 1)[0] for p in tmp_path.iterdir())
    # per seed: an unconditional model (quality_vs_cost's files), its guide, and a class-conditional model
    assert names == ["digits-cfg"] * 2 + ["digits-diffusion"] * 2 + ["digits-guide"] * 2
    assert len(result["cells"]) == 2 * 2 * len(bench.SCALES) * 2  # systems x seeds x scales x draws
    assert all(0 <= acc <= 1 and fd >= 0 for acc, fd, _ in result["cells"].values())
    assert set(result["comparisons"]) == set(bench.SCALES)
    calls = {"CG higher", "CG lower", "no difference shown"}
    assert all(c["acc"][2] in calls and c["reach"][2] in ("reaches", "falls short", "undecided")
               for c in result["comparisons"].values())  # fmt: skip
    assert all(0 <= result["summary"][bench.CG, s]["guide_self"][0] <= 1 for s in bench.SCALES)
    assert all(times[0] is not None for times in result["seconds"].values())  # everything trained
    out = capsys.readouterr().out
    assert "| scale | CG accuracy |" in out and "| scale | R1 accuracy CG − CFG" in out and "R2: " in out
    again = bench.main(["--quick", "--threads", "1", "--cache", str(tmp_path)])
    assert all(times[0] is None and times[1] is None for times in again["seconds"].values())  # loaded
    assert [v[:2] for v in again["cells"].values()] == [v[:2] for v in result["cells"].values()]  # same samples


def test_bad_options_are_refused() -> None:
    for option in ("--jobs", "--threads", "--sample-draws", "--per-class"):
        with pytest.raises(ValueError, match="must be >= 1"):
            bench.main(["--quick", option, "0"])
    with pytest.raises(ValueError, match="must be distinct"):
        bench.main(["--quick", "--seeds", "1", "1"])
