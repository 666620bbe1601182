"""benchmarks/latent.py at its seconds-long size: every variant timed, the ratios to pixel space computed within the
run, the PSNR rows, the table printed and the records written with their command (speed is never asserted)."""

from __future__ import annotations

from benchmarks import latent
from benchmarks.harness import records


def test_latent_quick_runs_and_records(tmp_path, capsys) -> None:
    path = tmp_path / "latent.jsonl"
    rows = latent.main(["--quick", "--retries", "0", "--results", str(path)])
    speed = [r for r in rows if r["kind"] == "speed"]
    assert [r["variant"] for r in speed] == list(latent.VARIANTS) and speed[0]["train_vs_pixel"] == 1.0
    assert all(r["images_per_s"] > 0 and r["sample_s_per_image"] > 0 for r in speed)
    assert speed[2]["shape"] == [4, 8, 8] and speed[4]["shape"] == [4, 4, 4]  # 32x32 images at f = 4 and 8
    assert [r["factor"] for r in rows if r["kind"] == "psnr"] == [4, 8]
    assert "| size | variant | trains on |" in capsys.readouterr().out
    assert records.load(path) == rows and rows[0]["command"].endswith("--results " + str(path))
