"""The quality-versus-cost benchmark: its bookkeeping, and a seconds-long end-to-end run (the Frechet distance it
uses is tested against closed forms in test_evaluation.py).

The --quick run takes a few seconds on one thread (well under a minute); as DESIGN.md asks, that is not asserted.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from benchmarks import quality_vs_cost as bench  # noqa: E402  (after the skip: the module needs scikit-learn to run)
from benchmarks.harness.digits_models import steps_for_budget  # noqa: E402
from denoising_diffusion.samplers import SAMPLERS, SamplerName  # noqa: E402

DISCRETE = {name.value for name, info in SAMPLERS.items() if not info.needs_sde}  # what runs on the benchmark's DDPM


def test_steps_for_budget_counts_heun_evaluations() -> None:
    heun, ddpm = SAMPLERS[SamplerName.HEUN], SAMPLERS[SamplerName.DDPM]
    assert steps_for_budget(heun, 5, 1000) == 3 and heun.nfe(3) == 5
    assert steps_for_budget(heun, 10, 1000) == 5 and heun.nfe(5) == 9
    assert steps_for_budget(ddpm, 1000, 1000) == 1000
    assert steps_for_budget(ddpm, 2000, 1000) == 1000  # capped at T


def test_table_cells_add_draws_for_the_target_cells_only() -> None:
    cfg = bench.BenchConfig(budgets=(20, 1000), target_draws=3)
    cells = bench.table_cells(cfg, 1000)
    extra = {(c.sampler, c.nfe) for c in cells if c.draw > 0}
    assert extra == {bench.TARGET_CANDIDATE, bench.TARGET_REFERENCE}
    assert len(cells) == 2 * len(bench.BENCHED) + 4
    assert cells[0].nfe == 1000  # most expensive first


def _target_results(candidate: list[float], reference: list[float]) -> dict:
    cand, ref = bench.TARGET_CANDIDATE, bench.TARGET_REFERENCE
    results = {bench.Cell(*cand, steps=20, draw=d): fd for d, fd in enumerate(candidate)}
    results.update({bench.Cell(*ref, steps=1000, draw=d): fd for d, fd in enumerate(reference)})
    return results


def test_target_verdict_uses_the_mean_over_draws_and_its_standard_error() -> None:
    verdict = bench.target_verdict(_target_results([10.0, 12.0], [10.0, 10.0]))
    assert verdict["ratio"] == pytest.approx(1.1)
    assert verdict["ratio_se"] == pytest.approx(1.1 * (1.0 / 11.0))  # sem of (10, 12) is 1; the reference's is 0
    assert verdict["status"] == "undecided"  # 1.1 ± 0.2 straddles the margin
    assert bench.target_verdict(_target_results([10.0, 10.2], [10.0, 10.0]))["status"] == "met"
    assert bench.target_verdict(_target_results([13.0, 13.2], [10.0, 10.0]))["status"] == "not met"
    assert bench.target_verdict(_target_results([10.0], [10.0]))["status"] == "undecided"  # no error estimate
    assert bench.target_verdict({bench.Cell(*bench.TARGET_REFERENCE, steps=1000): 1.0}) is None


def test_quick_mode_runs_end_to_end_reloads_and_does_not_depend_on_jobs_or_the_global_rng(tmp_path, capsys) -> None:
    """One test, so the suite trains the quick model twice instead of three times: the first run is the reference
    both for the reload (same cache) and for a fresh training on two worker processes after the global RNG moved."""
    result = bench.main(["--quick", "--threads", "1", "--cache", str(tmp_path / "one")])
    assert list((tmp_path / "one").glob("digits-diffusion-*.pt")), "the trained weights are cached"
    assert set(result["rows"]) == DISCRETE == {name.value for name in bench.BENCHED}
    for name, row in result["rows"].items():  # every budget that fits (annealed Langevin's 1 level costs 6)
        fits = {str(b) for b in (5, 10) if steps_for_budget(SAMPLERS[SamplerName(name)], b, 1000) is not None}
        assert set(row) == fits and len(fits) >= 1 and all(fd >= 0 for fd, _ in row.values())
    assert result["floor"][0] >= 0 and result["floor"][1] >= 0 and result["train_seconds"] is not None
    assert result["target"] is None  # --quick's budgets hold no target cell
    out = capsys.readouterr().out
    assert "| sampler | NFE 5 | NFE 10 |" in out and "real vs real (floor)" in out and "draw 0" in out
    again = bench.main(["--quick", "--threads", "1", "--cache", str(tmp_path / "one")])
    assert again["train_seconds"] is None and again["rows"] == result["rows"]  # loaded, and reproducible
    torch.rand(3)  # whatever the global RNG holds, a fresh training (other cache) gives the same weights
    two = bench.main(["--quick", "--cache", str(tmp_path / "two"), "--jobs", "2"])
    assert two["train_seconds"] is not None and two["rows"] == result["rows"] and two["floor"] == result["floor"]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="num-samples"):
        bench.main(["--quick", "--num-samples", "5000"])
    for option in ("--jobs", "--threads", "--train-steps", "--target-draws"):
        with pytest.raises(ValueError, match="must be >= 1"):
            bench.main(["--quick", option, "0"])
