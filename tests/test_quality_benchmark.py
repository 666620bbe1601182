"""The quality-versus-cost benchmark: its Frechet distance against closed forms, and a seconds-long end-to-end run.

The --quick run takes a few seconds on one thread (well under a minute); as DESIGN.md asks, that is not asserted.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from benchmarks import quality_vs_cost as bench  # noqa: E402  (after the skip: the module needs scikit-learn to run)
from denoising_diffusion.samplers import SAMPLERS, SamplerName  # noqa: E402


def _random_spd(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_frechet_distance_of_a_gaussian_to_itself_is_zero() -> None:
    mu, cov = torch.randn(6, dtype=torch.float64), _random_spd(6, 0)
    assert bench.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_commuting_closed_form() -> None:
    """Diagonal covariances commute: FD = ||mu1 - mu2||² + sum (sqrt(a_i) - sqrt(b_i))²."""
    a, b = torch.tensor([1.0, 4.0, 0.25, 9.0]), torch.tensor([4.0, 1.0, 0.25, 0.0])  # b singular on purpose
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0, 3.0])
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())  # 1 + 4 + 1 + 1 + 0 + 9
    assert bench.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_rotated_scaled_closed_form() -> None:
    """cov2 = c² cov1 (any SPD cov1): Tr((cov1 cov2)^{1/2}) = c Tr(cov1), so FD = (1 − c)² Tr(cov1)."""
    cov, c = _random_spd(5, 1), 3.0
    zeros = torch.zeros(5, dtype=torch.float64)
    assert bench.frechet_distance(zeros, cov, zeros, c**2 * cov) == pytest.approx((1 - c) ** 2 * float(cov.trace()),
                                                                                  rel=1e-8)


def test_frechet_distance_of_identical_samples_is_zero() -> None:
    feats = torch.randn(200, 8, generator=torch.Generator().manual_seed(2))
    fit = bench.gaussian_fit(feats)
    assert bench.frechet_distance(*fit, *fit) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        bench.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


def test_steps_for_budget_counts_heun_evaluations() -> None:
    heun, ddpm = SAMPLERS[SamplerName.HEUN], SAMPLERS[SamplerName.DDPM]
    assert bench.steps_for_budget(heun, 5, 1000) == 3 and heun.nfe(3) == 5
    assert bench.steps_for_budget(heun, 10, 1000) == 5 and heun.nfe(5) == 9
    assert bench.steps_for_budget(ddpm, 1000, 1000) == 1000
    assert bench.steps_for_budget(ddpm, 2000, 1000) == 1000  # capped at T


def test_table_cells_add_draws_for_the_target_cells_only() -> None:
    cfg = bench.BenchConfig(budgets=(20, 1000), target_draws=3)
    cells = bench.table_cells(cfg, 1000)
    extra = {(c.sampler, c.nfe) for c in cells if c.draw > 0}
    assert extra == {bench.TARGET_CANDIDATE, bench.TARGET_REFERENCE}
    assert len(cells) == 2 * len(SAMPLERS) + 4
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


def test_quick_mode_runs_end_to_end(tmp_path, capsys) -> None:
    result = bench.main(["--quick", "--threads", "1", "--cache", str(tmp_path)])
    assert list(tmp_path.glob("digits-diffusion-*.pt")), "the trained weights are cached"
    assert set(result["rows"]) == set(SAMPLERS)
    assert all(set(row) == {5, 10} and all(fd >= 0 for fd, _ in row.values()) for row in result["rows"].values())
    assert result["floor"][0] >= 0 and result["floor"][1] >= 0 and result["train_seconds"] is not None
    assert result["verdict"] is None  # --quick's budgets hold no target cell
    out = capsys.readouterr().out
    assert "| sampler | NFE 5 | NFE 10 |" in out and "real vs real (floor)" in out
    again = bench.main(["--quick", "--threads", "1", "--cache", str(tmp_path)])
    assert again["train_seconds"] is None and again["rows"] == result["rows"]  # loaded, and reproducible


def test_quick_mode_numbers_do_not_depend_on_jobs_or_the_global_rng(tmp_path, capsys) -> None:
    one = bench.main(["--quick", "--cache", str(tmp_path / "one")])
    torch.rand(3)  # whatever the global RNG holds, a fresh training (other cache) gives the same weights
    two = bench.main(["--quick", "--cache", str(tmp_path / "two"), "--jobs", "2"])
    assert two["rows"] == one["rows"] and two["floor"] == one["floor"]
    assert "draw 0" in capsys.readouterr().out


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="num-samples"):
        bench.main(["--quick", "--num-samples", "5000"])
    for option in ("--jobs", "--threads", "--train-steps", "--target-draws"):
        with pytest.raises(ValueError, match="must be >= 1"):
            bench.main(["--quick", option, "0"])
