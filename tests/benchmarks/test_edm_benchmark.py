"""The EDM benchmark: its cells and a seconds-long end-to-end run (--quick). Figures are measured, never asserted."""

from __future__ import annotations

from benchmarks import edm as bench
from benchmarks import score_sde


def test_cells_are_the_reference_and_every_edm_cell_per_seed() -> None:
    cfg = bench.EDMConfig(seeds=(0, 1, 2))
    cells = bench.cells(cfg)
    assert len(cells) == 3 * (1 + len(bench.EDM_CELLS))
    ref = [c for c in cells if c.table == "ref"]
    assert {(c.process, c.sampler, c.steps) for c in ref} == {("ddpm", "ddpm", 1000)}
    assert all(c.process == "edm" for c in cells if c.table == "edm")


def test_its_ddpm_models_are_score_sde_s() -> None:
    """The reference is score_sde's ddpm model (the same network, recipe and so cache file)."""
    ours, theirs = bench.EDMConfig(), score_sde.ScoreConfig()
    assert (ours.net_of("ddpm"), ours.recipe) == (theirs.net_of("ddpm"), theirs.recipe)


def test_quick_mode_runs_end_to_end(tmp_path, capsys) -> None:
    result = bench.main(["--quick", "--cache", str(tmp_path)])
    assert {r["cell"].process for r in result["results"]} == {"ddpm", "edm"}
    assert "target (EDM at <= 35 evaluations" in capsys.readouterr().out
