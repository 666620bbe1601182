"""The benchmark scripts run (at a seconds-long size): speed is measured there, never asserted here."""

from __future__ import annotations

from benchmarks import bench_unet


def test_bench_unet_tiny_runs(capsys) -> None:
    result = bench_unet.main(["--tiny", "--threads", "1"])
    assert result["params_M"] > 0 and result["step_s"] > 0 and result["forward_s"] > 0
    assert "| params | train step |" in capsys.readouterr().out
